"""Attribution end to end: train on generator folders, scan, eval, the cross-generator protocol."""

from __future__ import annotations

import io
import json

import onnx
import pandas as pd
import pytest
from generator_corpus import GENERATORS, make_generator_folder
from helpers.cli import run_cli
from helpers.models import TINY_ARCH

pytestmark = [pytest.mark.train, pytest.mark.slow]

TINY = ["--arch", TINY_ARCH, "--img-size", "32", "--batch-size", "8", "--workers", "1", "--val-split", "0.25"]


def metadata(path) -> dict:
    return json.loads({p.key: p.value for p in onnx.load(str(path)).metadata_props}["aidetect"])


def test_attribution_trains_scans_and_evaluates(tmp_path):
    make_generator_folder(tmp_path / "data" / "train", per_class=16)
    test = make_generator_folder(tmp_path / "data" / "test", per_class=8, seed=50_000)
    model = tmp_path / "attr.onnx"
    proc = run_cli("train", str(tmp_path / "data"), "-o", str(model), *TINY, "--epochs", "5", "--lr", "3e-3")
    err = proc.stderr.decode()
    assert proc.returncode == 0, err
    assert "AI images per generator" in err and "alpha" in err
    meta = metadata(model)
    assert meta["generators"] == list(GENERATORS) and meta["class_names"] == ["real", *GENERATORS]
    assert meta["training"]["data"]["generators"]["train"] == dict.fromkeys(GENERATORS, 12)

    rows = pd.read_parquet(io.BytesIO(run_cli("scan", str(test), "-o", "-", "--model", str(model)).stdout))
    named = rows[rows.label != "real"]
    assert len(named) and named.generator_pred.isin(GENERATORS).all() and named.generator_prob.between(0, 1).all()
    assert rows[rows.label == "real"].generator_pred.isna().all()

    report = tmp_path / "report"
    proc = run_cli("eval", str(test), "--model", str(model), "-o", str(report), "--robustness", "0")
    assert proc.returncode == 0, proc.stderr
    assert "detection per generator" in proc.stderr.decode()
    found = json.loads((report / "metrics.json").read_text())["generators"]
    assert [row["generator"] for row in found["per_generator"]] == list(GENERATORS)
    assert all(row["seen"] for row in found["per_generator"])
    assert found["attribution"]["count"] == 24 and found["attribution"]["accuracy"] > 0.5  # chance: 1/3
    assert (report / "attribution_confusion.png").stat().st_size > 0 and (report / "generators.png").exists()

    # The cross-generator protocol: train without gamma, evaluate with gamma as unseen.
    held_out = tmp_path / "without-gamma.onnx"
    proc = run_cli(
        "train", str(tmp_path / "data"), "-o", str(held_out), *TINY, "--epochs", "1", "--exclude-generators", "gamma"
    )
    assert proc.returncode == 0, proc.stderr
    assert metadata(held_out)["generators"] == ["alpha", "beta"]
    unseen = tmp_path / "unseen"
    proc = run_cli(
        "eval", str(test), "--model", str(held_out), "-o", str(unseen), "--robustness", "0", "--unseen", "gamma"
    )
    assert proc.returncode == 0, proc.stderr
    table = {
        row["generator"]: row
        for row in json.loads((unseen / "metrics.json").read_text())["generators"]["per_generator"]
    }
    assert not table["gamma"]["seen"] and table["alpha"]["seen"] and table["gamma"]["roc_auc"] is not None

    refused = run_cli(
        "export",
        str(tmp_path / "attr.run" / "best.pt"),
        str(tmp_path / "without-gamma.run" / "best.pt"),
        "-o",
        str(tmp_path / "x.onnx"),
    )
    assert refused.returncode == 2 and "an ensemble needs one list of generators" in refused.stderr.decode()
