"""Generator labels: layouts, the attribution columns of a scan, and the per-generator metrics."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
from generator_corpus import GENERATORS, make_generator_folder, make_genimage_folder
from helpers.cli import run_cli
from helpers.images import encode
from helpers.models import tiny_onnx

from aidetect.errors import DataError
from aidetect.evaluation.attribution import attribution, per_generator
from aidetect.evaluation.labels import UNKNOWN_GENERATOR, generator_counts, labelled_items, output_classes
from aidetect.pipeline.detector import Detector

# Outputs (real, red, green, blue): "real" is the darkness, each generator one channel's brightness.
RGB_GENERATORS = ("red", "green", "blue")
RGB_WEIGHTS = np.array([[-1.0, 1, 0, 0], [-1.0, 0, 1, 0], [-1.0, 0, 0, 1]])


def rgb_model(path: str) -> str:
    changes = {"class_names": ["real", *RGB_GENERATORS], "generators": list(RGB_GENERATORS)}
    return tiny_onnx(path, changes, outputs=4, weights=RGB_WEIGHTS)


def test_generator_subfolders_label_the_ai_images(tmp_path):
    root = make_generator_folder(tmp_path / "data", per_class=3)
    (root / "fake" / "stray.png").write_bytes((root / "fake" / "alpha" / "000.png").read_bytes())
    items = labelled_items(str(root))
    assert generator_counts(items) == {"alpha": 3, "beta": 3, "gamma": 3, UNKNOWN_GENERATOR: 1}
    assert output_classes(items) == ("real", "alpha", "beta", "gamma", UNKNOWN_GENERATOR)
    assert all(it.generator is None for it in items if it.label == 0)
    flat = tmp_path / "flat"
    (flat / "real").mkdir(parents=True)
    (flat / "fake").mkdir()
    for name in ("real", "fake"):
        (flat / name / "a.png").write_bytes((root / "real" / "000.png").read_bytes())
    assert output_classes(labelled_items(str(flat))) == ("real", "ai")  # today's layout: binary, unchanged


def test_genimage_layout_gives_train_and_val_splits(tmp_path):
    from train.data import find_splits

    splits = find_splits(str(make_genimage_folder(tmp_path / "genimage", per_class=10)))
    assert splits.counts() == {"train": {"real": 30, "ai": 30}, "val": {"real": 6, "ai": 6}}
    assert splits.classes == ("real", *GENERATORS) and not splits.val_held_out


def test_too_small_generators_and_unknown_exclusions_are_refused_in_one_line(tmp_path):
    root = make_generator_folder(tmp_path / "data", per_class=12)
    for path in sorted((root / "fake" / "beta").iterdir())[4:]:
        path.unlink()
    proc = run_cli("train", str(root), "-o", str(tmp_path / "m.onnx"))
    err = proc.stderr.decode().strip()
    assert proc.returncode == 2 and len(err.splitlines()) == 1, err
    assert "too few images for generator beta (4): each needs at least 10" in err
    from train.data import find_splits

    assert find_splits(str(root), exclude=("beta",)).classes == ("real", "alpha", "gamma")
    assert find_splits(str(root), binary=True).classes == ("real", "ai")
    with pytest.raises(DataError, match="no generator delta"):
        find_splits(str(root), exclude=("delta",))


def test_scan_names_the_generator_of_ai_images_only(tmp_path):
    model = rgb_model(str(tmp_path / "rgb.onnx"))
    assert Detector(model).info.generators == RGB_GENERATORS
    folder = tmp_path / "images"
    folder.mkdir()
    colours = {"red": (255, 0, 0), "blue": (0, 0, 255), "black": (0, 0, 0)}
    for name, colour in colours.items():
        (folder / f"{name}.png").write_bytes(encode(np.full((32, 32, 3), colour, np.uint8), "PNG"))
    rows = pd.read_parquet(io.BytesIO(run_cli("scan", str(folder), "-o", "-", "--model", model).stdout))
    rows = rows.set_index(rows.path.str.rsplit("/", n=1).str[-1])
    red, blue, black = rows.loc["red.png"], rows.loc["blue.png"], rows.loc["black.png"]
    # red: logits (real, r, g, b) = (1, 1, -1, -1) -> P(ai) = 1 - e/(2e + 2/e); generator red, e/(e + 2/e)
    e = np.e
    assert red.label == "ai" and red.prob_ai == pytest.approx(1 - e / (2 * e + 2 / e), rel=1e-5)
    assert red.generator_pred == "red" and red.generator_prob == pytest.approx(e / (e + 2 / e), rel=1e-5)
    assert blue.generator_pred == "blue"
    assert black.label == "real" and pd.isna(black.generator_pred) and pd.isna(black.generator_prob)
    binary = tiny_onnx(str(tmp_path / "binary.onnx"))
    plain = pd.read_parquet(io.BytesIO(run_cli("scan", str(folder), "-o", "-", "--model", binary).stdout))
    assert plain.generator_pred.isna().all() and plain.generator_prob.isna().all()


def test_per_generator_metrics_and_the_attribution_matrix():
    rows = pd.DataFrame(
        {
            "error": [None] * 8,
            "true_label": ["real", "real", "ai", "ai", "ai", "ai", "ai", "ai"],
            "true_generator": [None, None, "a", "a", "b", "b", "c", "c"],
            "prob_ai": [0.1, 0.6, 0.9, 0.7, 0.8, 0.3, 0.2, 0.55],
            "generator_pred": ["a", "b", "a", "b", "b", "b", "a", "a"],
        }
    )
    table = {row["generator"]: row for row in per_generator(rows, 0.5, unseen={"c"})}
    assert table["a"] == {"generator": "a", "seen": True, "count": 2, "recall": 1.0, "roc_auc": 1.0}
    assert table["b"]["recall"] == 0.5 and table["b"]["roc_auc"] == 0.75  # 3 of 4 pairs above a real image
    assert not table["c"]["seen"] and table["c"]["roc_auc"] == 0.5  # 0.2 and 0.55 against 0.1 and 0.6
    found = attribution(rows, ("a", "b"))
    assert found["count"] == 4 and found["accuracy"] == 0.75 and found["confusion"] == [[1, 1], [0, 2]]
    # F1: a = 2 * 1 * 0.5 / 1.5, b = 2 * (2/3) * 1 / (5/3); macro = their mean
    assert found["macro_f1"] == pytest.approx((2 / 3 + 0.8) / 2)


def test_eval_unseen_refuses_what_the_data_lacks_or_the_model_saw(tmp_path):
    data = make_generator_folder(tmp_path / "data", per_class=3, generators=("red", "green"))
    model = rgb_model(str(tmp_path / "rgb.onnx"))
    for unseen, message in (("purple", "no such generator in the data"), ("red", "the model has an output for it")):
        proc = run_cli("eval", str(data), "--model", model, "-o", str(tmp_path / "r"), "--unseen", unseen)
        err = proc.stderr.decode()
        assert proc.returncode == 2 and message in err and "Traceback" not in err, err
