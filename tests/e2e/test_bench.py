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
    assert result["scan"]["images"] == 6
    for key in ("scan", "model_only", "decode_only", "decode_full_size", "baseline"):
        assert result[key]["images_per_s"] > 0, key
    assert result["speedup_vs_baseline"] > 0 and result["pipeline_efficiency"] > 0
    assert result["pipeline_efficiency_running"] >= result["pipeline_efficiency"]
    assert all(mb > 0 for mb in result["rss"]["peak_rss_mb"])
    assert result["rss"]["files"] == [20, 200]
    assert "provenance_cost" in result and result["scan_no_provenance"]["images"] == 6
    assert result["provenance_stage"]["images"] == 6 and result["provenance_share"] > 0
    assert result["scan_tta"]["images"] == 6 and result["tta_slowdown"] > 0
    assert result["decode_full_size"]["images"] == 6 and result["reduced_decode_gain"] > 0
    hostile = result["hostile"]
    assert hostile["files"] == 19 and 0 < hostile["peak_rss_mb"] < 1536, hostile  # the README's bound: 1.5 GB
