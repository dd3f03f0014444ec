"""Webdataset shards and Parquet files of image bytes, made the way img2dataset and Hugging Face
datasets make them (Python's tarfile and pyarrow as the writers)."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from helpers.images import jpeg


def tar_bytes(entries: list[tuple[str, bytes]], mtime: int = 1_700_000_000) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in entries:
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), mtime
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def samples(first: int, count: int) -> list[tuple[str, bytes]]:
    """img2dataset's layout: for each sample key, an image, its caption and its metadata."""
    entries = []
    for i in range(first, first + count):
        key = f"{i:09d}"
        entries += [
            (f"{key}.jpg", jpeg(40, 48, seed=i)),
            (f"{key}.txt", f"caption {i}".encode()),
            (f"{key}.json", json.dumps({"key": key, "caption": f"caption {i}"}).encode()),
        ]
    return entries


def write_shards(folder: Path, shards: int, per_shard: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for s in range(shards):
        path = folder / f"{s:05d}.tar"
        path.write_bytes(tar_bytes(samples(s * per_shard, per_shard)))
        paths.append(path)
    (folder / "00000_stats.json").write_text('{"count": 1}')  # img2dataset's sidecars: ignored
    pq.write_table(pa.table({"key": ["x"], "caption": ["y"]}), folder / "00000.parquet")
    return paths


def hf_table(count: int, first: int = 0) -> pa.Table:
    """Hugging Face datasets' Image feature: a struct of bytes and path, beside a label and an id."""
    images = [{"bytes": jpeg(40, 48, seed=first + i), "path": f"img{first + i}.jpg"} for i in range(count)]
    return pa.table(
        {
            "id": [f"id-{first + i}" for i in range(count)],
            "image": pa.array(images, pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
            "label": [i % 2 for i in range(count)],
        }
    )
