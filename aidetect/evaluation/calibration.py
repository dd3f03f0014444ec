"""Temperature scaling (Guo et al., 2017): one scalar T so that softmax(logits / T) is calibrated.

For two classes, P(ai) = sigmoid(margin / T) with margin = logit_ai - logit_real, so fitting T
is a one-dimensional search; numpy only, so `aidetect calibrate` needs no training extra.
"""

from __future__ import annotations

import math

import numpy as np

from aidetect.evaluation.metrics import expected_calibration_error, log_loss
from aidetect.pipeline.detector import sigmoid


def margins_from_probs(probs: np.ndarray, temperature: float) -> np.ndarray:
    """Recover margins from probabilities made at `temperature` (float32 saturates near 16 T)."""
    p = np.clip(np.asarray(probs, np.float64), 1e-7, 1 - 1e-7)
    return temperature * np.log(p / (1 - p))


def fit_temperature(margins: np.ndarray, labels: np.ndarray) -> float:
    """The T in [0.05, 20] that minimises the log loss, by golden-section search on log T."""
    margins, labels = np.asarray(margins, np.float64), np.asarray(labels, bool)

    def loss(log_t: float) -> float:
        return log_loss(labels, sigmoid(margins / math.exp(log_t)))

    lo, hi = math.log(0.05), math.log(20.0)
    ratio = (math.sqrt(5) - 1) / 2
    a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fa, fb = loss(a), loss(b)
    for _ in range(80):
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - ratio * (hi - lo)
            fa = loss(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + ratio * (hi - lo)
            fb = loss(b)
    return float(math.exp((lo + hi) / 2))


def calibration_report(margins: np.ndarray, labels: np.ndarray, before_t: float = 1.0) -> dict:
    """Fit T and give ECE (15 bins) and log loss before and after."""
    temperature = fit_temperature(margins, labels)
    before, after = sigmoid(margins / before_t), sigmoid(margins / temperature)
    return {
        "temperature": temperature,
        "ece_before": expected_calibration_error(labels, before),
        "ece_after": expected_calibration_error(labels, after),
        "log_loss_before": log_loss(labels, before),
        "log_loss_after": log_loss(labels, after),
        "count": int(len(labels)),
    }


def rewrite_metadata(model_path: str, output: str, updates: dict) -> dict:
    """Copy an ONNX file with its aidetect metadata updated; written atomically, original untouched."""
    import json

    import onnx

    from aidetect.io.atomic import atomic_path
    from aidetect.pipeline.detector import METADATA_KEY

    proto = onnx.load(model_path)
    entries = {p.key: p for p in proto.metadata_props}
    meta = {**json.loads(entries[METADATA_KEY].value), **updates}
    entries[METADATA_KEY].value = json.dumps(meta)
    with atomic_path(output) as tmp:
        onnx.save(proto, tmp)
    return meta


def calibrate(data: str, model: str | None, output: str, target_fpr: float, console, **eval_kwargs) -> dict:
    """`aidetect calibrate`: refit the temperature and the default threshold on labelled images."""
    import os

    from aidetect.errors import OutputError
    from aidetect.evaluation.evaluate import EvalOptions, collect_items, predict
    from aidetect.evaluation.metrics import threshold_for_fpr

    opts = EvalOptions(data=data, model=model, **eval_kwargs)
    items, name = collect_items(data, opts.holdout, opts.seed)
    rows, scanner = predict(items, opts, console)
    info = scanner.worker.detector.info
    if os.path.abspath(output) == os.path.abspath(info.path):
        raise OutputError("-o must name a new file: calibrate never overwrites the original model")
    ok = rows[rows.error.isna()]
    labels = (ok.true_label == "ai").to_numpy()
    if labels.all() or not labels.any():
        from aidetect.errors import DataError

        raise DataError(f"{data}: calibration needs both real and AI images")
    margins = margins_from_probs(ok.prob_ai.to_numpy(), info.temperature)
    report = calibration_report(margins, labels, before_t=info.temperature)
    threshold = threshold_for_fpr(labels, sigmoid(margins / report["temperature"]), target_fpr)
    report.update(target_fpr=target_fpr, threshold=threshold, fitted_on=name, previous_temperature=info.temperature)
    rewrite_metadata(
        info.path, output, {"temperature": report["temperature"], "threshold": threshold, "calibration": report}
    )
    console.print(
        f"temperature {info.temperature:.3f} -> {report['temperature']:.3f}; ECE {report['ece_before']:.4f} -> "
        f"{report['ece_after']:.4f}; threshold {threshold:.4f} (false-positive rate <= {target_fpr:g} on real images)"
    )
    console.print(f"wrote {output} ({len(ok)} images from {name}; {info.path} is unchanged)")
    return report
