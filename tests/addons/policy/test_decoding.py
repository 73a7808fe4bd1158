"""The body decoder: a body is decoded whole within the limit, or refused as `uninspectable`
(never inspected in part: a receiver may decode more than a lenient decoder would)."""

import functools
import gzip
import tracemalloc
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


# -- the compression-bomb guard: a small body that inflates past the limit --------------------

MIB = 1024 * 1024
BOMB_LIMIT = 1 * MIB
BOMB_SIZE = 256 * MIB  # what the bombs inflate to


def _zeros(total: int):
    for _ in range(total // MIB):
        yield bytes(MIB)


def _zlib_stream(wbits: int):
    def compress(chunks) -> bytes:
        stream = zlib.compressobj(9, zlib.DEFLATED, wbits)
        return b"".join(stream.compress(chunk) for chunk in chunks) + stream.flush()
    return compress


def _brotli_stream(chunks) -> bytes:
    stream = brotli.Compressor(quality=5)
    return b"".join(stream.process(chunk) for chunk in chunks) + stream.finish()


def _zstd_stream(chunks) -> bytes:
    stream = zstandard.ZstdCompressor().compressobj()
    return b"".join(stream.compress(chunk) for chunk in chunks) + stream.flush()


# Each coding's compressor, fed a piece at a time (the bombs are never whole in memory here).
COMPRESS = {"gzip": _zlib_stream(31), "x-gzip": _zlib_stream(31), "deflate": _zlib_stream(15),
            "raw-deflate": _zlib_stream(-15), "br": _brotli_stream, "zstd": _zstd_stream}


@functools.cache
def zeros_bomb(coding: str) -> bytes:
    """`BOMB_SIZE` zero bytes compressed with one coding (a few hundred KiB at most)."""
    return COMPRESS[coding](_zeros(BOMB_SIZE))


BOMBS = {  # name: (Content-Encoding, the body on the wire)
    **{name: (name.replace("raw-", ""), lambda name=name: zeros_bomb(name.replace("x-", "")))
       for name in COMPRESS},
    # Stacked: each layer within the limit but the innermost, or a bomb in a bomb.
    "gzip-in-br": ("gzip, br", lambda: brotli.compress(zeros_bomb("gzip"))),
    "gzip-in-zstd": ("gzip, zstd", lambda: zstd(zeros_bomb("gzip"))),
    "gzip-in-gzip": ("gzip, gzip", lambda: gzip.compress(zeros_bomb("gzip"))),
    "br-in-deflate": ("br, deflate", lambda: zlib.compress(zeros_bomb("br"))),
}


def bomb(name: str) -> tuple[bytes, str]:
    encoding, build = BOMBS[name]
    return build(), encoding


@pytest.mark.parametrize("name", list(BOMBS))
def test_a_small_body_that_inflates_past_the_limit_is_too_large(name):
    raw, encoding = bomb(name)
    assert len(raw) < BOMB_LIMIT // 2  # small on the wire: only the decoded size is too large
    with pytest.raises(decoding.TooLarge, match=f"inflates to more than {BOMB_LIMIT} bytes"):
        decoding.decode(raw, encoding, BOMB_LIMIT)


def peak_while_decoding(raw: bytes, encoding: str, limit: int) -> int:
    """The most memory Python allocated while `decode` refused `raw`."""
    tracemalloc.start()
    try:
        with pytest.raises(decoding.TooLarge):
            decoding.decode(raw, encoding, limit)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("name", list(BOMBS))
def test_a_bomb_is_refused_before_it_is_inflated_whole(name):
    raw, encoding = bomb(name)
    assert peak_while_decoding(raw, encoding, BOMB_LIMIT) < BOMB_SIZE // 2


# brotli 1.1.0's Decompressor.process has no output limit: one 64-byte piece of a brotli bomb
# inflates to tens of MiB before the guard can look (85 MiB measured with a 1 MiB limit).
BROTLI_UNBOUNDED = pytest.mark.xfail(strict=True, reason="brotli's decoder output is not bounded")


@pytest.mark.parametrize("name", [
    pytest.param(name, marks=BROTLI_UNBOUNDED) if "br" in BOMBS[name][0].split(", ")[0] else name
    for name in BOMBS
])
def test_a_bomb_never_takes_more_than_a_few_times_the_limit(name):
    raw, encoding = bomb(name)
    assert peak_while_decoding(raw, encoding, BOMB_LIMIT) < 4 * BOMB_LIMIT


def _exactly(encoding: str, data: bytes) -> bytes:
    for coding in (c.strip() for c in encoding.split(",")):
        data = COMPRESS[coding]([data])
    return data


AT_LIMIT = ["gzip", "x-gzip", "deflate", "raw-deflate", "br", "zstd", "gzip, br", "br, zstd",
            "gzip, gzip"]


@pytest.mark.parametrize("encoding", AT_LIMIT)
def test_a_body_that_inflates_to_exactly_the_limit_decodes_and_one_byte_more_does_not(encoding):
    wire = encoding.replace("raw-", "")
    assert decoding.decode(_exactly(encoding, b"x" * LIMIT), wire, LIMIT) == b"x" * LIMIT
    with pytest.raises(decoding.TooLarge):
        decoding.decode(_exactly(encoding, b"x" * (LIMIT + 1)), wire, LIMIT)


@pytest.mark.parametrize("encoding, compress", [("gzip", gzip.compress), ("zstd", zstd)])
def test_members_and_frames_count_together_against_the_limit(encoding, compress):
    half = b"y" * (LIMIT // 2)
    assert decoding.decode(compress(half) + compress(half), encoding, LIMIT) == half * 2
    with pytest.raises(decoding.TooLarge):
        decoding.decode(compress(half) + compress(half + b"y"), encoding, LIMIT)


def test_a_body_of_exactly_the_limit_on_the_wire_is_inspected():
    assert decoding.decode(b"x" * LIMIT, None, LIMIT) == b"x" * LIMIT
