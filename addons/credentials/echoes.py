"""Echo protection: finds injected credentials in a backend's answer and masks them, so a
backend that echoes its request (or an error page quoting the token) cannot hand the caller
the secret the gateway holds for it. Pure: bytes in, bytes out.

Besides the raw value, the forms in which a backend plausibly repeats a header are looked for:
JSON-escaped (an echo service answering in JSON), URL-encoded (a quoted URL or query), and
base64 (a debug dump of a header, or Basic credentials) of each secret and of each whole value
that holds one. Other transformations (hashes, encryption, a secret split across a
base64 blob at an unaligned offset) are not recognizable and not claimed.
"""

from __future__ import annotations

import base64
import json
import re
import urllib.parse
from collections.abc import Iterable
from typing import Any

from toolgate.rules.protocols import StreamChecker

LABEL = "injected_secret"
REPLACEMENT = f"[REDACTED:{LABEL}]".encode()


def encodings(text: str) -> set[bytes]:
    """The forms in which `text` is looked for."""
    raw = text.encode("utf-8")
    forms = {raw, json.dumps(text)[1:-1].encode(), json.dumps(text, ensure_ascii=False)[1:-1].encode(),
             urllib.parse.quote(text, safe="").encode(), urllib.parse.quote_plus(text, safe="").encode()}
    forms |= _base64(raw)
    return forms


def _base64(raw: bytes) -> set[bytes]:
    # Unpadded: the padding of a value inside a longer encoded text differs.
    return {base64.b64encode(raw).rstrip(b"="), base64.urlsafe_b64encode(raw).rstrip(b"=")}


class Scrubber:
    """Masks the injected `secrets` in any of their forms, and the base64 of each whole
    `(value, secret)` (e.g. `Bearer <secret>`); says which secrets it found."""

    def __init__(self, secrets: Iterable[str], values: Iterable[tuple[str, str]] = ()) -> None:
        needles: dict[bytes, str] = {}
        padded: set[bytes] = set()
        for secret in secrets:
            padded |= _base64(secret.encode("utf-8"))
            for form in encodings(secret):
                needles.setdefault(form, secret)
        for value, secret in values:
            for form in _base64(value.encode("utf-8")):
                padded.add(form)
                needles.setdefault(form, secret)
        self.needles = needles
        # Longest first: a whole value wins over the secret inside it. A base64 form takes its
        # padding with it.
        ordered = sorted(needles, key=len, reverse=True)
        alternatives = [re.escape(n) + (b"={0,2}" if n in padded else b"") for n in ordered]
        self.pattern = re.compile(b"|".join(alternatives)) if ordered else None
        self.longest = max(map(len, needles), default=0)

    def __bool__(self) -> bool:
        return bool(self.needles)

    def scrub(self, data: bytes) -> tuple[bytes, list[str]]:
        """`data` with every needle masked, and the secrets found (each once, in order)."""
        if self.pattern is None or not any(needle in data for needle in self.needles):
            return data, []
        found: dict[str, None] = {}

        def mask(hit: re.Match[bytes]) -> bytes:
            text = hit.group(0)
            found[self.needles.get(text) or self.needles[text.rstrip(b"=")]] = None
            return REPLACEMENT

        return self.pattern.sub(mask, data), list(found)

    def holdback(self, data: bytes) -> int:
        """How many bytes at the end of `data` could start a needle that the next chunk
        completes (after the last needle already in it)."""
        start = 0
        if self.pattern is not None:
            for hit in self.pattern.finditer(data):
                start = hit.end()
        tail = data[max(start, len(data) - self.longest + 1):]
        for size in range(len(tail), 0, -1):
            piece = tail[-size:]
            if any(needle.startswith(piece) for needle in self.needles):
                return size
        return 0


class StreamScrub:
    """Masks a body that passes in chunks: a needle split across chunks is held back until it
    can be told apart (events end in a blank line, which no needle holds: nothing is delayed)."""

    def __init__(self, scrubber: Scrubber) -> None:
        self.scrubber = scrubber
        self.held = b""
        self.found: dict[str, None] = {}

    def feed(self, chunk: bytes, final: bool = False) -> bytes:
        data = self.held + chunk
        keep = 0 if final else self.scrubber.holdback(data)
        self.held = data[len(data) - keep:] if keep else b""
        out, found = self.scrubber.scrub(data[:len(data) - keep])
        self.found.update(dict.fromkeys(found))
        return out


class ScrubbedStream(StreamChecker):
    """The policy's event-stream checker with its output masked. An instance of StreamChecker
    (the policy recognizes its checked streams by type), delegating everything to `inner`; its
    `transcript` is the masked output, what the caller got."""

    def __init__(self, inner: StreamChecker, scrubber: Scrubber) -> None:  # noqa: super not called
        self.inner = inner
        self.scrub = StreamScrub(scrubber)
        self.keep = inner.keep
        self.transcript = bytearray()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__dict__["inner"], name)

    def __call__(self, chunk: bytes) -> list[bytes]:
        out = self.scrub.feed(b"".join(self.inner(chunk)), final=not chunk)
        if len(self.transcript) < self.keep:
            self.transcript += out[: self.keep - len(self.transcript)]
        return [out] if out else []

    @property
    def found(self) -> list[str]:
        return list(self.scrub.found)


class ScrubbedChunks:
    """Any other streamed body (a callable over chunks), with its output masked."""

    def __init__(self, inner: Any, scrubber: Scrubber) -> None:
        self.inner = inner
        self.scrub = StreamScrub(scrubber)

    def __call__(self, chunk: bytes) -> bytes | Iterable[bytes]:
        passed = self.inner(chunk) if callable(self.inner) else chunk
        data = passed if isinstance(passed, bytes) else b"".join(passed)
        out = self.scrub.feed(data, final=not chunk)
        return [out] if out else []

    @property
    def found(self) -> list[str]:
        return list(self.scrub.found)
