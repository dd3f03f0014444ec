"""`scripts/gpu_check.py` runs anywhere: each GPU part reports ok, or skipped with its reason."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.train]

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "gpu_check.py"


def test_every_part_reports_in_one_table_row(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--images", "4", "--steps", "2", "--batch", "2"],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "AIDETECT_BENCH_CACHE": str(tmp_path)},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = {
        line.split("|")[1].strip(): line.split("|")[2].strip()
        for line in proc.stdout.splitlines()
        if line.startswith("| ") and "---" not in line
    }
    rows.pop("part")
    assert list(rows) == ["torch", "train", "onnxruntime", "dali", "scan"]
    assert all(result.startswith(("ok: ", "skipped: ")) for result in rows.values()), rows
    from aidetect.pipeline.detector import gpu_present

    if not gpu_present():
        assert all(result.startswith("skipped: ") for result in rows.values()), rows
