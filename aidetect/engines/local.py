"""The scan runner: drives sources -> read/probe -> decode -> infer -> sink, owns progress and
the summary. Stages run in threads joined by small bounded queues, so reading, DALI decoding
and onnxruntime inference overlap (all three release the GIL) and memory stays bounded."""

from __future__ import annotations

import os
import queue
import shutil
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from aidetect.errors import ModelError, OutputError, SourceError
from aidetect.io.resume import ResumeIndex, path_hash
from aidetect.io.s3 import check_bucket, is_s3, list_images
from aidetect.io.s3 import configure as configure_s3
from aidetect.io.sink import ParquetSink
from aidetect.io.sink import warm_up as warm_up_sink
from aidetect.io.sources import WalkStats, walk_images
from aidetect.pipeline.decode import BatchDecoder
from aidetect.pipeline.detector import DEFAULT_MODEL, Detector
from aidetect.pipeline.limits import Limits
from aidetect.pipeline.worker import Judge
from aidetect.records import ImageRef, Row

STDOUT = "-"


@dataclass
class ScanOptions:
    sources: list[str]
    output: str = "verdicts.parquet"
    model: str | None = None
    batch_size: int = 32
    device: str = "auto"
    threshold: float | None = None
    recursive: bool = True
    overwrite: bool = False
    quiet: bool = False
    limits: Limits = field(default_factory=Limits)
    threads: int | None = None
    read_workers: int = 16
    endpoint_url: str | None = None
    provenance: bool = True
    tta: bool = False
    max_spread: float = 0.3
    c2pa_trust: str | None = None  # PEM trust anchors: manifests signed under them are "trusted"


@dataclass
class ScanResult:
    """What a scan did, for the summary and for callers."""

    output: str
    model: str = ""
    runtime: str = ""
    decoder: str = ""
    scanned: int = 0
    real: int = 0
    ai: int = 0
    uncertain: int = 0
    errors: int = 0
    by_provenance: int = 0
    skipped: int = 0
    ignored: int = 0
    seconds: float = 0.0
    unreadable_dirs: list[str] = field(default_factory=list)
    preview: list[Row] = field(default_factory=list)  # the first rows, shown for small scans

    PREVIEW_ROWS = 20

    @property
    def images_per_s(self) -> float:
        return self.scanned / self.seconds if self.seconds else 0.0


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def thread_split(threads: int | None) -> tuple[int, int]:
    """(inference threads, decoding threads), each up to the usable cores (or --threads).

    The stages take turns on the same cores rather than splitting them: whichever is the
    bottleneck (decoding for small models and big photos, inference for CoAtNet-2 at 224 px)
    gets every core while the other waits, and idle onnxruntime threads sleep instead of
    spinning (infer.py), so the two never oversubscribe the machine."""
    total = max(1, threads or usable_cores())
    return total, total


def resolve_model(path: str | None) -> str:
    if path:
        return path
    if DEFAULT_MODEL.is_file():
        return str(DEFAULT_MODEL)
    raise ModelError(
        "no model given and no default model installed: pass --model PATH (make one with `aidetect train`)"
    )


def check_sources(sources: list[str]) -> None:
    """Every source must exist (and every bucket answer) before any work starts."""
    for source in sources:
        if is_s3(source):
            check_bucket(source)
        elif not os.path.exists(source):
            raise SourceError(f"{source}: no such file or folder")


def iter_source(source: str, recursive: bool, stats: WalkStats) -> Iterator[ImageRef]:
    if is_s3(source):
        return list_images(source, recursive, stats)
    return walk_images(source, recursive, stats)


# ---- stages as iterators -------------------------------------------------------------


def list_refs(opts: ScanOptions, stats: WalkStats) -> Iterator[ImageRef]:
    seen: set[int] | None = set() if len(opts.sources) > 1 else None  # overlapping sources
    for source in opts.sources:
        for ref in iter_source(source, opts.recursive, stats):
            if seen is not None:
                key = path_hash(ref.key)
                if key in seen:
                    continue
                seen.add(key)
            yield ref
    stats.done = True


def progress_bar(console: Console, quiet: bool) -> Progress:
    """Files done, images/s and ETA on stderr; off with --quiet or when stderr is not a terminal."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeRemainingColumn(),
        console=console,
        transient=True,
        disable=quiet or not console.is_terminal,
    )


def _counted(refs: Iterable[ImageRef], stats: WalkStats) -> Iterator[ImageRef]:
    for ref in refs:
        stats.listed += 1
        yield ref
    stats.done = True


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


class _Stage(threading.Thread):
    """Runs `work` over an input iterator in a thread, handing results on through a queue."""

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


# ---- the runner ---------------------------------------------------------------------


class Scanner:
    """One scan: holds the detector, decoder and sink, and runs the stages over the sources."""

    def __init__(self, opts: ScanOptions, console: Console) -> None:
        self.opts, self.console = opts, console
        configure_s3(opts.endpoint_url)
        check_sources(opts.sources)
        if opts.output == STDOUT and sys.stdout.isatty():
            raise OutputError("'-o -' writes binary Parquet: pipe it into a program or redirect it to a file")
        threading.Thread(target=warm_up_sink, name="warm-up", daemon=True).start()
        ort_threads, dali_threads = thread_split(opts.threads)
        self.detector = Detector(resolve_model(opts.model), opts.device, ort_threads)
        info = self.detector.info
        self.threshold = opts.threshold if opts.threshold is not None else info.threshold
        self.decoder = BatchDecoder(info.preprocess, opts.batch_size, self.detector.device, dali_threads, opts.limits)
        self.judge = Judge(
            self.detector,
            self.decoder,
            self.threshold,
            opts.limits,
            opts.provenance,
            open(opts.c2pa_trust).read() if opts.c2pa_trust else None,
            opts.tta,
            opts.max_spread,
        )
        self.to_stdout = opts.output == STDOUT
        folder = tempfile.mkdtemp(prefix="aidetect-") if self.to_stdout else opts.output
        self.sink = ParquetSink(folder, info.label)
        self.result = ScanResult(
            output=opts.output,
            model=info.label,
            runtime=self.detector.runtime,
            decoder=f"DALI {'mixed (GPU)' if self.detector.device == 'gpu' else 'CPU'}",
        )

    def _fresh(self, refs: Iterable[ImageRef], index: ResumeIndex) -> Iterator[ImageRef]:
        for ref in refs:
            status = index.status(ref)
            if status == "done":
                self.result.skipped += 1
                continue
            if status == "changed":
                self.sink.supersede(ref.key)
            yield ref

    def _count(self, rows: list[Row]) -> list[Row]:
        for row in rows:
            if row.error is not None:
                self.result.errors += 1
            else:
                setattr(self.result, row.label, getattr(self.result, row.label) + 1)
            self.result.by_provenance += row.verdict[1] == "provenance"
        room = ScanResult.PREVIEW_ROWS + 1 - len(self.result.preview)
        self.result.preview.extend(rows[: max(room, 0)])
        return rows

    def run(self, refs: Iterable[ImageRef] | None = None) -> ScanResult:
        """Scan the options' sources, or `refs` when given (eval passes its labelled files)."""
        index = self.sink.open(self.opts.overwrite)
        stats = WalkStats()
        start = time.monotonic()
        pool = ThreadPoolExecutor(self.opts.read_workers, thread_name_prefix="read")
        refs = self._fresh(list_refs(self.opts, stats) if refs is None else _counted(refs, stats), index)
        limits = self.opts.limits
        encoded = bounded_map(
            self.judge.load,
            refs,
            pool,
            self.opts.read_workers * 4,
            lambda ref: min(ref.size or 0, limits.max_bytes),  # files over the limit are never read
            limits.read_ahead_bytes,
        )
        batches = batched(encoded, self.opts.batch_size, encoded_bytes, limits.batch_bytes)
        reader = _Stage("read", batches, lambda batch: batch, depth=2)
        decoder = _Stage("decode", reader, self.judge.decode, depth=2)
        reader.start()
        decoder.start()
        try:
            with self._progress() as progress:
                task = progress.add_task("scanning", total=None)
                for encoded_batch, decoded in decoder:
                    self.sink.write(self._count(self.judge.rows(encoded_batch, decoded)))
                    self.result.scanned += len(decoded)
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

    def _progress(self) -> Progress:
        return progress_bar(self.console, self.opts.quiet)

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


def preview_table(rows: list[Row]) -> Table:
    """Per-image verdicts, for scans small enough to read on screen."""
    table = Table(box=None, header_style="bold")
    for name in ("path", "label", "prob_ai", "verdict", "evidence / error"):
        table.add_column(name, justify="right" if name == "prob_ai" else "left", overflow="fold")
    for row in rows:
        colour = {"ai": "red", "real": "green", "uncertain": "magenta"}.get(row.label or "", "yellow")
        prob = "" if row.prob_ai is None else f"{row.prob_ai:.3f}"
        verdict, source = row.verdict
        evidence = row.provenance.kind and f"{row.provenance.kind}: {row.provenance.generator or '?'}"
        table.add_row(
            Text(row.ref.key),
            Text(row.label or "-", style=colour),
            prob,
            f"{verdict or '-'} ({source or '-'})",
            Text(row.error or evidence or ""),
        )
    return table


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def summary_lines(result: ScanResult) -> list[str]:
    lines = [
        f"scanned {_count(result.scanned, 'image')} in {result.seconds:.1f}s ({result.images_per_s:.1f} images/s) "
        f"with {result.model} on {result.runtime} ({result.decoder})",
        f"  {result.real} real, {result.ai} ai"
        + (f", {result.uncertain} uncertain" if result.uncertain else "")
        + f" (model), {result.by_provenance} decided by provenance, "
        f"{_count(result.errors, 'error')}; {result.skipped} skipped "
        f"(already in the output, unchanged), {result.ignored} ignored (not images)",
    ]
    if not result.scanned and not result.skipped:
        lines.append("  no image files found in the sources")
    if result.unreadable_dirs:
        lines.append(
            f"  {_count(len(result.unreadable_dirs), 'folder')} could not be listed, e.g. {result.unreadable_dirs[0]}"
        )
    if result.output != STDOUT:
        lines.append(f"  results: {result.output}  (pandas.read_parquet({result.output!r}))")
    return lines


def styled(prefix: str, style: str, rest: str = "") -> Text:
    """A coloured prefix and literal text: names and messages are never read as rich markup."""
    return Text.assemble((prefix, style), rest)


def _first_line(exc: BaseException) -> str:
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


def run_guarded(work: Callable[[Console], object]) -> int:
    """Run a command's work with native log noise filtered and one-line errors; returns the exit code."""
    from aidetect.cli.native_log import filtered_stderr
    from aidetect.errors import DataError, DeviceError, RayError, S3Error

    with filtered_stderr() as err:
        # markup=False: file names and library messages print literally ("[red]b.jpg" too);
        # our own colours are Text styles.
        console = Console(file=err, stderr=True, markup=False)
        if not console.is_terminal:
            console.width = 200  # logs and pipes: do not fold paths at 80 columns
        try:
            work(console)
        except (SourceError, ModelError, DeviceError, OutputError, DataError, S3Error, RayError) as exc:
            console.print(styled("error: ", "red", str(exc)), highlight=False, soft_wrap=True)
            return 2
        except KeyboardInterrupt:
            console.print("interrupted: finished rows are in the output; run the same command to resume")
            return 130
        except OSError as exc:  # a lost mount, a disk gone: committed rows stay, a rerun resumes
            where = getattr(exc, "filename", None)
            console.print(
                styled("error: ", "red", f"{exc.strerror or exc}{f': {where}' if where else ''}"), highlight=False
            )
            return 2
        except Exception as exc:
            if os.environ.get("AIDETECT_DEBUG"):
                raise
            message = f"{type(exc).__name__}: {_first_line(exc)} (AIDETECT_DEBUG=1 shows where)"
            console.print(styled("internal error: ", "red", message), highlight=False)
            return 1
    return 0


def run_cli_scan(
    opts: ScanOptions, engine: str = "local", ray_address: str | None = None, workers: int = 2, gpus: float = 0.0
) -> int:
    """`aidetect scan`: run the scan, then print the small-scan table and the summary."""

    def work(console: Console) -> None:
        if engine == "ray":
            from aidetect.engines.ray import RayScanner

            result = RayScanner(opts, console, ray_address, workers, gpus).run()
        else:
            result = Scanner(opts, console).run()
        if not opts.quiet:
            if result.scanned <= ScanResult.PREVIEW_ROWS and result.preview:
                console.print(preview_table(result.preview))
            for line in summary_lines(result):
                console.print(line, highlight=False, soft_wrap=True)

    return run_guarded(work)
