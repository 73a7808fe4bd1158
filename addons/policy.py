"""Policy: classifies, masks, blocks or holds every call, in the shape its protocol expects.

Requests are decided before they are forwarded, responses before they are answered; event
streams are checked event by event as they pass. The protocol layer (`rules.protocols`)
turns a body into the function calls in it, the rule engine (`rules`) decides each one, and
this addon applies the outcome to the flow. A body that cannot be inspected is refused.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from typing import Any, Optional

from mitmproxy import command, ctx, exceptions, http

from addons import bodies, settings
from addons.answers import Refusal, call_id_of, error_document, refuse
from addons.decisions import CallDecision, decision_header, summarize
from addons.failclosed import flow_hook
from addons.identity import IDENTITY_KEY
from addons.rulefiles import RuleFiles
from rules import Call, Decision, RuleSet, evaluate
from rules.protocols import (
    EVENT_STREAM, Message, ProtocolError, Refused, StreamChecker, Unit, media_type,
    parse_request, parse_response,
)

logger = logging.getLogger(__name__)

MODES = ("enforce", "monitor")
DEFAULT_MAX_BODY = "10MiB"
CONTEXT_KEY = "toolgate.protocol"  # what a response needs to know of its request
DECISION_HEADER = "X-Toolgate-Decision"
# What the session store keeps instead of the flow's own bodies (see `_keep_record`).
RECORD_KEYS = {"request": "toolgate.record_request", "response": "toolgate.record_response"}
RECORD_QUERY_KEY = "toolgate.record_query"
BACKSTOP_MARGIN = 16 * 1024 * 1024


class Policy:
    def __init__(self) -> None:
        self.max_body = settings.parse_size(DEFAULT_MAX_BODY)
        self.mask_key = secrets.token_bytes(32)
        self.rules = RuleFiles()
        self._watcher: asyncio.Task[None] | None = None

    def load(self, loader) -> None:
        loader.add_option(
            "toolgate_rules", str, "",
            "A rule file or a folder of them. Empty: the bundled packs.",
        )
        loader.add_option(
            "toolgate_mode", str, "enforce",
            "enforce, or monitor: decide and record everything, change nothing (the answer "
            "says what would have happened in X-Toolgate-Decision).",
            choices=MODES,
        )
        loader.add_option(
            "toolgate_max_body", str, DEFAULT_MAX_BODY,
            "Bodies larger than this (e.g. 10MiB, 512KiB), on the wire or decoded, are "
            "refused, never passed uninspected.",
        )
        loader.add_option(
            "toolgate_mask_key", Optional[str], None,
            "The key of hash masks and fingerprints: env:NAME or file:PATH. Unset, a key "
            "file beside the session store (toolgate_db + '.key') is used, created if missing.",
        )

    def configure(self, updated: set[str]) -> None:
        try:
            if "toolgate_mode" in updated:
                settings.check_choice("toolgate_mode", ctx.options.toolgate_mode, MODES)
            if "toolgate_max_body" in updated:
                self.max_body = settings.parse_size(ctx.options.toolgate_max_body)
            if updated & {"toolgate_mask_key", "toolgate_db"} and "toolgate_db" in ctx.options:
                self.mask_key = self._mask_key()
            if "toolgate_rules" in updated:
                self.rules.load(ctx.options.toolgate_rules)  # raises with file:line
        except ValueError as exc:
            raise exceptions.OptionsError(str(exc)) from None

    def _mask_key(self) -> bytes:
        ref = ctx.options.toolgate_mask_key
        if ref:
            return settings.resolve_secret(ref, "toolgate_mask_key")
        path = settings.default_mask_key_file(ctx.options.toolgate_db)
        try:
            key = settings.load_or_create_key(path)
        except OSError as exc:
            raise ValueError(f"toolgate_mask_key is unset and {path} cannot be created: "
                             f"{exc.strerror}") from None
        logger.info("toolgate: hash masks and fingerprints use the key in %s", path)
        return key

    def running(self) -> None:
        self._watcher = asyncio.get_running_loop().create_task(self.rules.watch())
        # A memory backstop for chunked bodies, whose size is known only once read: mitmproxy
        # refuses them itself past this; below it, `request`/`response` refuse them with our
        # answer. (mitmproxy checks its limit before our hooks run, so it must stay above ours.)
        ctx.options.update(body_size_limit=str(self.max_body + BACKSTOP_MARGIN))

    def done(self) -> None:
        if self._watcher:
            self._watcher.cancel()

    @command.command("toolgate.reload")
    def reload(self) -> None:
        """Reload the rule files now; the last good rules stay in force if they do not load."""
        self.rules.reload()

    # -- requests ----------------------------------------------------------------------------

    @flow_hook
    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None:
            return
        flow.request.stream = False  # a streamed body would pass unchecked: buffer it
        length = flow.request.headers.get("content-length", "")
        if length.isdigit() and int(length) > self.max_body:
            refuse(flow, Refusal("uninspectable", f"the request body is larger than "
                                 f"{self.max_body} bytes", status=413))
            return
        if EVENT_STREAM in flow.request.headers.get("accept", ""):
            # An event stream is checked as it passes: it must arrive unencoded.
            flow.request.headers["accept-encoding"] = "identity"

    @flow_hook
    def request(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None:
            return
        request = flow.request
        try:
            body = bodies.decode(request.raw_content or b"", request.headers.get("content-encoding"),
                                 self.max_body)
            message = parse_request(request.path.split("?", 1)[0], request.headers.get("content-type"),
                                    body, request.headers)
        except ProtocolError as exc:
            refuse(flow, _refusal(exc, request=True))
            return
        flow.metadata[CONTEXT_KEY] = message.context or {"protocol": message.protocol}
        outcome = self._decide(flow, message, "request")
        if outcome.action in ("block", "deny"):
            self._refuse(flow, outcome)
            return
        # Masks apply to a call held for approval too: the reviewer sees, and an approval
        # forwards, the masked arguments.
        if outcome.changed_body:
            request.content = message.encode()
        if outcome.query is not None:
            request.query.clear()
            for key, value in outcome.query.items():
                for item in value if isinstance(value, list) else [value]:
                    request.query.add(key, str(item))
        self._hand_over_approval(flow, outcome)

    # -- responses ---------------------------------------------------------------------------

    @flow_hook
    def responseheaders(self, flow: http.HTTPFlow) -> None:
        response = flow.response
        if response is None or flow.metadata.get("toolgate.refused"):
            return
        response.stream = False  # e.g. mitmproxy's stream_large_bodies: buffer and check
        if media_type(response.headers.get("content-type")) != EVENT_STREAM:
            return
        if response.headers.get("content-encoding", "identity").lower() != "identity":
            flow.metadata["toolgate.stream_refused"] = "an encoded event stream cannot be checked"
            return
        context = dict(flow.metadata.get(CONTEXT_KEY) or {})
        call_id = call_id_of(flow)

        def check(units: list[Unit]) -> Refused | None:
            outcome = self._decide(flow, Message(context.get("protocol", "rest"), units,
                                                 lambda: b"", context), "response",
                                   keep_record=False)
            return outcome.refused if outcome.refusal else None

        def render(refused: Refused, rpc_id: Any, jsonrpc: bool) -> dict[str, Any]:
            refusal = Refusal(refused.code, refused.message, refused.rule, refused.field)
            return error_document(refusal, call_id, jsonrpc=jsonrpc, rpc_id=rpc_id)

        if header := decision_header(flow):  # the request's: the stream's come too late
            response.headers[DECISION_HEADER] = header
        response.headers.pop("content-length", None)
        if response.http_version == "HTTP/1.1":
            response.headers["transfer-encoding"] = "chunked"
        response.stream = StreamChecker(context.get("protocol", "rest"), context, check, render,
                                        keep=self.max_body)

    @flow_hook
    def response(self, flow: http.HTTPFlow) -> None:
        response = flow.response
        if response is None or flow.metadata.get("toolgate.refused"):
            return
        if isinstance(response.stream, StreamChecker):
            # Already checked event by event; keep what the caller got, and its record version.
            response.content = bytes(response.stream.transcript)
            self._record_stream(flow, response.stream)
            return
        if reason := flow.metadata.get("toolgate.stream_refused"):
            refuse(flow, Refusal("uninspectable", reason, status=502))
            return
        try:
            body = bodies.decode(response.raw_content or b"",
                                 response.headers.get("content-encoding"), self.max_body)
            message = parse_response(flow.metadata.get(CONTEXT_KEY) or {},
                                     response.headers.get("content-type"), body)
        except ProtocolError as exc:
            refuse(flow, _refusal(exc, request=False))
            return
        outcome = self._decide(flow, message, "response")
        if outcome.action in ("block", "deny"):
            self._refuse(flow, outcome)
            return
        if outcome.changed_body:
            response.content = message.encode()
        self._hand_over_approval(flow, outcome)
        if header := decision_header(flow):
            response.headers[DECISION_HEADER] = header

    def _record_stream(self, flow: http.HTTPFlow, passed: StreamChecker) -> None:
        """The record version of a streamed answer: its transcript, checked again with every
        labelled value redacted (a second pass, for streams only)."""
        identity = flow.metadata.get(IDENTITY_KEY) or {}

        def redact(units: list[Unit]) -> Refused | None:
            for unit in units:
                decision = evaluate(self.rules.current, Call(
                    direction=unit.direction, protocol=unit.protocol, function=unit.function,
                    subject=identity.get("subject"), groups=tuple(identity.get("groups") or ()),
                    body=unit.body), self.mask_key, monitor=True)
                if decision.record_body is not unit.body:
                    unit.put(decision.record_body)
            return None

        again = StreamChecker(passed.protocol, dict(flow.metadata.get(CONTEXT_KEY) or {}), redact,
                              lambda refused, rpc_id, jsonrpc: {}, keep=len(passed.transcript))
        again(bytes(passed.transcript))
        again(b"")
        if bytes(again.transcript) != bytes(passed.transcript):
            flow.metadata[RECORD_KEYS["response"]] = bytes(again.transcript)

    # -- deciding ----------------------------------------------------------------------------

    def _decide(
        self, flow: http.HTTPFlow, message: Message, phase: str, keep_record: bool = True
    ) -> CallDecision:
        """Evaluate every unit of `message`, mask in place, and record the outcome on the flow.
        With `keep_record`, the message as the session store keeps it goes to the flow too."""
        ruleset: RuleSet = self.rules.current
        identity = flow.metadata.get(IDENTITY_KEY) or {}
        request = flow.request
        path = request.path.split("?", 1)[0]
        host = request.pretty_host  # parsed from the Host header on every access
        query = _query_items(request) if phase == "request" else None
        monitor = ctx.options.toolgate_mode == "monitor"
        decisions: list[tuple[Unit, Decision]] = []
        for unit in message.units:
            decision = evaluate(
                ruleset,
                Call(
                    direction=unit.direction, protocol=unit.protocol, function=unit.function,
                    method=request.method, host=host, path=path,
                    query=query if unit.protocol == "rest" else None,
                    subject=identity.get("subject"), groups=tuple(identity.get("groups") or ()),
                    body=unit.body, arguments=unit.arguments, content=unit.content,
                ),
                self.mask_key,
                monitor=monitor,
            )
            decisions.append((unit, decision))
            if decision.changed and decision.action != "block":
                unit.put(decision.body)
        if keep_record:
            _keep_record(flow, message, decisions, phase)
        outcome = summarize(decisions, phase, message.jsonrpc)
        outcome.record(flow)
        return outcome

    @staticmethod
    def _hand_over_approval(flow: http.HTTPFlow, outcome: CallDecision) -> None:
        if outcome.action == "approve":
            # The approvals addon, next in the chain, holds the call (or denies it).
            flow.metadata["toolgate.approval"] = outcome.approval

    @staticmethod
    def _refuse(flow: http.HTTPFlow, outcome: CallDecision) -> None:
        record = flow.metadata.get(RECORD_KEYS[outcome.phase])
        if outcome.phase == "request" and record is not None:
            flow.request.content = record  # never forwarded: keep nothing raw on the flow
        refused = outcome.refused
        assert refused is not None
        refuse(flow, Refusal(refused.code, refused.message, refused.rule, refused.field))


def _keep_record(
    flow: http.HTTPFlow, message: Message, decisions: list[tuple[Unit, Decision]], phase: str
) -> None:
    """The message as the session store keeps it, if that differs from what is forwarded:
    every labelled value the rules let through (or that a refused call carries) redacted."""
    differing = [(u, d) for u, d in decisions if d.record_body is not d.body]
    if phase == "request":
        query = next((d for u, d in decisions if u.protocol == "rest"
                      and d.record_query is not d.query and d.record_query), None)
        if query is not None:
            flow.metadata[RECORD_QUERY_KEY] = {k: v for k, v in query.record_query.items()}
    if not differing:
        return
    for unit, decision in differing:
        unit.put(decision.record_body)
    flow.metadata[RECORD_KEYS[phase]] = message.encode()
    for unit, decision in differing:  # back to what is forwarded
        unit.put(decision.body if decision.changed and decision.action != "block" else unit.body)


def _query_items(request: http.Request) -> dict[str, Any]:
    """The query parameters, each name once with its value or the list of its values.
    (`request.query` parses the URL again on every access: read its fields once.)"""
    items: dict[str, Any] = {}
    for key, value in request.query.fields:
        if key not in items:
            items[key] = value
        elif isinstance(items[key], list):
            items[key].append(value)
        else:
            items[key] = [items[key], value]
    return items


def _refusal(exc: ProtocolError, request: bool) -> Refusal:
    status = None
    if exc.code == "uninspectable":
        status = 413 if isinstance(exc, bodies.TooLarge) else 400
        status = status if request else 502
    elif not request:
        status = 502
    side = "request" if request else "backend's answer"
    return Refusal(exc.code, f"the {side} cannot be checked: {exc}", field=exc.field,
                   status=status)

