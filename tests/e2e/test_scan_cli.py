"""End-to-end tests of `aidetect scan` as a user runs it: hostile files, resume, crashes, stdout."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
from helpers.cli import run_cli
from helpers.images import hostile_corpus, jpeg


def _scan(src, out, model_path, *extra):
    return run_cli("scan", str(src), "-o", str(out), "--model", model_path, *extra)


def test_hostile_folder_gives_one_row_per_image(tmp_path, model_path):
    expected = hostile_corpus(tmp_path / "in")
    out = tmp_path / "out.parquet"
    proc = _scan(tmp_path / "in", out, model_path, "--batch-size", "4")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == b""  # data goes to the file, messages to stderr
    df = pd.read_parquet(out)
    assert len(df) == len(expected) and df.path.is_unique
    errors = dict(zip(df.path.map(os.path.basename), df.error))
    for name, error in expected.items():
        assert (errors[name] if pd.notna(errors[name]) else None) == error, name
    ok = df[df.error.isna()]
    assert set(ok.label) <= {"ai", "real"} and ok.prob_ai.between(0, 1).all()
    assert df[df.error.notna()].label.isna().all() and df[df.error.notna()].prob_ai.isna().all()
    assert pd.api.types.is_datetime64_any_dtype(df.mtime) and pd.api.types.is_datetime64_any_dtype(df.scanned_at)
    assert df.model.str.startswith("coatnet_nano_rw_224@").all()
    assert df.path.map(os.path.isabs).all()
    stderr = proc.stderr.decode()
    assert "4 errors" in stderr and "1 ignored" in stderr
    assert "Traceback" not in stderr and "libjpeg" not in stderr


@pytest.mark.slow
def test_rerun_resumes_without_duplicates(tmp_path, model_path):
    src = tmp_path / "in"
    src.mkdir()
    for i in range(5):
        (src / f"{i}.jpg").write_bytes(jpeg(seed=i))
    out = tmp_path / "out.parquet"
    assert _scan(src, out, model_path).returncode == 0
    again = _scan(src, out, model_path)
    assert again.returncode == 0 and "5 skipped" in again.stderr.decode()
    (src / "new.jpg").write_bytes(jpeg(seed=9))
    (src / "0.jpg").write_bytes(jpeg(64, 80, seed=10))  # changed: new size and mtime
    third = _scan(src, out, model_path)
    assert "scanned 2 images" in third.stderr.decode() and "4 skipped" in third.stderr.decode()
    df = pd.read_parquet(out)
    assert len(df) == 6 and df.path.is_unique
    assert df.set_index("path").loc[str(src / "0.jpg"), "width"] == 80
    fresh = _scan(src, out, model_path, "--overwrite")
    assert "scanned 6 images" in fresh.stderr.decode() and len(pd.read_parquet(out)) == 6


@pytest.mark.slow
def test_kill_9_loses_no_committed_row(tmp_path, model_path):
    src = tmp_path / "in"
    src.mkdir()
    # More files than one part holds (2,048 rows), so a part is committed while work remains:
    # the kill then lands mid-scan however fast the machine is.
    total = 5000
    for i in range(total):
        (src / f"{i:04d}.jpg").write_bytes(jpeg(32, 32, seed=i))
    out = tmp_path / "out.parquet"
    cmd = [sys.executable, "-m", "aidetect", "scan", str(src), "-o", str(out), "--model", model_path, "-q"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if out.is_dir() and any(n.startswith("part-") for n in os.listdir(out)):
            break
        time.sleep(0.1)
    assert proc.poll() is None, "the scan finished before it could be killed; make the corpus larger"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = pd.read_parquet(out)
    assert 0 < len(partial) < total and partial.path.is_unique
    resumed = _scan(src, out, model_path)
    assert resumed.returncode == 0, resumed.stderr
    assert f"{len(partial)} skipped" in resumed.stderr.decode()
    df = pd.read_parquet(out)
    assert len(df) == total and df.path.is_unique


def test_stdout_output_pipes_into_pandas(tmp_path, model_path):
    src = tmp_path / "in"
    src.mkdir()
    for i in range(3):
        (src / f"{i}.png").write_bytes(jpeg(seed=i))
    proc = run_cli("scan", str(src), "-o", "-", "--model", model_path)
    assert proc.returncode == 0, proc.stderr
    df = pd.read_parquet(io.BytesIO(proc.stdout))
    assert len(df) == 3 and set(df.columns) >= {"path", "label", "prob_ai", "error", "width", "height", "bytes"}
    assert not list(tmp_path.glob("verdicts.parquet"))


def test_empty_folder_still_gives_a_dataset_with_the_columns(tmp_path, model_path):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    proc = _scan(src, out, model_path)
    assert proc.returncode == 0 and "no image files found" in proc.stderr.decode()
    df = pd.read_parquet(out)
    assert len(df) == 0 and {"path", "label", "prob_ai", "verdict"} <= set(df.columns)
    (src / "a.jpg").write_bytes(jpeg())
    again = _scan(src, out, model_path)
    assert again.returncode == 0 and "scanned 1 image in" in again.stderr.decode()
    assert pd.read_parquet(out).path.tolist() == [str(src / "a.jpg")]


def test_stdout_output_refuses_a_terminal(tmp_path, model_path):
    (tmp_path / "a.jpg").write_bytes(jpeg())
    leader, follower = os.openpty()
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "aidetect", "scan", str(tmp_path), "-o", "-", "--model", model_path],
            stdout=follower,
            stderr=subprocess.PIPE,
            timeout=120,
        )
    finally:
        os.close(follower)
        os.close(leader)
    assert proc.returncode == 2 and "binary Parquet" in proc.stderr.decode()


def test_single_file_source_and_python_dash_m(tmp_path, model_path):
    image = tmp_path / "one photo.jpg"
    image.write_bytes(jpeg())
    proc = run_cli("scan", str(image), "-o", str(tmp_path / "o.parquet"), "--model", model_path, "--quiet")
    assert proc.returncode == 0 and proc.stderr == b""
    assert pd.read_parquet(tmp_path / "o.parquet").path.tolist() == [str(image)]


def test_clear_one_line_errors(tmp_path, model_path):
    cases = [
        (["scan", str(tmp_path / "missing"), "--model", model_path], "no such file or folder"),
        (["scan", str(tmp_path), "--model", str(tmp_path / "nope.onnx")], "no such model file"),
        (["scan", str(tmp_path), "--model", str(tmp_path)], "takes an .onnx file"),
        (["scan", str(tmp_path), "--model", model_path, "--device", "gpu"], "no usable NVIDIA GPU"),
        (["scan", str(tmp_path), "--model", model_path, "-o", "/proc/aidetect-out"], "cannot write to"),
    ]
    for args, message in cases:
        proc = run_cli(*args, cwd=tmp_path)
        err = proc.stderr.decode()
        assert proc.returncode == 2, (args, err)
        assert message in err and "Traceback" not in err, (args, err)
        assert len(err.strip().splitlines()) == 1, err


def test_output_folder_with_foreign_files_is_refused(tmp_path, model_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "precious.csv").write_text("keep me")
    proc = run_cli("scan", str(tmp_path), "-o", str(out), "--model", model_path, "--overwrite")
    assert proc.returncode == 2 and "did not write" in proc.stderr.decode()
    assert (out / "precious.csv").exists()


def test_version_is_the_installed_one():
    from importlib.metadata import version

    proc = run_cli("--version")
    assert proc.returncode == 0 and proc.stdout.decode().split() == ["aidetect", version("aidetect")]


def test_no_model_says_how_to_get_one(tmp_path, monkeypatch):
    import aidetect.pipeline.detector as detector
    from aidetect.engines.base import resolve_model
    from aidetect.errors import ModelError

    monkeypatch.setattr(detector, "DEFAULT_MODEL", tmp_path / "absent.onnx")
    with pytest.raises(ModelError, match="--model PATH .*aidetect train"):
        resolve_model(None)
