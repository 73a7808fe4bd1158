"""The body decoder: a body is decoded whole within the limit, or refused as `uninspectable`
(never inspected in part: a receiver may decode more than a lenient decoder would)."""

import gzip
import zlib

import brotli
import pytest
import zstandard

from toolgate.addons.policy import decoding
from toolgate.rules.protocols import Malformed, Uninspectable

BODY = b'{"note": "ssn 536-22-1234"}'
LIMIT = 10_000


def zstd(data: bytes) -> bytes:
    return zstandard.ZstdCompressor().compress(data)


@pytest.mark.parametrize("raw, encoding, expected", [
    (gzip.compress(BODY), "gzip", BODY),
    (gzip.compress(BODY), "x-gzip", BODY),
    (gzip.compress(BODY), "GZIP", BODY),
    (zlib.compress(BODY), "deflate", BODY),
    (zlib.compress(BODY)[2:-4], "deflate", BODY),  # raw deflate, as some servers send it
    (brotli.compress(BODY), "br", BODY),
    (zstd(BODY), "zstd", BODY),
    (BODY, "identity", BODY),
    (BODY, "", BODY),
    (BODY, None, BODY),
    (gzip.compress(BODY), " , gzip ,, ", BODY),  # empty names are nothing
    (gzip.compress(BODY), "identity, gzip", BODY),
    (brotli.compress(gzip.compress(BODY)), "gzip, br", BODY),  # stacked: undone in reverse
    (gzip.compress(gzip.compress(BODY)), "gzip, gzip", BODY),
    (b"", "gzip", b""),  # an empty body keeps its header (HEAD, 204)
    # Several gzip members or zstd frames: receivers decode them all, so must we.
    (gzip.compress(b'{"a": "x", ') + gzip.compress(b'"ssn": "536-22-1234"}'), "gzip",
     b'{"a": "x", "ssn": "536-22-1234"}'),
    (zstd(b'{"a": "x", ') + zstd(b'"ssn": "536-22-1234"}'), "zstd",
     b'{"a": "x", "ssn": "536-22-1234"}'),
], ids=["gzip", "x-gzip", "upper-case", "deflate", "raw-deflate", "br", "zstd", "identity",
        "empty-header", "no-header", "empty-names", "identity-and-gzip", "stacked",
        "duplicated", "empty-body", "gzip-members", "zstd-frames"])
def test_bodies_decode_whole(raw, encoding, expected):
    assert decoding.decode(raw, encoding, LIMIT) == expected


BIG = b'{"a": "' + b"x" * 5000 + b'"}'


@pytest.mark.parametrize("raw, encoding", [
    (b"not gzip", "gzip"),
    (b"\x1f\x8b" + b"garbage" * 3, "gzip"),
    (gzip.compress(BODY)[:-6], "gzip"),  # truncated in the trailer
    (gzip.compress(BIG)[:30], "gzip"),  # truncated in the data: inflates in part, silently
    (gzip.compress(BODY) + b"junk", "gzip"),  # trailing garbage
    (gzip.compress(BODY) + b"\0\0\0\0", "gzip"),
    (gzip.compress(BODY)[:-8] + b"\0\0\0\0" + gzip.compress(BODY)[-4:], "gzip"),  # bad CRC
    (b"not deflate", "deflate"),
    (zlib.compress(BIG)[:20], "deflate"),
    (zlib.compress(BODY) + b"junk", "deflate"),
    (zlib.compress(BODY)[:-1] + b"\0", "deflate"),  # bad Adler-32
    (b"\xff" * 20, "br"),
    (brotli.compress(BIG)[:-3], "br"),
    (brotli.compress(BODY) + b"junk", "br"),
    (b"junkjunkjunk", "zstd"),
    (zstd(BIG)[:-3], "zstd"),  # truncated: decodes to nothing, silently
    (zstd(BODY) + b"junk", "zstd"),
    (BODY, "compress"),  # unknown
    (BODY, "gzip, x-unknown"),
    (gzip.compress(BODY), "gzip, gzip"),  # one coding too many
    (brotli.compress(gzip.compress(BODY)), "br, gzip"),  # in the wrong order
], ids=["gzip-not", "gzip-corrupt", "gzip-truncated-trailer", "gzip-truncated-data",
        "gzip-trailing-garbage", "gzip-trailing-zeros", "gzip-bad-crc", "deflate-not",
        "deflate-truncated", "deflate-trailing-garbage", "deflate-bad-checksum", "br-not",
        "br-truncated", "br-trailing-garbage", "zstd-not", "zstd-truncated",
        "zstd-trailing-garbage", "unknown", "unknown-stacked", "duplicated-once-applied",
        "wrong-order"])
def test_bodies_that_do_not_decode_are_uninspectable(raw, encoding):
    with pytest.raises(Uninspectable) as raised:
        decoding.decode(raw, encoding, LIMIT)
    assert not isinstance(raised.value, (decoding.TooLarge, Malformed))
    assert raised.value.code == "uninspectable"


@pytest.mark.parametrize("raw, encoding", [
    (b"x" * (LIMIT + 1), None),
    (gzip.compress(b"\0" * (LIMIT + 1)), "gzip"),
    (gzip.compress(b"\0" * 6000) * 2, "gzip"),  # two members, each within the limit
    (zlib.compress(b"\0" * (LIMIT + 1)), "deflate"),
    (brotli.compress(b"\0" * (LIMIT + 1)), "br"),
    (zstd(b"\0" * (20 * 1024 * 1024)), "zstd"),
    (zstd(b"\0" * 6000) * 2, "zstd"),
    (gzip.compress(gzip.compress(b"\0" * (LIMIT + 1))), "gzip, gzip"),
], ids=["raw", "gzip", "gzip-members", "deflate", "br", "zstd-bomb", "zstd-frames", "nested"])
def test_bodies_past_the_limit_are_too_large(raw, encoding):
    with pytest.raises(decoding.TooLarge, match=f"than {LIMIT} bytes"):
        decoding.decode(raw, encoding, LIMIT)
