"""S3 sources and outputs against a real S3 server (moto_server) on loopback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pandas as pd
import pytest
from conftest import run_cli
from images import jpeg

BUCKET = "photos"
N_NESTED = 1005  # more than one listing page (1,000 keys)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_endpoint():
    """A moto S3 server on 127.0.0.1, for the whole session; stopped at the end."""
    port = _free_port()
    moto = os.path.join(os.path.dirname(sys.executable), "moto_server")
    server = subprocess.Popen(
        [moto, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.1)
    else:
        server.kill()
        pytest.fail("moto_server did not start")
    endpoint = f"http://127.0.0.1:{port}"
    saved = {
        k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION", "AWS_ENDPOINT_URL")
    }
    os.environ.update(
        AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_REGION="us-east-1", AWS_ENDPOINT_URL=endpoint
    )
    yield endpoint
    server.terminate()
    server.wait(timeout=10)
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def bucket(s3_endpoint):
    import boto3

    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    small = jpeg(24, 24)
    for i in range(N_NESTED):
        s3.put_object(Bucket=BUCKET, Key=f"nested/{i % 7}/deeper/{i:04d}.jpg", Body=small)
    odd = {
        "odd/with space (1).jpg": jpeg(seed=1),
        "odd/ünïcødé+plus.png": jpeg(seed=2),
        "odd/corrupt.jpg": jpeg(seed=3)[:700],
        "odd/notes.txt": b"not an image",
        "odd/text.png": b"hello",
    }
    for key, body in odd.items():
        s3.put_object(Bucket=BUCKET, Key=key, Body=body)
    return s3


def test_listing_pages_and_nested_prefixes(bucket):
    from aidetect.s3 import list_images
    from aidetect.sources import WalkStats

    stats = WalkStats()
    refs = list(list_images(f"s3://{BUCKET}/nested/", stats=stats))
    assert len(refs) == N_NESTED and stats.listed == N_NESTED
    assert all(r.etag and r.size and r.mtime_ns for r in refs)
    assert len(list(list_images(f"s3://{BUCKET}/nested/3/"))) == len(range(3, N_NESTED, 7))
    assert list(list_images(f"s3://{BUCKET}/nested/", recursive=False)) == []


def test_object_deleted_after_listing_gets_an_error_row(bucket):
    from aidetect.decode import load
    from aidetect.judge import read_ref
    from aidetect.s3 import list_images

    bucket.put_object(Bucket=BUCKET, Key="gone/soon.jpg", Body=jpeg())
    (ref,) = list(list_images(f"s3://{BUCKET}/gone/"))
    bucket.delete_object(Bucket=BUCKET, Key="gone/soon.jpg")
    assert load(ref, reader=read_ref).error == "object not found"


def test_scan_bucket_with_odd_keys_and_bad_objects_then_resume(bucket, tmp_path, model_path):
    out = tmp_path / "out.parquet"
    proc = run_cli("scan", f"s3://{BUCKET}/odd/", "-o", str(out), "--model", model_path)
    assert proc.returncode == 0, proc.stderr
    df = pd.read_parquet(out).set_index("path")
    assert len(df) == 4
    assert df.loc[f"s3://{BUCKET}/odd/corrupt.jpg", "error"] == "truncated JPEG"
    assert df.loc[f"s3://{BUCKET}/odd/text.png", "error"] == "not an image"
    for key in ("odd/with space (1).jpg", "odd/ünïcødé+plus.png"):
        row = df.loc[f"s3://{BUCKET}/{key}"]
        assert pd.isna(row.error) and row.label in ("ai", "real") and row.etag
    again = run_cli("scan", f"s3://{BUCKET}/odd/", "-o", str(out), "--model", model_path)
    assert "4 skipped" in again.stderr.decode() and len(pd.read_parquet(out)) == 4


def test_scan_many_objects_to_s3_output_mixed_with_a_folder(bucket, tmp_path, model_path):
    import pyarrow.fs

    (tmp_path / "local").mkdir()
    (tmp_path / "local" / "a.jpg").write_bytes(jpeg())
    target = f"s3://{BUCKET}/results/run1"
    args = (
        "scan",
        f"s3://{BUCKET}/nested/",
        str(tmp_path / "local"),
        "-o",
        target,
        "--model",
        model_path,
        "--batch-size",
        "64",
    )
    proc = run_cli(*args)
    assert proc.returncode == 0, proc.stderr
    fs = pyarrow.fs.S3FileSystem(
        endpoint_override=os.environ["AWS_ENDPOINT_URL"], access_key="testing", secret_key="testing", region="us-east-1"
    )
    df = pd.read_parquet(target.removeprefix("s3://"), filesystem=fs)
    assert len(df) == N_NESTED + 1 and df.path.is_unique and df.error.isna().all()
    again = run_cli(*args)
    assert f"{N_NESTED + 1} skipped" in again.stderr.decode()
    assert len(pd.read_parquet(target.removeprefix("s3://"), filesystem=fs)) == N_NESTED + 1


def test_missing_bucket_is_one_clear_fatal_line(bucket, tmp_path, model_path):
    proc = run_cli("scan", "s3://no-such-bucket/x/", "-o", str(tmp_path / "o"), "--model", model_path)
    err = proc.stderr.decode()
    assert proc.returncode == 2 and "bucket 'no-such-bucket' does not exist" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "o").exists()
