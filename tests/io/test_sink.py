"""The sink: parts committed atomically and indexed; superseded rows replaced."""

from __future__ import annotations

import os

import pyarrow.parquet as pq

from aidetect.io.parts import LocalPartStore
from aidetect.io.resume import load_index
from aidetect.io.sink import ParquetSink
from aidetect.records import ImageRef, Row


def _row(tmp_path, name: str, size: int = 1) -> Row:
    path = str(tmp_path / name)
    return Row(ImageRef(path, path, size, 1_700_000_000_000_000_000), "real", 0.25, None, 4, 3)


def test_sink_commits_parts_atomically_and_indexes_them(tmp_path):
    out = tmp_path / "out.parquet"
    sink = ParquetSink(str(out), "m@1", flush_rows=2)
    assert len(sink.open(overwrite=False)) == 0
    sink.write([_row(tmp_path, "a.jpg"), _row(tmp_path, "b.jpg"), _row(tmp_path, "c.jpg")])
    assert len(pq.read_table(out)) == 3  # committed at the flush threshold
    sink.close()
    assert [n for n in os.listdir(out) if n.startswith(".")] == [".aidetect.lock"]  # no temporary files
    index = load_index(LocalPartStore(str(out)))
    assert index.status(_row(tmp_path, "a.jpg").ref) == "done"
    assert index.status(_row(tmp_path, "a.jpg", size=2).ref) == "changed"
    assert index.status(_row(tmp_path, "new.jpg").ref) == "new"


def test_sink_replaces_superseded_rows(tmp_path):
    out = str(tmp_path / "out.parquet")
    first = ParquetSink(out, "m@1")
    first.open(False)
    first.write([_row(tmp_path, "a.jpg"), _row(tmp_path, "b.jpg")])
    first.close()
    second = ParquetSink(out, "m@1")
    second.open(False)
    second.superseded.add(str(tmp_path / "a.jpg"))
    second.write([_row(tmp_path, "a.jpg", size=9)])
    second.close()
    table = pq.read_table(out).to_pandas()
    assert sorted(table.path) == [str(tmp_path / "a.jpg"), str(tmp_path / "b.jpg")]
    assert int(table.set_index("path").loc[str(tmp_path / "a.jpg"), "bytes"]) == 9
