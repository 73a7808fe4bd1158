"""The store's schema, as ordered migrations.

Each migration runs once, in its own transaction, and is remembered in `schema_migrations`, so
a store written by an older toolgate is brought up to date when the gateway opens it. Never edit
a migration that has shipped: add the next one.

The column names of `calls`, `findings` and `approvals` are a contract with users who query the
store with SQL (see "The session store" in SPEC.md); more columns are fine, renames are not.
"""

from __future__ import annotations

import duckdb

# (version, name, SQL). Timestamps are TIMESTAMPTZ in UTC; headers are JSON text (a list of
# [name, value] pairs, in order, duplicates kept); bodies are BLOBs exactly as forwarded and
# returned (after masking), including any Content-Encoding.
MIGRATIONS: list[tuple[int, str, str]] = [
    (
        1,
        "calls, findings, approvals, pending",
        """
        CREATE TABLE calls (
            seq              BIGINT NOT NULL,   -- the chain's order, from 1
            call_id          VARCHAR NOT NULL,  -- equals the X-Toolgate-Call-Id header
            session_id       VARCHAR,
            started_at       TIMESTAMPTZ NOT NULL,
            ended_at         TIMESTAMPTZ,
            client_addr      VARCHAR,
            subject          VARCHAR,
            issuer           VARCHAR,
            token_id         VARCHAR,
            groups           VARCHAR[],
            protocol         VARCHAR,
            function         VARCHAR,
            method           VARCHAR,
            url              VARCHAR,
            request_headers  VARCHAR,           -- JSON [[name, value], ...], secrets redacted
            request_body     BLOB,              -- as forwarded, after masking
            status           INTEGER,           -- the status the caller got; NULL if none
            response_headers VARCHAR,
            response_body    BLOB,              -- as returned to the caller
            decision         VARCHAR,           -- allow, mask, approve, block, deny, ...
            enforced         VARCHAR,           -- what was done (decision, unless monitored)
            rules            VARCHAR[],
            mode             VARCHAR,           -- enforce or monitor
            error            VARCHAR,           -- toolgate's error code, or the transport error
            forwarded        BOOLEAN,           -- whether the call was let through to the backend
            prev_hash        VARCHAR NOT NULL,
            hash             VARCHAR NOT NULL
        );
        CREATE TABLE findings (
            call_id     VARCHAR NOT NULL,
            direction   VARCHAR,                -- request or response
            path        VARCHAR,                -- where in the body
            label       VARCHAR,
            level       VARCHAR,
            action      VARCHAR,
            fingerprint VARCHAR                 -- keyed HMAC of the raw value, never the value
        );
        CREATE TABLE approvals (
            seq          BIGINT NOT NULL,
            call_id      VARCHAR NOT NULL,
            requested_at TIMESTAMPTZ,
            decided_at   TIMESTAMPTZ,
            decision     VARCHAR,               -- approved, denied, expired
            reviewer     VARCHAR,
            channel      VARCHAR,               -- mitmweb, api, cli, timeout, ...
            reason       VARCHAR,
            scope        VARCHAR,               -- this call, or a grant for a time window
            prev_hash    VARCHAR NOT NULL,
            hash         VARCHAR NOT NULL
        );
        -- Requests let through under audit durability whose answer is not recorded yet. A row
        -- left here when the gateway stopped becomes an `interrupted` call at the next start.
        CREATE TABLE pending (
            call_id          VARCHAR NOT NULL,
            session_id       VARCHAR,
            started_at       TIMESTAMPTZ NOT NULL,
            client_addr      VARCHAR,
            subject          VARCHAR,
            issuer           VARCHAR,
            token_id         VARCHAR,
            groups           VARCHAR[],
            protocol         VARCHAR,
            function         VARCHAR,
            method           VARCHAR,
            url              VARCHAR,
            request_headers  VARCHAR,
            request_body     BLOB,
            decision         VARCHAR,
            enforced         VARCHAR,
            rules            VARCHAR[],
            mode             VARCHAR,
            findings         VARCHAR            -- JSON of the request's findings
        );
        """,
    ),
    (
        2,
        "pending: calls held for approval",
        """
        -- Set on a row written when a call is held for approval (before anyone sees it), NULL
        -- on a request being let through: a call found held at start was never forwarded.
        ALTER TABLE pending ADD COLUMN held_at TIMESTAMPTZ;
        """,
    ),
    (
        3,
        "journal_applied: how far the store has taken the write-ahead journal",
        """
        -- One row: the journal's generation and the offset just past its last record that is
        -- in this store, updated in the transaction that adds the records (sessions.journal).
        CREATE TABLE journal_applied (generation VARCHAR NOT NULL, position BIGINT NOT NULL);
        INSERT INTO journal_applied VALUES ('', 0);
        """,
    ),
    (
        4,
        "node_id: the fleet node whose chain a row is part of",
        """
        -- Set on every row by a gateway that runs as a node of a fleet (toolgate_node, or
        -- derived when toolgate_control or toolgate_archive is set), NULL on rows of a single
        -- gateway, as before. A calls or approvals row's hash covers it when it is set; a
        -- finding has the node of its call.
        ALTER TABLE calls ADD COLUMN node_id VARCHAR;
        ALTER TABLE approvals ADD COLUMN node_id VARCHAR;
        ALTER TABLE findings ADD COLUMN node_id VARCHAR;
        """,
    ),
    (
        5,
        "tool_events: pinned MCP tool definitions and their changes",
        """
        -- The history from which a gateway rebuilds its pins at start (rules/toolpins.py):
        -- a server's first listing pins each tool; later changes, acceptances, forgets.
        CREATE TABLE tool_events (
            server      VARCHAR NOT NULL,       -- the MCP server's URL, without its query
            tool        VARCHAR NOT NULL,       -- '*' for a whole server (forgotten)
            kind        VARCHAR NOT NULL,       -- pinned, changed, new, approved, forgotten
            fingerprint VARCHAR,                -- sha256 of name, description, input schema
            definition  VARCHAR,                -- that definition, as JSON
            seen_at     TIMESTAMPTZ NOT NULL,
            call_id     VARCHAR,                -- the call that showed it
            reviewer    VARCHAR,
            reason      VARCHAR,
            node_id     VARCHAR
        );
        """,
    ),
]

LATEST = MIGRATIONS[-1][0]


def current_version(con: duckdb.DuckDBPyConnection) -> int:
    """The store's schema version; 0 for an empty database."""
    exists = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'schema_migrations'"
    ).fetchone()
    if not exists or not exists[0]:
        return 0
    row = con.execute("SELECT max(version) FROM schema_migrations").fetchone()
    return int(row[0] or 0) if row else 0


def migrate(con: duckdb.DuckDBPyConnection) -> int:
    """Apply the migrations the store lacks; the resulting version."""
    con.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " version INTEGER NOT NULL, name VARCHAR NOT NULL,"
        " applied_at TIMESTAMPTZ NOT NULL DEFAULT current_timestamp)"
    )
    version = current_version(con)
    if version > LATEST:
        raise RuntimeError(
            f"the store's schema is version {version}, newer than this toolgate knows "
            f"({LATEST}): upgrade toolgate"
        )
    for number, name, sql in MIGRATIONS:
        if number <= version:
            continue
        con.execute("BEGIN TRANSACTION")
        try:
            con.execute(sql)
            con.execute(
                "INSERT INTO schema_migrations (version, name) VALUES (?, ?)", [number, name]
            )
            con.execute("COMMIT")
        except Exception:
            con.execute("ROLLBACK")
            raise
        version = number
    return version
