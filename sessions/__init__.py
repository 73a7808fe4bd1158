"""toolgate's session store: every call, decision and approval, in DuckDB, tamper-evident.

- `migrations`  the schema, as ordered, versioned migrations (`schema_migrations`)
- `schema`      the columns the writer fills and the verifier hashes
- `records`     what is recorded (`CallRecord`, `FindingRow`, `ApprovalRecord`); secrets redacted
- `writer`      `Writer`: the one thread that owns the DuckDB connection; group commits of
                Arrow batches; a Future per record that resolves on commit
- `hashchain`   the hash chain and its head file (`<db>.head`)
- `verify`      walks the chains, names the first bad row
- `sessionize`  which session a call belongs to
- `query`       searches, timelines, reports, fingerprint look-ups (pure, JSON-able)
- `api`         the admin API's session routes over `query` and `verify`
- `readonly`    the file opened read-only, answering `api`'s routes (for the CLI while no
                gateway holds it)
- `report`      text and JUnit renderings of a report
- `export`      a session as a `.mitm` file (the only module importing mitmproxy)
- `replay`      re-issues a session's requests against a target and compares
- `whatif`      re-evaluates recorded calls against another rule set (`toolgate rules test`)

Only this package talks to DuckDB.
"""
