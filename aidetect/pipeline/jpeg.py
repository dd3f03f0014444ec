"""JPEG specifics: a cheap structure check before decoding, and a strict libjpeg-turbo decode.

Decoders quietly fill what a damaged JPEG lacks with grey and report success, so a photo cut
in half with an end marker appended would get a verdict on half its pixels. Two guards:
- `structure_problem` walks the markers (microseconds, no decoding): it counts progressive
  scans (each one re-walks the whole image, so thousands make a small file decode for minutes)
  and checks the file can hold the image its header claims (every 8x8 block costs at least
  one bit of Huffman-coded data).
- `decode_rgb` decodes with simplejpeg in strict mode, where libjpeg-turbo's "premature end of
  data" and "corrupt data" warnings are errors.
"""

from __future__ import annotations

import math
import re

import numpy as np

from aidetect.errors import TruncatedJPEG

_SOF_HUFFMAN = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7})
_SOF_ARITHMETIC = frozenset({0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
# The end of entropy-coded data: 0xFF followed by anything but a stuffed 0x00, a restart
# marker (0xD0-0xD7) or another fill 0xFF.
_NEXT_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")


def structure_problem(data: bytes, width: int, height: int, max_scans: int) -> str | None:
    """A reason to refuse the file before decoding it, or None."""
    scans, pos, n, sof = 0, 2, len(data), None
    while pos + 4 <= n:
        if data[pos] != 0xFF:
            return None  # not a marker where one must be: leave the verdict to the decoder
        marker = data[pos + 1]
        if marker == 0xFF:
            pos += 1
            continue
        if marker == 0xD9:
            break
        if 0xD0 <= marker <= 0xD8 or marker == 0x01:
            pos += 2
            continue
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        if marker in _SOF_HUFFMAN or marker in _SOF_ARITHMETIC:
            sof = marker
        pos += 2 + length
        if marker == 0xDA:
            scans += 1
            if scans > max_scans:
                return f"too many progressive scans: more than {max_scans}"
            found = _NEXT_MARKER.search(data, pos)
            pos = found.start() if found else n
    if sof in _SOF_HUFFMAN and n * 8 < math.ceil(width / 8) * math.ceil(height / 8):
        return "truncated JPEG"  # fewer bits than 8x8 blocks: the data ends early
    return None


def decode_rgb(data: bytes, min_size: tuple[int, int] = (0, 0)) -> np.ndarray:
    """Strict RGB decode in stored orientation, DCT-scaled to the smallest power of two at least
    `min_size` (width, height). Raises TruncatedJPEG, ValueError (corrupt) or LookupError (a
    colour space libjpeg-turbo cannot turn into RGB, such as CMYK: Pillow decodes those)."""
    import simplejpeg

    try:
        colorspace = simplejpeg.decode_jpeg_header(data)[2]
    except ValueError as exc:
        raise _classify(exc) from None
    if colorspace not in ("Gray", "YCbCr", "RGB"):
        raise LookupError(colorspace)
    try:
        return simplejpeg.decode_jpeg(data, colorspace="RGB", min_width=min_size[0], min_height=min_size[1])
    except ValueError as exc:
        raise _classify(exc) from None


def _classify(exc: ValueError) -> ValueError:
    text = str(exc)
    if "premature end" in text.lower() or "insufficient" in text.lower():
        return TruncatedJPEG("truncated JPEG")
    return ValueError(text)
