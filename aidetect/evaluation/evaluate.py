"""`aidetect eval`: measure a model on labelled images with exactly the scan pipeline.

The labelled files go through the same `LocalEngine` as `aidetect scan` (same decode, same
preprocessing from the model's metadata, same error rows); this module only joins the
verdicts with the true labels, computes metrics and draws the plots.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table
from rich.text import Text

from aidetect.console import styled
from aidetect.engines.base import ScanOptions
from aidetect.engines.local import LocalEngine
from aidetect.errors import DataError
from aidetect.evaluation.attribution import generator_report, generator_table
from aidetect.evaluation.evidence import agreement_text, evidence_summary
from aidetect.evaluation.labels import (
    CLASS_NAMES,
    Item,
    genimage_split,
    is_genimage,
    labelled_items,
    stratified_split,
    subdirs,
)
from aidetect.evaluation.metrics import roc_curve, summarize, threshold_for_fpr
from aidetect.io.sources import file_ref, path_from_display


@dataclass
class EvalOptions:
    data: str
    model: str | None = None
    report_dir: str = "eval-report"
    target_fpr: float = 0.01
    holdout: float | None = None
    seed: int = 0
    batch_size: int = 32
    device: str = "auto"
    threads: int | None = None
    crops: int | None = None  # windows per image for crop-view models (None: the model's own)
    unseen: tuple[str, ...] = ()  # generators the model never saw, reported apart (attribution.py)
    robustness: int = 1000  # images checked under perturbations (a seeded sample); 0 turns it off


def collect_items(data: str, holdout: float | None, seed: int) -> tuple[list[Item], str]:
    """The labelled files to evaluate and a name for them.

    With `holdout`, the validation split `aidetect train --val-split HOLDOUT --seed SEED` held
    out of the same data; otherwise DATA's test/ (or val/) split, or DATA's class folders.
    """
    if not os.path.isdir(data):
        raise DataError(f"{data}: not a folder")
    found = subdirs(data)
    if holdout:
        source = found.get("train", data)
        _, held = stratified_split(labelled_items(source), holdout, seed)
        return held, f"{os.path.basename(os.path.abspath(data))} (held-out {holdout:.0%}, seed {seed})"
    for split in ("test", "val"):
        if split in found:
            return labelled_items(found[split], require_both=False), f"{os.path.basename(data)}/{split}"
    if is_genimage(data):  # GenImage's val/ splits are its test set
        return genimage_split(data, "val"), f"{os.path.basename(os.path.abspath(data))} (GenImage val)"
    return labelled_items(data, require_both=False), os.path.basename(os.path.abspath(data))


def predict(items: list[Item], opts: EvalOptions, console: Console) -> tuple[pd.DataFrame, LocalEngine]:
    """Scan the files with the scan pipeline; returns its rows plus `true_label` and
    `true_generator` columns. Unlike a scan's rows, every row names its likeliest generator
    (models that name generators), so attribution is measured apart from detection."""
    with tempfile.TemporaryDirectory(prefix="aidetect-eval-") as tmp:
        scan_opts = ScanOptions(
            sources=[],
            output=os.path.join(tmp, "rows"),
            model=opts.model,
            batch_size=opts.batch_size,
            device=opts.device,
            threads=opts.threads,
            crops=opts.crops,
            attribute_real=True,
        )
        scanner = LocalEngine(scan_opts, console)
        refs = [file_ref(item.path) for item in items]
        scanner.run(refs)
        rows = pd.read_parquet(scan_opts.output)
    rows["true_label"] = rows.path.map({ref.key: CLASS_NAMES[item.label] for ref, item in zip(refs, items)})
    rows["true_generator"] = rows.path.map({ref.key: item.generator for ref, item in zip(refs, items) if item.label})
    return rows, scanner


def compute_metrics(rows: pd.DataFrame, threshold: float, target_fpr: float) -> dict:
    ok = rows[rows.error.isna()]
    labels = (ok.true_label == "ai").to_numpy()
    scores = ok.prob_ai.to_numpy(np.float64)
    result = summarize(labels, scores, threshold)
    result["failed"] = int(rows.error.notna().sum())
    decided = rows[rows.verdict.notna()]
    result["combined"] = {
        "count": int(len(decided)),
        "accuracy": float((decided.verdict == decided.true_label).mean()) if len(decided) else None,
        "decided_by_provenance": int((rows.verdict_source == "provenance").sum()),
        "by_evidence": evidence_summary(rows),
    }
    result["counts"] = {name: int((ok.true_label == name).sum()) for name in CLASS_NAMES}
    at_target = threshold_for_fpr(labels, scores, target_fpr)
    result["target_fpr"] = target_fpr
    result["threshold_at_target_fpr"] = at_target
    if at_target is not None:
        at = summarize(labels, scores, at_target)
        c = at["confusion"]
        result["at_target_fpr"] = {
            "accuracy": at["accuracy"],
            "fpr": c["fp"] / max(c["fp"] + c["tn"], 1),
            "tpr": c["tp"] / max(c["tp"] + c["fn"], 1),
        }
    return result


def metrics_table(m: dict, title: str) -> Table:
    table = Table(title=title, box=None, header_style="bold")
    table.add_column("metric")
    table.add_column("value", justify="right")

    def fmt(v):
        return "undefined (one class)" if v is None else (f"{v:.4f}" if isinstance(v, float) else str(v))

    table.add_row("images", f"{m['count']} ({m['counts']['real']} real, {m['counts']['ai']} ai; {m['failed']} failed)")
    table.add_row(Text("model", style="bold"), "")
    for key in ("accuracy", "precision", "recall", "f1", "roc_auc", "average_precision", "log_loss", "ece"):
        table.add_row(key.replace("_", " "), fmt(m[key]))
    combined = m["combined"]
    table.add_row(
        "combined accuracy (model + provenance)",
        f"{fmt(combined['accuracy'])} ({combined['decided_by_provenance']} decided by provenance)",
    )
    for entry in combined.get("by_evidence", []):
        table.add_row(f"  decided by {entry['kind']}", f"{entry['decided']} ({agreement_text(entry)})")
    table.add_row("threshold", f"{m['threshold']:.4f}")
    if m.get("at_target_fpr"):
        at = m["at_target_fpr"]
        table.add_row(
            f"threshold for FPR <= {m['target_fpr']:g}",
            f"{m['threshold_at_target_fpr']:.4f} (accuracy {at['accuracy']:.4f}, TPR {at['tpr']:.4f}, FPR {at['fpr']:.4f})",
        )
    else:
        table.add_row(f"threshold for FPR <= {m['target_fpr']:g}", "undefined (no real images)")
    return table


def check_robustness(rows: pd.DataFrame, scanner: LocalEngine, opts: EvalOptions) -> dict:
    from aidetect.evaluation.robustness import robustness
    from aidetect.pipeline.scoring import Scorer

    ok = rows[rows.error.isna()]
    if len(ok) > opts.robustness:
        ok = ok.sample(opts.robustness, random_state=opts.seed)
    worker = scanner.worker
    plain = Scorer(worker.detector, worker.decoder.pre, worker.threshold)  # without --tta's variants
    return robustness([path_from_display(p) for p in ok.path], ok.prob_ai.to_numpy(np.float64), plain, worker.decoder)


def robustness_table(report: dict) -> Table:
    table = Table(
        title="robustness: change in prob_ai when the image is re-saved or resized", box=None, header_style="bold"
    )
    for col in ("perturbation", "mean |change|", "95th pct |change|", "verdicts flipped", "images"):
        table.add_column(col, justify="left" if col == "perturbation" else "right")
    for name, r in report.items():
        table.add_row(
            name, f"{r['mean_abs_change']:.4f}", f"{r['p95_abs_change']:.4f}", f"{r['flip_rate']:.2%}", str(r["count"])
        )
    return table


def run_eval(opts: EvalOptions, console: Console) -> dict:
    items, name = collect_items(opts.data, opts.holdout, opts.seed)
    console.print(f"evaluating on {name}: {len(items)} images")
    rows, scanner = predict(items, opts, console)
    model = scanner.worker.detector.info
    metrics = compute_metrics(rows, scanner.worker.threshold, opts.target_fpr)
    os.makedirs(opts.report_dir, exist_ok=True)
    failed = rows[rows.error.notna()]
    report = {
        "model": model.label,
        "data": name,
        **metrics,
        "failed_files": [{"path": p, "error": e} for p, e in zip(failed.path, failed.error)],
    }
    generators = generator_report(rows, model, scanner.worker.threshold, opts.unseen)
    if generators:
        report["generators"] = generators
    if opts.robustness:
        report["robustness"] = check_robustness(rows, scanner, opts)
    with open(os.path.join(opts.report_dir, "metrics.json"), "w") as f:
        json.dump(report, f, indent=2)
    rows.to_parquet(os.path.join(opts.report_dir, "predictions.parquet"), index=False)
    from aidetect.evaluation.plots import write_plots

    write_plots(rows, metrics, f"{model.label} on {name}", opts.report_dir)
    console.print(metrics_table(metrics, f"{model.label} on {name}"))
    if generators:
        show_generators(generators, scanner.worker.threshold, f"{model.label} on {name}", opts.report_dir, console)
    if report.get("robustness"):
        from aidetect.evaluation.plots import robustness_plot

        robustness_plot(report["robustness"], f"{model.label} on {name}", opts.report_dir)
        console.print(robustness_table(report["robustness"]))
    if metrics["roc_auc"] is None:
        console.print(styled("note: ", "yellow", "only one class present, so ROC-AUC and the ROC curve are undefined"))
    if len(failed):
        console.print(styled(f"{len(failed)} files could not be decoded", "yellow", " (listed in metrics.json):"))
        for p, e in list(zip(failed.path, failed.error))[:10]:
            console.print(f"  {p}: {e}", highlight=False)
    console.print(f"report: {opts.report_dir}/ (metrics.json, predictions.parquet, PNG plots)")
    return report


def show_generators(report: dict, threshold: float, title: str, folder: str, console: Console) -> None:
    """The per-generator table and plot, and attribution's figures and confusion matrix."""
    from aidetect.evaluation.plots import attribution_plot, generators_plot

    console.print(generator_table(report, threshold))
    generators_plot(report["per_generator"], threshold, title, folder)
    found = report.get("attribution")
    if found:
        attribution_plot(found, title, folder)
        console.print(
            f"attribution over {found['count']} AI images of the model's generators: accuracy "
            f"{found['accuracy']:.4f}, macro-F1 {found['macro_f1']:.4f} (attribution_confusion.png)"
        )


__all__ = ["EvalOptions", "collect_items", "compute_metrics", "roc_curve", "run_eval"]
