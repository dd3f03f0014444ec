"""Shared fixtures: a tiny real ONNX detector (random weights) and a runner for the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

TINY_ARCH = "coatnet_nano_rw_224"
TINY_SIZE = 32


@pytest.fixture(scope="session")
def model_path(tmp_path_factory) -> str:
    """A CoAtNet exported with the training module's exporter, so scans use a real ONNX file."""
    import torch

    from aidetect.preprocess import Preprocess
    from train.export import base_metadata, export_onnx
    from train.loop import build_model

    torch.manual_seed(0)
    model = build_model(TINY_ARCH, TINY_SIZE, 2)
    path = tmp_path_factory.mktemp("model") / "tiny.onnx"
    export_onnx(model, base_metadata(TINY_ARCH, 2, Preprocess(TINY_SIZE, TINY_SIZE)), str(path))
    return str(path)


def run_cli(*args: str, cwd: Path | None = None, timeout: int = 300, **kwargs) -> subprocess.CompletedProcess:
    """Run `python -m aidetect ARGS` as a user would, capturing stdout (bytes) and stderr."""
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "aidetect", *args], cwd=cwd, capture_output=True, timeout=timeout, env=env, **kwargs
    )
