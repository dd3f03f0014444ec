"""`aidetect scan --engine ray`: a local Ray and a real one-node cluster on loopback give the same
verdicts as the local engine, resume, survive bad files, and refuse GPUs the cluster lacks."""

from __future__ import annotations

import os
import subprocess
import sys

import pandas as pd
import pytest
from helpers.cli import run_cli
from helpers.images import hostile_corpus, jpeg

pytestmark = [pytest.mark.ray, pytest.mark.slow]

COLUMNS = ["label", "error", "width", "height", "bytes", "provenance", "verdict", "verdict_source"]


def _same_verdicts(local: pd.DataFrame, ray: pd.DataFrame) -> None:
    local, ray = local.set_index("path").sort_index(), ray.set_index("path").sort_index()
    assert list(local.index) == list(ray.index)
    pd.testing.assert_frame_equal(local[COLUMNS], ray[COLUMNS])
    assert ((local.prob_ai - ray.prob_ai).abs().fillna(0) < 1e-5).all()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, model_path):
    folder = tmp_path_factory.mktemp("ray") / "in"
    hostile_corpus(folder)
    with open(os.fsencode(str(folder)) + b"/caf\xe9 not utf-8.jpg", "wb") as f:  # Arrow strings must be UTF-8
        f.write(jpeg(seed=9))
    os.utime(folder / "good (1).jpg", ns=(0, 10_413_792_000 * 10**9))  # year 2300: past int64 nanoseconds
    out = folder.parent / "local.parquet"
    assert run_cli("scan", str(folder), "-o", str(out), "--model", model_path).returncode == 0
    return folder, pd.read_parquet(out)


def test_local_ray_matches_the_local_engine_and_resumes(corpus, model_path, tmp_path):
    folder, local = corpus
    out = tmp_path / "ray.parquet"
    proc = run_cli("scan", str(folder), "-o", str(out), "--model", model_path, "--engine", "ray", "--workers", "1")
    err = proc.stderr.decode()
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "core_worker" not in err
    assert f"scanned {len(local)} images" in err and "4 errors" in err
    _same_verdicts(local, pd.read_parquet(out))
    again = run_cli("scan", str(folder), "-o", str(out), "--model", model_path, "--engine", "ray", "--workers", "1")
    assert f"{len(local)} skipped" in again.stderr.decode() and len(pd.read_parquet(out)) == len(local)
    assert not [n for n in os.listdir(out) if n.startswith(".staging")]


def test_ray_reads_whole_shards_and_parquet_files_as_the_local_engine_does(tmp_path, model_path):
    """Containers are the unit of work on Ray: members are listed and resumed on the workers."""
    import pyarrow.parquet as pq
    from helpers.containers import hf_table, tar_bytes, write_shards

    src = tmp_path / "in"
    write_shards(src, 3, 3)
    pq.write_table(hf_table(4), src / "hf.parquet")
    data = tar_bytes([("ok.jpg", jpeg(seed=1)), ("cut.jpg", jpeg(80, 80, seed=2))])
    (src / "cut.tar").write_bytes(data[: data.index(jpeg(80, 80, seed=2)) + 100])
    (src / "loose.jpg").write_bytes(jpeg(seed=3))
    outs = {}
    for engine in ("local", "ray"):
        outs[engine] = tmp_path / f"{engine}.parquet"
        args = [
            "scan",
            str(src),
            "-o",
            str(outs[engine]),
            "--model",
            model_path,
            "--engine",
            engine,
            "--batch-size",
            "2",
        ]
        proc = run_cli(*args)
        assert proc.returncode == 0, proc.stderr.decode()
    local, ray = pd.read_parquet(outs["local"]), pd.read_parquet(outs["ray"])
    assert len(local) == 9 + 4 + 2 + 1
    _same_verdicts(local, ray)
    assert local.set_index("path").key.equals(ray.set_index("path").key.reindex(local.set_index("path").index))
    (src / "00001.tar").write_bytes(tar_bytes([("new.jpg", jpeg(seed=7))]))  # one shard changes
    again = run_cli("scan", str(src), "-o", str(outs["ray"]), "--model", model_path, "--engine", "ray")
    err = again.stderr.decode()
    assert "scanned 1 image " in err and "13 skipped" in err, err
    df = pd.read_parquet(outs["ray"])
    # the new member is added; the old version's members keep their rows, as deleted files do
    assert len(df) == 17 and df.path.is_unique


@pytest.fixture(scope="module")
def cluster():
    """A one-node Ray cluster started the way a person starts one, on loopback; stopped at the end."""
    ray_bin = os.path.join(os.path.dirname(sys.executable), "ray")
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "token"}
    subprocess.run([ray_bin, "stop", "--force"], env=env, capture_output=True)
    start = subprocess.run(
        [
            ray_bin,
            "start",
            "--head",
            "--node-ip-address",
            "127.0.0.1",
            "--num-cpus",
            "2",
            "--num-gpus",
            "0",
            "--include-dashboard",
            "false",
            "--disable-usage-stats",
        ],
        env=env,
        capture_output=True,
        timeout=180,
    )
    assert start.returncode == 0, start.stderr.decode()[-2000:]
    yield {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "token"}
    subprocess.run([ray_bin, "stop", "--force"], env=env, capture_output=True, timeout=120)


def _files_holding(secret: bytes, roots: list[str]) -> list[str]:
    found = []
    for root in roots:
        for folder, _, names in os.walk(root):
            for name in names:
                path = os.path.join(folder, name)
                try:
                    with open(path, "rb") as f:
                        if secret in f.read():
                            found.append(path)
                except OSError:
                    pass
    return found


def test_cluster_scan_of_a_bucket_matches_the_local_engine(cluster, bucket, model_path, tmp_path):
    """Also: the S3 secret reaches the workers without landing in any file of Ray's session folder."""
    from helpers.s3 import BUCKET

    secret = "planted-" + os.urandom(8).hex()  # moto accepts any secret; the workers must get this one
    cluster = {**cluster, "AWS_SECRET_ACCESS_KEY": secret}
    source = f"s3://{BUCKET}/odd/"
    local_out, ray_out = tmp_path / "local", tmp_path / "ray"
    assert run_cli("scan", source, "-o", str(local_out), "--model", model_path).returncode == 0
    ray_scan = ["scan", source, "-o", str(ray_out), "--model", model_path, "--engine", "ray", "--ray-address", "auto"]
    proc = run_cli(*ray_scan, env={**os.environ, **cluster})
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    _same_verdicts(pd.read_parquet(local_out), pd.read_parquet(ray_out))
    again = run_cli(*ray_scan, env={**os.environ, **cluster})
    assert "4 skipped" in again.stderr.decode() and len(pd.read_parquet(ray_out)) == 4
    for run in (proc, again):
        assert secret.encode() not in run.stdout + run.stderr
    assert _files_holding(secret.encode(), ["/tmp/ray", str(tmp_path)]) == []


def test_gpus_the_cluster_lacks_fail_fast(cluster, corpus, model_path, tmp_path):
    folder, _ = corpus
    proc = run_cli(
        "scan",
        str(folder),
        "-o",
        str(tmp_path / "o"),
        "--model",
        model_path,
        "--engine",
        "ray",
        "--ray-address",
        "auto",
        "--gpus-per-worker",
        "1",
        env={**os.environ, **cluster},
        timeout=180,
    )
    err = proc.stderr.decode()
    assert proc.returncode == 2 and "has 0 GPUs" in err and len(err.strip().splitlines()) == 1
