"""Policy: classifies, masks, blocks or holds every call, in the shape its protocol expects.

Requests are decided before they are forwarded, responses before they are answered; event
streams are checked event by event as they pass. The protocol layer (`rules.protocols`)
turns a body into the function calls in it, the rule engine (`rules`) decides each one, and
this addon applies the outcome to the flow. A body that cannot be inspected is refused.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import secrets
import urllib.parse
from typing import Any, Callable, Optional

from mitmproxy import command, ctx, exceptions, http
from mitmproxy.net.http import url

from toolgate.addons.policy import decoding
from toolgate.addons import flowmeta, settings
from toolgate.addons.answers import Refusal, call_id_of, error_document, refuse
from toolgate.addons.policy.outcome import (
    HEADERS_LOCATION, PATH_LOCATION, CallDecision, decision_header, summarize,
)
from toolgate.addons.failclosed.hooks import flow_hook
from toolgate.addons.headers import header_value
from toolgate.addons.policy.rulefiles import RuleFiles
from toolgate.rules import Call, Decision, RuleSet, evaluate
from toolgate.rules.bodies import rest_arguments
from toolgate.rules.catalog import rest_name
from toolgate.rules.protocols import (
    EVENT_STREAM, Message, ProtocolError, Refused, StreamChecker, Unit, jsonbody, media_type,
    parse_request, parse_response,
)
from toolgate.rules.protocols.sse import Event, encode_all, parse_all
from toolgate.rules.walk import Document
from toolgate.sessions.records import CREDENTIAL_HEADERS
from toolgate.sessions.sessionize import SESSION_HEADER, explicit_session, hashed_session

logger = logging.getLogger(__name__)

MODES = ("enforce", "monitor")
DEFAULT_MAX_BODY = "10MiB"
DECISION_HEADER = "X-Toolgate-Decision"
# What the session store keeps instead of the flow's own bodies (see `_keep_record`).
RECORD_KEYS = {"request": flowmeta.RECORD_REQUEST, "response": flowmeta.RECORD_RESPONSE}
# Header values as the store keeps them, by lower-case name, where they differ from the flow's.
RECORD_HEADER_KEYS = {"request": flowmeta.RECORD_REQUEST_HEADERS,
                      "response": flowmeta.RECORD_RESPONSE_HEADERS}
BACKSTOP_MARGIN = 16 * 1024 * 1024
# Header values are data, classified like a body value (see `_header_unit`), except these:
# framing and routing, credentials (the store redacts them; the caller's token is the identity
# addon's, injected ones the credentials addon's) and toolgate's own (`X-Toolgate-*`).
UNCLASSIFIED_HEADERS = CREDENTIAL_HEADERS | frozenset({
    "host", "content-length", "content-type", "content-encoding", "transfer-encoding",
    "connection", "keep-alive", "te", "trailer", "upgrade", "date", "via", "forwarded",
    "x-forwarded-for", "x-forwarded-host", "x-forwarded-proto", "x-forwarded-port", "x-real-ip",
    "mcp-session-id", "mcp-protocol-version", "last-event-id",
    # W3C trace context: random hex ids (one in ~1,500 holds a Luhn-valid 16-digit run)
    "traceparent", "tracestate",
})
TOOLGATE_HEADERS = "x-toolgate-"


class Policy:
    def __init__(self) -> None:
        self.max_body = settings.parse_size(DEFAULT_MAX_BODY)
        self.mask_key = secrets.token_bytes(32)
        self.rules = RuleFiles()
        self._watcher: asyncio.Task[None] | None = None
        # toolgate_mode == "monitor", kept by configure: reading an option costs two deep copies
        self.monitor = False

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
                self.monitor = ctx.options.toolgate_mode == "monitor"
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
        length = header_value(flow.request.headers, "content-length", "")
        if length.isdigit() and int(length) > self.max_body:
            refuse(flow, Refusal("uninspectable", f"the request body is larger than "
                                 f"{self.max_body} bytes", status=413))
            return
        if EVENT_STREAM in header_value(flow.request.headers, "accept", ""):
            # An event stream is checked as it passes: it must arrive unencoded.
            flow.request.headers["accept-encoding"] = "identity"

    @flow_hook
    def request(self, flow: http.HTTPFlow) -> None:
        self._record_session_name(flow)
        if flow.response is not None:
            self._record_unread(flow, "request")  # refused unread: stored redacted too
            return
        request = flow.request
        try:
            body = decoding.decode(request.raw_content or b"",
                                   header_value(request.headers, "content-encoding"), self.max_body)
            message = parse_request(request.path.split("?", 1)[0],
                                    header_value(request.headers, "content-type"), body,
                                    request.headers)
        except ProtocolError as exc:
            refuse(flow, self._unreadable(exc, "request"))
            self._record_unread(flow, "request")
            return
        flow.metadata[flowmeta.PROTOCOL] = message.context or {"protocol": message.protocol}
        outcome = self._decide(flow, message, "request", headers=request.headers)
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
        if response is None or flow.metadata.get(flowmeta.REFUSED):
            return
        response.stream = False  # e.g. mitmproxy's stream_large_bodies: buffer and check
        if media_type(header_value(response.headers, "content-type")) != EVENT_STREAM:
            return
        if header_value(response.headers, "content-encoding", "identity").lower() != "identity":
            flow.metadata[flowmeta.STREAM_REFUSED] = "an encoded event stream cannot be checked"
            return
        context = dict(flow.metadata.get(flowmeta.PROTOCOL) or {})
        # The headers leave before the events: they are decided now. A refusal (a hold too:
        # a stream cannot wait for a reviewer) answers instead, in `response`.
        protocol = context.get("protocol", "rest")
        outcome = self._decide(flow, Message(protocol, [], lambda: b"", context), "response",
                               keep_record=False, headers=response.headers)
        if outcome.refusal and outcome.refused is not None:
            refused = outcome.refused
            flow.metadata[flowmeta.HEADER_REFUSAL] = {
                "code": refused.code, "message": refused.message, "rule": refused.rule,
                "field": refused.field}
            return
        call_id = call_id_of(flow)

        def check(units: list[Unit]) -> Refused | None:
            outcome = self._decide(flow, Message(context.get("protocol", "rest"), units,
                                                 lambda: b"", context), "response",
                                   keep_record=False)
            return outcome.refused if outcome.refusal else None

        def render(refused: Refused, rpc_id: Any, jsonrpc: bool) -> dict[str, Any]:
            message = self._said(refused.message, "response")  # a malformed event's, maybe
            refusal = Refusal(refused.code, message, refused.rule, refused.field)
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
        if response is None or flow.metadata.get(flowmeta.REFUSED):
            return
        if refused := flow.metadata.get(flowmeta.HEADER_REFUSAL):
            refuse(flow, Refusal(refused["code"], refused["message"], refused["rule"],
                                 refused["field"]))
            return
        if isinstance(response.stream, StreamChecker):
            # Already checked event by event; keep what the caller got, and its record version.
            response.content = bytes(response.stream.transcript)
            self._record_stream(flow, response.stream)
            return
        if reason := flow.metadata.get(flowmeta.STREAM_REFUSED):
            refuse(flow, Refusal("uninspectable", reason, status=502))
            return
        try:
            body = decoding.decode(response.raw_content or b"",
                                 header_value(response.headers, "content-encoding"), self.max_body)
            message = parse_response(flow.metadata.get(flowmeta.PROTOCOL) or {},
                                     header_value(response.headers, "content-type"), body)
        except ProtocolError as exc:
            refuse(flow, self._unreadable(exc, "response"))
            return
        outcome = self._decide(flow, message, "response", headers=response.headers)
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
        labelled value redacted (a second pass, for streams only), then, but for REST streams
        (whose events are whole units already), what the units of each event leave."""
        identity = flow.metadata.get(flowmeta.IDENTITY) or {}

        def redact(units: list[Unit]) -> Refused | None:
            for unit in units:
                decision = evaluate(self.rules.current, Call(
                    direction=unit.direction, protocol=unit.protocol, function=unit.function,
                    subject=identity.get("subject"), groups=tuple(identity.get("groups") or ()),
                    body=unit.body, content=unit.content), self.mask_key, monitor=True)
                if decision.record_body is not unit.body:
                    unit.put(decision.record_body)
            return None

        context = dict(flow.metadata.get(flowmeta.PROTOCOL) or {})
        again = StreamChecker(passed.protocol, context, redact,
                              lambda refused, rpc_id, jsonrpc: {},
                              # held-back fragments are released again, so it can be longer
                              keep=max(self.max_body, 2 * len(passed.transcript)))
        again(bytes(passed.transcript))
        again(b"")
        record = bytes(again.transcript)
        if passed.protocol != "rest":
            record, found = self._redact_events(record)
            flow.metadata.setdefault(flowmeta.FINDINGS, []).extend(found)
        if record != bytes(passed.transcript):
            flow.metadata[RECORD_KEYS["response"]] = record

    def _redact_events(self, transcript: bytes) -> tuple[bytes, list[dict[str, Any]]]:
        """`transcript` with every labelled value in the data of its events redacted, each
        event's data read as JSON if it is, else as text (all events in one evaluation); and
        the findings, at `events[N]...` paths."""
        try:
            events = parse_all(transcript)
        except (UnicodeDecodeError, ValueError):
            events = None
        if events is None:  # not what a checked stream passes; stored as redacted text
            decision = self._classify_whole(transcript.decode("utf-8", "replace"), "response")
            return str(decision.record_body).encode(), _found(decision, "response", "events")
        data: list[Any] = []
        for event in events:
            text = event.data
            try:
                data.append(jsonbody.loads(text) if text and jsonbody.looks_like_json(text.encode())
                            else text)
            except ProtocolError:
                data.append(text)
        decision = self._classify_whole(data, "response")
        if decision.record_body is decision.body:
            return transcript, _found(decision, "response", "events")
        out: list[Event] = []
        for event, before, after in zip(events, data, decision.record_body):
            if after is before or after is None:
                out.append(event)
            else:
                out.append(event.with_data(after if isinstance(after, str)
                                           else jsonbody.dumps(after).decode()))
        return encode_all(out), _found(decision, "response", "events")

    # -- deciding ----------------------------------------------------------------------------

    def _decide(
        self, flow: http.HTTPFlow, message: Message, phase: str, keep_record: bool = True,
        headers: http.Headers | None = None,
    ) -> CallDecision:
        """Evaluate every unit of `message`, and `headers` as one more unit, mask in place, and
        record the outcome on the flow. With `keep_record`, the message as the session store
        keeps it goes to the flow too (the headers' record version always does)."""
        ruleset: RuleSet = self.rules.current
        identity = flow.metadata.get(flowmeta.IDENTITY) or {}
        request = flow.request
        path = request.path.split("?", 1)[0]
        host = _pretty_host(request)
        query = _query_items(request) if phase == "request" else None
        monitor = self.monitor
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
        uncovered: list[dict[str, Any]] = []
        if keep_record:
            uncovered = _keep_record(flow, message, decisions, phase, self._classify_whole)
        # The headers, and a request's path, are decided only when they hold labelled data:
        # rules that match the call alone (a function, a direction) are the body's to apply.
        function = _call_function(flow, decisions)
        path_unit = _RequestPath(request, message.protocol, function) if phase == "request" else None
        contexts = [_header_unit(headers, message.protocol, phase, function) if headers is not None
                    else None, path_unit.unit if path_unit is not None else None]
        arguments: Any = None
        for context in contexts:
            if context is None or not ruleset.classifier.classify(Document(context.body)):
                continue
            if arguments is None:
                arguments = _call_arguments(message, query, phase)
            # The call's function, direction and arguments, so rules act on it as on the body;
            # not a function call of its own (no catalog outcomes).
            decision = evaluate(ruleset, Call(
                direction=phase, protocol=context.protocol, function=context.function,
                method=request.method, host=host, path=path,
                subject=identity.get("subject"), groups=tuple(identity.get("groups") or ()),
                body=context.body, arguments=arguments, content=True,
            ), self.mask_key, monitor=monitor)
            decisions.append((context, decision))
            if decision.changed and decision.action != "block":
                context.put(decision.body)
            if context.location == HEADERS_LOCATION:
                _keep_header_record(flow, context, decision, phase)
            elif path_unit is not None:
                path_unit.keep_record(flow, decision)
        outcome = summarize(decisions, phase, message.jsonrpc)
        if message.protocol != "rest":
            self._record_functions(flow, decisions, phase)
        _name_shown(flow, outcome)
        outcome.findings += uncovered
        outcome.labels += list(dict.fromkeys(f["label"] for f in uncovered
                                             if f["label"] not in outcome.labels))
        outcome.record(flow)
        return outcome

    def _unreadable(self, exc: ProtocolError, phase: str) -> Refusal:
        """The refusal of a message that cannot be checked, saying why without a labelled value
        (a duplicate key can be an email or a key)."""
        refusal = _refusal(exc, request=phase == "request")
        return dataclasses.replace(refusal, message=self._said(refusal.message, phase))

    def _said(self, text: str, phase: str) -> str:
        """`text` of the gateway's own (an error message quoting the message) as callers get it
        and the store keeps it: every labelled value in it redacted."""
        if not self.rules.current.classifier.classify(Document(text)):
            return text
        return self._classify_whole(text, phase).record_body

    def _classify_whole(self, value: Any, phase: str) -> Decision:
        """`value` (a whole body, or the parts of it no unit covers) classified as plain data,
        in monitor mode: its record version has every labelled value redacted."""
        return evaluate(self.rules.current, Call(direction=phase, body=value, content=True),
                        self.mask_key, monitor=True)

    def _record_functions(self, flow: http.HTTPFlow, decisions: list[tuple[Unit, Decision]],
                          phase: str) -> None:
        """Functions named after labelled values (MCP tools or JSON-RPC methods, an LLM's
        tools: text the caller or the model chose, `lookup jane@example.com`) are stored,
        traced, counted, pinned and listed for reviewers with the values redacted
        (`flowmeta.RECORD_FUNCTION`). The backend gets the name as sent: its values are data
        of the body, which the rules decided (the envelope's are recorded)."""
        names: dict[str, str] = {}
        for unit, decision in decisions:
            name = decision.function
            if unit.content or not name or name in names:
                continue
            if (shown := self._said(name, phase)) != name:
                names[name] = shown
        if names:
            flow.metadata.setdefault(flowmeta.RECORD_FUNCTION, {}).update(names)

    def _record_session_name(self, flow: http.HTTPFlow) -> None:
        """A session named by the caller (`X-Toolgate-Session`) after a labelled value (an end
        user's email, say) is stored under a keyed fingerprint of its name, `s-<16 hex>`: its
        calls still make one session, and neither `session_id` nor the stored header holds the
        value. The name is toolgate's, not the backend's: no finding, no rule applies."""
        headers = flow.request.headers
        name = explicit_session(None, header_value(headers, SESSION_HEADER))
        if name is None or not self.rules.current.classifier.classify(Document(name)):
            return
        stored = hashed_session(name, self.mask_key)
        flow.metadata[flowmeta.RECORD_SESSION] = stored
        kept = flow.metadata.setdefault(RECORD_HEADER_KEYS["request"], {})
        sent = headers.get_all(SESSION_HEADER)
        kept[SESSION_HEADER.lower()] = {"sent": sent, "stored": [stored] * len(sent)}

    def _record_unread(self, flow: http.HTTPFlow, phase: str) -> None:
        """The record version of the headers, and of a request's path and query, for a message
        the policy did not read (refused before, or unreadable): redacted, nothing else decided.
        A token sent in the URL (`?access_token=`) to a gateway that refuses it is stored
        redacted and left on the flow redacted, as one sent in a header is."""
        message = flow.request if phase == "request" else flow.response
        header = _header_unit(message.headers, "rest", phase, None) if message else None
        if header is not None:
            _keep_header_record(flow, header, self._classify_whole(header.body, phase), phase)
        if phase != "request":
            return
        path = _RequestPath(flow.request, "rest", None)
        if path.unit is not None and path.keep_record(flow, self._classify_whole(path.segments, phase)):
            _show_record_path(flow)
        query = _query_items(flow.request)
        if query:
            decision = evaluate(self.rules.current, Call(direction=phase, query=query, content=True),
                                self.mask_key, monitor=True)
            if decision.record_query is not decision.query:
                flow.metadata[flowmeta.RECORD_QUERY] = dict(decision.record_query)
                _show_record_query(flow)

    @staticmethod
    def _hand_over_approval(flow: http.HTTPFlow, outcome: CallDecision) -> None:
        if outcome.action == "approve":
            # The approvals addon, next in the chain, holds the call (or denies it).
            flow.metadata[flowmeta.APPROVAL] = outcome.approval

    @staticmethod
    def _refuse(flow: http.HTTPFlow, outcome: CallDecision) -> None:
        record = flow.metadata.get(RECORD_KEYS[outcome.phase])
        if outcome.phase == "request" and record is not None:
            flow.request.content = record  # never forwarded: keep nothing raw on the flow
        if outcome.phase == "request":
            for name, kept in (flow.metadata.get(RECORD_HEADER_KEYS["request"]) or {}).items():
                flow.request.headers.set_all(name, kept["stored"])
                kept["sent"] = kept["stored"]
            _show_record_path(flow)
            _show_record_query(flow)
        refused = outcome.refused
        assert refused is not None
        refuse(flow, Refusal(refused.code, refused.message, refused.rule, refused.field))


def _keep_record(
    flow: http.HTTPFlow, message: Message, decisions: list[tuple[Unit, Decision]], phase: str,
    classify: Callable[[Any, str], Decision],
) -> list[dict[str, Any]]:
    """The message as the session store keeps it, if that differs from what is forwarded:
    every labelled value the rules let through (or that a refused call carries) redacted, in
    its units and in the parts of the body no unit covers (a JSON-RPC envelope, the fields of a
    chat request beside its messages...), whatever the protocol layer extracted. The findings
    of those uncovered parts are returned (they were let through: `allow`)."""
    differing = [(u, d) for u, d in decisions if d.record_body is not d.body]
    if phase == "request":
        query = next((d for u, d in decisions if u.protocol == "rest"
                      and d.record_query is not d.query and d.record_query), None)
        if query is not None:
            flow.metadata[flowmeta.RECORD_QUERY] = {k: v for k, v in query.record_query.items()}
    # A REST unit is the whole body, and so is any unit at "$" with a body.
    whole = message.protocol == "rest" or any(u.location == "$" and u.body is not None
                                              for u, _ in decisions)
    if whole and not differing:
        return []
    found: list[dict[str, Any]] = []
    record: bytes | None = None
    try:
        if not whole:
            record, found = _record_uncovered(message, decisions, phase, classify)
        if record is None and differing:
            for unit, decision in decisions:
                unit.put(decision.record_body)
            record = message.encode()
    finally:
        for unit, decision in decisions:  # back to what is forwarded
            unit.put(decision.body if decision.changed and decision.action != "block" else unit.body)
    if record is not None:
        flow.metadata[RECORD_KEYS[phase]] = record
    return found


def _record_uncovered(
    message: Message, decisions: list[tuple[Unit, Decision]], phase: str,
    classify: Callable[[Any, str], Decision],
) -> tuple[bytes | None, list[dict[str, Any]]]:
    """The record version of a message whose units do not cover all of it (None: the units'
    own record versions are enough), and the findings outside its units. The body is first
    classified with its units blanked, so that a body that is all units costs little more."""
    try:
        for unit, _ in decisions:
            unit.put(None)
        envelope = jsonbody.loads(message.encode())
    except (ProtocolError, TypeError, ValueError):  # cannot be blanked: classify all of it
        envelope = None
    if envelope is not None and not classify(envelope, phase).findings:
        return None, []
    for unit, decision in decisions:
        unit.put(decision.record_body)
    decision = classify(jsonbody.loads(message.encode()), phase)
    inside = [u.location for u, _ in decisions if u.body is not None]
    found = [f for f in _found(decision, phase, "$")
             if not any(_within(f["path"], where) for where in inside)]
    if decision.record_body is decision.body:
        return None, found
    return jsonbody.dumps(decision.record_body), found


def _found(decision: Decision, phase: str, root: str) -> list[dict[str, Any]]:
    """The findings of a backstop classification (values let through: `allow`), their paths
    under `root` instead of `$`."""
    return [{"direction": phase, "path": root + f.path[1:], "label": f.label, "level": f.level,
             "action": "allow", "fingerprint": f.fingerprint} for f in decision.findings]


def _within(path: str, location: str) -> bool:
    return path.startswith(location) and (len(path) == len(location) or path[len(location)] in ".[<")


def _call_function(flow: http.HTTPFlow, decisions: list[tuple[Unit, Decision]]) -> str | None:
    """The function a message's headers belong to: its first function call's, else the call's."""
    for unit, decision in decisions:
        if not unit.content:
            return decision.function
    return (flow.metadata.get(flowmeta.DECISION) or {}).get("function")


def _header_unit(headers: http.Headers, protocol: str, direction: str,
                 function: str | None) -> Unit | None:
    """A message's headers as one unit: {lower-case name: value, or the list of a repeated
    header's values}, without UNCLASSIFIED_HEADERS and X-Toolgate-*; masks write back to
    `headers`. None when no header is left."""
    values: dict[str, Any] = {}
    for raw_name, raw_value in headers.fields:
        name = raw_name.decode("latin-1").lower()
        if name in UNCLASSIFIED_HEADERS or name.startswith(TOOLGATE_HEADERS):
            continue
        value = _text(raw_value)
        seen = values.get(name)
        values[name] = value if seen is None else [*seen, value] if isinstance(seen, list) \
            else [seen, value]
    if not values:
        return None

    def put(masked: Any) -> None:
        for name, value in values.items():
            new = masked.get(name, REMOVED) if isinstance(masked, dict) else REMOVED
            if new is REMOVED:
                headers.pop(name, None)
            elif isinstance(new, list):
                if new != value:
                    headers.set_all(name, [str(item) for item in new])
            elif new != value:
                headers[name] = str(new)

    return Unit(protocol, direction, function, values, put, HEADERS_LOCATION, content=True)


REMOVED = object()


def _keep_header_record(flow: http.HTTPFlow, header: Unit, decision: Decision, phase: str) -> None:
    """The header values the store keeps instead of the flow's (every labelled one redacted):
    {name: {"sent": the value(s) as the policy left them, "stored": the record version}}. The
    recorder uses them only where the flow still holds what was sent; a header an addon after
    the policy changed (an echoed credential scrubbed, one injected) is stored `[REDACTED]`."""
    record = decision.record_body
    if record is header.body:
        return
    sent = decision.body if decision.changed and decision.action != "block" else header.body
    kept: dict[str, Any] = {}
    for name, value in header.body.items():
        new = record.get(name) if isinstance(record, dict) else None
        if new != value:
            kept[name] = {"sent": _values(sent.get(name) if isinstance(sent, dict) else None),
                          "stored": _values(new)}
    if kept:
        flow.metadata.setdefault(RECORD_HEADER_KEYS[phase], {}).update(kept)


def _values(value: Any) -> list[str]:
    return [] if value is None else [str(v) for v in value] if isinstance(value, list) \
        else [str(value)]


def _text(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _pretty_host(request: http.Request) -> str:
    """`request.pretty_host`, whose parse of the Host header (mitmproxy does it on every
    access) is done once per distinct header value."""
    authority = request.host_header
    if not authority:
        return request.host
    if len(authority) > MAX_CACHED_AUTHORITY:  # a caller's header: not kept
        return url.parse_authority(authority, check=False)[0]
    return _authority_host(authority)


MAX_CACHED_AUTHORITY = 256


@functools.lru_cache(maxsize=1024)
def _authority_host(authority: str) -> str:
    return url.parse_authority(authority, check=False)[0]


class _RequestPath:
    """A request's path as a unit of its own: its segments after the leading `/`,
    percent-decoded (findings read `path[N]`); masks write the changed segments back
    percent-encoded, the others as sent. Labelled values in a path are data like any other:
    a REST call names a customer by email, an SSN, a token as often in its URL as in its body."""

    def __init__(self, request: http.Request, protocol: str, function: str | None) -> None:
        self.request = request
        self.path, mark, query = request.path.partition("?")
        self.query = mark + query
        self.raw = self.path[1:].split("/") if self.path.startswith("/") else []
        self.segments = [urllib.parse.unquote(segment, errors="replace") for segment in self.raw]
        self.unit = Unit(protocol, "request", function, self.segments, self.put, PATH_LOCATION,
                         content=True) if any(self.segments) else None

    def render(self, masked: Any) -> str:
        """The path with the segments of `masked` (the unit's body as masked)."""
        if not isinstance(masked, list):
            return "/"
        if len(masked) != len(self.segments):  # a segment removed: the rest, encoded
            return "/" + "/".join(urllib.parse.quote(str(item), safe="") for item in masked)
        return "/" + "/".join(
            sent if new == decoded else urllib.parse.quote(str(new), safe="")
            for sent, decoded, new in zip(self.raw, self.segments, masked))

    def put(self, masked: Any) -> None:
        self.request.path = self.render(masked) + self.query

    def keep_record(self, flow: http.HTTPFlow, decision: Decision) -> bool:
        """Keep the path as the store keeps it (`flowmeta.RECORD_PATH`) if `decision`'s record
        version of the segments differs; whether it did."""
        if decision.record_body is self.segments:
            return False
        stored = self.render(decision.record_body)
        flow.metadata[flowmeta.RECORD_PATH] = {"sent": self.path, "stored": stored}
        # a call named by its method and path is shown by its stored path (see shown_function)
        method = self.request.method
        flow.metadata.setdefault(flowmeta.RECORD_FUNCTION, {})[rest_name(method, self.path)] = \
            rest_name(method, stored)
        return True


def _name_shown(flow: http.HTTPFlow, outcome: CallDecision) -> None:
    """A refusal or a hold names a function holding a labelled value (`flowmeta.RECORD_FUNCTION`:
    a tool, or a call named by its path) as the store keeps it: the answer is stored too."""
    names = flow.metadata.get(flowmeta.RECORD_FUNCTION)
    if not names or (outcome.refused is None and outcome.approval is None):
        return
    for sent, stored in names.items():
        if outcome.refused is not None:
            outcome.refused = dataclasses.replace(
                outcome.refused, message=outcome.refused.message.replace(sent, stored))
        if outcome.approval is not None:
            outcome.approval["message"] = outcome.approval["message"].replace(sent, stored)


def _call_arguments(message: Message, query: dict[str, Any] | None, phase: str) -> Any:
    """What `when` conditions see of a call's headers and path: its first function call's
    arguments."""
    first = next((u for u in message.units if not u.content), None)
    if first is None:
        return {}
    if first.arguments is not None:
        return first.arguments
    if phase == "request" and first.protocol == "rest":
        return rest_arguments(first.body, query)
    return first.body


def _show_record_path(flow: http.HTTPFlow) -> None:
    """A request that is not forwarded keeps on its flow the path as stored, if that differs."""
    record = flow.metadata.get(flowmeta.RECORD_PATH)
    if record is not None:
        _, mark, query = flow.request.path.partition("?")
        flow.request.path = record["stored"] + mark + query


def _show_record_query(flow: http.HTTPFlow) -> None:
    """A request that is not forwarded keeps on its flow (mitmweb, mitmdump's log) the query
    as stored, if that differs: nothing raw stays where it can be seen."""
    record = flow.metadata.get(flowmeta.RECORD_QUERY)
    if record is not None:
        flow.request.query = [(key, str(item)) for key, value in record.items()
                              for item in (value if isinstance(value, list) else [value])]


def _query_items(request: http.Request) -> dict[str, Any]:
    """The query parameters, each name once with its value or the list of its values.
    (`request.query` rebuilds and parses the URL on every access: read its fields once, and
    not at all for a path without a query.)"""
    if "?" not in request.path:
        return {}
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
        status = 413 if isinstance(exc, decoding.TooLarge) else 400
        status = status if request else 502
    elif not request:
        status = 502
    side = "request" if request else "backend's answer"
    return Refusal(exc.code, f"the {side} cannot be checked: {exc}", field=exc.field,
                   status=status)

