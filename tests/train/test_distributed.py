"""Training in several processes (gloo on this machine's CPUs): `--nproc`, resume across process
counts, validation gathered exactly, and failures that end the run in one line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import onnx
import pytest
import torch
from generator_corpus import make_generator_folder
from helpers.cli import run_cli
from helpers.models import TINY_ARCH
from rich.console import Console

from train.data import find_splits
from train.loop import TrainConfig, Trainer

pytestmark = [pytest.mark.train, pytest.mark.slow]

TINY = ["--arch", TINY_ARCH, "--img-size", "32", "--batch-size", "4", "--workers", "1", "--val-split", "0.25"]


def records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_generator_folder(tmp_path_factory.mktemp("ddp") / "data", per_class=12, generators=("alpha",))


def test_two_processes_train_and_their_validation_is_the_whole_split(tmp_path, data):
    out = tmp_path / "m.onnx"
    proc = run_cli("train", str(data), "-o", str(out), *TINY, "--epochs", "2", "--nproc", "2")
    err = proc.stderr.decode()
    assert proc.returncode == 0, err
    assert "in 2 processes" in err and err.count("wrote ") == 1  # rank 0 alone prints and exports
    run = tmp_path / "m.run"
    epochs = [r for r in records(run) if "epoch" in r]
    assert [r["epoch"] for r in epochs] == [1, 2] and all(r["val_count"] == 6 for r in epochs)
    # The checkpoint holds the plain model: one process loads it and gets the same validation figures.
    state = torch.load(run / "best.pt", map_location="cpu", weights_only=False)
    assert state["processes"] == 2 and not any(k.startswith("module.") for k in state["model"])
    cfg = TrainConfig(data=str(data), output=str(tmp_path / "one.onnx"), arch=TINY_ARCH, img_size=32, val_split=0.25)
    trainer = Trainer(cfg, find_splits(str(data), 0.25, 0), Console(quiet=True))
    trainer.load(str(run / "best.pt"))
    trainer.make_datasets()
    again, logged = trainer.evaluate("val"), next(r for r in epochs if r["epoch"] == state["epoch"])
    assert again["accuracy"] == logged["val_accuracy"] and again["loss"] == pytest.approx(logged["val_loss"], rel=1e-4)
    exported = run_cli("export", str(run / "best.pt"), "-o", str(tmp_path / "again.onnx"))
    assert exported.returncode == 0, exported.stderr
    meta = json.loads({p.key: p.value for p in onnx.load(str(out)).metadata_props}["aidetect"])
    assert meta["training"]["recipe"]["processes"] == 2 and meta["training"]["recipe"]["global_batch"] == 8

    # Resume with another process count: one process continues a two-process run, and back.
    one = run_cli("train", str(data), "-o", str(out), *TINY, "--epochs", "3", "--resume", str(run / "last.pt"))
    assert one.returncode == 0 and "resuming after epoch 2" in one.stderr.decode(), one.stderr
    two = run_cli(
        "train", str(data), "-o", str(out), *TINY, "--epochs", "4", "--resume", str(run / "last.pt"), "--nproc", "2"
    )
    assert two.returncode == 0 and "resuming after epoch 3" in two.stderr.decode(), two.stderr
    assert [r["epoch"] for r in records(run) if "epoch" in r] == [1, 2, 3, 4]


def _workers(parent: int) -> list[int]:
    """The training processes the launcher spawned under `parent`."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == parent and b"spawn_main" in cmdline and b"resource_tracker" not in cmdline:
            found.append(int(entry))
    return found


def test_a_process_that_dies_ends_the_run_with_one_line(tmp_path, data):
    argv = [sys.executable, "-m", "aidetect", "train", str(data), "-o", str(tmp_path / "m.onnx"), *TINY]
    proc = subprocess.Popen([*argv, "--epochs", "200", "--nproc", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not (tmp_path / "m.run" / "metrics.jsonl").exists() and time.monotonic() < deadline:
        time.sleep(0.5)  # training has begun once the first epoch is logged
    workers = _workers(proc.pid)
    assert len(workers) == 2, workers
    os.kill(workers[-1], signal.SIGKILL)
    _, err = proc.communicate(timeout=120)
    lines = [line for line in err.decode().splitlines() if "error" in line.lower() or "Traceback" in line]
    assert proc.returncode == 2 and len(lines) == 1, err.decode()[-3000:]
    assert "failed: Signal 9 (SIGKILL)" in lines[0] and "the others were stopped" in lines[0]


def test_bad_setups_are_one_line_not_a_hang(tmp_path, data):
    gpus = run_cli("train", str(data), "-o", str(tmp_path / "m.onnx"), "--nproc", "3", "--device", "gpu")
    assert gpus.returncode == 2 and "--nproc 3: this machine has 0 GPUs" in gpus.stderr.decode()
    env = {
        **os.environ,
        "WORLD_SIZE": "2",
        "RANK": "1",
        "LOCAL_RANK": "0",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": "9",
    }
    argv = [sys.executable, "-m", "train", str(data), "-o", str(tmp_path / "m.onnx"), "--rendezvous-timeout", "3"]
    lonely = subprocess.run(argv, env=env, capture_output=True, timeout=120)
    err = lonely.stderr.decode().strip()
    assert lonely.returncode == 2 and len(err.splitlines()) == 1, err
    assert "could not join the others at 127.0.0.1:9 within 3 s" in err
