"""Small files built to cost a scanner memory or time: the cases the scan's bounds exist for.

Each maker returns the bytes of one file (a few KB to a few MB). The benchmark scans a folder of
them beside ordinary photos and reports peak memory and the longest a file held the scan; the
tests assert the row each one gets. Nothing here needs more than numpy and Pillow.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def flat_png(width: int, height: int, gray: bool = True) -> bytes:
    """A valid PNG of any size whose pixels are zero: a few KB on disk, width*height*3 bytes decoded.

    The IDAT stream is compressed row by row, so making a 10000x10000 file needs only one row in memory."""
    channels = 1 if gray else 3
    row = b"\x00" + bytes(width * channels)  # filter byte + pixels
    packer = zlib.compressobj(9)
    idat = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0 if gray else 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


def ztxt_flood_png(chunks: int = 1500, inflated: int = 2 << 20) -> bytes:
    """A small valid PNG followed (after IDAT) by `chunks` zTXt chunks, each inflating to `inflated` bytes."""
    base = flat_png(64, 64)
    body = zlib.compress(b"A" * inflated, 9)
    extra = b"".join(png_chunk(b"zTXt", b"comment%d\x00\x00" % i + body) for i in range(chunks))
    return base[:-12] + extra + base[-12:]


def icc_png(profile_bytes: int = 2 << 20) -> bytes:
    """A valid PNG carrying a large (random, so incompressible) ICC profile."""
    buf = io.BytesIO()
    image = Image.fromarray(_texture(48, 64))
    image.save(buf, "PNG", icc_profile=os.urandom(profile_bytes))
    return buf.getvalue()


def _texture(height: int, width: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 200 // max(width, 1), y * 200 // max(height, 1), (x + y) % 256], -1)
    return np.clip(base + rng.integers(0, 40, (height, width, 3)), 0, 255).astype(np.uint8)


def jpeg_bytes(height: int, width: int, seed: int = 0, **kwargs) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(_texture(height, width, seed)).save(buf, "JPEG", quality=90, **kwargs)
    return buf.getvalue()


def _segments(data: bytes) -> list[tuple[int, int, int]]:
    """(marker, start, end) of each JPEG marker segment, entropy-coded data included with its SOS."""
    out, pos = [], 2
    while pos < len(data) - 1:
        marker = data[pos + 1]
        if marker == 0xD9:
            out.append((marker, pos, pos + 2))
            break
        (length,) = struct.unpack_from(">H", data, pos + 2)
        end = pos + 2 + length
        if marker == 0xDA:  # scan data runs to the next marker that is not a stuffed 0xFF00 or RSTn
            while end < len(data) - 1 and not (data[end] == 0xFF and data[end + 1] not in (0, *range(0xD0, 0xD8))):
                end += 1
        out.append((marker, pos, end))
        pos = end
    return out


def many_scans_jpeg(repeats: int = 10_000, size: int = 2048) -> bytes:
    """A progressive JPEG whose last scan is repeated `repeats` times: small, slow to decode."""
    flat = np.full((size, size, 3), 128, np.uint8)
    buf = io.BytesIO()
    Image.fromarray(flat).save(buf, "JPEG", quality=90, progressive=True)
    data = buf.getvalue()
    segments = _segments(data)
    last_scan = [s for s in segments if s[0] == 0xDA][-1]
    scan = data[last_scan[1] : last_scan[2]]
    return data[: last_scan[2]] + scan * repeats + data[last_scan[2] :]


def cut_jpeg_with_eoi(fraction: float = 0.4) -> bytes:
    """A JPEG cut inside its image data, with an EOI marker appended so it looks complete."""
    data = jpeg_bytes(480, 640, seed=5)
    return data[: int(len(data) * fraction)] + b"\xff\xd9"


def lying_sof_jpeg(width: int = 14000, height: int = 14000) -> bytes:
    """A tiny JPEG whose frame header claims a huge size its data cannot hold."""
    data = bytearray(jpeg_bytes(16, 16, seed=6))
    for marker, start, _ in _segments(bytes(data)):
        if marker in (0xC0, 0xC1, 0xC2):
            struct.pack_into(">HH", data, start + 5, height, width)
            break
    return bytes(data)


# name -> (maker, the error row it must get, or None for a verdict). The heavy ones cost a naive
# scanner gigabytes or minutes; "big" marks those the tests leave to the slow set.
CASES = {
    "strip-1x2000000.png": (lambda: flat_png(1, 2_000_000), None),
    "ztxt-flood.png": (ztxt_flood_png, None),
    "icc-2mib.png": (icc_png, None),
    "many-scans.jpg": (many_scans_jpeg, "too many progressive scans"),
    "cut-with-eoi.jpg": (cut_jpeg_with_eoi, "truncated JPEG"),
    "lying-size.jpg": (lying_sof_jpeg, "truncated JPEG"),
}
BIG_PNG_COUNT = 12  # 10000x10000 gray PNGs, ~100 KB each: 300 MB each once decoded to RGB


def make_hostile_corpus(folder: Path, big: bool = True, sparse_gib: int = 5) -> dict[str, str | None]:
    """Write the cases into `folder`; returns file name -> expected error prefix (None: a verdict)."""
    folder.mkdir(parents=True, exist_ok=True)
    expected: dict[str, str | None] = {}
    for name, (make, error) in CASES.items():
        (folder / name).write_bytes(make())
        expected[name] = error
    if big:
        big_png = flat_png(10_000, 10_000)
        for i in range(BIG_PNG_COUNT):
            (folder / f"big-{i:02d}.png").write_bytes(big_png)
            expected[f"big-{i:02d}.png"] = None
    if sparse_gib:
        with open(folder / "sparse.jpg", "wb") as f:
            f.truncate(sparse_gib << 30)  # sparse: no disk used, 5 GiB to whoever reads it whole
        expected["sparse.jpg"] = "file too large"
    return expected
