"""Bodies as the rules see them: content-decoded, never past the size limit.

mitmproxy decodes a body in one go, however large it inflates to; a gzip or brotli bomb (a few
KiB on the wire, gigabytes decoded) would take the gateway down. These decoders stop as soon as
the output passes the limit (brotli 1.1.0 can only be checked after each 64-byte piece, whose
output it does not bound: see SECURITY.md).

They also decode all of a body or refuse it: a receiver may decode more than a lenient decoder
would (every member of a multi-member gzip, every zstd frame), so a truncated stream, bytes
after the end of one, or a coding that does not decode is `uninspectable`, never a body
inspected in part.
"""

from __future__ import annotations

import zlib

import brotli
import zstandard

from toolgate.rules.protocols import Uninspectable

PIECE = 64  # brotli and zstd have no output limit: feed them little at a time and check
GZIP_MAGIC = b"\x1f\x8b"


class TooLarge(Uninspectable):
    """Over `toolgate_max_body` (on the wire or decoded)."""


class BadEncoding(Uninspectable):
    """A body that does not decode as its Content-Encoding says (corrupt, truncated, or with
    bytes after its end)."""


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
        if not data:
            continue  # nothing to decode (a HEAD or 204 answer keeps its header)
        try:
            data = decoder(data, limit)
        except Uninspectable:
            raise
        except Exception as exc:  # zlib.error, brotli.error, ZstdError, ...
            raise BadEncoding(f"the body is not valid {coding}: {exc}") from None
    return data


def _inflate(data: bytes, limit: int, room: int, wbits: int, coding: str) -> tuple[bytes, bytes]:
    """One zlib/gzip/raw deflate stream of at most `room` bytes: its output, and the bytes
    after its end."""
    inflater = zlib.decompressobj(wbits)
    out = inflater.decompress(data, room + 1)
    if len(out) > room or inflater.unconsumed_tail:
        raise TooLarge(f"the body inflates to more than {limit} bytes")
    if not inflater.eof:
        raise BadEncoding(f"the {coding} body is truncated")
    return out, inflater.unused_data


def _gzip(data: bytes, limit: int) -> bytes:
    """Every member (RFC 1952 allows several, and receivers decode them all)."""
    out = bytearray()
    while data:
        if not data.startswith(GZIP_MAGIC):
            raise BadEncoding("bytes after the end of the gzip body" if out else "not a gzip body")
        piece, data = _inflate(data, limit, limit - len(out), 16 + zlib.MAX_WBITS, "gzip")
        out += piece
    return bytes(out)


def _deflate(data: bytes, limit: int) -> bytes:
    try:
        out, rest = _inflate(data, limit, limit, zlib.MAX_WBITS, "deflate")
    except zlib.error:  # some servers send raw deflate without the zlib header
        out, rest = _inflate(data, limit, limit, -zlib.MAX_WBITS, "deflate")
    if rest:
        raise BadEncoding("bytes after the end of the deflate body")
    return out


def _brotli(data: bytes, limit: int) -> bytes:
    decompressor = brotli.Decompressor()
    out = bytearray()
    for start in range(0, len(data), PIECE):
        out += decompressor.process(data[start:start + PIECE])  # raises on bytes after the end
        if len(out) > limit:
            raise TooLarge(f"the body inflates to more than {limit} bytes")
    if not decompressor.is_finished():
        raise BadEncoding("the br body is truncated")
    return bytes(out)


def _zstd(data: bytes, limit: int) -> bytes:
    """Every frame, as a receiver that reads across frames would."""
    out = bytearray()
    while data:
        frame = zstandard.ZstdDecompressor().decompressobj()
        rest = b""
        for start in range(0, len(data), PIECE):
            out += frame.decompress(data[start:start + PIECE])
            if len(out) > limit:
                raise TooLarge(f"the body inflates to more than {limit} bytes")
            if frame.eof:
                rest = frame.unused_data + data[start + PIECE:]
                break
        if not frame.eof:
            raise BadEncoding("the zstd body is truncated")
        data = rest
    return bytes(out)


_DECODERS = {"gzip": _gzip, "x-gzip": _gzip, "deflate": _deflate, "br": _brotli, "zstd": _zstd}
