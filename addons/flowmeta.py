"""The `flow.metadata` keys toolgate sets: one constant per key, the only place they are spelled.

The addons of the chain talk to each other through a flow's metadata (mitmweb shows it too, and
`toolgate sessions export` writes a few of them into the `.mitm` files it makes). Each entry
says what the key holds, who writes it and who reads it. Pure: no mitmproxy import, so anything
can name a key (`addons/gateway.py`'s fallback spells `REFUSED` itself: it must load even when
nothing else imports; a test checks the two agree). `shown_function` reads one of them the way
every reader must.
"""

# The call's id (hex): the X-Toolgate-Call-Id of every answer and the store's `call_id`.
# Written by `answers.call_id_of` on first use (the gate, or the earliest refusal); read by
# every addon that names the call (approvals, credentials, the recorder, the sentinel) and set
# on exported flows.
CALL_ID = "toolgate.call_id"

# When the call began (time.time()), set once by the gate; read by the recorder (the row's
# `started_at`, the session assignment).
STARTED = "toolgate.started"

# The refusal's error code ("identity", "blocked", "unrecorded", "internal", ...) once the
# gateway has answered the call itself. Written by `answers.refuse` (and by gateway.py's
# `Unavailable`: "unavailable"); read by the policy, approvals, the recorder, the sentinel,
# the hook wrapper and gateway.py, so that a refused call is not decided, held or answered again.
REFUSED = "toolgate.refused"

# Where a hook failed ("Policy.request", ...), when the hook wrapper failed the call closed.
# Written by `failclosed.hooks.fail_closed`; read by its `answer_failed` (the wrapper, and the
# sentinel once the body is in), which answers such a call 500 `internal`.
FAILED = "toolgate.failed"

# The verified caller, as `oidc.Caller.as_dict()` (subject, issuer, groups, token_id,
# anonymous); never the token. Written by the identity addon; read by the policy, approvals,
# credentials and the recorder; set (subject, groups) on exported flows.
IDENTITY = "toolgate.identity"

# Checks that only monitored instead of refusing (monitor mode), as a list: ["identity"] when
# a token failed to verify. Written by the identity addon; for mitmweb and tests to see.
MONITORED = "toolgate.monitored"

# The call's decision as it builds up over request and response: {"action", "would", "rules",
# "labels", "mode", "protocol", "function"}. Written by `policy.outcome.CallDecision.record`;
# read by the policy, credentials (the function a target matches) and the recorder; set on
# exported flows.
DECISION = "toolgate.decision"

# Every classified value of the call, never the value itself: a list of items, each either a
# unit's findings as the policy's engine encoded them (bytes: rows of [direction, path, label,
# level, action, fingerprint] in the core's binary encoding, `rules.Findings.encode`; thousands
# for a large body, and no Python object per finding) or one finding as a FindingRow-shaped
# dict ({"direction", "path", "label", "level", "action", "fingerprint"}: credentials' masked
# echoes, the backstop's, exported flows). Read by the recorder
# (`sessions.records.finding_table`); read them as dicts with `sessions.records.finding_dicts`.
# Plain data, so a saved flow keeps them.
FINDINGS = "toolgate.findings"

# What a response needs to know of its request ({"protocol", ...}: the parsed request's
# context; for MCP also the tools it calls and its `tools/list` ids, `mcp.request_context`).
# Written and read by the policy; read by the tool pins and tracing.
PROTOCOL = "toolgate.protocol"

# A streamed response's headers refused by a rule ({"code", "message", "rule", "field"}):
# written by the policy's `responseheaders`, answered by its `response`.
HEADER_REFUSAL = "toolgate.header_refusal"

# Why an event stream cannot be checked (text), found at `responseheaders` and refused 502
# `uninspectable` at `response`. Written and read by the policy.
STREAM_REFUSED = "toolgate.stream_refused"

# A call that policy decided `approve`: {"rule", "function", "approvers", "timeout", ...},
# and "verdict" once decided. Written by the policy; read (and completed) by approvals.
APPROVAL = "toolgate.approval"

# The rules under which this call was approved (a list), so that its response is not held again
# by the same rule. Written and read by approvals.
APPROVED_RULES = "toolgate.approved_rules"

# The bodies as the session store keeps them (bytes, every labelled value redacted), where they
# differ from what was forwarded. Written by the policy; the response's is scrubbed of echoed
# credentials by credentials; read by the recorder instead of the flow's bodies.
RECORD_REQUEST = "toolgate.record_request"
RECORD_RESPONSE = "toolgate.record_response"

# The query string as the store keeps it ({name: value or [values]}): masked by the policy,
# injected credentials redacted by credentials; read by the recorder (the row's `url`).
RECORD_QUERY = "toolgate.record_query"

# A request's path as the store keeps it, where labelled values in it are redacted:
# {"sent": the path the policy decided on, "stored": the path to store}. Written by the policy;
# read by the recorder (the row's `url`; the `sent` path names a call the policy did not name).
# The policy also maps the function such a path names to its stored one in RECORD_FUNCTION.
RECORD_PATH = "toolgate.record_path"

# Functions named after labelled values (MCP tools or JSON-RPC methods, an LLM's tools: text the
# caller or the model chose; a call named by a path that holds one) as the store, traces,
# metrics, tool pins and hold listings show them: {the name the policy decided on: the name
# with its labelled values redacted}. Written by the policy; read through `shown_function`.
RECORD_FUNCTION = "toolgate.record_function"

# Header values as the store keeps them, by lower-case name: {name: {"sent": [values the policy
# left on the flow], "stored": [what to store instead]}}. Written by the policy; read by the
# recorder (and by the policy, which puts the stored values on a request it refuses).
RECORD_REQUEST_HEADERS = "toolgate.record_request_headers"
RECORD_RESPONSE_HEADERS = "toolgate.record_response_headers"

# Names of the headers holding the credentials the credentials addon injected (names only,
# never values): written by it; read by the recorder, which stores those headers `[REDACTED]`.
INJECTED_HEADERS = "toolgate.injected_headers"

# The call's session id. Written by the recorder (for mitmweb and the flow's later records);
# set on exported flows.
SESSION_ID = "toolgate.session_id"
# The session a caller named (`X-Toolgate-Session`) as the store keeps it, when the name holds
# a labelled value: `s-<keyed fingerprint>`. Written by the policy; read by the recorder.
RECORD_SESSION = "toolgate.record_session"

# How far the call is on record: "request" once its `pending` row is committed, "call" once its
# final row is submitted. Written and read by the recorder.
RECORDED = "toolgate.recorded"


def shown_function(meta: dict, name: str | None) -> str | None:
    """`name` (a function, tool or method name read from the call) as it may be stored, traced
    or counted: redacted when `RECORD_FUNCTION` holds it."""
    names = meta.get(RECORD_FUNCTION)
    return names.get(name, name) if names and name is not None else name
