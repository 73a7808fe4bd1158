"""The columns the writer fills and the verifier hashes, in one place, so that the two cannot
disagree about what a row's hash covers. The tables themselves are made by `migrations`."""

from __future__ import annotations

import pyarrow as pa

# Kinds of column: how a value is typed in Arrow and encoded for hashing.
STR, TS, INT, BOOL, BLOB, STRLIST = "str", "ts", "int", "bool", "blob", "strlist"

ARROW_TYPES = {
    STR: pa.string(),
    TS: pa.timestamp("us", tz="UTC"),  # filled with integer microseconds since the epoch
    INT: pa.int32(),
    BOOL: pa.bool_(),
    BLOB: pa.binary(),
    STRLIST: pa.list_(pa.string()),
}

# A calls row's content, in table order: every column but seq, prev_hash and hash.
CALL_CONTENT: list[tuple[str, str]] = [
    ("call_id", STR),
    ("session_id", STR),
    ("started_at", TS),
    ("ended_at", TS),
    ("client_addr", STR),
    ("subject", STR),
    ("issuer", STR),
    ("token_id", STR),
    ("groups", STRLIST),
    ("protocol", STR),
    ("function", STR),
    ("method", STR),
    ("url", STR),
    ("request_headers", STR),
    ("request_body", BLOB),
    ("status", INT),
    ("response_headers", STR),
    ("response_body", BLOB),
    ("decision", STR),
    ("enforced", STR),
    ("rules", STRLIST),
    ("mode", STR),
    ("error", STR),
    ("forwarded", BOOL),
]

_PENDING_FROM_CALL = {
    "call_id", "session_id", "started_at", "client_addr", "subject", "issuer", "token_id",
    "groups", "protocol", "function", "method", "url", "request_headers", "request_body",
    "decision", "enforced", "rules", "mode",
}
PENDING_COLUMNS: list[tuple[str, str]] = [
    c for c in CALL_CONTENT if c[0] in _PENDING_FROM_CALL
] + [("findings", STR), ("held_at", TS)]

FINDING_COLUMNS: list[tuple[str, str]] = [
    ("call_id", STR),
    ("direction", STR),
    ("path", STR),
    ("label", STR),
    ("level", STR),
    ("action", STR),
    ("fingerprint", STR),
]

APPROVAL_CONTENT: list[tuple[str, str]] = [
    ("call_id", STR),
    ("requested_at", TS),
    ("decided_at", TS),
    ("decision", STR),
    ("reviewer", STR),
    ("channel", STR),
    ("reason", STR),
    ("scope", STR),
]

TOOL_EVENT_COLUMNS: list[tuple[str, str]] = [
    ("server", STR),
    ("tool", STR),
    ("kind", STR),
    ("fingerprint", STR),
    ("definition", STR),
    ("seen_at", TS),
    ("call_id", STR),
    ("reviewer", STR),
    ("reason", STR),
]

CHAIN_PREFIX: list[tuple[str, str]] = [("seq", INT)]
CHAIN_SUFFIX: list[tuple[str, str]] = [("prev_hash", STR), ("hash", STR)]

# Tables with a hash chain: name -> content columns.
CHAINED = {"calls": CALL_CONTENT, "approvals": APPROVAL_CONTENT}

# The fleet node whose chain a row is part of, in `calls`, `approvals` and `findings`: one value
# for a whole store, filled by the writer, NULL for a single gateway. A chained row's hash
# covers it after the content, only when it is set (`hashchain.row_hash`); a finding has its
# call's.
NODE_ID = "node_id"


def arrow_schema(columns: list[tuple[str, str]]) -> pa.Schema:
    fields = [
        pa.field(name, pa.int64() if name == "seq" else ARROW_TYPES[kind])
        for name, kind in columns
    ]
    return pa.schema(fields)


def chained_columns(table: str) -> list[tuple[str, str]]:
    return CHAIN_PREFIX + CHAINED[table] + CHAIN_SUFFIX


def select_for_hashing(table: str, alias: str = "") -> str:
    """SQL expressions reading a chained table's columns back in the writer's terms
    (timestamps as integer microseconds)."""
    prefix = f"{alias}." if alias else ""
    exprs = []
    for name, kind in chained_columns(table):
        column = prefix + name
        exprs.append(f"epoch_us({column}) AS {name}" if kind == TS else column)
    return ", ".join(exprs)
