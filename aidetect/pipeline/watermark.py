"""The invisible watermark of Stable Diffusion's reference code, read from the pixels.

Stable Diffusion 1.x, 2.x and SDXL mark their outputs with the `invisible-watermark` library's
DWT-DCT method: the image's U plane (of OpenCV's BGR->YUV) goes through one level of the Haar
wavelet transform, its low band is cut into 4x4 blocks, and in each block the largest
coefficient after the first is quantised so that its magnitude modulo 36 falls in the upper
half for a 1 and the lower half for a 0, the message repeating over the blocks. Reading it back
needs no key: every block votes for its bit, and the votes are compared with the three known
messages. It survives PNG and mild JPEG, not resizing or cropping, and needs 256x256 pixels.

This module is the decoder alone (numpy, no OpenCV, no PyWavelets); the tests check it against
the library's own encoder.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np

SCALE = 36  # the library's default quantisation step for the U plane
BLOCK = 4
MIN_PIXELS = 256 * 256


def _bits_of(text: bytes) -> tuple[int, ...]:
    return tuple(int(b) for b in np.unpackbits(np.frombuffer(text, np.uint8)))


def _tail(n: int, k: int) -> float:
    """P(Binomial(n, 1/2) >= k): how often a carrier with random bits matches k of n."""
    return sum(math.comb(n, j) for j in range(k, n + 1)) / 2**n


# Stability's detection script's levels for SDXL's 48 bits: 36 or more "very likely" marked (no
# real image of their 10,000 reached it), 34-35 "likely" (0.02% of real images), 28-33
# "partial". Other message lengths get the counts a random carrier reaches as rarely.
VERY_LIKELY_P, LIKELY_P, PARTIAL_P = _tail(48, 36), _tail(48, 34), _tail(48, 28)


@dataclass(frozen=True)
class Message:
    generator: str
    bits: tuple[int, ...]
    either_order: bool = False  # also read with red and blue swapped (an encoder handed RGB)

    def level(self, matching: int) -> str:
        """none, partial, likely or very likely, as Stability grades SDXL's 48 bits."""
        p = _tail(len(self.bits), matching)
        for name, bound in (("very likely", VERY_LIKELY_P), ("likely", LIKELY_P), ("partial", PARTIAL_P)):
            if p <= bound:
                return name
        return "none"


MESSAGES = (
    Message("Stable Diffusion 1.x", _bits_of(b"StableDiffusionV1")),  # CompVis scripts/txt2img.py
    Message("Stable Diffusion 2.x", _bits_of(b"SDV2")),  # Stability's stablediffusion repository
    # diffusers' SDXL watermarker handed the encoder RGB until it was fixed: both orders occur.
    Message("Stable Diffusion XL", tuple(int(c) for c in "101100111110110010010000011110111011000110011110"), True),
)


@dataclass(frozen=True)
class WatermarkMatch:
    generator: str
    matching: int  # bits of the message read back
    length: int  # bits in the message
    level: str  # none, partial, likely, very likely

    @property
    def decisive(self) -> bool:
        return self.level == "very likely"

    @property
    def column(self) -> str:
        """The `watermark_bits` column: "36/48"."""
        return f"{self.matching}/{self.length}"


def u_plane(rgb: np.ndarray, swap_red_blue: bool = False) -> np.ndarray:
    """OpenCV's BGR->YUV U plane of an 8-bit image, rounded to 8 bits as OpenCV stores it.
    `swap_red_blue` reads an image whose encoder was handed RGB as if it were BGR (some SDXL
    pipelines did)."""
    r, g, b = (rgb[..., i].astype(np.float32) for i in range(3))
    if swap_red_blue:
        r, b = b, r
    y = 0.299 * r + 0.587 * g + 0.114 * b
    return np.clip(np.rint(0.492 * (b - y) + 128.0), 0, 255)


def block_votes(plane: np.ndarray) -> np.ndarray:
    """One 0/1 vote per 4x4 block of the Haar low band, in the encoder's (row-major) order."""
    h, w = plane.shape[0] // 4 * 4, plane.shape[1] // 4 * 4
    x = plane[:h, :w]
    low = (x[0::2, 0::2] + x[0::2, 1::2] + x[1::2, 0::2] + x[1::2, 1::2]) / 2  # orthonormal Haar
    rows, cols = low.shape[0] // BLOCK, low.shape[1] // BLOCK
    blocks = low[: rows * BLOCK, : cols * BLOCK].reshape(rows, BLOCK, cols, BLOCK).swapaxes(1, 2)
    flat = blocks.reshape(rows * cols, BLOCK * BLOCK)
    strongest = np.abs(flat[:, 1:]).argmax(axis=1) + 1  # the first maximum, as numpy's argmax
    values = np.abs(flat[np.arange(len(flat)), strongest])
    return (values % SCALE > 0.5 * SCALE).astype(np.float64)


BAND = 256  # rows of pixels a time (a multiple of 8: whole block rows), so big images need little memory


def _votes_in_bands(rgb: np.ndarray, swap: bool) -> np.ndarray:
    """block_votes over the whole image, computed a band of rows at a time (the votes of a block
    row depend on its 8 pixel rows only, so the concatenation is the same sequence)."""
    rows = rgb.shape[0] // 8 * 8
    bands = [block_votes(u_plane(rgb[r : min(r + BAND, rows)], swap)) for r in range(0, rows, BAND)]
    return np.concatenate(bands) if bands else np.zeros(0)


def read_bits(votes: np.ndarray, length: int) -> np.ndarray:
    """The message of `length` bits the votes spell: each bit the majority of the blocks that carry it."""
    sums = np.bincount(np.arange(len(votes)) % length, weights=votes, minlength=length)
    counts = np.bincount(np.arange(len(votes)) % length, minlength=length)
    return (sums / np.maximum(counts, 1)) * 255 > 127


def best_match(rgb: np.ndarray) -> WatermarkMatch | None:
    """The known message the image carries best (by how far above chance), or None for images
    under 256x256 pixels, which the encoder refuses to mark."""
    if rgb.shape[0] * rgb.shape[1] < MIN_PIXELS:
        return None
    best: WatermarkMatch | None = None
    for swap in (False, True):
        votes = _votes_in_bands(rgb, swap)
        for message in MESSAGES:
            n = len(message.bits)
            if len(votes) < n or (swap and not message.either_order):
                continue
            matching = int((read_bits(votes, n) == np.array(message.bits, bool)).sum())
            found = WatermarkMatch(message.generator, matching, n, message.level(matching))
            if best is None or _strength(found) > _strength(best):
                best = found
    return best


def _strength(match: WatermarkMatch) -> float:
    """How far above chance a match is, comparable across message lengths (z-score)."""
    n = match.length
    return (match.matching - n / 2) / math.sqrt(n / 4)


# Generators write their outputs at sizes that are multiples of 64 (the latent's 8x times the
# UNet's 8x), from 256 up to 2048 a side, and save them losslessly (PNG, WebP). Only those are
# read in the default `auto` mode: a full-resolution decode of every photo would cost a scan
# several times its speed (README: measured), and JPEG copies have mostly lost the mark anyway.
AUTO_FORMATS = frozenset({"PNG", "WEBP"})
MODES = ("auto", "all", "off")


def checks_watermark(item, mode: str) -> bool:
    """Whether to read this probed image (`read.Encoded`) for a watermark under `mode`."""
    if mode == "off" or item.error or (item.width or 0) * (item.height or 0) < MIN_PIXELS:
        return False
    if mode == "all":
        return True
    sides = (item.width, item.height)
    return item.format in AUTO_FORMATS and all(s % 64 == 0 and 256 <= s <= 2048 for s in sides)


def read_watermark(data: bytes) -> WatermarkMatch | None:
    """Decode the image at full size in its stored orientation (the mark was written before any
    EXIF turn) and read it; None when it cannot be decoded (the decode stage reports why)."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            image.seek(0)
            rgb = np.asarray(image.convert("RGB"))
    except Exception:
        return None
    return best_match(rgb)
