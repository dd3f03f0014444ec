"""The watermark reader against the `invisible-watermark` library's own encoder (the test extra):
each of the three messages is found at its level, unmarked photos are not, and JPEG re-encodes
and resizes behave as measured (README)."""

from __future__ import annotations

import io

import imwatermark  # the reference encoder (the test extra)
import numpy as np
import pandas as pd
import pytest
from corpus import photo_like
from helpers.cli import run_cli
from PIL import Image

from aidetect.pipeline.read import probe
from aidetect.pipeline.watermark import MESSAGES, best_match, checks_watermark
from aidetect.records import ImageRef


def marked(rgb: np.ndarray, bits: tuple[int, ...], rgb_as_bgr: bool = False) -> np.ndarray:
    """What Stable Diffusion's scripts do: hand the encoder BGR (some SDXL pipelines handed RGB)."""
    encoder = imwatermark.WatermarkEncoder()
    encoder.set_watermark("bits", list(bits))
    if rgb_as_bgr:
        return np.clip(encoder.encode(rgb.astype(np.float32), "dwtDct"), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(encoder.encode(np.ascontiguousarray(rgb[:, :, ::-1]), "dwtDct")[:, :, ::-1])


def photo(width: int = 512, height: int = 512, seed: int = 0) -> np.ndarray:
    return np.asarray(photo_like(width, height, np.random.default_rng(seed)))


def reencoded(rgb: np.ndarray, fmt: str, **kwargs) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, fmt, **kwargs)
    return np.asarray(Image.open(buf).convert("RGB"))


@pytest.mark.parametrize("message", MESSAGES, ids=[m.generator for m in MESSAGES])
def test_each_message_is_found_very_likely_after_png_and_jpeg_95(message):
    image = marked(photo(768, 512, seed=3), message.bits)
    for copy in (image, reencoded(image, "PNG"), reencoded(image, "JPEG", quality=95)):
        match = best_match(copy)
        assert match.generator == message.generator and match.level == "very likely" and match.decisive, match
        assert match.matching >= 0.8 * len(message.bits)


def test_sdxl_marked_by_a_pipeline_that_passed_rgb_is_found_too():
    image = marked(photo(seed=4), MESSAGES[2].bits, rgb_as_bgr=True)
    match = best_match(image)
    assert match.generator == "Stable Diffusion XL" and match.decisive, match


def test_unmarked_photos_never_reach_likely():
    for seed in range(8):
        match = best_match(photo(640, 512, seed=100 + seed))
        assert match.level in ("none", "partial"), (seed, match)


def test_resizing_or_a_strong_jpeg_loses_the_mark_as_documented():
    image = marked(photo(768, 768, seed=5), MESSAGES[2].bits)
    halved = np.asarray(Image.fromarray(image).resize((384, 384), Image.BILINEAR))
    assert not best_match(halved).decisive
    assert not best_match(reencoded(image, "JPEG", quality=75)).decisive


def test_images_under_256_squared_are_not_read():
    assert best_match(photo(200, 200)) is None


def test_auto_mode_reads_lossless_files_at_generator_sizes_only():
    def item(w: int, h: int, fmt: str):
        return probe(ImageRef("x", "x", 0, 0), reencoded_bytes(photo(w, h), fmt))

    assert checks_watermark(item(512, 768, "PNG"), "auto")
    assert not checks_watermark(item(500, 768, "PNG"), "auto")  # not a multiple of 64
    assert not checks_watermark(item(512, 512, "JPEG"), "auto") and checks_watermark(item(512, 512, "JPEG"), "all")
    assert not checks_watermark(item(512, 512, "PNG"), "off")


def reencoded_bytes(rgb: np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, fmt)
    return buf.getvalue()


@pytest.mark.slow
def test_a_scan_reports_the_mark_and_lets_it_decide(tmp_path, model_path):
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(marked(photo(seed=6), MESSAGES[0].bits)).save(folder / "sd1.png")
    Image.fromarray(marked(photo(seed=7), MESSAGES[2].bits)).save(folder / "sdxl.jpg", quality=95)
    Image.fromarray(photo(seed=8)).save(folder / "plain.png")
    proc = run_cli("scan", str(folder), "-o", str(tmp_path / "out"), "--model", model_path)
    assert proc.returncode == 0, proc.stderr
    df = pd.read_parquet(tmp_path / "out")
    df = df.set_index(df.path.str.rsplit("/", n=1).str[1])
    sd1 = df.loc["sd1.png"]
    assert (sd1.provenance, sd1.generator, sd1.verdict, sd1.verdict_source) == (
        "sd-watermark",
        "Stable Diffusion 1.x",
        "ai",
        "provenance",
    )
    assert int(sd1.watermark_bits.split("/")[0]) >= 109 and sd1.watermark_bits.endswith("/136")
    assert pd.isna(df.loc["sdxl.jpg", "watermark_bits"])  # auto: JPEGs are not read
    assert pd.isna(df.loc["plain.png", "provenance"]) and df.loc["plain.png", "verdict_source"] == "model"
    report = run_cli("report", str(tmp_path / "out"), "-o", str(tmp_path / "report.html"))
    page = (tmp_path / "report.html").read_text()
    assert report.returncode == 0 and "Evidence that decided" in page and "<td>sd-watermark</td><td>1</td>" in page
    everything = run_cli("scan", str(folder), "-o", str(tmp_path / "all"), "--model", model_path, "--watermarks", "all")
    assert everything.returncode == 0
    all_rows = pd.read_parquet(tmp_path / "all")
    sdxl = all_rows[all_rows.path.str.endswith("sdxl.jpg")].iloc[0]
    assert sdxl.generator == "Stable Diffusion XL" and sdxl.verdict_source == "provenance"
