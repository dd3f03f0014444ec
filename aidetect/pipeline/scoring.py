"""Scoring: stacks of model windows in, one calibrated P(ai) per image out.

Every window of every image (and, with `--tta`, every variant of each window) goes through the
model in bounded chunks; the windows' logits then become one per image by the model's rule
(`Preprocess.combine`), per variant, and the variants are averaged. Training's evaluation uses
`combine_logits` too, so a validation score and a scan score are one computation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from aidetect.pipeline.detector import Detector, sigmoid
from aidetect.pipeline.preprocess import Preprocess
from aidetect.pipeline.tta import DEFAULT_MAX_SPREAD, variants

# Windows per inference call: bounds the float32 input a batch of 9-window images makes
# (256 x 3 x 224 x 224 x 4 B = 154 MB) whatever the batch size.
MAX_WINDOWS_PER_RUN = 256


def ai_margin(logits: np.ndarray, real_index: int) -> np.ndarray:
    """How much more the logits say "ai" than "real": log P(any AI class) - log P(real)."""
    others = np.delete(logits, real_index, axis=-1)
    peak = others.max(axis=-1, keepdims=True)
    log_ai = (peak + np.log(np.exp(others - peak).sum(axis=-1, keepdims=True)))[..., 0]
    return log_ai - logits[..., real_index]


def combine_logits(
    logits: np.ndarray, counts: Sequence[int], rule: str, real_index: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per image: the combined logits of its consecutive `counts` windows (their mean, or the
    window with the highest `ai_margin` for "max"), and that highest margin."""
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    margins = ai_margin(logits, real_index)
    highest = np.maximum.reduceat(margins, starts)
    if rule == "max":
        picks = [start + int(np.argmax(margins[start : start + n])) for start, n in zip(starts, counts)]
        return logits[picks], highest
    return np.add.reduceat(logits, starts, axis=0) / np.asarray(counts, np.float64)[:, None], highest


@dataclass
class Scores:
    """Per image: P(ai), the highest window's P(ai) (None for one window), the spread of the
    variants (None without --tta), whether they disagree, and how many windows were scored."""

    prob: np.ndarray
    prob_max: list[float | None]
    spread: list[float | None]
    uncertain: list[bool]
    crops: list[int]


class Scorer:
    """Scores window stacks with a detector; `tta` names the variants to average (or None)."""

    def __init__(
        self,
        detector: Detector,
        pre: Preprocess,
        threshold: float,
        tta: tuple[str, ...] | None = None,
        max_spread: float = DEFAULT_MAX_SPREAD,
    ) -> None:
        self.detector, self.pre, self.threshold = detector, pre, threshold
        self.names, self.max_spread = tta or ("original",), max_spread

    def logits(self, windows: list[np.ndarray]) -> np.ndarray:
        """float64 logits of uint8 HWC windows, in chunks of MAX_WINDOWS_PER_RUN."""
        chunks = [
            self.detector.logits(self.pre.normalize(np.stack(windows[i : i + MAX_WINDOWS_PER_RUN])))
            for i in range(0, len(windows), MAX_WINDOWS_PER_RUN)
        ]
        return np.concatenate(chunks)

    def score(self, stacks: list[np.ndarray]) -> Scores:
        if not stacks:
            return Scores(np.zeros(0), [], [], [], [])
        counts = [len(stack) for stack in stacks]
        inputs = [v for stack in stacks for window in stack for v in variants(window, self.names)]
        logits = self.logits(inputs).reshape(sum(counts), len(self.names), -1)
        temperature, real = self.detector.info.temperature, 1 - self.detector.info.ai_index
        per_variant = [combine_logits(logits[:, v], counts, self.pre.combine, real) for v in range(len(self.names))]
        margins = np.stack([ai_margin(combined, real) for combined, _ in per_variant], axis=1)
        # float32, as the rows store them: a verdict must agree with the score written beside it.
        probs = sigmoid(margins / temperature).astype(np.float32)  # images x variants
        highest = per_variant[0][1]  # the original windows' highest margin
        prob_max = [float(np.float32(sigmoid(m / temperature))) if n > 1 else None for m, n in zip(highest, counts)]
        if len(self.names) == 1:
            return Scores(probs[:, 0], prob_max, [None] * len(stacks), [False] * len(stacks), counts)
        spread = probs.max(1) - probs.min(1)
        sides = probs.astype(np.float64) >= self.threshold  # in float64, as the rows' judge compares
        uncertain = (sides.any(1) & ~sides.all(1)) | (spread > self.max_spread)
        return Scores(probs.mean(1), prob_max, [float(s) for s in spread], [bool(u) for u in uncertain], counts)
