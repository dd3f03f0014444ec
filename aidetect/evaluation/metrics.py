"""Classification metrics shared by `aidetect train` and `aidetect eval` (numpy only).

Labels are 1 for AI-generated, 0 for real; scores are probabilities of "ai".
"""

from __future__ import annotations

import numpy as np


def confusion(labels: np.ndarray, preds: np.ndarray) -> dict[str, int]:
    """Counts with "ai" as the positive class."""
    labels, preds = np.asarray(labels, bool), np.asarray(preds, bool)
    return {
        "tp": int(np.sum(labels & preds)),
        "fp": int(np.sum(~labels & preds)),
        "tn": int(np.sum(~labels & ~preds)),
        "fn": int(np.sum(labels & ~preds)),
    }


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    """Area under the ROC curve (Mann-Whitney with tied ranks); None for one class."""
    labels = np.asarray(labels, bool)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = _tied_ranks(np.asarray(scores, np.float64))
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _tied_ranks(values: np.ndarray) -> np.ndarray:
    order = np.argsort(values, kind="mergesort")
    sorted_vals = values[order]
    ranks = np.empty(len(values), np.float64)
    bounds = np.flatnonzero(np.diff(sorted_vals)) + 1
    starts = np.concatenate([[0], bounds])
    ends = np.concatenate([bounds, [len(values)]])
    for start, end in zip(starts, ends):
        ranks[order[start:end]] = (start + end + 1) / 2
    return ranks


def roc_curve(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """False-positive rates, true-positive rates and thresholds, highest threshold first."""
    labels = np.asarray(labels, bool)
    order = np.argsort(-np.asarray(scores, np.float64), kind="mergesort")
    scores_sorted, labels_sorted = np.asarray(scores)[order], labels[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(scores_sorted)), len(scores_sorted) - 1]
    tps = np.cumsum(labels_sorted)[last_of_tie]
    fps = (last_of_tie + 1) - tps
    tpr = np.r_[0, tps / max(labels.sum(), 1)]
    fpr = np.r_[0, fps / max((~labels).sum(), 1)]
    return fpr, tpr, np.r_[np.inf, scores_sorted[last_of_tie]]


def precision_recall_curve(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray(labels, bool)
    fpr, tpr, _ = roc_curve(labels, scores)
    tp = tpr * labels.sum()
    fp = fpr * (~labels).sum()
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(tp + fp > 0, tp / (tp + fp), 1.0)
    return precision, tpr


def average_precision(labels: np.ndarray, scores: np.ndarray) -> float | None:
    labels = np.asarray(labels, bool)
    if labels.sum() == 0:
        return None
    precision, recall = precision_recall_curve(labels, scores)
    return float(np.sum(np.diff(recall) * precision[1:]))


def log_loss(labels: np.ndarray, scores: np.ndarray, eps: float = 1e-7) -> float:
    p = np.clip(np.asarray(scores, np.float64), eps, 1 - eps)
    y = np.asarray(labels, np.float64)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def expected_calibration_error(labels: np.ndarray, scores: np.ndarray, bins: int = 15) -> float:
    """ECE of the predicted class's confidence, in equal-width bins (Guo et al., 2017)."""
    scores = np.asarray(scores, np.float64)
    labels = np.asarray(labels, bool)
    confidence = np.maximum(scores, 1 - scores)
    correct = (scores >= 0.5) == labels
    edges = np.linspace(0.5, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        mask = which == b
        if mask.any():
            ece += mask.mean() * abs(correct[mask].mean() - confidence[mask].mean())
    return float(ece)


def threshold_for_fpr(labels: np.ndarray, scores: np.ndarray, target_fpr: float) -> float | None:
    """A threshold whose false-positive rate on real images stays <= target, as low as the data allow.

    It sits midway between the last real score kept real and the next score above it, not one
    ulp above that real score, so float32 scores recomputed elsewhere (the scanner, pandas) fall
    on the same side of it.
    """
    labels = np.asarray(labels, bool)
    scores = np.asarray(scores, np.float64)
    real_scores = np.sort(scores[~labels])
    if len(real_scores) == 0:
        return None
    allowed = int(np.floor(target_fpr * len(real_scores)))
    if allowed >= len(real_scores):
        return 0.0
    # Scores strictly above the (n - allowed)-th real score are flagged; ties stay real.
    cut = real_scores[len(real_scores) - allowed - 1]
    above = scores[scores > cut]
    return float((cut + above.min()) / 2) if above.size else float(np.nextafter(cut, np.inf))


def summarize(labels: np.ndarray, scores: np.ndarray, threshold: float = 0.5) -> dict:
    """Accuracy, precision, recall, F1, ROC-AUC, AP, log loss, ECE and the confusion counts."""
    labels = np.asarray(labels, bool)
    scores = np.asarray(scores, np.float64)
    preds = scores >= threshold
    c = confusion(labels, preds)
    precision = c["tp"] / (c["tp"] + c["fp"]) if c["tp"] + c["fp"] else 0.0
    recall = c["tp"] / (c["tp"] + c["fn"]) if c["tp"] + c["fn"] else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "count": int(len(labels)),
        "accuracy": float(np.mean(preds == labels)) if len(labels) else 0.0,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "roc_auc": roc_auc(labels, scores),
        "average_precision": average_precision(labels, scores),
        "log_loss": log_loss(labels, scores) if len(labels) else None,
        "ece": expected_calibration_error(labels, scores) if len(labels) else None,
        "threshold": threshold,
        "confusion": c,
    }
