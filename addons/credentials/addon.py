"""Vaulted credentials: injects each backend's credential as the last change before a call
leaves, so the caller never holds it.

- `request` (after every decision, just before the recorder): the caller's `Authorization` and
  `Proxy-Authorization` are removed (and the verified token from any header: the identity
  addon already took every copy); the first target of `toolgate_credentials` that matches
  the call sets its headers and query parameters, or passes the caller's verified token on.
- `responseheaders`: the request has left, so the flow shows every injected value as
  `[REDACTED]` from here on (mitmweb, `export`, the log, the store); an event stream is masked
  as it passes.
- `response`: echo protection: an injected value in the answer is masked and recorded as an
  `injected_secret` finding.

The file is resolved at start, when the option changes and when it (or a secret file it reads)
changes; a file that does not load stops the gateway at start and leaves the last good
credentials in force on a reload.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from mitmproxy import command, ctx, exceptions, http

from toolgate.addons import flowmeta
from toolgate.addons.policy import decoding
from toolgate.addons.credentials.echoes import LABEL, ScrubbedChunks, ScrubbedStream, Scrubber
from toolgate.addons.failclosed.hooks import flow_hook
from toolgate.addons.headers import pop_header
from toolgate.addons.identity.addon import remove_credential, take_caller_token
from toolgate.addons.credentials.vault import MIN_SECRET, CallFacts, Target, Vault, VaultError, load_vault
from toolgate.rules.masking import fingerprint, normalize
from toolgate.rules.protocols import StreamChecker

logger = logging.getLogger(__name__)

POLL_SECONDS = 1.0
REDACTED = "[REDACTED]"


@dataclass
class Injected:
    """What one call carries (in memory only, never on the flow's metadata)."""

    target: Target
    headers: list[str]  # names of the headers to show redacted once the request has left
    query: list[str]
    scrubber: Scrubber
    redacted: bool = False


def call_facts(flow: http.HTTPFlow) -> CallFacts:
    """The call as the policy saw it (function, protocol) and its verified caller."""
    decision = flow.metadata.get(flowmeta.DECISION) or {}
    identity = flow.metadata.get(flowmeta.IDENTITY) or {}
    request = flow.request
    return CallFacts(
        host=request.pretty_host, method=request.method, path=request.path,
        function=decision.get("function"), protocol=decision.get("protocol"),
        subject=None if identity.get("anonymous") else identity.get("subject"),
        groups=tuple(identity.get("groups") or ()),
    )


def _signature(files: tuple[Path, ...]) -> tuple[tuple[str, int, int], ...]:
    signature = []
    for file in files:
        try:
            stat = file.stat()
        except OSError:
            signature.append((str(file), -1, -1))
            continue
        signature.append((str(file), stat.st_mtime_ns, stat.st_size))
    return tuple(signature)


class Credentials:
    def __init__(self) -> None:
        self.vault = Vault()
        self.scrubber = Scrubber(())
        self.path: Path | None = None
        self.signature: tuple[tuple[str, int, int], ...] = ()
        self.injected: weakref.WeakKeyDictionary[http.HTTPFlow, Injected] = weakref.WeakKeyDictionary()
        self._fallback_key = secrets.token_bytes(32)
        self._watcher: asyncio.Task[None] | None = None
        self.reload_failures = 0  # changed files that did not load (for the metrics)

    def load(self, loader) -> None:
        loader.add_option(
            "toolgate_credentials", Optional[str], None,
            "A YAML file that maps targets (matched like rules: host, path, method, function, "
            "protocol, groups) to the credentials injected into their calls, with values from "
            "${env:NAME} or ${file:PATH}. Unset, no credential is injected; the caller's "
            "Authorization is removed either way.",
        )

    def configure(self, updated: set[str]) -> None:
        if "toolgate_credentials" not in updated:
            return
        option = ctx.options.toolgate_credentials
        if not option:
            self._use(None, Vault())
            return
        path = Path(option).expanduser()
        if not path.is_file():
            raise exceptions.OptionsError(f"toolgate_credentials: {path} is not a file")
        try:
            vault = load_vault(path)
        except VaultError as exc:
            raise exceptions.OptionsError(f"toolgate_credentials: {exc}") from None
        self._use(path, vault)

    def _use(self, path: Path | None, vault: Vault) -> None:
        self.path, self.vault = path, vault
        self.scrubber = Scrubber(vault.secrets, vault.values)
        self.signature = _signature(vault.files)
        if path is not None:
            logger.info("toolgate: credentials loaded from %s: %s", path,
                        ", ".join(t.label for t in vault.targets) or "no targets")

    def reload(self) -> bool:
        """Resolve the file again; on failure the credentials in force stay, and the error
        (file, line, target) is logged."""
        if self.path is None:
            return False
        try:
            vault = load_vault(self.path)
        except VaultError as exc:
            self.signature = _signature(self.vault.files)  # not again until the files change
            self.reload_failures += 1
            logger.error("toolgate: toolgate_credentials: %s (the previous credentials stay in "
                         "force)", exc)
            return False
        self._use(self.path, vault)
        return True

    def running(self) -> None:
        self._watcher = asyncio.get_running_loop().create_task(self._watch())

    def done(self) -> None:
        if self._watcher:
            self._watcher.cancel()

    async def _watch(self) -> None:
        """Reload when the file or a secret file it reads changes; off the event loop."""
        while True:
            await asyncio.sleep(POLL_SECONDS)
            if self.path is None:
                continue
            signature = await asyncio.to_thread(_signature, self.vault.files)
            if signature != self.signature:
                await asyncio.to_thread(self.reload)

    @command.command("toolgate.credentials.reload")
    def reload_command(self) -> None:
        """Resolve the credentials file again; the last good credentials stay if it fails."""
        self.reload()

    # -- requests ----------------------------------------------------------------------------

    @flow_hook
    def request(self, flow: http.HTTPFlow) -> None:
        token = take_caller_token(flow)  # taken in any case: it is not kept past this point
        headers = flow.request.headers
        # Removed even from a refused call: with identity off, nothing else removes them.
        pop_header(headers, "Proxy-Authorization")  # meant for the gateway, never forwarded
        caller = pop_header(headers, "Authorization")
        if token:  # the identity addon removed every copy; none may have come back since
            remove_credential(headers, token)
        if flow.response is not None or flow.error is not None or not self.vault.targets:
            return  # (no targets: nothing to select, and the call's facts cost a Host parse)
        target = self.vault.select(call_facts(flow))
        if target is None:
            return
        # This vault's scrubber stays with the call: a reload may change the one in force.
        secret_headers, scrubber = list(target.secret_headers), self.scrubber
        if target.pass_caller_token:
            # The verified token; with identity off, what the caller sent.
            passed = f"Bearer {token}" if token else caller
            if passed:
                headers["Authorization"] = passed
                secret_headers.append("Authorization")
                # Not echoed either: the store and mitmweb must not get it from an answer.
                own = token or passed.partition(" ")[2].strip() or passed
                if len(own) >= MIN_SECRET:
                    scrubber = Scrubber((*self.vault.secrets, own), (*self.vault.values, (passed, own)))
        for name, value in target.headers:
            headers[name] = value
        for name, value in target.query:
            flow.request.query[name] = value
        flow.metadata[flowmeta.INJECTED_HEADERS] = secret_headers
        if target.secret_query:
            # The store's pending row is written before the answer: it gets the query redacted.
            record = dict(flow.metadata.get(flowmeta.RECORD_QUERY) or _query(flow.request))
            record.update(dict.fromkeys(target.secret_query, REDACTED))
            flow.metadata[flowmeta.RECORD_QUERY] = record
        self.injected[flow] = Injected(target, secret_headers, list(target.secret_query), scrubber)

    # -- responses ---------------------------------------------------------------------------

    @flow_hook
    def responseheaders(self, flow: http.HTTPFlow) -> None:
        # The request has left: nothing needs the values on the flow any more.
        self._redact_request(flow)
        response = flow.response
        if response is None:
            return
        scrubber = self._scrubber(flow)
        if not scrubber:
            return
        self._scrub_headers(flow, response, scrubber)
        if isinstance(response.stream, StreamChecker):
            response.stream = ScrubbedStream(response.stream, scrubber)
        elif callable(response.stream) or response.stream is True:
            if response.headers.get("content-encoding", "identity").lower() != "identity":
                raise ValueError("an encoded streamed answer cannot be checked for credentials")
            response.stream = ScrubbedChunks(response.stream, scrubber)

    # mitmweb's view and mitmdump's dumper come after the script in mitmproxy's addon chain:
    # by the time they read a completed or failed flow, these hooks have redacted it.

    @flow_hook
    def response(self, flow: http.HTTPFlow) -> None:
        response = flow.response
        if response is None:
            return
        self._redact_request(flow)
        scrubber = self._scrubber(flow)
        if scrubber:
            self._scrub_headers(flow, response, scrubber)
            if isinstance(response.stream, (ScrubbedStream, ScrubbedChunks)):
                self._found(flow, "$", response.stream.found)
            self._scrub_body(flow, response, scrubber)
            record = flow.metadata.get(flowmeta.RECORD_RESPONSE)
            if isinstance(record, bytes):  # the policy's version for the store
                flow.metadata[flowmeta.RECORD_RESPONSE] = scrubber.scrub(record)[0]
        self._forget(flow)

    @flow_hook
    def error(self, flow: http.HTTPFlow) -> None:
        self._redact_request(flow)
        self._forget(flow)

    # -- glue --------------------------------------------------------------------------------

    def _scrubber(self, flow: http.HTTPFlow) -> Scrubber:
        injected = self.injected.get(flow)
        return injected.scrubber if injected is not None else self.scrubber

    def _forget(self, flow: http.HTTPFlow) -> None:
        self.injected.pop(flow, None)
        take_caller_token(flow)

    def _redact_request(self, flow: http.HTTPFlow) -> bool:
        """Show every injected value of `flow`'s request as `[REDACTED]`; whether it changed."""
        injected = self.injected.get(flow)
        if injected is None or injected.redacted:
            return False
        for name in injected.headers:
            if name in flow.request.headers:
                flow.request.headers[name] = REDACTED
        for name in injected.query:
            if name in flow.request.query:
                flow.request.query[name] = REDACTED
        injected.redacted = True
        return True

    def _scrub_headers(self, flow: http.HTTPFlow, response: http.Response, scrubber: Scrubber) -> bool:
        fields, changed = [], False
        for name, value in response.headers.fields:
            masked, found = scrubber.scrub(value)
            if found:
                changed = True
                self._found(flow, f"header:{name.decode('latin-1')}", found)
            fields.append((name, masked))
        if changed:
            response.headers.fields = tuple(fields)
        reason, found = scrubber.scrub(response.reason.encode("latin-1", "replace"))
        if found:
            response.reason = reason.decode("latin-1")
            self._found(flow, "reason", found)
            changed = True
        return changed

    def _scrub_body(self, flow: http.HTTPFlow, response: http.Response, scrubber: Scrubber) -> bool:
        if not response.raw_content:
            return False
        policy = ctx.master.addons.get("policy")
        limit = policy.max_body if policy is not None else len(response.raw_content) * 1024
        # The body as the caller would read it; the policy refused what does not decode.
        body = decoding.decode(response.raw_content, response.headers.get("content-encoding"), limit)
        masked, found = scrubber.scrub(body)
        if not found:
            return False
        response.content = masked  # re-encoded as the answer's Content-Encoding says
        self._found(flow, "$", found)
        return True

    def _found(self, flow: http.HTTPFlow, where: str, found: list[str]) -> None:
        """Record each masked credential as a finding: its keyed fingerprint, never itself
        (`toolgate sessions find-value` finds it from the value)."""
        if not found:
            return
        policy = ctx.master.addons.get("policy")
        key = policy.mask_key if policy is not None else self._fallback_key
        findings = flow.metadata.setdefault(flowmeta.FINDINGS, [])
        for secret in found:
            findings.append({"direction": "response", "path": where, "label": LABEL,
                             "level": "restricted", "action": "mask",
                             "fingerprint": fingerprint(normalize(secret), key)})
        logger.warning("toolgate: call %s: the backend's answer held an injected credential "
                       "(%s); masked", flow.metadata.get(flowmeta.CALL_ID), where)


def _query(request: http.Request) -> dict[str, Any]:
    items: dict[str, Any] = {}
    for key in request.query.keys():
        values = request.query.get_all(key)
        items[key] = values[0] if len(values) == 1 else values
    return items
