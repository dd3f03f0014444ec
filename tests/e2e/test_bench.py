"""Smoke test of the benchmark script: it runs end to end and writes its JSON (no timing asserted)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "bench.py"


@pytest.mark.slow
def test_bench_runs_and_reports_every_figure(tmp_path, model_path):
    out = tmp_path / "bench.json"
    env = {**os.environ, "AIDETECT_BENCH_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--images",
            "6",
            "--model",
            model_path,
            "--seconds",
            "1",
            "--repeats",
            "1",
            "--rss-files",
            "20",
            "--batch-size",
            "4",
            "--json",
            str(out),
        ],
        capture_output=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    result = json.loads(out.read_text())
    approx = pytest.approx
    # Every image was counted where it was measured...
    for key in ("scan", "scan_no_provenance", "scan_tta", "decode_only", "decode_full_size", "provenance_stage"):
        assert result[key]["images"] == 6, key
    assert result["rss"]["files"] == [20, 200]
    # ...and every derived figure is computed from the measured ones as the README says.
    scan, base = result["scan"], result["baseline"]
    assert scan["images_per_s"] == approx(6 / scan["wall_s"])
    assert result["speedup_vs_baseline"] == approx(scan["images_per_s"] / base["images_per_s"])
    model, decode = result["model_only"]["images_per_s"], result["decode_only"]["images_per_s"]
    assert result["pipeline_bound_images_per_s"] == approx(1 / (1 / model + 1 / decode))  # CPU: shared cores
    assert result["pipeline_efficiency"] == approx(scan["images_per_s"] / result["pipeline_bound_images_per_s"])
    assert result["pipeline_efficiency_running"] >= result["pipeline_efficiency"]  # without process start
    assert result["reduced_decode_gain"] == approx(decode / result["decode_full_size"]["images_per_s"])
    rss = result["rss"]["peak_rss_mb"]
    assert 100 < rss[0] < 4096 and result["rss"]["growth"] == approx(rss[1] / rss[0] - 1)
    rate = {k: float(result[k]["summary"].split("(")[1].split()[0]) for k in ("scan", "scan_tta")}
    assert result["tta_slowdown"] == approx(rate["scan"] / rate["scan_tta"], rel=1e-3)
    assert result["provenance_share"] == approx(
        result["provenance_stage"]["us_per_image"] * 1e-6 * rate["scan"], rel=1e-3
    )
    mark = result["watermark"]
    assert mark["images"] == 6 and sum(mark["corpus_levels_all"].values()) == 6 and mark["corpus_read_by_auto"] == 0
    assert set(mark["ms_per_image"]) == {"512x512 PNG", "1024x1024 PNG", "1024x1024 JPEG", "4000x3000 JPEG"}
    hostile = result["hostile"]
    assert hostile["files"] == 19 and 0 < hostile["peak_rss_mb"] < 1536, hostile  # the README's bound: 1.5 GB
    containers = result["containers"]
    for kind in ("loose", "shards", "parquet"):
        assert containers[kind]["images"] == 6, kind  # the same photos, whatever holds them
    assert containers["shards_vs_loose"] == approx(containers["shards"]["scan_rate"] / containers["loose"]["scan_rate"])
    assert containers["one_shard"]["images"] == [20, 200]
