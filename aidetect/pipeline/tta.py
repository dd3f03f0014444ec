"""Test-time augmentation: score each image and a few cheap variants, and say "uncertain" when
they disagree (scoring.py averages them). Costs one extra inference per variant (3x or 4x the
model work)."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def _jpeg(pixels: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG", quality=quality)
    return np.asarray(Image.open(buf).convert("RGB"))


def _rescale(pixels: np.ndarray, factor: float) -> np.ndarray:
    size = pixels.shape[0]
    small = max(1, round(size * factor))
    image = Image.fromarray(pixels).resize((small, small), Image.BILINEAR)
    return np.asarray(image.resize((size, size), Image.BILINEAR))


# The model input itself, flipped, re-encoded as JPEG at quality 85, rescaled by 0.75.
_MAKERS = {
    "original": lambda pixels: pixels,
    "flip": lambda pixels: np.ascontiguousarray(pixels[:, ::-1]),
    "jpeg85": lambda pixels: _jpeg(pixels, 85),
    "rescale75": lambda pixels: _rescale(pixels, 0.75),
}
VARIANTS = tuple(_MAKERS)
# What 0.3 flags on the default model's validation split, and how often it is wrong there: README.
DEFAULT_MAX_SPREAD = 0.3


def variants_for(metadata: dict) -> tuple[str, ...]:
    """The variants that fit a model: the 0.75x rescale only where training taught it rescaling
    (`aidetect train --aug-rescale`). A model that never saw it answers the resampling, not the
    image (a 0.75x rescale flips 43% of the default model's verdicts: its model card), so
    every image would come out "uncertain" and the mean prob_ai would be spoiled."""
    augment = metadata.get("training", {}).get("recipe", {}).get("augment", {})
    if augment.get("rescale", 0) > 0:
        return VARIANTS
    return tuple(name for name in VARIANTS if name != "rescale75")


def variants(pixels: np.ndarray, names: tuple[str, ...] = VARIANTS) -> list[np.ndarray]:
    """The named variants of one model input (uint8 HWC), in order."""
    return [_MAKERS[name](pixels) for name in names]
