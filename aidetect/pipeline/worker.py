"""The batch worker: image references in, verdict rows out (read and probe, provenance, decode,
score), the one piece of work every engine runs.

`BatchWorker` holds one detector and one decoder. The local engine drives its three steps
(`load`, `decode`, `rows`) from threads so they overlap; the Ray engine calls `judge` in each
actor. Either way a bad file is a row, never an exception.
"""

from __future__ import annotations

import contextlib

from aidetect.io.s3 import open_stored
from aidetect.pipeline.decode import BatchDecoder, Decoded
from aidetect.pipeline.detector import Detector
from aidetect.pipeline.domain import domain_of
from aidetect.pipeline.limits import Limits
from aidetect.pipeline.provenance import inspect as inspect_provenance
from aidetect.pipeline.provenance import with_watermark
from aidetect.pipeline.read import DEFAULT_LIMITS, Encoded, load
from aidetect.pipeline.scoring import Scorer
from aidetect.pipeline.tta import DEFAULT_MAX_SPREAD, variants_for
from aidetect.pipeline.watermark import checks_watermark
from aidetect.records import ImageRef, Row


def open_ref(ref: ImageRef):
    """A stream of a file's, an object's or a container member's bytes."""
    if ref.payload is not None:
        return contextlib.nullcontext(ref.payload.open())
    return open_stored(ref)


def read_ref(ref: ImageRef, limits: Limits = DEFAULT_LIMITS) -> bytes:
    """At most `limits.max_bytes` of a file or object (raises OSError beyond, or when unreadable)."""
    with open_ref(ref) as stream:
        data = stream.read(limits.max_bytes + 1)
    if len(data) > limits.max_bytes:
        raise OSError(f"larger than {limits.max_bytes} bytes")
    return data


class BatchWorker:
    """Turns image references into verdict rows in three steps an engine may overlap: `load`
    (per file, I/O), `decode` (per batch) and `rows` (inference and verdicts); `judge` is all three."""

    def __init__(
        self,
        detector: Detector,
        decoder: BatchDecoder,
        threshold: float,
        limits: Limits,
        provenance: bool = True,
        c2pa_trust: str | None = None,
        tta: bool = False,
        max_spread: float = DEFAULT_MAX_SPREAD,
        watermarks: str = "auto",
        attribute_real: bool = False,
    ) -> None:
        self.detector, self.decoder, self.threshold = detector, decoder, threshold
        self.limits, self.provenance, self.c2pa_trust = limits, provenance, c2pa_trust
        self.watermarks, self.attribute_real = watermarks, attribute_real
        self.domain = domain_of(detector.info.metadata)
        names = variants_for(detector.info.metadata) if tta else None
        self.scorer = Scorer(detector, decoder.pre, threshold, names, max_spread)

    @property
    def label(self) -> str:
        """The `model` column: the model's name and a short hash of its file."""
        return self.detector.info.label

    @property
    def runtime(self) -> str:
        return self.detector.runtime

    @property
    def device(self) -> str:
        return self.detector.device

    def load(self, ref: ImageRef) -> Encoded:
        """Bytes, header probe and (unless turned off) the provenance walk."""
        item = load(ref, self.limits, open_ref)
        if self.provenance and item.data:
            item.provenance = inspect_provenance(item.data, item.format, self.c2pa_trust)
        # Read by the decoder from its full-size decode of the image, not decoded twice.
        item.wants_watermark = bool(item.data) and checks_watermark(item, self.watermarks)
        return item

    def decode(self, batch: list[Encoded]) -> tuple[list[Encoded], list[Decoded]]:
        decoded = self.decoder.decode(batch)
        for item in batch:
            item.data = None  # the rows need the provenance, not the bytes: free them now
        return batch, decoded

    def rows(self, encoded: list[Encoded], decoded: list[Decoded]) -> list[Row]:
        found = self.scorer.score([d.pixels for d in decoded if d.error is None])
        scores = iter(
            zip(
                found.prob,
                found.spread,
                found.uncertain,
                found.prob_max,
                found.crops,
                found.generator,
                found.generator_prob,
            )
        )
        rows = []
        for e, d in zip(encoded, decoded):
            if e.wants_watermark:
                e.provenance = with_watermark(e.provenance, d.watermark)
            if d.error is not None:
                rows.append(Row(d.ref, None, None, d.error, d.width, d.height, e.provenance))
                continue
            p, spread, uncertain, p_max, crops, generator, generator_prob = next(scores)
            # Compare in float64, as pandas users and `aidetect eval` do: a float32 score against a
            # Python float compares in float32, where the threshold can round onto the score.
            p = float(p)
            label = "uncertain" if uncertain else ("ai" if p >= self.threshold else "real")
            outside = self.domain.outside(d.width, d.height, e.format) if self.domain else "unknown"
            row = Row(d.ref, label, p, None, d.width, d.height, e.provenance, spread, outside, crops, p_max)
            if label != "real" or self.attribute_real:  # which generator, given the image is AI
                row.generator_pred, row.generator_prob = generator, generator_prob
            rows.append(row)
        return rows

    def judge(self, refs: list[ImageRef]) -> list[Row]:
        """The whole per-batch path, for engines that hand over references (Ray)."""
        try:
            return self.rows(*self.decode([self.load(r) for r in refs]))
        except Exception as exc:  # never fail a batch: every image still gets its row
            return [Row(r, None, None, f"internal error: {type(exc).__name__}: {exc}"[:200], None, None) for r in refs]
