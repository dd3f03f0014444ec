"""Test-time augmentation: score each image and a few cheap variants, and say "uncertain" when
they disagree. Costs one extra inference per variant (4x the model work with the defaults)."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from aidetect.preprocess import Preprocess

VARIANTS = ("original", "flip", "jpeg85", "rescale75")
DEFAULT_MAX_SPREAD = 0.3


def _jpeg(pixels: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG", quality=quality)
    return np.asarray(Image.open(buf).convert("RGB"))


def _rescale(pixels: np.ndarray, factor: float) -> np.ndarray:
    size = pixels.shape[0]
    small = max(1, round(size * factor))
    image = Image.fromarray(pixels).resize((small, small), Image.BILINEAR)
    return np.asarray(image.resize((size, size), Image.BILINEAR))


def variants(pixels: np.ndarray) -> list[np.ndarray]:
    """The model input itself, flipped, re-encoded as JPEG at quality 85, and rescaled by 0.75."""
    return [pixels, np.ascontiguousarray(pixels[:, ::-1]), _jpeg(pixels, 85), _rescale(pixels, 0.75)]


class TTAScorer:
    """Mean P(ai) over the variants, their spread (max - min), and whether they agree."""

    def __init__(self, predict, pre: Preprocess, threshold: float, max_spread: float = DEFAULT_MAX_SPREAD) -> None:
        self.predict, self.pre = predict, pre
        self.threshold, self.max_spread = threshold, max_spread

    def score(self, pixels: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(mean probability, spread, uncertain) for each image."""
        stacked = np.stack([v for p in pixels for v in variants(p)])
        probs = self.predict(self.pre.normalize(stacked)).reshape(len(pixels), len(VARIANTS))
        spread = probs.max(1) - probs.min(1)
        sides = probs >= self.threshold
        disagree = sides.any(1) & ~sides.all(1)
        return probs.mean(1), spread, disagree | (spread > self.max_spread)
