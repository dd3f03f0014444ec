"""The local engine's own logic, with a stand-in batch worker (no model, no onnxruntime): the
threaded stages keep order and bounds, pass failures on, and the engine writes, resumes and
replaces rows as the real one does."""

from __future__ import annotations

import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pandas as pd
import pytest
from rich.console import Console

from aidetect.engines.base import ScanOptions
from aidetect.engines.local import LocalEngine, Stage, batched, bounded_map
from aidetect.io.sources import walk_images
from aidetect.pipeline.read import Encoded
from aidetect.records import Row


class StandInWorker:
    """The BatchWorker's interface with no model: a row per file whose label is its first byte's parity."""

    label, runtime, device = "stand-in@000000000000", "none", "cpu"

    def __init__(self, fail_on: str | None = None) -> None:
        self.fail_on = fail_on
        self.rng = random.Random(0)

    def load(self, ref) -> Encoded:
        time.sleep(self.rng.random() / 500)  # reads finish out of order
        with open(ref.path, "rb") as f:
            return Encoded(ref, data=f.read())

    def decode(self, batch: list[Encoded]):
        if self.fail_on and any(item.ref.path.endswith(self.fail_on) for item in batch):
            raise RuntimeError(f"decoder crashed on {self.fail_on}")
        return batch, [item.data[0] for item in batch]

    def rows(self, batch: list[Encoded], decoded: list[int]) -> list[Row]:
        return [Row(item.ref, "ai" if v % 2 else "real", v / 255, None, 1, 1) for item, v in zip(batch, decoded)]


def files(folder, count: int) -> list[str]:
    folder.mkdir(exist_ok=True)
    names = [f"{i:04d}.jpg" for i in range(count)]
    for i, name in enumerate(names):
        (folder / name).write_bytes(bytes([i % 256]) * 10)
    return names


def engine(tmp_path, worker=None, **options) -> LocalEngine:
    opts = ScanOptions(
        sources=[str(tmp_path / "in")], output=str(tmp_path / "out"), batch_size=7, quiet=True, **options
    )
    return LocalEngine(opts, Console(quiet=True), worker or StandInWorker())


def test_bounded_map_keeps_order_and_its_window_and_byte_budget():
    in_flight, peak, held, peak_held = 0, 0, 0, 0
    lock = threading.Lock()

    def work(item):
        nonlocal in_flight, peak, held, peak_held
        with lock:
            in_flight += 1
            held += item[1]
            peak, peak_held = max(peak, in_flight), max(peak_held, held)
        time.sleep(random.random() / 200)
        with lock:
            in_flight -= 1
            held -= item[1]
        return item[0]

    items = [(i, 1 + i % 5) for i in range(200)]
    with ThreadPoolExecutor(8) as pool:
        out = list(bounded_map(work, items, pool, window=6, weight=lambda it: it[1], budget=10))
    assert out == list(range(200))
    assert peak <= 6 and peak_held <= 10


def test_bounded_map_lets_one_item_heavier_than_the_budget_through_alone():
    with ThreadPoolExecutor(4) as pool:
        assert list(bounded_map(lambda x: x, [1, 50, 2], pool, window=4, weight=lambda x: x, budget=10)) == [1, 50, 2]


def test_batched_cuts_by_count_and_by_weight():
    assert list(batched(range(7), 3)) == [[0, 1, 2], [3, 4, 5], [6]]
    assert list(batched([5, 5, 1, 1, 1, 9, 1], 10, weight=lambda x: x, budget=10)) == [[5, 5], [1, 1, 1, 9], [1]]


def test_stage_hands_results_on_in_order_and_raises_the_workers_error_in_the_consumer():
    stage = Stage("t", iter(range(50)), lambda x: x * 2)
    stage.start()
    assert list(stage) == [x * 2 for x in range(50)]

    def boom(x):
        if x == 3:
            raise ValueError("bad item")
        return x

    failing = Stage("f", iter(range(10)), boom)
    failing.start()
    got = []
    with pytest.raises(ValueError, match="bad item"):
        for value in failing:
            got.append(value)
    assert got == [0, 1, 2]


def test_stage_stops_when_asked_even_with_a_full_queue():
    stage = Stage("s", iter(range(10_000)), lambda x: x, depth=1)
    stage.start()
    next(iter(stage))
    stage.stop.set()
    stage.join(timeout=5)
    assert not stage.is_alive()


def test_engine_writes_one_row_per_file_in_listing_order_and_resumes(tmp_path):
    files(tmp_path / "in", 100)
    listing = [ref.key.rsplit("/", 1)[1] for ref in walk_images(str(tmp_path / "in"))]  # the file system's order
    result = engine(tmp_path).run()
    assert result.scanned == 100 and result.ai + result.real == 100 and result.errors == 0
    df = pd.read_parquet(tmp_path / "out")
    assert [p.rsplit("/", 1)[1] for p in df.path] == listing  # reads finish out of order; rows keep it
    assert (df.model == StandInWorker.label).all()
    again = engine(tmp_path).run()
    assert again.scanned == 0 and again.skipped == 100


def test_engine_replaces_the_row_of_a_changed_file(tmp_path):
    files(tmp_path / "in", 10)
    engine(tmp_path).run()
    (tmp_path / "in" / "0003.jpg").write_bytes(b"\x01" * 99)  # changed size: a new version
    result = engine(tmp_path).run()
    assert result.scanned == 1 and result.skipped == 9
    df = pd.read_parquet(tmp_path / "out").set_index("path")
    assert len(df) == 10 and df.loc[str(tmp_path / "in" / "0003.jpg"), "bytes"] == 99


def test_a_worker_failure_stops_the_engine_and_keeps_what_was_committed(tmp_path):
    files(tmp_path / "in", 30)
    with pytest.raises(RuntimeError, match="decoder crashed on 0020.jpg"):
        engine(tmp_path, StandInWorker(fail_on="0020.jpg")).run()
    listing = [ref.key.rsplit("/", 1)[1] for ref in walk_images(str(tmp_path / "in"))]
    committed = listing.index("0020.jpg") // 7 * 7  # the whole batches before the one holding file 20
    assert len(pd.read_parquet(tmp_path / "out")) == committed
    result = engine(tmp_path).run()
    assert result.skipped == committed and result.scanned == 30 - committed
