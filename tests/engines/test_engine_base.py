"""What every engine shares (engines/base.py) and the Ray engine's commit step, without Ray."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
from helpers.images import jpeg

from aidetect.engines.base import ScanOptions, ScanResult, fresh, list_refs
from aidetect.engines.ray import commit_staged
from aidetect.io.parts import LocalPartStore, table_bytes
from aidetect.io.resume import ResumeIndex, heal_duplicates, load_index, path_hash, version_key
from aidetect.io.sink import rows_to_table
from aidetect.io.sources import WalkStats
from aidetect.records import ImageRef, Row


def ref(name: str, size: int = 1) -> ImageRef:
    return ImageRef(f"/x/{name}", f"/x/{name}", size, 1)


def test_fresh_skips_what_the_output_holds_and_notes_what_it_replaces():
    held = [ref("same.jpg"), ref("changed.jpg")]
    index = ResumeIndex(
        pd.array([path_hash(r.key) for r in held], dtype="int64").to_numpy(),
        pd.array([version_key(r.key, r.size, r.mtime_ns, r.etag) for r in held], dtype="int64").to_numpy(),
    )
    result, superseded = ScanResult(output="o"), set()
    todo = list(fresh([ref("same.jpg"), ref("changed.jpg", 2), ref("new.jpg")], index, result, superseded))
    assert [r.key for r in todo] == ["/x/changed.jpg", "/x/new.jpg"]
    assert result.skipped == 1 and superseded == {"/x/changed.jpg"}


def test_tally_counts_labels_errors_and_provenance_decisions():
    result = ScanResult(output="o")
    for label, error, source in [("ai", None, "model"), ("real", None, "model"), (None, "truncated JPEG", None),
                                 ("uncertain", None, "model"), ("real", None, "provenance")]:  # fmt: skip
        result.tally(label, error, source)
    assert (result.scanned, result.ai, result.real, result.uncertain, result.errors, result.by_provenance) == (
        5,
        1,
        2,
        1,
        1,
        1,
    )


def test_overlapping_sources_list_each_file_once(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    for rel in ("a/1.jpg", "a/b/2.jpg"):
        (tmp_path / rel).write_bytes(jpeg())
    opts = ScanOptions(sources=[str(tmp_path / "a"), str(tmp_path / "a" / "b"), str(tmp_path / "a" / "1.jpg")])
    stats = WalkStats()
    keys = [r.key for r in list_refs(opts, stats)]
    assert sorted(keys) == [str(tmp_path / "a" / "1.jpg"), str(tmp_path / "a" / "b" / "2.jpg")] and stats.done


def _part(store: LocalPartStore, name: str, rows: list[Row]) -> None:
    store.put(name, table_bytes(rows_to_table(rows, "m@1")))


def test_ray_commit_moves_finished_files_into_output_and_counts_them(tmp_path):
    out, staging = LocalPartStore(str(tmp_path / "out")), str(tmp_path / "out" / ".staging-r1")
    os.makedirs(staging)
    staged = LocalPartStore(staging)
    _part(
        staged,
        "part-r1-a.parquet",
        [Row(ref("a.jpg"), "ai", 0.9, None, 1, 1), Row(ref("b.jpg"), None, None, "empty file", None, None)],
    )
    _part(staged, "part-r1-b.parquet", [Row(ref("c.jpg"), "real", 0.1, None, 1, 1)])
    result = ScanResult(output=out.uri)
    earlier = ResumeIndex(np.array([path_hash("/x/c.jpg")], np.int64), np.empty(0, np.int64))
    superseded: set[str] = set()
    commit_staged(out, staging, result, earlier, superseded)
    assert sorted(out.names()) == ["part-r1-a.parquet", "part-r1-b.parquet"] and not os.path.exists(staging)
    assert superseded == {"/x/c.jpg"}  # the output held an older row of it
    assert (result.scanned, result.ai, result.real, result.errors, result.model) == (3, 1, 1, 1, "m@1")
    assert len(load_index(out)) == 3


def test_heal_duplicates_keeps_the_newest_row_of_a_path(tmp_path):
    store = LocalPartStore(str(tmp_path / "out"))
    os.makedirs(store.uri)
    _part(
        store, "part-old.parquet", [Row(ref("a.jpg"), "ai", 0.9, None, 1, 1), Row(ref("b.jpg"), "ai", 0.8, None, 1, 1)]
    )
    _part(store, "part-new.parquet", [Row(ref("a.jpg", 5), "real", 0.2, None, 1, 1)])  # written later: newer scanned_at
    assert load_index(store).has_duplicates
    heal_duplicates(store)
    df = pd.concat(pd.read_parquet(os.path.join(store.uri, n)) for n in store.names()).set_index("path")
    assert not load_index(store).has_duplicates and len(df) == 2
    assert df.loc["/x/a.jpg", "label"] == "real" and df.loc["/x/b.jpg", "label"] == "ai"
