"""The local engine: the batch worker's steps in threads of this process, joined by small bounded
queues, so reading, decoding and onnxruntime inference overlap (all three release the GIL) and
memory stays bounded (by count and by bytes, engines/base.py and pipeline/limits.py)."""

from __future__ import annotations

import queue
import shutil
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor

from rich.console import Console
from rich.progress import Progress, TaskID

from aidetect.engines.base import (
    STDOUT,
    ScanOptions,
    ScanResult,
    build_worker,
    check_sources,
    counted,
    fresh,
    list_refs,
    progress_bar,
    resolve_model,
    thread_split,
)
from aidetect.errors import OutputError
from aidetect.io.s3 import configure as configure_s3
from aidetect.io.sink import ParquetSink
from aidetect.io.sink import warm_up as warm_up_sink
from aidetect.io.sources import WalkStats
from aidetect.records import ImageRef


def bounded_map(
    fn: Callable, items: Iterable, pool: ThreadPoolExecutor, window: int, weight: Callable = len, budget: int = 0
) -> Iterator:
    """Like pool.map, in order, but never more than `window` items, nor (with `budget`) items of
    more than `budget` total `weight`, read ahead; one item heavier than the budget goes alone."""
    pending: deque = deque()
    held = 0
    for item in items:
        cost = weight(item) if budget else 0
        while pending and (len(pending) >= window or held + cost > budget > 0):
            done_cost, future = pending.popleft()
            held -= done_cost
            yield future.result()
        pending.append((cost, pool.submit(fn, item)))
        held += cost
    while pending:
        yield pending.popleft()[1].result()


def batched(items: Iterable, size: int, weight: Callable | None = None, budget: int = 0) -> Iterator[list]:
    """Lists of `size` items, cut early when (with `budget`) their total `weight` reaches it."""
    batch: list = []
    held = 0
    for item in items:
        batch.append(item)
        held += weight(item) if weight else 0
        if len(batch) >= size or (budget and held >= budget):
            yield batch
            batch, held = [], 0
    if batch:
        yield batch


def encoded_bytes(item) -> int:
    return len(item.data) if item.data else 0


_DONE = object()


class Stage(threading.Thread):
    """Runs `work` over an input iterator in a thread, handing results on, in order, through a
    bounded queue; an exception is handed on too and raised in the consumer."""

    def __init__(self, name: str, items: Iterable, work: Callable, depth: int = 2) -> None:
        super().__init__(name=name, daemon=True)
        self.items, self.work = items, work
        self.out: queue.Queue = queue.Queue(maxsize=depth)
        self.stop = threading.Event()

    def run(self) -> None:
        try:
            for item in self.items:
                if self.stop.is_set():
                    return
                self._put(self.work(item))
            self._put(_DONE)
        except BaseException as exc:  # handed to the consumer, which re-raises it
            self._put(exc)

    def _put(self, value) -> None:
        while not self.stop.is_set():
            try:
                self.out.put(value, timeout=0.2)
                return
            except queue.Full:
                continue

    def __iter__(self) -> Iterator:
        while True:
            value = self.out.get()
            if value is _DONE:
                return
            if isinstance(value, BaseException):
                raise value
            yield value


class LocalEngine:
    """One scan in this process: holds the batch worker and the sink, and runs the steps over the sources."""

    def __init__(self, opts: ScanOptions, console: Console, worker=None) -> None:
        """`worker` defaults to the BatchWorker the options describe (tests pass a stand-in)."""
        self.opts, self.console = opts, console
        configure_s3(opts.endpoint_url)
        check_sources(opts.sources, opts.containers())
        if opts.output == STDOUT and sys.stdout.isatty():
            raise OutputError("'-o -' writes binary Parquet: pipe it into a program or redirect it to a file")
        threading.Thread(target=warm_up_sink, name="warm-up", daemon=True).start()
        if worker is None:
            ort_threads, decode_threads = thread_split(opts.threads)
            model = resolve_model(opts.model)
            worker = build_worker(opts, model, opts.device, ort_threads, decode_threads, opts.trust_anchors())
        self.worker = worker
        self.to_stdout = opts.output == STDOUT
        folder = tempfile.mkdtemp(prefix="aidetect-") if self.to_stdout else opts.output
        self.sink = ParquetSink(folder, worker.label)
        self.result = ScanResult(
            output=opts.output,
            model=worker.label,
            runtime=worker.runtime,
            decoder=f"DALI {'mixed (GPU)' if worker.device == 'gpu' else 'CPU'}",
            domain=worker.domain.describe() if getattr(worker, "domain", None) else "",
        )

    def run(self, refs: Iterable[ImageRef] | None = None) -> ScanResult:
        """Scan the options' sources, or `refs` when given (eval passes its labelled files)."""
        index = self.sink.open(self.opts.overwrite)
        stats = WalkStats()
        start = time.monotonic()
        pool = ThreadPoolExecutor(self.opts.read_workers, thread_name_prefix="read")
        listed = list_refs(self.opts, stats, index.wants) if refs is None else counted(refs, stats)
        todo = fresh(listed, index, self.result, self.sink.superseded)
        limits = self.opts.limits
        encoded = bounded_map(
            self.worker.load,
            todo,
            pool,
            self.opts.read_workers * 4,
            lambda ref: min(ref.size or 0, limits.max_bytes),  # files over the limit are never read
            limits.read_ahead_bytes,
        )
        reader = Stage("read", batched(encoded, self.opts.batch_size, encoded_bytes, limits.batch_bytes), lambda b: b)
        decoder = Stage("decode", reader, self.worker.decode)
        reader.start()
        decoder.start()
        try:
            with progress_bar(self.console, self.opts.quiet) as progress:
                task = progress.add_task("scanning", total=None)
                for encoded_batch, decoded in decoder:
                    rows = self.worker.rows(encoded_batch, decoded)
                    self.sink.write(rows)
                    self.result.tally_rows(rows)
                    self._update(progress, task, stats)
        finally:
            reader.stop.set()
            decoder.stop.set()
            pool.shutdown(wait=False, cancel_futures=True)
            if self.to_stdout and sys.exc_info()[0] is not None:
                shutil.rmtree(self.sink.location, ignore_errors=True)  # a failed '-o -' scan promised nothing
            else:
                self.sink.close()
            self.result.seconds = time.monotonic() - start
            self.result.ignored = stats.ignored
            self.result.unreadable_dirs = stats.unreadable_dirs
        if self.to_stdout:
            self._emit_stdout()
        return self.result

    def _update(self, progress: Progress, task: TaskID, stats: WalkStats) -> None:
        total = stats.listed - self.result.skipped
        elapsed = max(time.monotonic() - progress.tasks[0].start_time if progress.tasks[0].start_time else 0, 1e-6)
        progress.update(
            task,
            completed=self.result.scanned,
            total=total if stats.done else max(total, self.result.scanned + 1),
            description="scanning" if stats.done else "scanning (listing…)",
            rate=f"{self.result.scanned / elapsed:.1f} img/s",
        )

    def _emit_stdout(self) -> None:
        import pyarrow.parquet as pq

        try:
            pq.write_table(self.sink.read_all(), sys.stdout.buffer)
            sys.stdout.buffer.flush()
        finally:
            shutil.rmtree(self.sink.location, ignore_errors=True)
