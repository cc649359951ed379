"""Photos uploaded to `dalip serve`: one that declares more pixels than the limit is a 413
before it is decoded, never a 500 (the upload reader, checked without a server)."""

from __future__ import annotations

import struct
import zlib

import pytest


def _png_header(width: int, height: int) -> bytes:
    """A PNG that declares width x height pixels (1 bit, grey) and holds one empty row."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0"))
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize("side", [20_000, 9_000])
def test_a_huge_upload_is_a_413_not_a_500(side):
    """20000 x 20000 trips Pillow's own bomb check at open; 9000 x 9000 only dalip's limit."""
    from dalip.serve.uploads import RequestError, read_image

    with pytest.raises(RequestError) as caught:
        read_image(_png_header(side, side), "big.png", 20 * 2**20)
    assert caught.value.status == 413 and "the limit is 64,000,000 pixels" in str(caught.value)
