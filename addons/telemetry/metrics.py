"""Prometheus metrics: every call as it ends, and the gateway's state as it is when scraped.

The addon owns a `prometheus_client` registry (never the library's global one), which the admin
API serves as `GET /metrics` in Prometheus text format. It sits after the recorder, so a call is
counted as it was recorded and its times include the record's commit under `audit`
durability; each call is observed once, by the `response` or `error` hook that ends it.

Per call (`toolgate_metrics`, on by default; off, none of these move):

- `toolgate_calls_total{protocol, function, decision, enforced}`: `decision` and `enforced`
  as the `calls` table has them (`sessions.records.final_decision`);
- `toolgate_findings_total{label, action}`: every row the `findings` table gets;
- `toolgate_identity_refusals_total{reason}`: calls refused 401, by `identity_reason`;
- `toolgate_call_seconds{protocol}`: the request's first byte to the answer leaving;
  `toolgate_backend_seconds{protocol}`: forwarded calls, the request leaving to the backend's
  answer complete (or failed); `toolgate_gateway_seconds{protocol}`: what is left, the
  gateway's own time (a call's wait for an approval is not counted in it).

When read (`GatewayState`): held calls and the oldest one's age, grants, decisions on held
calls by outcome and channel and how long they waited (`toolgate_approvals_wait_seconds`,
observed as they are recorded), webhook failures, the store's health, commits and backlog,
the archive's seals and the OCSF stream's writes (when set), spans exported and dropped (with
tracing), the fleet link, rule and credentials files that failed to reload, admin API requests.

Label values are bounded: protocols and decisions are fixed sets, function names the first
`MAX_FUNCTIONS` seen (then `other`; a call named only by its method and path is `unnamed`),
finding labels the first `MAX_LABELS`. Never a caller, a call id, a URL or a path.
"""

from __future__ import annotations

import json
import logging
import re
import time
import weakref
from collections import Counter as Tally
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import prometheus_client
from mitmproxy import ctx, http
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import (
    CounterMetricFamily, GaugeMetricFamily, Metric, SummaryMetricFamily,
)
from prometheus_client.registry import Collector

from toolgate.addons import flowmeta, settings
from toolgate.addons.failclosed.hooks import flow_hook
from toolgate.addons.recording.addon import call_findings
from toolgate.rules.catalog import is_rest_name
from toolgate.sessions.records import FindingTable, final_decision, finding_table

logger = logging.getLogger(__name__)

OTHER = "other"
UNNAMED = "unnamed"
MAX_FUNCTIONS = 100
MAX_LABELS = 200
MAX_LABEL_LENGTH = 128
PROTOCOLS = frozenset({"mcp", "openai", "anthropic", "rest", "http"})
# Seconds. A call's own part is around a millisecond; a whole call can include a human's decision.
CALL_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                5.0, 10.0, 30.0, 60.0, 300.0)
WAIT_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 86400.0)
# How many held calls' waits are kept for the calls still to end (`hold: return` calls never
# come back for theirs).
HELD_KEPT = 4096

# Why a token was refused, from the start of the identity addon's message (`oidc.py` spells
# them; a token's kid or alg quoted later in a message never decides). First match wins.
IDENTITY_REASONS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (reason, re.compile("|".join(patterns))) for reason, patterns in (
        ("missing", (r"no bearer token", r"the [\w-]+ header has an empty bearer token")),
        ("malformed", (r"the [\w-]+ header is not a bearer token",
                       r"the [\w-]+ header holds characters",
                       r"the bearer token is longer than",
                       r"the bearer token is not a well-formed")),
        ("expired", (r"the token has expired",)),
        ("not_yet_valid", (r"the token is not valid yet",)),
        ("signature", (r"the token's signature does not verify",)),
        ("audience", (r"the token's audience is not",)),
        ("issuer", (r"the token was not issued by",)),
        ("key", (r"the token's kid is not", r"the token has no kid", r"no signing key with kid",
                 r"the issuer's signing keys are unavailable")),
        ("algorithm", (r"unsigned tokens \(alg 'none'\)", r"algorithm ",
                       r"the issuer's key is for ")),
        ("claim", (r"the token has no '", r"the token's sub claim")),
    )
)
IDENTITY_REASON_NAMES = tuple(reason for reason, _ in IDENTITY_REASONS) + (OTHER,)


def identity_reason(message: str | None) -> str:
    """The reason an identity refusal's message gives, as one of `IDENTITY_REASON_NAMES`."""
    for reason, pattern in IDENTITY_REASONS:
        if message and pattern.match(message):
            return reason
    return OTHER


class BoundedNames:
    """Label values as first seen, at most `limit` of them per process; `other` after that,
    and for a value longer than MAX_LABEL_LENGTH."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.known: dict[str, str] = {}

    def __call__(self, value: str) -> str:
        known = self.known.get(value)
        if known is not None:
            return known
        if len(self.known) >= self.limit or len(value) > MAX_LABEL_LENGTH:
            return OTHER
        self.known[value] = value
        return value


def finding_counts(items: Iterable[Any] | FindingTable | None) -> Tally[tuple[str, str]]:
    """(label, action) -> how many of a call's findings (`flowmeta.FINDINGS` items, or their
    table) have them; an absent one reads "". Calls with nothing found cost nothing."""
    if not items:
        return Tally()
    counts: Tally[tuple[str, str]] = Tally()
    for (label, action), n in finding_table(items).label_actions():  # counted in the core
        counts[(label or "", action or "")] += n
    return counts


def refusal_message(response: http.Response | None) -> str | None:
    """The message of toolgate's own JSON refusal (`answers.error_document`)."""
    try:
        return json.loads(response.content)["error"]["message"]  # type: ignore[union-attr]
    except Exception:  # noqa: BLE001 - not our refusal's shape: no message
        return None


class Metrics:
    def __init__(self) -> None:
        # A `_created` series beside every labelled counter and histogram doubles what a
        # Prometheus server stores, for a time nobody here uses (a process-wide switch).
        prometheus_client.disable_created_metrics()
        self.registry = CollectorRegistry()
        self.enabled = True
        registry = self.registry
        self.calls = Counter("toolgate_calls", "Calls, by protocol, function, decision and what "
                             "was enforced.", ("protocol", "function", "decision", "enforced"),
                             registry=registry)
        self.findings = Counter("toolgate_findings", "Classified values, by label and action.",
                                ("label", "action"), registry=registry)
        self.identity_refusals = Counter("toolgate_identity_refusals", "Calls refused for their "
                                         "token, by reason.", ("reason",), registry=registry)
        self.call_seconds = Histogram("toolgate_call_seconds", "A call from its request's first "
                                      "byte to its answer leaving.", ("protocol",),
                                      buckets=CALL_BUCKETS, registry=registry)
        self.backend_seconds = Histogram("toolgate_backend_seconds", "A forwarded call from "
                                         "the request leaving to the backend's answer "
                                         "complete.", ("protocol",), buckets=CALL_BUCKETS,
                                         registry=registry)
        self.gateway_seconds = Histogram("toolgate_gateway_seconds", "The gateway's own part of "
                                         "a call: all of it but the backend's and a wait for an "
                                         "approval.", ("protocol",), buckets=CALL_BUCKETS,
                                         registry=registry)
        self.wait_seconds = Histogram("toolgate_approvals_wait_seconds", "How long held calls "
                                      "waited for their decision.", ("decision",),
                                      buckets=WAIT_BUCKETS, registry=registry)
        registry.register(GatewayState())
        self.waits = HoldWaits(self.wait_seconds)
        self._functions = BoundedNames(MAX_FUNCTIONS)
        self._labels = BoundedNames(MAX_LABELS)
        # Label children, bound once: `labels()` validates and locks on every call.
        self._call_children: dict[tuple[str, str, str, str], Any] = {}
        self._finding_children: dict[tuple[str, str], Any] = {}
        self._timers: dict[str, tuple[Any, Any, Any]] = {}
        # Forwarded calls: [when the request left, the backend's answer once its headers came].
        self._forwarded: weakref.WeakKeyDictionary[http.HTTPFlow, list[Any]] = (
            weakref.WeakKeyDictionary())
        self._ended: weakref.WeakSet[http.HTTPFlow] = weakref.WeakSet()

    def load(self, loader) -> None:
        loader.add_option(
            "toolgate_metrics", bool, True,
            "Count and time every call for GET /metrics on the admin API. Off, the state "
            "(held calls, the store, the fleet) is still served.",
        )

    def configure(self, updated: set[str]) -> None:
        if "toolgate_metrics" in updated:  # read on every call: kept here
            self.enabled = ctx.options.toolgate_metrics

    def running(self) -> None:
        # The approvals addon hands every decision it records to its logs: one of them times
        # the wait.
        approvals = ctx.master.addons.get("approvals")
        logs = getattr(approvals, "logs", None)
        if isinstance(logs, list) and self.waits not in logs:
            logs.append(self.waits)

    def done(self) -> None:
        approvals = ctx.master.addons.get("approvals")
        logs = getattr(approvals, "logs", None)
        if isinstance(logs, list) and self.waits in logs:
            logs.remove(self.waits)

    # -- a call's times ----------------------------------------------------------------------

    @flow_hook
    def request(self, flow: http.HTTPFlow) -> None:
        # After the recorder: a call it let through is forwarded now.
        if self.enabled and flow.response is None and (
                flow.metadata.get(flowmeta.RECORDED) == "request"):
            self._forwarded[flow] = [time.time(), None]

    @flow_hook
    def responseheaders(self, flow: http.HTTPFlow) -> None:
        forwarded = self._forwarded.get(flow)
        if forwarded is not None and forwarded[1] is None:
            forwarded[1] = flow.response  # the backend's, even if a refusal replaces it later

    @flow_hook
    def response(self, flow: http.HTTPFlow) -> None:
        self._end(flow)

    @flow_hook
    def error(self, flow: http.HTTPFlow) -> None:
        self._end(flow)

    def _end(self, flow: http.HTTPFlow) -> None:
        if not self.enabled or flow in self._ended:
            return
        self._ended.add(flow)
        try:
            self._observe(flow, time.time())
        except Exception:  # noqa: BLE001 - a metric never fails a call
            logger.exception("toolgate: the metrics of a call failed")

    def _observe(self, flow: http.HTTPFlow, now: float) -> None:
        meta = flow.metadata
        forwarded = self._forwarded.pop(flow, None)
        policy = meta.get(flowmeta.DECISION) or {}
        refused = meta.get(flowmeta.REFUSED)
        decision, enforced, _, _ = final_decision(policy, refused, forwarded is not None)
        protocol = policy.get("protocol") or "http"
        if protocol not in PROTOCOLS:
            protocol = OTHER
        function = flowmeta.shown_function(meta, policy.get("function"))
        function = (UNNAMED if is_rest_name(function, flow.request.method)
                    else self._functions(function))
        key = (protocol, function, decision, enforced)
        child = self._call_children.get(key)
        if child is None:
            child = self._call_children[key] = self.calls.labels(*key)
        child.inc()

        if refused == "identity":
            self.identity_refusals.labels(identity_reason(refusal_message(flow.response))).inc()
        if meta.get(flowmeta.FINDINGS):
            # The recorder, just before, made the same table.
            for (label, action), n in finding_counts(call_findings(flow)).items():
                pair = (self._labels(label), action if len(action) <= MAX_LABEL_LENGTH else OTHER)
                found = self._finding_children.get(pair)
                if found is None:
                    found = self._finding_children[pair] = self.findings.labels(*pair)
                found.inc(n)

        timers = self._timers.get(protocol)
        if timers is None:
            timers = self._timers[protocol] = (self.call_seconds.labels(protocol),
                                               self.backend_seconds.labels(protocol),
                                               self.gateway_seconds.labels(protocol))
        total = max(0.0, now - flow.request.timestamp_start)
        backend = 0.0
        if forwarded is not None:
            sent, answer = forwarded
            end = answer.timestamp_end if answer is not None else None
            if not end:
                end = flow.error.timestamp if flow.error is not None else now
            backend = max(0.0, end - sent)
            timers[1].observe(backend)
        held = self.waits.take(meta.get(flowmeta.CALL_ID)) if self.waits.held else 0.0
        timers[0].observe(total)
        timers[2].observe(max(0.0, total - backend - held))


class HoldWaits:
    """A decision log (`approvals.ledger.DecisionLog`) that observes how long each held call
    waited, and keeps it for the call's own metrics (its wait is not the gateway's time)."""

    def __init__(self, histogram: Histogram) -> None:
        self.histogram = histogram
        self.held: dict[str, float] = {}  # call id -> seconds waited

    def record(self, record: Any) -> None:
        try:
            waited = max(0.0, float(record.decided_at) - float(record.requested_at))
            self.histogram.labels(record.decision).observe(waited)
            self.held[record.call_id] = waited
            if len(self.held) > HELD_KEPT:
                del self.held[next(iter(self.held))]
        except Exception:  # noqa: BLE001 - raising would mean "not recorded" to approvals
            logger.exception("toolgate: the metrics of an approval decision failed")

    def take(self, call_id: str | None) -> float:
        return self.held.pop(call_id, 0.0) if call_id else 0.0


# -- the gateway's state, read when scraped ----------------------------------------------------

class GatewayState(Collector):
    """The gateway's state when scraped: the approvals addon's held calls, grants and decisions,
    the recorder's `health()`, the fleet link, reload failures and admin API requests. Addons
    not given are found on the running mitmproxy (absent ones add nothing)."""

    def __init__(self, approvals: Any = None, admin: Any = None) -> None:
        self.approvals, self.admin = approvals, admin

    def collect(self) -> Iterator[Metric]:
        addons = ctx.master.addons
        approvals = self.approvals or addons.get("approvals")
        admin = self.admin or addons.get("admin")
        if approvals is not None:
            yield from approval_families(approvals, time.time())
        if admin is not None:
            yield from admin_families(admin.requests)
        recorder = addons.get("recorder")
        health = getattr(recorder, "health", None)
        store = health() if callable(health) else None
        yield from store_families(store)
        if store:
            yield from archive_families(store.get("archive"))
            yield from ocsf_families(store.get("ocsf"))
        yield from trace_families(addons.get("tracing"))
        fleet = getattr(approvals, "fleet", None)
        yield from node_families(_node(), fleet.health() if fleet is not None else None)
        yield from reload_families({
            "rules": getattr(getattr(addons.get("policy"), "rules", None), "reload_failures", None),
            "credentials": getattr(addons.get("credentials"), "reload_failures", None),
        })


def approval_families(approvals: Any, now: float) -> Iterator[Metric]:
    pending = approvals.held.pending()
    yield GaugeMetricFamily("toolgate_approvals_held", "Calls waiting for a decision.",
                            len(pending))
    yield GaugeMetricFamily("toolgate_approvals_oldest_held_seconds",
                            "Age of the oldest held call.",
                            max((now - h.requested_at for h in pending), default=0.0))
    yield GaugeMetricFamily("toolgate_approvals_grants_active", "Time-boxed grants in force.",
                            len(approvals.grants.active(now)))
    decisions = CounterMetricFamily("toolgate_approvals_decisions", "Decisions on held calls.",
                                    labels=("decision", "channel"))
    for (decision, channel), n in sorted(approvals.stats.items()):
        decisions.add_metric((decision, channel), n)
    yield decisions
    yield CounterMetricFamily("toolgate_approvals_webhook_failures",
                              "Webhook notifications that failed.", approvals.webhook_failures)


def admin_families(requests: Mapping[int, int]) -> Iterator[Metric]:
    family = CounterMetricFamily("toolgate_admin_requests", "Admin API requests by status.",
                                 labels=("code",))
    for status, n in sorted(requests.items()):
        family.add_metric((str(status),), n)
    yield family


def store_families(store: Mapping[str, Any] | None) -> Iterator[Metric]:
    """Whether calls can be recorded, what the journal holds that DuckDB has not taken yet, and
    the writer's counts (`recorder.health()`)."""
    if not store:
        return
    backlog = store.get("backlog") or {}
    stats = store.get("stats") or {}
    yield GaugeMetricFamily("toolgate_store_recording", "Whether calls can be recorded now "
                            "(1) or are refused.", 1 if store.get("recording") else 0)
    yield GaugeMetricFamily("toolgate_store_ok", "Whether the DuckDB store itself takes "
                            "records (1); 0 while they wait in the journal.",
                            0 if store.get("store_ok") is False else 1)
    yield GaugeMetricFamily("toolgate_store_backlog_records", "Records accepted and not yet in "
                            "the DuckDB store.", int(backlog.get("records") or 0))
    yield GaugeMetricFamily("toolgate_store_backlog_bytes", "Journal bytes not yet in the "
                            "DuckDB store.", int(backlog.get("journal_bytes") or 0))
    for name, key, help_text in (
        ("toolgate_store_commits", "commits", "DuckDB transactions committed."),
        ("toolgate_store_failures", "failures", "Journal appends and DuckDB commits that "
                                                "failed."),
        ("toolgate_store_journal_appends", "journal_appends", "Group appends (each one fsync) "
                                                              "to the journal."),
    ):
        yield CounterMetricFamily(name, help_text, int(stats.get(key) or 0))
    # How long commits and journal appends take, once the writer keeps their total time.
    for name, key, count, help_text in (
        ("toolgate_store_commit_seconds", "commit_seconds", "commits", "DuckDB commits."),
        ("toolgate_store_journal_append_seconds", "journal_seconds", "journal_appends",
         "Journal appends, fsync included (what audit durability waits for)."),
    ):
        if key in stats:
            yield SummaryMetricFamily(name, help_text, count_value=int(stats.get(count) or 0),
                                      sum_value=float(stats[key]))


def archive_families(archive: Mapping[str, Any] | None) -> Iterator[Metric]:
    """With `toolgate_archive`: seals and segments written, registered in the control plane,
    and failures (`sessions.archive.Archive.health()`)."""
    if not archive:
        return
    for name, key, help_text in (
        ("toolgate_archive_seals", "seals", "Seals that wrote segments to the fleet's archive."),
        ("toolgate_archive_segments", "segments", "Parquet segments written to the archive."),
        ("toolgate_archive_failures", "failures", "Seals that failed (tried again at the next "
                                                  "interval)."),
        ("toolgate_archive_registered", "registered", "Segments registered in the control "
                                                      "plane."),
        ("toolgate_archive_control_failures", "control_failures", "Registrations in the "
                                                                  "control plane that failed."),
    ):
        yield CounterMetricFamily(name, help_text, int(archive.get(key) or 0))
    if archive.get("unregistered") is not None:
        yield GaugeMetricFamily("toolgate_archive_unregistered_segments", "Segments written "
                                "and not yet registered in the control plane.",
                                int(archive["unregistered"]))


def ocsf_families(stream: Mapping[str, Any] | None) -> Iterator[Metric]:
    """With `toolgate_ocsf_file`: what the OCSF stream wrote, dropped and failed to write
    (`sessions.ocsf_stream.OcsfStream.health()`)."""
    if not stream:
        return
    for name, key, help_text in (
        ("toolgate_ocsf_calls", "calls", "Calls whose OCSF events were written to the file."),
        ("toolgate_ocsf_events", "events", "OCSF events written to the file."),
        ("toolgate_ocsf_dropped", "dropped", "Calls not streamed: the queue was full."),
        ("toolgate_ocsf_failed", "failed", "Calls whose events could not be written."),
    ):
        yield CounterMetricFamily(name, help_text, int(stream.get(key) or 0))
    yield GaugeMetricFamily("toolgate_ocsf_queued", "Calls waiting to be streamed.",
                            int(stream.get("queued") or 0))


def trace_families(tracing: Any) -> Iterator[Metric]:
    """With `toolgate_otlp_endpoint` (or spans already counted): spans exported and dropped,
    exports that failed, and whether the collector is reached."""
    if tracing is None or (getattr(tracing, "pipeline", None) is None
                           and not getattr(tracing, "spans_exported", 0)
                           and not getattr(tracing, "spans_dropped", 0)):
        return
    yield CounterMetricFamily("toolgate_trace_spans_exported", "Spans the trace collector took.",
                              int(tracing.spans_exported))
    yield CounterMetricFamily("toolgate_trace_spans_dropped", "Spans dropped: the collector "
                              "could not be reached, or the queue was full.",
                              int(tracing.spans_dropped))
    yield CounterMetricFamily("toolgate_trace_export_failures", "Exports to the trace "
                              "collector that failed.", int(tracing.export_failures))
    if tracing.pipeline is not None:
        yield GaugeMetricFamily("toolgate_trace_collector_up", "Whether the trace collector is "
                                "reached (1) or spans are dropped (0).",
                                0 if tracing.collector_down else 1)


def node_families(node: str | None, control: Mapping[str, Any] | None) -> Iterator[Metric]:
    """Which node this is, and (in a fleet) whether it reaches the control plane."""
    if node is None and control is None:
        return
    info = GaugeMetricFamily("toolgate_node_info", "This gateway's node id in a fleet.",
                             labels=("node",))
    info.add_metric((node or "",), 1)  # node ids are [A-Za-z0-9._-]
    yield info
    if control is not None:
        yield GaugeMetricFamily("toolgate_control_up", "Whether the fleet's control plane is "
                                "reached (1) or not (0: holds and decisions are refused).",
                                1 if control.get("connected") else 0)


def reload_families(failures: Mapping[str, int | None]) -> Iterator[Metric]:
    family = CounterMetricFamily("toolgate_reload_failures", "Rule or credentials files that "
                                 "changed and did not load (the last good ones stay).",
                                 labels=("files",))
    for files, n in failures.items():
        if n is not None:
            family.add_metric((files,), n)
    if family.samples:
        yield family


def state_registry(approvals: Any = None, admin: Any = None) -> CollectorRegistry:
    """A registry of the state alone, for an admin API without the metrics addon."""
    registry = CollectorRegistry()
    registry.register(GatewayState(approvals, admin))
    return registry


def _node() -> str | None:
    try:
        return settings.node_id(ctx.options)
    except (ValueError, AttributeError):
        return None
