"""Bodies as the rules see them: content-decoded, never past the size limit.

mitmproxy decodes a body in one go, however large it inflates to; a gzip or brotli bomb (a few
KiB on the wire, gigabytes decoded) would take the gateway down. These decoders stop as soon as
the output passes the limit.
"""

from __future__ import annotations

import io
import zlib

import brotli
import zstandard

from rules.protocols import Malformed, Uninspectable

BROTLI_PIECE = 64  # brotli has no output limit: feed it little at a time and check


class TooLarge(Uninspectable):
    """Over `toolgate_max_body` (on the wire or decoded)."""


def decode(raw: bytes, content_encoding: str | None, limit: int) -> bytes:
    """`raw` decoded from its Content-Encoding (applied in order, so undone in reverse)."""
    if len(raw) > limit:
        raise TooLarge(f"the body is larger than {limit} bytes")
    codings = [c.strip().lower() for c in (content_encoding or "").split(",") if c.strip()]
    data = raw
    for coding in reversed(codings):
        if coding == "identity":
            continue
        decoder = _DECODERS.get(coding)
        if decoder is None:
            raise Uninspectable(f"content encoding {coding!r} is not supported")
        try:
            data = decoder(data, limit)
        except TooLarge:
            raise
        except Exception as exc:  # zlib.error, brotli.error, ZstdError, ...
            raise Malformed(f"the body is not valid {coding}: {exc}") from None
    return data


def _zlib(data: bytes, limit: int, wbits: int) -> bytes:
    inflater = zlib.decompressobj(wbits)
    out = inflater.decompress(data, limit + 1)
    if len(out) > limit or inflater.unconsumed_tail:
        raise TooLarge(f"the body inflates to more than {limit} bytes")
    return out


def _gzip(data: bytes, limit: int) -> bytes:
    return _zlib(data, limit, 16 + zlib.MAX_WBITS)


def _deflate(data: bytes, limit: int) -> bytes:
    try:
        return _zlib(data, limit, zlib.MAX_WBITS)
    except zlib.error:  # some servers send raw deflate without the zlib header
        return _zlib(data, limit, -zlib.MAX_WBITS)


def _brotli(data: bytes, limit: int) -> bytes:
    decompressor = brotli.Decompressor()
    out = bytearray()
    for start in range(0, len(data), BROTLI_PIECE):
        out += decompressor.process(data[start:start + BROTLI_PIECE])
        if len(out) > limit:
            raise TooLarge(f"the body inflates to more than {limit} bytes")
    if data and not decompressor.is_finished():
        raise ValueError("truncated brotli stream")
    return bytes(out)


def _zstd(data: bytes, limit: int) -> bytes:
    reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data))
    out = bytearray()
    while len(out) <= limit:
        piece = reader.read(limit + 1 - len(out))
        if not piece:
            return bytes(out)
        out += piece
    raise TooLarge(f"the body inflates to more than {limit} bytes")


_DECODERS = {"gzip": _gzip, "x-gzip": _gzip, "deflate": _deflate, "br": _brotli, "zstd": _zstd}
