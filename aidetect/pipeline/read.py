"""Read and probe: a listed image -> its bytes and header facts, or the reason it has none.

Every file is read within a byte limit (from the listing's size before opening; the header from
the first 64 KiB before the rest) and probed from its header with Pillow, which refuses
decompression bombs, JPEGs that cannot hold their claimed size or that have thousands of scans,
and names non-images, before any pixel is decoded.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO

from PIL import Image, UnidentifiedImageError

from aidetect.errors import NotRegularFile
from aidetect.io.sources import open_local
from aidetect.pipeline import jpeg
from aidetect.pipeline.limits import MIB, Limits
from aidetect.records import NO_PROVENANCE, ImageRef, Provenance

DEFAULT_LIMITS = Limits()


@dataclass(slots=True)
class Encoded:
    """A listed image with its bytes read and its header probed (or the reason it failed)."""

    ref: ImageRef
    data: bytes | None = None
    format: str | None = None
    error: str | None = None
    width: int | None = None  # as stored, before EXIF orientation
    height: int | None = None
    orientation: int = 1  # EXIF orientation of JPEGs (1: as stored)
    mode: str = "RGB"  # Pillow's mode: what decoding it costs in memory
    wants_watermark: bool = False  # read the watermark from the full-size decode (watermark.py)
    provenance: Provenance = NO_PROVENANCE  # filled by the provenance stage, when it runs


HEAD_BYTES = 64 << 10  # enough for the header of every format we decode, bar rare JPEGs (read whole then)
# First bytes of the formats aidetect decodes: a file named like an image that starts otherwise
# is refused from its first 64 KiB, without reading the rest.
_SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG", b"GIF8", b"RIFF", b"BM", b"II*\x00", b"MM\x00*")


def read_file(ref: ImageRef) -> bytes:
    """The whole file (tests and tools; the scan reads through `load`, which bounds it)."""
    with open_local(ref) as f:
        return f.read()


def describe_os_error(exc: OSError) -> str:
    if isinstance(exc, FileNotFoundError):
        return "file not found"
    if isinstance(exc, PermissionError):
        return "permission denied"
    if isinstance(exc, IsADirectoryError):
        return "is a directory"
    if isinstance(exc, NotRegularFile):
        return "not a regular file"
    if exc.strerror is None:  # raised with a message of ours (object stores)
        return str(exc)
    return f"read error: {exc.strerror}"


def too_many_bytes(size: int | None, limits: Limits) -> str:
    """The error of a file over --max-file-mb; `size` None when it was found reading, not listed."""
    limit = f"{limits.max_bytes / MIB:g} MiB" if limits.max_bytes >= MIB else f"{limits.max_bytes} bytes"
    if size is None:
        return f"file too large: more than {limit} (--max-file-mb)"
    return f"file too large: {size} bytes (limit {limit}, --max-file-mb)"


def probe(ref: ImageRef, data: bytes, limits: Limits = DEFAULT_LIMITS) -> Encoded:
    """Check the header only: is it an image, of what format, and is it small enough to decode."""
    if not data:
        return Encoded(ref, error="empty file")
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height, fmt, mode = image.width, image.height, image.format, image.mode
            orientation = _orientation(image) if fmt in ("JPEG", "MPO") else 1
    except UnidentifiedImageError:
        return Encoded(ref, error="not an image")
    except Exception as exc:  # Pillow raises many types on malformed headers
        return Encoded(ref, error=f"bad image header: {short_message(exc)}")
    if width <= 0 or height <= 0:
        return Encoded(ref, format=fmt, error=f"bad image header: size {width}x{height}")
    if fmt in ("JPEG", "MPO"):  # before the size limit: a 772-byte "14000x14000" JPEG is truncated
        problem = jpeg.structure_problem(data, width, height, limits.max_jpeg_scans)
        if problem:
            return Encoded(ref, format=fmt, error=problem)
    if width * height > limits.max_pixels:
        return Encoded(ref, format=fmt, error=f"image too large: {width}x{height}")
    return Encoded(ref, data=data, format=fmt, width=width, height=height, orientation=orientation, mode=mode)


def _orientation(image: Image.Image) -> int:
    try:
        value = image.getexif().get(0x0112, 1)
        return value if value in range(1, 9) else 1
    except Exception:  # a broken EXIF block: Pillow's exif_transpose ignores it too
        return 1


def _refused_from_head(ref: ImageRef, head: bytes, limits: Limits) -> Encoded | None:
    """A refusal decided from the first bytes of a longer file, or None to read the rest."""
    if not head.startswith(_SIGNATURES) and head[4:8] != b"ftyp":
        return Encoded(ref, error="not an image")
    try:
        with Image.open(io.BytesIO(head)) as image:
            width, height, fmt = image.width, image.height, image.format
    except Exception:  # a header longer than the first bytes: probed again whole
        return None
    if width * height > limits.max_pixels:
        return Encoded(ref, format=fmt, error=f"image too large: {width}x{height}")
    return None


Opener = Callable[[ImageRef], contextlib.AbstractContextManager[BinaryIO]]


def load(ref: ImageRef, limits: Limits = DEFAULT_LIMITS, opener: Opener = open_local) -> Encoded:
    """Read and probe one file, never more than `limits.max_bytes` of it: its size is checked
    from the listing before opening, its header from the first 64 KiB before reading the rest.
    Every failure becomes an error, never an exception."""
    if ref.size is not None and ref.size > limits.max_bytes:
        return Encoded(ref, error=too_many_bytes(ref.size, limits))
    try:
        with opener(ref) as stream:
            head = stream.read(HEAD_BYTES)
            if len(head) == HEAD_BYTES:
                refused = _refused_from_head(ref, head, limits)
                if refused is not None:
                    return refused
            data = head + stream.read(limits.max_bytes + 1 - len(head))
    except OSError as exc:
        return Encoded(ref, error=describe_os_error(exc))
    if len(data) > limits.max_bytes:  # the listing said less, or could not say
        return Encoded(ref, error=too_many_bytes(None, limits))
    return probe(ref, data, limits)


def short_message(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:120]
