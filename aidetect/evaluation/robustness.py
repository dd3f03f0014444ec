"""How much `prob_ai` moves when an image is re-saved, resized or cropped (for `aidetect eval`).

Each perturbation is applied to the original image, re-encoded, and scored through the scan's
own stages (probe, decode, detector), as if a person had re-saved the file and scanned it.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from aidetect.pipeline.decode import BatchDecoder
from aidetect.pipeline.preprocess import open_rgb
from aidetect.pipeline.read import probe
from aidetect.pipeline.scoring import Scorer
from aidetect.records import ImageRef


def _encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **kwargs)
    return buf.getvalue()


def _rescale(image: Image.Image, factor: float) -> bytes:
    size = (max(1, round(image.width * factor)), max(1, round(image.height * factor)))
    return _encode(image.resize(size, Image.BILINEAR), "PNG")


def _crop(image: Image.Image, keep: float = 0.9) -> bytes:
    w, h = image.size
    dw, dh = round(w * (1 - keep) / 2), round(h * (1 - keep) / 2)
    return _encode(image.crop((dw, dh, w - dw, h - dh)), "PNG")


PERTURBATIONS = {
    "jpeg q75": lambda im: _encode(im, "JPEG", quality=75),
    "jpeg q90": lambda im: _encode(im, "JPEG", quality=90),
    "rescale 0.5x": lambda im: _rescale(im, 0.5),
    "rescale 0.75x": lambda im: _rescale(im, 0.75),
    "crop 90%": _crop,
}


def score_bytes(blobs: list[bytes], scorer: Scorer, decoder: BatchDecoder) -> np.ndarray:
    """P(ai) for encoded images through the scan stages (the model's view and window count
    included); NaN where one fails to decode."""
    out = np.full(len(blobs), np.nan)
    for start in range(0, len(blobs), decoder.dali.batch_size):
        chunk = blobs[start : start + decoder.dali.batch_size]
        items = [probe(ImageRef(str(i), str(i), len(b), 0), b) for i, b in enumerate(chunk)]
        decoded = decoder.decode(items)
        ok = [i for i, d in enumerate(decoded) if d.error is None]
        if ok:
            out[start + np.array(ok)] = scorer.score([decoded[i].pixels for i in ok]).prob
    return out


def robustness(paths: list[str], base: np.ndarray, scorer: Scorer, decoder: BatchDecoder) -> dict:
    """Per perturbation: mean and 95th percentile of |change in prob_ai|, and the share of flipped verdicts."""
    images = [open_rgb(p) for p in paths]
    threshold = scorer.threshold
    report = {}
    for name, perturb in PERTURBATIONS.items():
        probs = score_bytes([perturb(im) for im in images], scorer, decoder)
        valid = ~np.isnan(probs)
        delta = np.abs(probs[valid] - base[valid])
        flips = (probs[valid] >= threshold) != (base[valid] >= threshold)
        report[name] = {
            "mean_abs_change": float(delta.mean()) if len(delta) else None,
            "p95_abs_change": float(np.percentile(delta, 95)) if len(delta) else None,
            "flip_rate": float(flips.mean()) if len(flips) else None,
            "count": int(valid.sum()),
        }
    return report
