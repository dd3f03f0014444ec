"""Scoring: windows' logits combined per image, with and without --tta, and the new columns."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
from helpers.cli import run_cli
from helpers.images import encode
from helpers.models import brightness_onnx, tiny_onnx

from aidetect.pipeline.detector import Detector, sigmoid
from aidetect.pipeline.scoring import Scorer, ai_margin, combine_logits


def test_combine_logits_mean_and_max():
    logits = np.array([[0.0, 1.0], [0.0, -3.0], [2.0, 0.0], [0.0, 5.0]])
    mean, top = combine_logits(logits, [2, 1, 1], "mean", real_index=0)
    assert np.allclose(mean, [[0.0, -1.0], [2.0, 0.0], [0.0, 5.0]])
    assert np.allclose(top, [1.0, -2.0, 5.0])
    best, _ = combine_logits(logits, [2, 2], "max", real_index=0)
    assert np.allclose(best, [[0.0, 1.0], [0.0, 5.0]])


def test_ai_margin_is_the_logit_difference_for_two_classes_and_pools_ai_classes():
    logits = np.array([[1.0, 3.0], [2.0, -1.0]])
    assert np.allclose(ai_margin(logits, 0), [2.0, -3.0])
    three = np.array([[0.0, np.log(2.0), np.log(3.0)]])  # P(ai) = 5/6 over two AI classes
    assert ai_margin(three, 0) == pytest.approx(np.log(5.0))


def corner_image(size: int = 96) -> np.ndarray:
    """Black, with a white 32x32 bottom-right corner: one window of five looks "ai"."""
    array = np.zeros((size, size, 3), np.uint8)
    array[-32:, -32:] = 255
    return array


@pytest.mark.parametrize("combine", ["mean", "max"])
def test_windows_combine_into_one_score_and_report_the_highest(tmp_path, combine):
    det = Detector(brightness_onnx(str(tmp_path / "m.onnx"), combine=combine))
    windows = np.stack([np.zeros((32, 32, 3), np.uint8)] * 4 + [np.full((32, 32, 3), 255, np.uint8)])
    scores = Scorer(det, det.info.preprocess, 0.5).score([windows, windows[:1]])
    expected = sigmoid((-6 * 4 + 6) / 5) if combine == "mean" else sigmoid(6)
    assert scores.prob[0] == pytest.approx(expected, rel=1e-5)
    assert scores.prob_max == [pytest.approx(sigmoid(6), rel=1e-5), None]
    assert scores.crops == [5, 1] and scores.spread == [None, None]
    tta = Scorer(det, det.info.preprocess, 0.5, ("original", "flip")).score([windows])
    assert tta.prob[0] == pytest.approx(expected, rel=1e-5) and tta.spread[0] == pytest.approx(0, abs=1e-6)


def test_scan_writes_crops_and_prob_ai_max(tmp_path):
    model = brightness_onnx(str(tmp_path / "m.onnx"), crops=5)
    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "corner.png").write_bytes(encode(corner_image(), "PNG"))
    (folder / "tiny.png").write_bytes(encode(corner_image(32), "PNG"))
    proc = run_cli("scan", str(folder), "-o", "-", "--model", model)
    assert proc.returncode == 0, proc.stderr
    rows = pd.read_parquet(io.BytesIO(proc.stdout)).set_index("path")
    corner, tiny = rows.loc[str(folder / "corner.png")], rows.loc[str(folder / "tiny.png")]
    assert corner.crops == 5 and corner.label == "real"
    assert corner.prob_ai == pytest.approx(sigmoid(-3.6), rel=1e-4)
    assert corner.prob_ai_max == pytest.approx(sigmoid(6), rel=1e-4)  # the partly "generated" image shows
    assert tiny.crops == 1 and pd.isna(tiny.prob_ai_max)  # one window's worth of pixels: scored once
    centre = pd.read_parquet(
        io.BytesIO(run_cli("scan", str(folder), "-o", "-", "--model", model, "--crops", "1").stdout)
    )
    assert set(centre.crops) == {1} and centre.prob_ai_max.isna().all()


def test_crops_that_do_not_fit_the_model_are_refused_in_one_line(tmp_path):
    image = tmp_path / "a.png"
    image.write_bytes(encode(corner_image(), "PNG"))
    crop_model = brightness_onnx(str(tmp_path / "crop.onnx"))
    resize_model = tiny_onnx(str(tmp_path / "resize.onnx"))
    for model, crops, message in [(crop_model, "3", "choose one of"), (resize_model, "9", "resize view")]:
        proc = run_cli("scan", str(image), "-o", str(tmp_path / "out"), "--model", model, "--crops", crops)
        err = proc.stderr.decode()
        assert proc.returncode == 2 and message in err and "Traceback" not in err
        assert len(err.strip().splitlines()) == 1, err
