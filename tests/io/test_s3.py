"""S3 sources and outputs against a real S3 server (moto_server) on loopback."""

from __future__ import annotations

import os

import pandas as pd
import pytest
from helpers.cli import run_cli
from helpers.images import jpeg
from helpers.s3 import BUCKET, N_NESTED

pytestmark = [pytest.mark.s3]


def test_listing_pages_and_nested_prefixes(bucket):
    from aidetect.io.s3 import list_images
    from aidetect.io.sources import WalkStats

    stats = WalkStats()
    refs = list(list_images(f"s3://{BUCKET}/nested/", stats=stats))
    assert len(refs) == N_NESTED and stats.listed == N_NESTED
    assert all(r.etag and r.size and r.mtime_ns for r in refs)
    assert len(list(list_images(f"s3://{BUCKET}/nested/3/"))) == len(range(3, N_NESTED, 7))
    assert list(list_images(f"s3://{BUCKET}/nested/", recursive=False)) == []


def test_object_deleted_after_listing_gets_an_error_row(bucket):
    from aidetect.io.s3 import list_images
    from aidetect.pipeline.read import load
    from aidetect.pipeline.worker import open_ref

    bucket.put_object(Bucket=BUCKET, Key="gone/soon.jpg", Body=jpeg())
    (ref,) = list(list_images(f"s3://{BUCKET}/gone/"))
    bucket.delete_object(Bucket=BUCKET, Key="gone/soon.jpg")
    assert load(ref, opener=open_ref).error == "object not found"


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


@pytest.mark.slow
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


@pytest.mark.slow
def test_a_second_scan_into_a_locked_s3_output_refuses(bucket, tmp_path, model_path):
    from aidetect.io.s3 import S3PartStore

    out = f"s3://{BUCKET}/locked-results"
    live = S3PartStore(out)
    live.lock()  # a scan in progress elsewhere holds the lease
    try:
        proc = run_cli("scan", f"s3://{BUCKET}/odd/", "-o", out, "--model", model_path)
        line = proc.stderr.decode().strip()
        assert proc.returncode == 2 and f"is being written by another scan, pid {os.getpid()}" in line, line
        assert len(line.splitlines()) == 1
    finally:
        live.unlock()
    assert run_cli("scan", f"s3://{BUCKET}/odd/", "-o", out, "--model", model_path).returncode == 0
    assert "_aidetect.lock" not in S3PartStore(out).names()  # released at the end


def test_conditional_lock_write_keeps_two_starting_scans_apart(bucket):
    from aidetect.errors import S3Error
    from aidetect.io.s3 import S3PartStore

    first, second = S3PartStore(f"s3://{BUCKET}/race"), S3PartStore(f"s3://{BUCKET}/race")
    first.lock()
    second._read_lock = lambda: None  # as if both had looked before either wrote
    try:
        with pytest.raises(S3Error, match="took the lock first"):
            second.lock()
    finally:
        first.unlock()


def test_objects_over_the_byte_limit_are_refused_from_the_listing(bucket, tmp_path, model_path):
    out = tmp_path / "small-only"
    proc = run_cli("scan", f"s3://{BUCKET}/odd/", "-o", str(out), "--model", model_path, "--max-file-mb", "0.001")
    assert proc.returncode == 0, proc.stderr
    df = pd.read_parquet(out).set_index("path")
    big = df[df.bytes > 1048]  # 0.001 MiB
    assert len(big) >= 2
    assert (big.error == big.bytes.map(lambda n: f"file too large: {n} bytes (limit 1048 bytes, --max-file-mb)")).all()
    assert df.loc[f"s3://{BUCKET}/odd/text.png", "error"] == "not an image"  # 5 bytes: under the limit
