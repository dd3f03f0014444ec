"""`aidetect eval` and the metrics behind it."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from helpers.cli import run_cli
from helpers.labelled import make_eval_folder

from aidetect.evaluation import metrics


def test_metrics_match_brute_force():
    rng = np.random.default_rng(0)
    labels = rng.random(300) < 0.4
    scores = np.round(np.clip(labels * 0.3 + rng.random(300) * 0.7, 0, 1), 2)  # with ties
    pos, neg = scores[labels], scores[~labels]
    pairs = (pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean()
    assert abs(metrics.roc_auc(labels, scores) - pairs) < 1e-12
    s = metrics.summarize(labels, scores, 0.5)
    preds = scores >= 0.5
    tp, fp = int((preds & labels).sum()), int((preds & ~labels).sum())
    assert s["precision"] == tp / (tp + fp) and s["accuracy"] == (preds == labels).mean()
    t = metrics.threshold_for_fpr(labels, scores, 0.05)
    assert (scores[~labels] >= t).mean() <= 0.05
    assert np.abs(scores - t).min() > 1e-3  # in the gap between two scores, not an ulp from one
    assert metrics.roc_auc(np.ones(4, bool), np.arange(4)) is None


def test_ece_is_zero_when_calibrated_and_large_when_overconfident():
    labels = np.array([1] * 80 + [0] * 20, bool)
    assert metrics.expected_calibration_error(labels, np.full(100, 0.8)) < 1e-9
    assert metrics.expected_calibration_error(labels, np.full(100, 0.999)) > 0.15


def test_scan_labels_agree_with_prob_ai_at_a_threshold_a_hair_above_a_score(tmp_path, model_path):
    data = make_eval_folder(tmp_path / "data")
    first = tmp_path / "first.parquet"
    assert run_cli("scan", str(data), "--model", model_path, "-o", str(first)).returncode == 0
    score = pd.read_parquet(first).prob_ai.dropna().astype(np.float64).iloc[0]
    # Above the stored float32 score in float64, equal to it once rounded to float32.
    threshold = float(np.nextafter(score, np.inf))
    assert np.float32(threshold) == np.float32(score)
    second = tmp_path / "second.parquet"
    proc = run_cli("scan", str(data), "--model", model_path, "-o", str(second), "--threshold", repr(threshold))
    assert proc.returncode == 0, proc.stderr.decode()
    rows = pd.read_parquet(second).dropna(subset=["prob_ai"])
    expected = np.where(rows.prob_ai.astype(np.float64) >= threshold, "ai", "real")
    assert (rows.label == expected).all() and "real" in set(rows.label[rows.prob_ai == np.float32(score)])


def test_eval_writes_report_consistent_with_its_predictions(tmp_path, model_path):
    data = make_eval_folder(tmp_path / "data")
    report = tmp_path / "report"
    proc = run_cli("eval", str(data), "--model", model_path, "-o", str(report), "--target-fpr", "0.2")
    err = proc.stderr.decode()
    assert proc.returncode == 0, err
    assert "1 files could not be decoded" in err and "broken.jpg" in err and "accuracy" in err
    assert sorted(p.name for p in report.iterdir()) == [
        "confusion_matrix.png",
        "metrics.json",
        "precision_recall.png",
        "predictions.parquet",
        "prob_ai_histogram.png",
        "robustness.png",
        "roc_curve.png",
    ]
    for png in report.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    rows = pd.read_parquet(report / "predictions.parquet")
    assert len(rows) == 13 and {"true_label", "prob_ai", "label", "error", "path"} <= set(rows.columns)
    m = json.loads((report / "metrics.json").read_text())
    ok = rows[rows.error.isna()]
    y, p = (ok.true_label == "ai").to_numpy(), ok.prob_ai.to_numpy(np.float64)
    assert m["count"] == 12 and m["failed"] == 1 and m["failed_files"][0]["path"].endswith("broken.jpg")
    assert abs(m["accuracy"] - ((p >= 0.5) == y).mean()) < 1e-12
    assert abs(m["roc_auc"] - metrics.roc_auc(y, p)) < 1e-12
    assert abs(m["log_loss"] - metrics.log_loss(y, p)) < 1e-12
    assert (ok.label == np.where(p >= 0.5, "ai", "real")).all()  # same verdicts as scan
    assert m["combined"]["accuracy"] == (ok.verdict == ok.true_label).mean() and "combined accuracy" in err
    assert set(m["robustness"]) == {"jpeg q75", "jpeg q90", "rescale 0.5x", "rescale 0.75x", "crop 90%"}
    assert m["robustness"]["jpeg q90"]["count"] == 12 and "verdicts flipped" in err


@pytest.mark.slow
def test_eval_on_one_class_says_auc_is_undefined(tmp_path, model_path):
    data = make_eval_folder(tmp_path / "data", one_class=True)
    proc = run_cli("eval", str(data), "--model", model_path, "-o", str(tmp_path / "r"))
    err = proc.stderr.decode()
    assert proc.returncode == 0, err
    assert "ROC-AUC and the ROC curve are undefined" in err and "Traceback" not in err
    assert json.loads((tmp_path / "r" / "metrics.json").read_text())["roc_auc"] is None


def test_eval_holdout_reproduces_the_training_split(tmp_path):
    from aidetect.evaluation.evaluate import collect_items
    from train.data import find_splits

    data = make_eval_folder(tmp_path / "data", per_class=20)
    held, name = collect_items(str(data), 0.25, 3)
    assert held == find_splits(str(data), 0.25, 3).val and "held-out" in name
