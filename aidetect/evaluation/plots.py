"""The PNG plots of `aidetect eval`: confusion matrix, ROC, precision-recall, prob_ai histogram."""

from __future__ import annotations

import os
import textwrap

import numpy as np
import pandas as pd

from aidetect.evaluation.metrics import precision_recall_curve, roc_curve


def _figure(title: str, subtitle: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 5), dpi=120)
    # Long model names (ensembles) and data names wrap instead of running off the figure.
    fig.suptitle(textwrap.fill(title, 54, break_on_hyphens=False), fontsize=11, fontweight="bold")
    ax.set_title(subtitle, fontsize=9, color="0.35")
    return fig, ax


def _save(fig, path: str) -> None:
    fig.tight_layout()
    fig.savefig(path)
    import matplotlib.pyplot as plt

    plt.close(fig)


def write_plots(rows: pd.DataFrame, metrics: dict, title: str, folder: str) -> list[str]:
    ok = rows[rows.error.isna()]
    labels = (ok.true_label == "ai").to_numpy()
    scores = ok.prob_ai.to_numpy(np.float64)
    subtitle = f"{len(ok)} images ({metrics['counts']['real']} real, {metrics['counts']['ai']} ai)"
    paths = [
        _confusion(metrics, title, subtitle, os.path.join(folder, "confusion_matrix.png")),
        _roc(labels, scores, metrics, title, subtitle, os.path.join(folder, "roc_curve.png")),
        _pr(labels, scores, metrics, title, subtitle, os.path.join(folder, "precision_recall.png")),
        _histogram(labels, scores, metrics, title, subtitle, os.path.join(folder, "prob_ai_histogram.png")),
    ]
    return paths


def _confusion(metrics: dict, title: str, subtitle: str, path: str) -> str:
    c = metrics["confusion"]
    grid = np.array([[c["tn"], c["fp"]], [c["fn"], c["tp"]]])
    fig, ax = _figure(title, f"confusion matrix at threshold {metrics['threshold']:.2f} — {subtitle}")
    ax.imshow(grid, cmap="Blues")
    totals = grid.sum(axis=1, keepdims=True).clip(min=1)
    for (i, j), n in np.ndenumerate(grid):
        colour = "white" if n > grid.max() / 2 else "black"
        ax.text(j, i, f"{n}\n{n / totals[i, 0]:.1%} of row", ha="center", va="center", color=colour, fontsize=11)
    ax.set_xticks([0, 1], ["real", "ai"])
    ax.set_yticks([0, 1], ["real", "ai"])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    _save(fig, path)
    return path


def _undefined(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, fontsize=11, color="0.4")


def _unit_axes(ax, xlabel: str, ylabel: str) -> None:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.grid(alpha=0.3)


def _roc(labels, scores, metrics, title, subtitle, path) -> str:
    fig, ax = _figure(title, f"ROC curve — {subtitle}")
    if metrics["roc_auc"] is None:
        _undefined(ax, "ROC curve undefined: only one class present")
    else:
        fpr, tpr, _ = roc_curve(labels, scores)
        ax.plot(fpr, tpr, lw=2, label=f"ROC-AUC = {metrics['roc_auc']:.4f}")
        ax.plot([0, 1], [0, 1], ls="--", color="0.6", lw=1, label="chance")
        at = metrics.get("at_target_fpr")
        if at:
            ax.scatter(
                [at["fpr"]],
                [at["tpr"]],
                color="red",
                zorder=3,
                label=f"threshold {metrics['threshold_at_target_fpr']:.3f} (FPR {at['fpr']:.3f})",
            )
        ax.legend(loc="lower right")
    _unit_axes(ax, "false-positive rate (real images flagged as AI)", "true-positive rate (AI images caught)")
    _save(fig, path)
    return path


def _pr(labels, scores, metrics, title, subtitle, path) -> str:
    fig, ax = _figure(title, f"precision-recall curve — {subtitle}")
    if metrics["average_precision"] is None:
        _undefined(ax, "precision-recall undefined: no AI images present")
    else:
        precision, recall = precision_recall_curve(labels, scores)
        ax.plot(recall, precision, lw=2, label=f"average precision = {metrics['average_precision']:.4f}")
        ax.axhline(labels.mean(), ls="--", color="0.6", lw=1, label="chance")
        ax.legend(loc="lower left")
    _unit_axes(ax, "recall (AI images caught)", "precision (flagged images that are AI)")
    _save(fig, path)
    return path


def _histogram(labels, scores, metrics, title, subtitle, path) -> str:
    fig, ax = _figure(title, f"prob_ai by true class — {subtitle}")
    bins = np.linspace(0, 1, 41)
    for value, name, colour in ((False, "real", "tab:green"), (True, "ai", "tab:red")):
        sel = scores[labels == value]
        if len(sel):
            ax.hist(sel, bins=bins, alpha=0.6, color=colour, label=f"true {name} ({len(sel)})")
    ax.axvline(metrics["threshold"], color="black", ls="--", lw=1, label=f"threshold {metrics['threshold']:.2f}")
    ax.set_yscale("log")
    ax.set_xlabel("prob_ai")
    ax.set_ylabel("images (log scale)")
    ax.legend(loc="upper center")
    _save(fig, path)
    return path


def robustness_plot(report: dict, title: str, folder: str) -> str:
    """Mean and 95th-percentile change in prob_ai, and flipped verdicts, per perturbation."""
    names = list(report)
    count = max(r["count"] for r in report.values())
    fig, ax = _figure(title, f"robustness of prob_ai — {count} images, each perturbed and rescanned")
    x = np.arange(len(names))
    mean = [report[n]["mean_abs_change"] for n in names]
    p95 = [report[n]["p95_abs_change"] for n in names]
    flips = [report[n]["flip_rate"] for n in names]
    ax.bar(x - 0.27, mean, 0.27, label="mean |change in prob_ai|", color="tab:blue")
    ax.bar(x, p95, 0.27, label="95th percentile |change|", color="tab:orange")
    ax.bar(x + 0.27, flips, 0.27, label="share of verdicts flipped", color="tab:red")
    ax.set_xticks(x, names, rotation=15)
    ax.set_ylim(0, 1)
    ax.set_ylabel("change in probability / share of images")
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    path = os.path.join(folder, "robustness.png")
    _save(fig, path)
    return path


def generators_plot(table: list[dict], threshold: float, title: str, folder: str) -> str:
    """Recall at the threshold and ROC-AUC per generator; unseen ones hatched and marked."""
    fig, ax = _figure(title, f"detection per generator (recall at {threshold:.2f}; hatched: unseen in training)")
    x = np.arange(len(table))
    recall = [row["recall"] for row in table]
    auc = [row["roc_auc"] if row["roc_auc"] is not None else 0.0 for row in table]
    hatch = ["//" if not row["seen"] else "" for row in table]
    ax.bar(x - 0.2, recall, 0.4, label="recall at threshold", color="tab:blue", hatch=hatch)
    ax.bar(x + 0.2, auc, 0.4, label="ROC-AUC vs all real", color="tab:green", hatch=hatch)
    names = [row["generator"] + ("" if row["seen"] else "\n(unseen)") for row in table]
    ax.set_xticks(x, names, rotation=15 if len(table) > 4 else 0)
    ax.set_ylim(0, 1.05)
    ax.axhline(0.5, color="0.6", linestyle=":", linewidth=1)
    ax.legend(loc="lower left", fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    path = os.path.join(folder, "generators.png")
    _save(fig, path)
    return path


def attribution_plot(found: dict, title: str, folder: str) -> str:
    """The attribution confusion matrix, rows normalised: true generator x predicted generator."""
    names, share = found["generators"], np.array(found["confusion_row_share"])
    counts = np.array(found["confusion"])
    fig, ax = _figure(title, f"attribution over {found['count']} AI images, accuracy {found['accuracy']:.1%}")
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for (i, j), value in np.ndenumerate(share):
        colour = "white" if value > 0.5 else "black"
        ax.text(j, i, f"{value:.0%}\n({counts[i, j]})", ha="center", va="center", color=colour, fontsize=9)
    ax.set_xticks(range(len(names)), names, rotation=30 if len(names) > 4 else 0)
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted generator")
    ax.set_ylabel("true generator")
    path = os.path.join(folder, "attribution_confusion.png")
    _save(fig, path)
    return path
