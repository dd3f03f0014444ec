"""Scores people can trust: calibration, `calibrate`, `--tta`, robustness and the HTML report."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess

import numpy as np
import onnx
import pandas as pd
import pytest
from helpers.cli import run_cli
from helpers.images import jpeg, photo
from helpers.labelled import make_eval_folder

from aidetect.evaluation.calibration import calibration_report
from aidetect.evaluation.robustness import PERTURBATIONS, robustness
from aidetect.pipeline.decode import BatchDecoder
from aidetect.pipeline.detector import Detector, sigmoid
from aidetect.pipeline.read import probe
from aidetect.pipeline.scoring import Scorer
from aidetect.pipeline.tta import VARIANTS, variants, variants_for
from aidetect.records import ImageRef


def test_temperature_scaling_fixes_an_overconfident_model():
    rng = np.random.default_rng(0)
    true_margin = rng.normal(0, 2, 5000)
    labels = rng.random(5000) < sigmoid(true_margin)
    overconfident = true_margin * 4
    report = calibration_report(overconfident, labels)
    assert 3.0 < report["temperature"] < 5.0
    assert report["ece_after"] < report["ece_before"] / 3
    assert report["log_loss_after"] < report["log_loss_before"]


def _md5(path) -> str:
    return hashlib.md5(open(path, "rb").read()).hexdigest()


def test_calibrate_writes_a_new_file_and_leaves_the_old_one(tmp_path, model_path):
    data = make_eval_folder(tmp_path / "data", per_class=8)
    before = _md5(model_path)
    out = tmp_path / "calibrated.onnx"
    proc = run_cli("calibrate", str(data), "--model", model_path, "-o", str(out), "--target-fpr", "0.25")
    assert proc.returncode == 0, proc.stderr
    assert _md5(model_path) == before
    meta = json.loads({p.key: p.value for p in onnx.load(str(out)).metadata_props}["aidetect"])
    assert meta["calibration"]["count"] == 16 and meta["threshold"] == meta["calibration"]["threshold"]
    det = Detector(str(out))
    assert det.info.temperature == pytest.approx(meta["calibration"]["temperature"])
    same = run_cli("calibrate", str(data), "--model", str(out), "-o", str(out))
    assert same.returncode == 2 and "never overwrites" in same.stderr.decode()


def test_tta_flags_an_unstable_image(tmp_path, model_path):
    det = Detector(model_path)
    pre = det.info.preprocess
    image = tmp_path / "edge.png"
    image.write_bytes(jpeg(32, 32, seed=11))
    (decoded,) = BatchDecoder(pre, 4).decode([probe(ImageRef("x", "x", 0, 0), image.read_bytes())])
    names = variants_for(det.info.metadata)
    assert names == ("original", "flip", "jpeg85")  # the tiny model was not trained with --aug-rescale
    variant_probs = det.predict(pre.normalize(np.stack(variants(decoded.pixels[0], names))))
    assert variant_probs.max() > variant_probs.min()
    # A threshold between the variants' scores makes them disagree about the verdict.
    threshold = float((variant_probs.max() + variant_probs.min()) / 2)
    proc = run_cli("scan", str(image), "-o", "-", "--model", model_path, "--tta", "--threshold", str(threshold))
    row = pd.read_parquet(io.BytesIO(proc.stdout)).iloc[0]
    assert row.label == "uncertain" and row.prob_spread == pytest.approx(
        variant_probs.max() - variant_probs.min(), abs=1e-5
    )
    assert row.prob_ai == pytest.approx(variant_probs.mean(), abs=1e-5)
    scores = Scorer(det, pre, threshold, names, 1.0).score([decoded.pixels])
    assert scores.uncertain[0] and scores.spread[0] == pytest.approx(
        variant_probs.max() - variant_probs.min(), abs=1e-6
    )
    assert not Scorer(det, pre, 2.0, names, 1.0).score([decoded.pixels]).uncertain[0]  # all on one side
    plain = run_cli("scan", str(image), "-o", "-", "--model", model_path, "--threshold", str(threshold))
    plain_row = pd.read_parquet(io.BytesIO(plain.stdout)).iloc[0]
    assert plain_row.label in ("ai", "real") and pd.isna(plain_row.prob_spread)


def test_rescale_variant_only_for_models_trained_to_ignore_rescaling():
    trained = {"training": {"recipe": {"augment": {"rescale": 0.3}}}}
    assert variants_for(trained) == VARIANTS
    assert "rescale75" not in variants_for({"training": {"recipe": {"augment": {"rescale": 0.0}}}})
    assert "rescale75" not in variants_for({})
    pixels = np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    made = variants(pixels, VARIANTS)
    assert len(made) == 4 and all(v.shape == pixels.shape for v in made)
    assert np.array_equal(made[1], pixels[:, ::-1])


def test_robustness_deltas_match_a_direct_computation(tmp_path, model_path):
    det = Detector(model_path)
    decoder = BatchDecoder(det.info.preprocess, 8)
    paths = []
    for i in range(5):
        path = tmp_path / f"{i}.png"
        from PIL import Image

        Image.fromarray(photo(60, 80, seed=i)).save(path)
        paths.append(str(path))
    base = np.array([_score(open(p, "rb").read(), det, decoder) for p in paths])
    report = robustness(paths, base, Scorer(det, decoder.pre, 0.5), decoder)
    assert set(report) == set(PERTURBATIONS)
    from aidetect.pipeline.preprocess import open_rgb

    for name, perturb in PERTURBATIONS.items():
        probs = np.array([_score(perturb(open_rgb(p)), det, decoder) for p in paths])
        delta = np.abs(probs - base)
        assert report[name]["mean_abs_change"] == pytest.approx(delta.mean(), abs=1e-6), name
        assert report[name]["p95_abs_change"] == pytest.approx(np.percentile(delta, 95), abs=1e-6), name
        assert report[name]["flip_rate"] == pytest.approx(((probs >= 0.5) != (base >= 0.5)).mean()), name


def _score(data: bytes, det: Detector, decoder: BatchDecoder) -> float:
    (decoded,) = decoder.decode([probe(ImageRef("x", "x", 0, 0), data)])
    return float(det.predict(decoder.pre.normalize(decoded.pixels))[0])


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.browser
@pytest.mark.slow
def test_report_renders_in_headless_chromium(tmp_path, model_path):
    from helpers.images import hostile_corpus

    hostile_corpus(tmp_path / "in")
    out = tmp_path / "scan.parquet"
    assert run_cli("scan", str(tmp_path / "in"), "-o", str(out), "--model", model_path, "--tta").returncode == 0
    page = tmp_path / "report.html"
    proc = run_cli("report", str(out), "-o", str(page))
    assert proc.returncode == 0, proc.stderr
    text = page.read_text()
    for section in ("Most likely AI-generated", "Uncertain", "Provenance findings", "Errors", "prob_ai over all"):
        assert section in text, section
    assert "image too large: 30000x30000" in text and "data:image/jpeg;base64," in text
    assert "http://" not in text.replace("http://www.w3.org", "")  # nothing fetched from the network
    assert CHROMIUM, "headless Chromium is needed for this test: apt-get install chromium (done by .ci/run)"
    shot = tmp_path / "report.png"
    subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--hide-scrollbars",
            "--window-size=1200,1600",
            f"--screenshot={shot}",
            page.as_uri(),
        ],
        capture_output=True,
        timeout=120,
        check=True,
    )
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("L"))
    assert pixels.shape == (1600, 1200)
    assert pixels.std() > 20  # text, thumbnails and the histogram, not a blank page
    assert (pixels < 100).mean() > 0.01


def test_report_on_missing_output_is_one_line(tmp_path):
    proc = run_cli("report", str(tmp_path / "nope"))
    assert proc.returncode == 2 and "no scan output" in proc.stderr.decode()


def test_report_reads_the_scans_threshold_back_from_its_labels():
    from aidetect.evaluation.report import scan_threshold

    rows = pd.DataFrame({"label": ["real", "real", "ai", "ai", None], "prob_ai": [0.1, 0.7, 0.8, 0.99, None]})
    assert scan_threshold(rows) == pytest.approx(0.8)
    assert scan_threshold(rows[rows.label != "ai"]) == 0.5  # one side missing: nothing to read back
