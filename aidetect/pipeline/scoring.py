"""Scoring: stacks of model windows in, one calibrated P(ai) per image out.

Every window of every image (and, with `--tta`, every variant of each window) goes through the
model in bounded chunks; the windows' logits then become one per image by the model's rule
(`Preprocess.combine`), per variant, and the variants are averaged. Training's evaluation uses
`combine_logits` too, so a validation score and a scan score are one computation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from aidetect.pipeline.detector import Detector, ai_margin, sigmoid
from aidetect.pipeline.preprocess import Preprocess
from aidetect.pipeline.tta import DEFAULT_MAX_SPREAD, variants

# Windows per inference call: bounds the float32 input a batch of 9-window images makes
# (256 x 3 x 224 x 224 x 4 B = 154 MB) whatever the batch size.
MAX_WINDOWS_PER_RUN = 256


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
    variants (None without --tta), whether they disagree, how many windows were scored, and for
    models that name generators the likeliest one and its probability given the image is AI."""

    prob: np.ndarray
    prob_max: list[float | None]
    spread: list[float | None]
    uncertain: list[bool]
    crops: list[int]
    generator: list[str | None] = field(default_factory=list)
    generator_prob: list[float | None] = field(default_factory=list)


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
        real = self.detector.info.real_index
        per_variant = [combine_logits(logits[:, v], counts, self.pre.combine, real) for v in range(len(self.names))]
        combined = np.stack([c for c, _ in per_variant], axis=1)  # images x variants x outputs
        found = self._verdicts(combined, per_variant[0][1], counts)
        found.generator, found.generator_prob = self._attribution(combined)
        return found

    def _verdicts(self, combined: np.ndarray, highest: np.ndarray, counts: list[int]) -> Scores:
        """P(ai) per image (the variants' mean), the highest window's, and the variants' agreement."""
        temperature, real = self.detector.info.temperature, self.detector.info.real_index
        # float32, as the rows store them: a verdict must agree with the score written beside it.
        probs = sigmoid(ai_margin(combined, real) / temperature).astype(np.float32)  # images x variants
        prob_max = [float(np.float32(sigmoid(m / temperature))) if n > 1 else None for m, n in zip(highest, counts)]
        if len(self.names) == 1:
            return Scores(probs[:, 0], prob_max, [None] * len(counts), [False] * len(counts), counts)
        spread = probs.max(1) - probs.min(1)
        sides = probs.astype(np.float64) >= self.threshold  # in float64, as the rows' judge compares
        uncertain = (sides.any(1) & ~sides.all(1)) | (spread > self.max_spread)
        return Scores(probs.mean(1), prob_max, [float(s) for s in spread], [bool(u) for u in uncertain], counts)

    def _attribution(self, combined: np.ndarray) -> tuple[list, list]:
        """The likeliest generator among the AI outputs and its probability given "ai" (a softmax
        over those outputs alone), from the combined logits averaged over the variants."""
        generators = self.detector.info.generators
        if not generators:
            return [None] * len(combined), [None] * len(combined)
        ai_logits = np.delete(combined.mean(axis=1), self.detector.info.real_index, axis=1)
        weights = np.exp(ai_logits - ai_logits.max(axis=1, keepdims=True))
        probs = weights / weights.sum(axis=1, keepdims=True)
        best = probs.argmax(axis=1)
        return [generators[i] for i in best], [float(np.float32(probs[n, i])) for n, i in enumerate(best)]
