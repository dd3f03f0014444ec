"""Tar shards and Parquet files as sources, scanned through the CLI as a curator would: rows per
image member, `key` and chained `path`, resume per member, and every bad case as one row."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers.cli import run_cli
from helpers.containers import hf_table, samples, tar_bytes, write_shards
from helpers.images import jpeg

from aidetect.io.containers import ContainerSpec, chained, container_kind, expand, split_chained
from aidetect.io.sources import WalkStats, display_path
from aidetect.records import ImageRef


def _scan(src, out, model_path, *extra):
    proc = run_cli(
        "scan", *map(str, src if isinstance(src, list) else [src]), "-o", str(out), "--model", model_path, *extra
    )
    assert "Traceback" not in proc.stderr.decode(), proc.stderr.decode()
    return proc


def _by_path(df: pd.DataFrame) -> dict:
    return {p: (None if pd.isna(e) else e) for p, e in zip(df.path, df.error)}


@pytest.mark.parametrize(
    "member", ["000010001.jpg", "a::b.jpg", "../../etc/x.jpg", "/abs/x.jpg", "back\\slash::.jpg", "\udce9t\u00e9.png"]
)
def test_chained_path_is_reversible(member):
    path = chained("tar", member, "s3://bucket/shards/00001.tar")
    scheme, name, container = split_chained(path)
    assert (scheme, name, container) == ("tar", member, "s3://bucket/shards/00001.tar")
    path.encode("utf-8")  # valid UTF-8, always


def test_container_kinds():
    spec, shards = ContainerSpec(), ContainerSpec(shards=True)
    assert container_kind("/x/00001.TAR", spec) == "tar" and container_kind("/x/a.parquet", spec) == "parquet"
    assert container_kind("/x/a.jpg", spec) is None
    assert container_kind("/x/shard-000001", shards) == "tar" and container_kind("/x/a_stats.json", shards) is None
    assert container_kind("/x/a.parquet", shards) is None  # --shards: metadata tables beside shards are not read


class CountingStream(io.BytesIO):
    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.read_bytes = 0

    def read(self, n=-1):
        data = super().read(n)
        self.read_bytes += len(data)
        return data


def test_members_not_wanted_are_never_read(tmp_path):
    shard = tmp_path / "00000.tar"
    shard.write_bytes(tar_bytes(samples(0, 20)))
    ref = ImageRef(str(shard), display_path(str(shard)), shard.stat().st_size, 1, container="tar")
    stats = WalkStats(listed=1)
    members = list(expand(ref, ContainerSpec(), lambda r: r.sample.endswith("7"), stats))
    assert stats.listed == 20 and [m.sample for m in members][:2] == ["000000000", "000000001"]
    read = [m for m in members if m.payload.data is not None]
    assert [m.sample for m in read] == ["000000007", "000000017"]
    assert all(m.etag == f"{shard.stat().st_size}-1" and m.within == ref.key for m in members)


def test_a_name_twice_in_one_container_is_one_row(tmp_path):
    shard = tmp_path / "dup.tar"
    shard.write_bytes(tar_bytes([("a.jpg", jpeg(seed=1)), ("b.jpg", jpeg(seed=2)), ("a.jpg", jpeg(seed=3))]))
    ref = ImageRef(str(shard), str(shard), shard.stat().st_size, 1, container="tar")
    stats = WalkStats(listed=1)
    members = list(expand(ref, ContainerSpec(), lambda r: True, stats))
    assert [m.key for m in members] == [f"tar://a.jpg::{shard}", f"tar://b.jpg::{shard}"]
    assert members[0].payload.data == jpeg(seed=1) and (stats.listed, stats.ignored) == (2, 1)


def test_an_oversized_member_is_skipped_unread_on_a_stream(tmp_path, monkeypatch):
    """A member over the limit is skipped by chunks, not read into memory (the stream is not seekable)."""
    from aidetect.io import shards

    data = tar_bytes([("big.jpg", b"\xff\xd8" + bytes(3 << 20)), ("small.jpg", jpeg())])
    stream = CountingStream(data)
    stream.seekable = lambda: False
    monkeypatch.setattr(shards, "open_stored", lambda ref: _context(stream))
    ref = ImageRef("s3://b/x.tar", "s3://b/x.tar", len(data), 1, etag="e", container="tar")
    big, small = shards.shard_members(ref, ContainerSpec(max_bytes=1 << 20), lambda r: True)
    assert big.size == (3 << 20) + 2 and big.payload.data is None and small.payload.data == jpeg()
    assert big.etag == "e" and big.key == "tar://big.jpg::s3://b/x.tar"


def _context(value):
    import contextlib

    return contextlib.nullcontext(value)


def readme_join_snippet() -> str:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = readme.split("captions = pd.DataFrame(")[0].rsplit("```python", 1)[1]
    return block + "captions = pd.DataFrame(" + readme.split("captions = pd.DataFrame(")[1].split("```")[0]


@pytest.mark.slow
def test_tar_shards_folder_end_to_end_resume_and_change(tmp_path, model_path, monkeypatch):
    src = tmp_path / "shards"
    first, second = write_shards(src, 2, 4)
    out = tmp_path / "verdicts"
    proc = _scan(src, out, model_path)
    assert proc.returncode == 0, proc.stderr
    df = pd.read_parquet(out)
    assert len(df) == 8 and df.path.is_unique and df.error.isna().all()
    assert sorted(df.key) == [f"{i:09d}" for i in range(8)]
    assert f"tar://000000005.jpg::{second}" in set(df.path)
    assert (df.bytes == df.key.map(lambda k: len(jpeg(40, 48, seed=int(k))))).all()
    assert (df.mtime == pd.Timestamp(1_700_000_000, unit="s", tz="UTC")).all()
    assert "ignored" in proc.stderr.decode() and "2 ignored" in proc.stderr.decode()  # the sidecars
    monkeypatch.chdir(tmp_path)  # the README's join of verdicts back to captions, as printed there
    scope: dict = {}
    exec(readme_join_snippet(), scope)
    assert sorted(scope["joined"].caption) == [f"caption {i}" for i in range(4, 8)]

    again = _scan(src, out, model_path)
    assert "scanned 0 images" in again.stderr.decode() and "8 skipped" in again.stderr.decode()

    second.write_bytes(tar_bytes(samples(4, 5)))  # the shard changes: one more sample
    third = _scan(src, out, model_path)
    assert "scanned 5 images" in third.stderr.decode() and "4 skipped" in third.stderr.decode()
    df = pd.read_parquet(out)
    assert len(df) == 9 and df.path.is_unique


@pytest.mark.slow
def test_bad_shards_give_one_row_each_and_lose_nothing(tmp_path, model_path):
    src = tmp_path / "in"
    src.mkdir()
    good = jpeg(seed=1)
    entries = [
        ("ok.jpg", good),
        ("../../escape.jpg", jpeg(seed=2)),
        ("/etc/absolute.jpg", jpeg(seed=3)),
        ("big.jpg", b"\xff\xd8\xff" + bytes(200_000)),
        ("text.png", b"not an image at all"),
        ("cut.jpg", jpeg(80, 80, seed=4)),
    ]
    data = tar_bytes(entries)
    cut_at = data.index(entries[-1][1]) + 300
    (src / "hostile.tar").write_bytes(data[:cut_at])
    damaged = bytearray(tar_bytes([("a.jpg", good), ("b.jpg", good)]))
    second_header = 512 + -(-len(good) // 512) * 512  # short names: no PAX headers before it
    damaged[second_header + 3] ^= 0xFF
    (src / "damaged.tar").write_bytes(bytes(damaged))
    (src / "not-a-tar.tar").write_bytes(b"hello " * 200)
    (src / "loose.jpg").write_bytes(good)
    out = tmp_path / "out"
    proc = _scan(src, out, model_path, "--max-file-mb", "0.1")
    assert proc.returncode == 0, proc.stderr
    df = pd.read_parquet(out)
    rows = _by_path(df)
    hostile, damaged_path = str(src / "hostile.tar"), str(src / "damaged.tar")
    assert rows[f"tar://ok.jpg::{hostile}"] is None
    assert rows[f"tar://../../escape.jpg::{hostile}"] is None  # scanned, reported as named, written nowhere
    assert rows[f"tar:///etc/absolute.jpg::{hostile}"] is None
    assert rows[f"tar://big.jpg::{hostile}"].startswith("file too large: 200003 bytes")
    assert rows[f"tar://text.png::{hostile}"] == "not an image"
    assert rows[f"tar://cut.jpg::{hostile}"].startswith("truncated tar member: 300 of")
    assert rows[f"tar://a.jpg::{damaged_path}"] is None
    assert (
        rows[damaged_path]
        == f"damaged tar at byte {second_header}: header checksum mismatch (members after it not scanned)"
    )
    assert rows[str(src / "not-a-tar.tar")] == "damaged tar at byte 0: header checksum mismatch"
    assert rows[str(src / "loose.jpg")] is None and pd.isna(df.set_index("path").key[str(src / "loose.jpg")])
    assert len(df) == 10 and not (tmp_path / "escape.jpg").exists() and not os.path.exists("/etc/absolute.jpg")

    again = _scan(src, out, model_path, "--max-file-mb", "0.1")  # the shards' own rows are rewritten, not doubled
    df2 = pd.read_parquet(out)
    assert len(df2) == 10 and df2.path.is_unique and "8 skipped" in again.stderr.decode()
    assert "scanned 2 images" in again.stderr.decode()


@pytest.mark.slow
def test_parquet_files_hf_struct_plain_binary_and_bad_cells(tmp_path, model_path):
    src = tmp_path / "tables"
    src.mkdir()
    pq.write_table(hf_table(5), src / "hf.parquet", row_group_size=2)
    cells = [jpeg(seed=1), None, b"", b"garbage bytes", jpeg(seed=2)]
    pq.write_table(pa.table({"jpg": pa.array(cells, pa.binary()), "caption": list("abcde")}), src / "plain.parquet")
    (src / "broken.parquet").write_bytes(b"PAR1 not really")
    out = tmp_path / "out"
    proc = _scan(src, out, model_path)
    assert proc.returncode == 0, proc.stderr
    df = pd.read_parquet(out)
    rows = _by_path(df)
    hf, plain = str(src / "hf.parquet"), str(src / "plain.parquet")
    assert all(rows[f"parquet://{i}::{hf}"] is None for i in range(5))
    assert rows[f"parquet://1::{plain}"] == "no image bytes (null cell)"
    assert rows[f"parquet://2::{plain}"] == "empty file" and rows[f"parquet://3::{plain}"] == "not an image"
    assert rows[str(src / "broken.parquet")].startswith("not a readable Parquet file")
    assert len(df) == 11
    assert set(df[df.path.str.endswith(hf)].key) == {"0", "1", "2", "3", "4"}

    keyed = _scan(src / "hf.parquet", tmp_path / "keyed", model_path, "--key-column", "id")
    assert keyed.returncode == 0, keyed.stderr
    kdf = pd.read_parquet(tmp_path / "keyed")
    assert sorted(kdf.key) == [f"id-{i}" for i in range(5)] and f"parquet://id-3::{hf}" in set(kdf.path)
    again = _scan(src / "hf.parquet", tmp_path / "keyed", model_path, "--key-column", "id")
    assert "5 skipped" in again.stderr.decode()


@pytest.mark.slow
def test_parquet_column_choice_refuses_in_one_line(tmp_path, model_path):
    two = tmp_path / "two.parquet"
    pq.write_table(pa.table({"a": pa.array([b"x"]), "b": pa.array([b"y"])}), two)
    proc = _scan(two, tmp_path / "out", model_path)
    err = proc.stderr.decode().strip()
    assert proc.returncode == 2 and len(err.splitlines()) == 1
    assert "several columns could hold the images (a, b): choose one with --image-column" in err
    chosen = _scan(two, tmp_path / "out", model_path, "--image-column", "b")
    assert chosen.returncode == 0 and pd.read_parquet(tmp_path / "out").error.tolist() == ["not an image"]
    missing = _scan(two, tmp_path / "out2", model_path, "--image-column", "c")
    assert missing.returncode == 2 and "no column 'c' (columns: a, b)" in missing.stderr.decode()
    none = tmp_path / "meta.parquet"
    pq.write_table(pa.table({"caption": ["x"]}), none)
    assert "no column of image bytes" in _scan(none, tmp_path / "out3", model_path).stderr.decode()


@pytest.mark.slow
@pytest.mark.s3
def test_bucket_of_shards_and_a_parquet_object(bucket, tmp_path, model_path):
    from helpers.s3 import BUCKET

    for s in range(2):
        bucket.put_object(Bucket=BUCKET, Key=f"shards/{s:05d}.tar", Body=tar_bytes(samples(s * 3, 3)))
    bucket.put_object(Bucket=BUCKET, Key="shards/00000_stats.json", Body=b"{}")
    cut = tar_bytes(samples(100, 2))
    body = cut[: cut.index(jpeg(40, 48, seed=101)) + 300]
    bucket.put_object(Bucket=BUCKET, Key="shards/cut.tar", Body=body)
    buf = io.BytesIO()
    pq.write_table(hf_table(3), buf)
    bucket.put_object(Bucket=BUCKET, Key="tables/hf.parquet", Body=buf.getvalue())
    out = tmp_path / "out"
    proc = _scan([f"s3://{BUCKET}/shards/", f"s3://{BUCKET}/tables/hf.parquet"], out, model_path)
    assert proc.returncode == 0, proc.stderr
    df = pd.read_parquet(out)
    rows = _by_path(df)
    assert rows[f"tar://000000004.jpg::s3://{BUCKET}/shards/00001.tar"] is None
    assert rows[f"parquet://2::s3://{BUCKET}/tables/hf.parquet"] is None
    assert rows[f"tar://000000100.jpg::s3://{BUCKET}/shards/cut.tar"] is None
    assert rows[f"tar://000000101.jpg::s3://{BUCKET}/shards/cut.tar"].startswith("truncated tar member")
    assert len(df) == 6 + 3 + 2
    assert df[df.path.str.contains("shards/00000.tar")].etag.str.len().gt(0).all()
    again = _scan([f"s3://{BUCKET}/shards/", f"s3://{BUCKET}/tables/hf.parquet"], out, model_path)
    assert "11 skipped" in again.stderr.decode() and len(pd.read_parquet(out)) == 11


def test_a_parquet_decompression_bomb_is_refused_from_its_footer(tmp_path):
    """A few hundred KB of zstd that would inflate to 200 MB in one page: one row, nothing inflated."""
    from aidetect.io.tables import table_members

    bomb = tmp_path / "bomb.parquet"
    good = pa.table({"jpg": pa.array([jpeg()], pa.binary())})
    huge = pa.table({"jpg": pa.array([bytes(200 << 20)], pa.binary())})
    with pq.ParquetWriter(bomb, good.schema, compression="zstd") as writer:
        writer.write_table(good)
        writer.write_table(huge)
    assert bomb.stat().st_size < 1 << 20
    ref = ImageRef(str(bomb), str(bomb), bomb.stat().st_size, 1, container="parquet")
    first, refused = table_members(ref, ContainerSpec(), lambda r: True, WalkStats())
    assert first.payload.data == jpeg() and refused.key == str(bomb)
    assert "row group 1 would expand" in refused.payload.problem and "decompression bomb" in refused.payload.problem
    assert refused.payload.problem.endswith("at row 1 (rows after it not scanned)")


def test_hundreds_of_mutated_shards_never_raise(tmp_path):
    """Flipped bytes, cut ends and spliced headers: every shard lists members and at most one row
    for itself, and nothing but those comes out (no exception, whatever the damage)."""
    import random
    import tarfile

    from aidetect.io.shards import shard_members

    rng = random.Random(0)
    base = tar_bytes(samples(0, 3) + [("x" * 150 + ".png", jpeg(seed=5))])
    with tarfile.open(fileobj=io.BytesIO(base)) as tar:
        headers = sorted({o for m in tar.getmembers() for o in (m.offset, m.offset_data - 512)})
    for i in range(300):
        data = bytearray(base)
        for _ in range(rng.randint(1, 8)):
            at = rng.choice(headers) + rng.randrange(512) if i % 2 else rng.randrange(len(data))
            data[at] = rng.randrange(256)  # in a header half the time, whose checksum is then made right
        for at in headers if i % 2 else []:
            block = data[at : at + 512]
            block[148:156] = b" " * 8
            data[at + 148 : at + 156] = f"{sum(block):06o}\0 ".encode()
        data = data[: rng.randint(0, len(data))] if i % 3 == 0 else data
        shard = tmp_path / f"{i}.tar"
        shard.write_bytes(bytes(data))
        ref = ImageRef(str(shard), str(shard), len(data), 1, container="tar")
        members = list(shard_members(ref, ContainerSpec(max_bytes=1 << 20), lambda r: True))
        assert all(m.within == str(shard) and m.payload is not None for m in members)
        assert sum(m.key == str(shard) for m in members) <= 1 and len(members) <= 5


def test_an_overlong_key_is_a_row_keyed_by_position(tmp_path):
    from aidetect.io.tables import MAX_KEY_CHARS, table_members

    path = tmp_path / "keys.parquet"
    pq.write_table(pa.table({"jpg": pa.array([jpeg(), jpeg()], pa.binary()), "k": ["short", "x" * 5000]}), path)
    ref = ImageRef(str(path), str(path), path.stat().st_size, 1, container="parquet")
    short, long = table_members(ref, ContainerSpec(key_column="k"), lambda r: True, WalkStats())
    assert short.sample == "short" and short.payload.data == jpeg()
    assert long.sample == "1" and long.key == f"parquet://1::{path}"
    assert long.payload.problem.startswith(f"--key-column value over {MAX_KEY_CHARS} characters")


def test_hundreds_of_mutated_parquet_files_never_raise(tmp_path):
    """pyarrow raises many types on a damaged file (a footer's column name that is not UTF-8 is a
    UnicodeDecodeError): each becomes the file's own row, after the rows read before it."""
    import random

    from aidetect.io.tables import table_members

    buf = io.BytesIO()
    pq.write_table(hf_table(6), buf, row_group_size=2)
    base = buf.getvalue()
    rng = random.Random(1)
    problems = set()
    for i in range(300):
        data = bytearray(base)
        for _ in range(rng.randint(1, 6)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        path = tmp_path / f"{i}.parquet"
        path.write_bytes(bytes(data))
        ref = ImageRef(str(path), str(path), len(data), 1, container="parquet")
        rows = list(table_members(ref, ContainerSpec(), lambda r: True, WalkStats()))
        assert len(rows) <= 7 and sum(r.key == str(path) for r in rows) <= 1
        problems |= {r.payload.problem.split(":")[0] for r in rows if r.key == str(path)}
    assert "not a readable Parquet file" in problems  # the damage did reach the reader
