"""Generator-labelled evaluation: detection per generator, seen and unseen (the cross-generator
test), and attribution (which generator) for models that name generators.

A generator counts as unseen when `--unseen` names it or the model's metadata says training left
it out (`aidetect train --exclude-generators`); its ROC-AUC is its images against all real ones.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from rich.table import Table

from aidetect.errors import DataError
from aidetect.evaluation.labels import UNKNOWN_GENERATOR
from aidetect.evaluation.metrics import roc_auc
from aidetect.pipeline.detector import ModelInfo


def unseen_generators(named: tuple[str, ...], data: set[str], info: ModelInfo) -> set[str]:
    """The generators to report as unseen; a name that is not in the data, or that the model
    has an output for, is refused in one line."""
    missing = [g for g in named if g not in data]
    if missing:
        found = ", ".join(sorted(data)) or "none: the data has no generator folders"
        raise DataError(f"--unseen {', '.join(missing)}: no such generator in the data (found: {found})")
    seen = [g for g in named if g in info.generators]
    if seen:
        raise DataError(f"--unseen {', '.join(seen)}: the model has an output for it, so training saw it")
    excluded = info.metadata.get("training", {}).get("excluded_generators", [])
    return set(named) | (set(excluded) & data)


def per_generator(rows: pd.DataFrame, threshold: float, unseen: set[str]) -> list[dict]:
    """Per generator in the data: images, recall at the threshold, ROC-AUC against all real images."""
    ok = rows[rows.error.isna()]
    real = ok[ok.true_label == "real"].prob_ai.to_numpy(np.float64)
    table = []
    for name in sorted(set(ok.true_generator.dropna())):
        scores = ok[ok.true_generator == name].prob_ai.to_numpy(np.float64)
        labels = np.r_[np.ones(len(scores), bool), np.zeros(len(real), bool)]
        table.append(
            {
                "generator": name,
                "seen": name not in unseen,
                "count": int(len(scores)),
                "recall": float((scores >= threshold).mean()),
                "roc_auc": roc_auc(labels, np.r_[scores, real]),
            }
        )
    return table


def attribution(rows: pd.DataFrame, generators: tuple[str, ...]) -> dict | None:
    """Over AI images of the model's generators: accuracy, macro-F1 and the confusion matrix
    (true generator x predicted, counts and row shares). None when there are none."""
    ok = rows[rows.error.isna() & rows.true_generator.isin(generators) & rows.generator_pred.notna()]
    if ok.empty:
        return None
    truth, picked = ok.true_generator.to_numpy(), ok.generator_pred.to_numpy()
    grid = np.array([[int(((truth == t) & (picked == p)).sum()) for p in generators] for t in generators])
    f1s = []
    for i in range(len(generators)):
        if grid[i].sum() == 0:
            continue  # not in the data: no recall to speak of
        precision = grid[i, i] / max(grid[:, i].sum(), 1)
        recall = grid[i, i] / grid[i].sum()
        f1s.append(0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall))
    return {
        "count": int(len(ok)),
        "accuracy": float((truth == picked).mean()),
        "macro_f1": float(np.mean(f1s)),
        "generators": list(generators),
        "confusion": grid.tolist(),
        "confusion_row_share": (grid / grid.sum(axis=1, keepdims=True).clip(min=1)).round(4).tolist(),
    }


def generator_report(
    rows: pd.DataFrame, info: ModelInfo, threshold: float, named_unseen: tuple[str, ...]
) -> dict | None:
    """The generator section of `metrics.json`; None when the data names no generators."""
    data = set(rows.true_generator.dropna()) - {UNKNOWN_GENERATOR}
    if not data:
        if named_unseen:
            unseen_generators(named_unseen, data, info)  # refuses in one line
        return None
    unseen = unseen_generators(named_unseen, data, info)
    report = {"per_generator": per_generator(rows, threshold, unseen), "unseen": sorted(unseen)}
    if info.generators:
        report["attribution"] = attribution(rows, info.generators)
    return report


def generator_table(report: dict, threshold: float) -> Table:
    table = Table(
        title=f"detection per generator (recall at threshold {threshold:.2f}; ROC-AUC against all real images)",
        box=None,
        header_style="bold",
    )
    for column in ("generator", "seen in training", "images", "recall", "ROC-AUC"):
        table.add_column(column, justify="left" if column == "generator" else "right")
    for row in report["per_generator"]:
        auc = "n/a" if row["roc_auc"] is None else f"{row['roc_auc']:.4f}"
        table.add_row(row["generator"], "yes" if row["seen"] else "NO", str(row["count"]), f"{row['recall']:.4f}", auc)
    return table
