"""The metrics addon under mitmproxy's test context: what a call counts, bounded label values,
identity refusals by reason (from the verifier's own messages), the times of a call, the
gateway's state read when scraped, and the admin API serving it all as Prometheus text."""

from __future__ import annotations

import asyncio
import time

import jwt
import pytest
from mitmproxy.test import taddons, tflow, tutils
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from hostile_tokens import hs256_with_public_key, tampered, unknown_kid, unsigned
from toolgate.addons.answers import Refusal, refuse
from toolgate.addons.approvals.addon import Approvals
from toolgate.addons.approvals.admin import Admin, AdminRequest
from toolgate.addons.approvals.ledger import ApprovalDecision
from toolgate.addons.failclosed.hooks import unguarded_hooks
from toolgate.addons.recording.addon import call_findings
from toolgate.addons.identity.oidc import (
    Caller, IdentityError, KeySet, TokenPolicy, bearer_token, verify_token,
)
from toolgate.addons.telemetry.metrics import (
    IDENTITY_REASON_NAMES, MAX_FUNCTIONS, BoundedNames, Metrics, finding_counts,
    identity_reason, state_registry,
)
from toolgate.rules.catalog import is_rest_name
from toolgate.rules.core import native
from toolgate.sessions.records import FindingRow
from toolgate.scripts.dev_issuer import DevKeys, new_key

ISSUER = "https://issuer.test"


# -- identity refusals: the verifier's own messages, mapped to a few reasons ------------------

@pytest.fixture(scope="module")
def keys() -> DevKeys:
    return DevKeys.generate(ISSUER, "gw")


def refusal_of(make, keys: DevKeys) -> str:
    with pytest.raises(IdentityError) as refused:
        token = make(keys)
        verify_token(bearer_token(token) if token.startswith("Bearer") else token,
                     KeySet(keys.jwks()), TokenPolicy(issuer=ISSUER, audience="gw"))
    return str(refused.value)


def with_kid(kid: str):
    def make(keys: DevKeys) -> str:
        key = new_key("RSA")
        return jwt.encode({"sub": "a", "exp": int(time.time()) + 60}, jwt.PyJWK(key).key,
                          algorithm="RS256", headers={"kid": kid})
    return make


@pytest.mark.parametrize("make, reason", [
    (lambda k: k.mint("a", ttl=-100), "expired"),
    (lambda k: k.mint("a", nbf=int(time.time()) + 300), "not_yet_valid"),
    (lambda k: k.mint("a", iss="https://other"), "issuer"),
    (lambda k: k.mint("a", audience="other"), "audience"),
    (lambda k: k.mint(""), "claim"),
    (unsigned, "algorithm"),
    (hs256_with_public_key, "algorithm"),
    (unknown_kid, "key"),
    # what a caller writes in a token (its kid) never decides the reason
    (with_kid("the token has expired"), "key"),
    (lambda k: tampered(k.mint("a"), sub="root"), "signature"),
    (lambda k: "not-a-jwt", "malformed"),
    (lambda k: "Bearer a.b.c", "malformed"),
])
def test_identity_refusals_map_the_verifiers_messages_to_a_reason(keys, make, reason):
    assert identity_reason(refusal_of(make, keys)) == reason


@pytest.mark.parametrize("header, reason", [
    ("Basic dXNlcjpwYXNz", "malformed"),
    ("Bearer ", "missing"),
    ("Bearer " + "a" * 20000, "malformed"),
    ("Bearer caf\u00e9", "malformed"),
])
def test_identity_refusals_of_the_header_itself(header, reason):
    with pytest.raises(IdentityError) as refused:
        bearer_token(header)
    assert identity_reason(str(refused.value)) == reason


def test_identity_reasons_are_a_fixed_set():
    assert identity_reason("no bearer token: send 'Authorization: Bearer <token>'") == "missing"
    assert identity_reason("the gateway has no token verifier configured") == "other"
    assert identity_reason(None) == "other" and identity_reason("anything at all") == "other"
    assert set(IDENTITY_REASON_NAMES) == {"missing", "malformed", "expired", "not_yet_valid",
                                          "signature", "audience", "issuer", "key",
                                          "algorithm", "claim", "other"}


# -- bounded label values -------------------------------------------------------------------------

def test_bounded_names_keep_the_first_ones_seen():
    names = BoundedNames(3)
    assert [names(n) for n in ("a", "b", "a", "c", "d", "b")] == ["a", "b", "a", "c", "other", "b"]
    assert names("x" * 500) == "other"


@pytest.mark.parametrize("function, method, unnamed", [
    (None, "GET", True), ("", "POST", True), ("GET /customers/42", "GET", True),
    ("POST /v1/chat/completions", "post", True), ("crm.get_customer", "GET", False),
    ("deploy", "POST", False), ("GET /x", "POST", False),
])
def test_a_function_named_by_its_path_is_unnamed(function, method, unnamed):
    assert is_rest_name(function, method) is unnamed


def test_finding_counts_read_the_cores_encoding_and_dicts():
    rows = [FindingRow("response", f"$[{i}].ssn", "ssn", "high", "mask", "f") for i in range(5)]
    rows.append(FindingRow("response", "$[9].phone", "phone", "low", None, "f"))
    items = [native.FindingTable(rows).encode(),
             {"direction": "response", "path": "$.x", "label": "secret", "action": "mask"}]
    assert finding_counts(items) == {("ssn", "mask"): 5, ("phone", ""): 1, ("secret", "mask"): 1}
    assert finding_counts(None) == {} and finding_counts([]) == {}


def test_a_calls_finding_table_is_made_once_while_its_findings_stay_the_same():
    flow = tflow.tflow(resp=True)
    assert len(call_findings(flow)) == 0
    rows = [FindingRow("response", f"$[{i}].ssn", "ssn", "high", "mask", "f") for i in range(3)]
    flow.metadata["toolgate.findings"] = [native.FindingTable(rows).encode()]
    first = call_findings(flow)
    assert call_findings(flow) is first and len(first) == 3
    flow.metadata["toolgate.findings"].append({"direction": "response", "path": "$.k",
                                               "label": "secret", "action": "mask"})
    grown = call_findings(flow)  # the same list, one more: made again
    assert grown is not first and len(grown) == 4
    flow.metadata["toolgate.findings"] = list(flow.metadata["toolgate.findings"])
    assert call_findings(flow) is not grown and len(call_findings(flow)) == 4
    assert finding_counts(call_findings(flow)) == {("ssn", "mask"): 3, ("secret", "mask"): 1}


# -- the addon ------------------------------------------------------------------------------------

def call_flow(*, protocol="mcp", function="get_customer", path="/mcp", method="POST",
              decision=None, forwarded=True, status=200):
    flow = tflow.tflow(req=tutils.treq(method=method.encode(), path=path.encode()))
    flow.metadata["toolgate.call_id"] = f"c-{id(flow)}"
    flow.metadata["toolgate.identity"] = {"subject": "alice-sub", "anonymous": False}
    if decision is not None:
        flow.metadata["toolgate.decision"] = {
            "action": decision, "would": decision, "rules": [], "labels": [], "mode": "enforce",
            "protocol": protocol, "function": function}
    if forwarded:
        flow.metadata["toolgate.recorded"] = "request"
    flow.request.timestamp_start = time.time() - 1.0
    return flow


def finish(metrics: Metrics, flow, status: int = 200, body: bytes = b"{}") -> None:
    """Run the addon's hooks as mitmproxy would for a forwarded call answered by a backend."""
    metrics.request(flow)
    if flow.response is None:
        flow.response = tutils.tresp(status_code=status, content=body)
        metrics.responseheaders(flow)
        flow.response.timestamp_end = time.time()
    metrics.response(flow)


def value(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def test_every_hook_fails_closed_and_loaded_flows_are_not_counted():
    assert unguarded_hooks(Metrics()) == []
    metrics = Metrics()
    with taddons.context(metrics):
        flow = call_flow(decision="allow")
        flow.live = False
        finish(metrics, flow)
        assert value(metrics, "toolgate_calls_total", protocol="mcp", function="get_customer",
                     decision="allow", enforced="allow") == 0


def test_a_call_is_counted_once_with_its_times():
    metrics = Metrics()
    with taddons.context(metrics):
        flow = call_flow(decision="mask")
        metrics.request(flow)
        start = flow.request.timestamp_start
        metrics._forwarded[flow][0] = start + 0.1  # it left 100 ms in
        flow.response = tutils.tresp()
        metrics.responseheaders(flow)
        flow.response.timestamp_end = start + 0.4  # the backend took 300 ms
        metrics.response(flow)
        metrics.error(flow)  # a call ends once
        labels = {"protocol": "mcp"}
        assert value(metrics, "toolgate_calls_total", protocol="mcp", function="get_customer",
                     decision="mask", enforced="mask") == 1
        assert value(metrics, "toolgate_call_seconds_count", **labels) == 1
        assert value(metrics, "toolgate_backend_seconds_sum", **labels) == pytest.approx(0.3)
        total = value(metrics, "toolgate_call_seconds_sum", **labels)
        assert total == pytest.approx(1.0, abs=0.05)
        own = value(metrics, "toolgate_gateway_seconds_sum", **labels)
        assert own == pytest.approx(total - 0.3)


def test_a_refused_call_has_no_backend_time_and_the_backends_answer_counts_when_replaced():
    metrics = Metrics()
    with taddons.context(metrics):
        blocked = call_flow(protocol="rest", function="crm.export", decision="block",
                            forwarded=False)
        refuse(blocked, Refusal("blocked", "no"))
        finish(metrics, blocked)
        assert value(metrics, "toolgate_calls_total", protocol="rest", function="crm.export",
                     decision="block", enforced="block") == 1
        assert value(metrics, "toolgate_backend_seconds_count", protocol="rest") == 0
        assert value(metrics, "toolgate_gateway_seconds_count", protocol="rest") == 1

        answered = call_flow(protocol="rest", function="crm.export", decision="block")
        metrics.request(answered)
        answered.response = tutils.tresp()
        metrics.responseheaders(answered)
        answered.response.timestamp_end = time.time()
        refuse(answered, Refusal("blocked", "the answer may not leave"))  # replaced
        metrics.response(answered)
        assert value(metrics, "toolgate_backend_seconds_count", protocol="rest") == 1


def test_function_labels_are_bounded_and_never_a_path():
    metrics = Metrics()
    with taddons.context(metrics):
        for i in range(MAX_FUNCTIONS + 20):
            finish(metrics, call_flow(function=f"tool_{i}", decision="allow"))
        finish(metrics, call_flow(protocol="rest", function="GET /customers/42",
                                  path="/customers/42", method="GET", decision="allow"))
        finish(metrics, call_flow(protocol="weird", function=None, path="/x/y", decision=None))
        families = {f.name: f for f in text_string_to_metric_families(
            generate_latest(metrics.registry).decode())}
        samples = [s for s in families["toolgate_calls"].samples if s.name.endswith("_total")]
        functions = {s.labels["function"] for s in samples}
        assert len(functions) == MAX_FUNCTIONS + 2  # the first 100, `other` and `unnamed`
        assert {"other", "unnamed"} <= functions and not any("/" in f for f in functions)
        other = [s for s in samples if s.labels["function"] == "other"]
        assert sum(s.value for s in other) == 20
        assert {s.labels["protocol"] for s in samples} == {"mcp", "rest", "http"}
        text = generate_latest(metrics.registry).decode()
        assert "alice-sub" not in text and "/customers" not in text and "c-" not in text


def test_identity_refusals_and_findings_are_counted():
    metrics = Metrics()
    with taddons.context(metrics):
        refused = call_flow(decision=None, forwarded=False)
        refuse(refused, Refusal("identity", "the token has expired: get a new one from the issuer"))
        finish(metrics, refused)
        assert value(metrics, "toolgate_identity_refusals_total", reason="expired") == 1
        assert value(metrics, "toolgate_calls_total", protocol="http", function="unnamed",
                     decision="deny", enforced="deny") == 1

        found = call_flow(decision="mask")
        rows = [FindingRow("response", f"$[{i}].ssn", "ssn", "restricted", "mask", "f")
                for i in range(3)]
        found.metadata["toolgate.findings"] = [native.FindingTable(rows).encode()]
        finish(metrics, found)
        assert value(metrics, "toolgate_findings_total", label="ssn", action="mask") == 3


def test_off_means_no_per_call_series_and_the_state_is_still_served():
    metrics, approvals = Metrics(), Approvals()
    with taddons.context(approvals, metrics) as tctx:
        tctx.configure(metrics, toolgate_metrics=False)
        finish(metrics, call_flow(decision="allow"))
        text = generate_latest(metrics.registry).decode()
        families = {f.name: f for f in text_string_to_metric_families(text)}
        assert not families["toolgate_calls"].samples
        assert not families["toolgate_call_seconds"].samples
        assert families["toolgate_approvals_held"].samples[0].value == 0
        tctx.configure(metrics, toolgate_metrics=True)
        finish(metrics, call_flow(decision="allow"))
        assert value(metrics, "toolgate_calls_total", protocol="mcp", function="get_customer",
                     decision="allow", enforced="allow") == 1


def test_a_held_calls_wait_is_timed_and_not_the_gateways():
    metrics, approvals = Metrics(), Approvals()
    with taddons.context(approvals, metrics):
        metrics.running()
        assert metrics.waits in approvals.logs
        flow = call_flow(protocol="rest", function="deploy.start", decision="approve")
        flow.request.timestamp_start = time.time() - 5.5
        now = time.time()
        metrics.waits.record(ApprovalDecision(
            flow.metadata["toolgate.call_id"], now - 5.0, now, "approved", "carol", "cli", "ok",
            "call"))
        finish(metrics, flow)
        assert value(metrics, "toolgate_approvals_wait_seconds_sum", decision="approved") \
            == pytest.approx(5.0)
        assert value(metrics, "toolgate_gateway_seconds_sum", protocol="rest") < 1.0
        assert value(metrics, "toolgate_call_seconds_sum", protocol="rest") > 5.4
        metrics.done()
        assert metrics.waits not in approvals.logs


class Recorder:
    """Stands in for the recorder addon (found by its name, `recorder`)."""

    def health(self):
        return {
            "recording": True, "store_ok": False,
            "backlog": {"records": 12, "journal_bytes": 4096},
            "stats": {"commits": 7, "failures": 1, "journal_appends": 9, "commit_seconds": 0.25},
        }


class Policy:
    """Stands in for the policy addon and its rule files."""

    class rules:  # noqa: N801
        reload_failures = 2


def test_the_state_is_read_when_scraped():
    with taddons.context(Recorder(), Policy()):
        families = {f.name: f for f in text_string_to_metric_families(
            generate_latest(state_registry()).decode())}
    sample = {name: families[name].samples[0].value for name in families}
    assert sample["toolgate_store_recording"] == 1 and sample["toolgate_store_ok"] == 0
    assert sample["toolgate_store_backlog_records"] == 12
    assert sample["toolgate_store_backlog_bytes"] == 4096
    assert sample["toolgate_store_commits"] == 7 and sample["toolgate_store_failures"] == 1
    commits = {s.name: s.value for s in families["toolgate_store_commit_seconds"].samples}
    assert commits == {"toolgate_store_commit_seconds_count": 7,
                       "toolgate_store_commit_seconds_sum": 0.25}
    assert "toolgate_store_journal_append_seconds" not in families  # not kept by the writer
    assert families["toolgate_reload_failures"].samples[0].labels == {"files": "rules"}
    assert sample["toolgate_reload_failures"] == 2
    # no archive, OCSF stream or tracing configured: none of their series
    assert not [n for n in families if n.startswith(("toolgate_archive", "toolgate_ocsf",
                                                     "toolgate_trace"))]


class ArchivingRecorder(Recorder):
    name = "recorder"

    def health(self):
        return {**super().health(),
                "archive": {"dir": "/arch", "seals": 3, "segments": 6, "failures": 1,
                            "registered": 5, "control_failures": 2, "unregistered": 1,
                            "last_seal": "2026-12-06T09:00:00Z"},
                "ocsf": {"file": "/x.jsonl", "queued": 4, "calls": 10, "events": 31,
                         "dropped": 2, "failed": 1, "error": None}}


class Tracing:
    """Stands in for the tracing addon (found by its name, `tracing`)."""

    pipeline = object()
    spans_exported, spans_dropped, export_failures, collector_down = 40, 8, 2, True


def test_the_archive_the_ocsf_stream_and_the_traces_are_counted_when_set():
    with taddons.context(ArchivingRecorder(), Policy(), Tracing()):
        families = {f.name: f for f in text_string_to_metric_families(
            generate_latest(state_registry()).decode())}
    sample = {name: families[name].samples[0].value for name in families}
    assert (sample["toolgate_archive_seals"], sample["toolgate_archive_segments"],
            sample["toolgate_archive_failures"], sample["toolgate_archive_registered"],
            sample["toolgate_archive_control_failures"],
            sample["toolgate_archive_unregistered_segments"]) == (3, 6, 1, 5, 2, 1)
    assert (sample["toolgate_ocsf_calls"], sample["toolgate_ocsf_events"],
            sample["toolgate_ocsf_dropped"], sample["toolgate_ocsf_failed"],
            sample["toolgate_ocsf_queued"]) == (10, 31, 2, 1, 4)
    assert (sample["toolgate_trace_spans_exported"], sample["toolgate_trace_spans_dropped"],
            sample["toolgate_trace_export_failures"],
            sample["toolgate_trace_collector_up"]) == (40, 8, 2, 0)
    assert families["toolgate_trace_spans_exported"].type == "counter"


def test_the_admin_api_serves_the_registry_as_prometheus_text():
    async def scenario():
        approvals, metrics = Approvals(), Metrics()

        class Anyone:
            class verifier:  # noqa: N801
                @staticmethod
                async def verify(token):
                    return Caller("carol", "i", ("sre-leads",), None)

        admin = Admin(Anyone(), approvals)
        with taddons.context(approvals, admin, metrics):
            finish(metrics, call_flow(decision="allow"))
            status, text = await admin.dispatch(AdminRequest(
                "GET", "/metrics", {}, {"Authorization": "Bearer t"}))
            assert status == 200 and isinstance(text, str)
            families = {f.name: f for f in text_string_to_metric_families(text)}
            assert families["toolgate_calls"].samples[0].value == 1
            assert families["toolgate_approvals_held"].samples[0].value == 0
            assert families["toolgate_admin_requests"].type == "counter"

    asyncio.run(scenario())


def test_an_answer_we_cannot_read_is_an_other_identity_refusal():
    metrics = Metrics()
    with taddons.context(metrics):
        flow = call_flow(decision=None, forwarded=False)
        flow.response = tutils.tresp(status_code=401, content=b"not json")
        flow.metadata["toolgate.refused"] = "identity"
        finish(metrics, flow)
        assert value(metrics, "toolgate_identity_refusals_total", reason="other") == 1
