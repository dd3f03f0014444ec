"""The Ray engine: the same batch worker as the local engine, run by Ray Data actors across a cluster.

The driver lists the sources and filters them through the resume index exactly as the local
engine does (engines/base.py); each actor holds one `BatchWorker` (one onnxruntime session, one
decoder) and turns a batch of references into verdict rows, catching failures per image so no
batch and no job fails. Ray's Parquet writer writes the rows, typed by the sink's explicit Arrow schema, into a
hidden staging folder; each finished file is then renamed into OUTPUT as a `part-` file, so
`pandas.read_parquet(OUTPUT)` never sees a half-written file.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time

import pyarrow as pa
import pyarrow.parquet as pq
from rich.console import Console

from aidetect.engines.base import (
    ScanOptions,
    ScanResult,
    build_worker,
    check_sources,
    fresh,
    list_refs,
    progress_bar,
    resolve_model,
)
from aidetect.engines.local import batched
from aidetect.errors import DeviceError, RayError
from aidetect.io.containers import expand
from aidetect.io.parts import PART_PREFIX, LocalPartStore
from aidetect.io.resume import ResumeIndex, column_mtime
from aidetect.io.s3 import arrow_path, is_s3, resolve_credentials
from aidetect.io.sink import SCHEMA, ParquetSink, rows_to_table
from aidetect.io.sources import WalkStats
from aidetect.pipeline.detector import read_info
from aidetect.pipeline.views import with_crops
from aidetect.records import ImageRef

# Settings, not secrets: Ray writes runtime_env in plain text to its logs, so credentials never
# travel this way (they go to the actors as constructor arguments, through the object store).
FORWARDED_ENV = ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL")


def worker_env() -> dict[str, str]:
    """S3 settings (endpoint, region) reach the workers through runtime_env."""
    return {k: os.environ[k] for k in FORWARDED_ENV if os.environ.get(k)}


class RayBatchWorker:
    """A Ray Data actor: one BatchWorker, built once per worker from the model's bytes."""

    def __init__(self, model, opts: ScanOptions, settings: dict) -> None:
        import ray

        from aidetect.io.s3 import use_credentials

        if settings["credentials"] is not None:
            use_credentials(settings["credentials"])
        fd, path = tempfile.mkstemp(suffix=".onnx")
        with os.fdopen(fd, "wb") as f:
            f.write(ray.get(model) if isinstance(model, ray.ObjectRef) else model)
        self.worker = build_worker(opts, path, settings["device"], 1, 1, settings["trust_pem"])
        self.label = self.worker.label
        self.counter = settings["counter"]
        self.opts = opts
        self.index = ResumeIndex(*ray.get(settings["index"]))

    def __call__(self, block: pa.Table) -> pa.Table:
        """A block of loose images, or one whole container: its members are listed, filtered
        through the resume index and judged here, a batch at a time."""
        refs = refs_from_table(block)
        if len(refs) != 1 or refs[0].container is None:
            return self._judge(refs)
        skipped = ScanResult(output="")
        stats = WalkStats(listed=1)
        members = expand(refs[0], self.opts.containers(), self.index.wants, stats)
        todo = fresh(members, self.index, skipped, set())
        tables = [self._judge(batch) for batch in batched(todo, max(self.opts.batch_size, 1))]
        self.counter.skip.remote(skipped.skipped)
        return pa.concat_tables(tables) if tables else SCHEMA.empty_table()

    def _judge(self, refs: list[ImageRef]) -> pa.Table:
        table = rows_to_table(self.worker.judge(refs), self.label)
        self.counter.add.remote(len(refs))
        return table


def _counter_class(ray):
    @ray.remote(num_cpus=0)
    class Counter:
        def __init__(self) -> None:
            self.n, self.skipped = 0, 0

        def add(self, n: int) -> None:
            self.n += n

        def skip(self, n: int) -> None:
            self.skipped += n

        def value(self) -> int:
            return self.n

        def skipped_value(self) -> int:
            return self.skipped

    return Counter


def connect(address: str | None, gpus_per_worker: float):
    try:
        import ray
    except ImportError:
        raise RayError("--engine ray needs Ray: pip install 'aidetect[ray]'") from None
    import logging
    import warnings

    warnings.filterwarnings("ignore", module=r"ray(\.|$)")
    ray.init(
        address=address,
        runtime_env={"env_vars": worker_env()},
        include_dashboard=False,
        log_to_driver=False,
        logging_level=logging.ERROR,
        ignore_reinit_error=True,
    )
    ray.data.DataContext.get_current().enable_progress_bars = False
    for name in ("ray", "ray.data", "ray.data._internal"):  # our summary and error lines are enough
        logging.getLogger(name).setLevel(logging.CRITICAL)
    if gpus_per_worker > 0:
        have = ray.cluster_resources().get("GPU", 0)
        if have < gpus_per_worker:
            raise DeviceError(
                f"--gpus-per-worker {gpus_per_worker:g}: the Ray cluster has {have:g} GPUs (it would wait forever)"
            )
    return ray


class RayEngine:
    """A scan whose decode and inference run on Ray; listing, resume and output stay on the driver."""

    def __init__(
        self,
        opts: ScanOptions,
        console: Console,
        address: str | None = None,
        workers: int = 2,
        gpus_per_worker: float = 0.0,
    ) -> None:
        self.opts, self.console = opts, console
        from aidetect.io.s3 import configure

        configure(opts.endpoint_url)
        check_sources(opts.sources, opts.containers())
        if opts.output == "-":
            raise RayError("--engine ray writes a Parquet folder or s3:// prefix; '-o -' is for the local engine")
        self.model = resolve_model(opts.model)
        if opts.crops is not None:  # refused here, in one line, rather than in every actor
            with_crops(read_info(self.model).preprocess, opts.crops)
        uses_s3 = any(is_s3(u) for u in [*opts.sources, opts.output])
        self.credentials = resolve_credentials() if uses_s3 else None
        self.ray = connect(address, gpus_per_worker)
        self.workers, self.gpus = workers, gpus_per_worker
        self.sink = ParquetSink(opts.output, "")
        self.result = ScanResult(output=opts.output, runtime="Ray", decoder="DALI on Ray workers")

    def run(self) -> ScanResult:
        index = self.sink.open(self.opts.overwrite)
        stats = WalkStats()
        start = time.monotonic()
        listed = list_refs(self.opts, stats, members=False)
        todo = list(fresh(listed, index, self.result, self.sink.superseded))
        self.result.ignored, self.result.unreadable_dirs = stats.ignored, stats.unreadable_dirs
        if todo:
            # The run id is in every part name: the sink keeps this run's rows when it drops superseded ones.
            staging = self._write(todo, index, self.sink.run_id)
            commit_staged(self.sink.store, staging, self.result, index, self.sink.superseded)
        self.sink.close()  # drops the rows superseded by this run's
        self.result.seconds = time.monotonic() - start
        return self.result

    def _dataset(self, todo: list[ImageRef]):
        """One block per batch of loose images and one per container (a shard is never split
        between two workers or two output files), made on the driver: no upstream task competes
        with the actors for CPUs."""
        size = max(self.opts.batch_size, 1)
        loose = [r for r in todo if r.container is None]
        blocks = [_refs_table(loose[i : i + size]) for i in range(0, len(loose), size)]
        blocks += [_refs_table([r]) for r in todo if r.container is not None]
        return self.ray.data.from_arrow(blocks)

    def _write(self, todo: list[ImageRef], index: ResumeIndex, run_id: str) -> str:
        ray = self.ray
        counter = _counter_class(ray).remote()
        settings = {
            "device": "gpu" if self.gpus else "cpu",
            "credentials": self.credentials,
            "trust_pem": self.opts.trust_anchors(),  # read here: a worker may not have the file
            "counter": counter,
            "index": ray.put((index.paths, index.versions)),  # members are filtered where their container is read
        }
        with open(self.model, "rb") as f:
            model = f.read()  # Ray Data puts constructor arguments in the object store once
        ds = self._dataset(todo).map_batches(
            RayBatchWorker,
            fn_constructor_args=(model, self.opts, settings),
            batch_size=None,  # a block as the driver made it: a batch, or one whole container
            batch_format="pyarrow",
            concurrency=self.workers,
            num_gpus=self.gpus or None,
            num_cpus=1,
        )
        staging = self._staging(run_id)
        errors: list[BaseException] = []

        path, filesystem = arrow_path(staging, self.credentials)

        def write() -> None:
            try:
                # Writing is I/O: it must not wait for a CPU that the model actors hold.
                ds.write_parquet(
                    path,
                    filesystem=filesystem,
                    schema=SCHEMA,
                    filename_provider=_names(run_id),
                    ray_remote_args={"num_cpus": 0},
                )
            except BaseException as exc:  # re-raised on the driver's thread
                errors.append(exc)

        thread = threading.Thread(target=write, daemon=True)
        thread.start()
        containers = any(r.container is not None for r in todo)
        with progress_bar(self.console, self.opts.quiet) as progress:
            task = progress.add_task("scanning on Ray", total=None if containers else len(todo), rate="")
            while thread.is_alive():
                thread.join(0.5)
                done = ray.get(counter.value.remote())
                elapsed = max(time.monotonic() - progress.tasks[0].start_time, 1e-6)
                progress.update(task, completed=done, rate=f"{done / elapsed:.1f} img/s")
        if errors:
            raise errors[0]
        self.result.skipped += ray.get(counter.skipped_value.remote())
        return staging

    def _staging(self, run_id: str) -> str:
        if is_s3(self.opts.output):
            return f"{self.opts.output.rstrip('/')}/_staging-{run_id}"
        return os.path.join(os.path.abspath(self.opts.output), f".staging-{run_id}")


def commit_staged(store, staging: str, result: ScanResult, index: ResumeIndex, superseded: set[str]) -> None:
    """Move each file Ray's writer finished into OUTPUT as a part file (one atomic put each),
    counting its rows into `result` and noting in `superseded` the paths whose older rows they
    replace (container members were filtered on the workers); the staging folder goes when empty."""
    from aidetect.io.parts import open_store

    staged = open_store(staging)
    for name in staged.names():
        data = staged.get(name)
        columns = ["path", "label", "error", "verdict_source", "model", "in_domain"]
        table = pq.read_table(pa.BufferReader(data), columns=columns)
        superseded.update(p for p in table.column("path").to_pylist() if index.holds(p))
        result.model = result.model or next(iter(table.column("model").to_pylist()), "")
        columns = ("label", "error", "verdict_source", "in_domain")
        for label, error, source, inside in zip(*(table.column(c).to_pylist() for c in columns)):
            result.tally(label, error, source, "outside" if inside is False else None)
        store.put(name, data)
        staged.delete(name)
    if isinstance(staged, LocalPartStore) and os.path.isdir(staging):
        os.rmdir(staging)


def refs_from_table(table: pa.Table) -> list[ImageRef]:
    cols = table.to_pydict()
    fields = ("path", "key", "size", "mtime_ns", "etag", "container")
    return [ImageRef(os.fsdecode(p), k, s, m, e, container=c) for p, k, s, m, e, c in zip(*(cols[f] for f in fields))]


def _refs_table(refs: list[ImageRef]) -> pa.Table:
    return pa.table(
        {
            # Bytes: a file name need not be UTF-8, and Arrow strings must be.
            "path": pa.array([os.fsencode(r.path) for r in refs], pa.binary()),
            "key": pa.array([r.key for r in refs], pa.string()),
            "size": pa.array([r.size for r in refs], pa.int64()),
            "mtime_ns": pa.array([column_mtime(r.mtime_ns) for r in refs], pa.int64()),
            "etag": pa.array([r.etag for r in refs], pa.string()),
            "container": pa.array([r.container for r in refs], pa.string()),
        }
    )


def _names(run_id: str):
    """Ray file names that `aidetect scan` recognises as its own part files."""
    from ray.data.datasource import FilenameProvider

    class PartNames(FilenameProvider):
        def get_filename_for_block(self, block, write_uuid, task_index, block_index) -> str:
            return f"{PART_PREFIX}{run_id}-{write_uuid}-{task_index:05d}-{block_index:04d}.parquet"

        def get_filename_for_task(self, write_uuid, task_index) -> str:
            return f"{PART_PREFIX}{run_id}-{write_uuid}-{task_index:05d}.parquet"

    return PartNames()
