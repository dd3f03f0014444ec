"""The Ray engine: the same stages as the local scan, run by Ray Data actors across a cluster.

The driver lists the sources and filters them through the resume index exactly as the local
runner does; each actor holds one `Judge` (one onnxruntime session, one decoder) and turns a
batch of references into verdict rows, catching failures per image so no batch and no job
fails. Ray's Parquet writer writes the rows, typed by the sink's explicit Arrow schema, into a
hidden staging folder; each finished file is then renamed into OUTPUT as a `part-` file, so
`pandas.read_parquet(OUTPUT)` never sees a half-written file.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
import uuid

import pyarrow as pa
import pyarrow.parquet as pq
from rich.console import Console

from aidetect.engines.local import ScanOptions, ScanResult, check_sources, list_refs, progress_bar, resolve_model
from aidetect.errors import DeviceError, RayError
from aidetect.io.parts import PART_PREFIX, LocalPartStore
from aidetect.io.resume import column_mtime, drop_rows
from aidetect.io.s3 import Credentials, is_s3, resolve_credentials
from aidetect.io.sink import SCHEMA, ParquetSink, rows_to_table
from aidetect.io.sources import WalkStats
from aidetect.records import ImageRef

# Settings, not secrets: Ray writes runtime_env in plain text to its logs, so credentials never
# travel this way (they go to the actors as constructor arguments, through the object store).
FORWARDED_ENV = ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL")


def worker_env() -> dict[str, str]:
    """S3 settings (endpoint, region) reach the workers through runtime_env."""
    return {k: os.environ[k] for k in FORWARDED_ENV if os.environ.get(k)}


class RayJudge:
    """A Ray Data actor: one Judge, built once per worker from the model's bytes."""

    def __init__(self, model, settings: dict) -> None:
        import ray

        from aidetect.io.s3 import use_credentials
        from aidetect.pipeline.decode import BatchDecoder
        from aidetect.pipeline.detector import Detector
        from aidetect.pipeline.worker import Judge

        if settings["credentials"] is not None:
            use_credentials(settings["credentials"])

        fd, path = tempfile.mkstemp(suffix=".onnx")
        with os.fdopen(fd, "wb") as f:
            f.write(ray.get(model) if isinstance(model, ray.ObjectRef) else model)
        detector = Detector(path, settings["device"], settings["threads"])
        decoder = BatchDecoder(
            detector.info.preprocess, settings["batch_size"], detector.device, settings["threads"], settings["limits"]
        )
        threshold = settings["threshold"] if settings["threshold"] is not None else detector.info.threshold
        self.judge = Judge(
            detector,
            decoder,
            threshold,
            settings["limits"],
            settings["provenance"],
            settings["c2pa_trust"],
            settings["tta"],
            settings["max_spread"],
        )
        self.label = detector.info.label
        self.counter = settings["counter"]

    def __call__(self, batch: pa.Table) -> pa.Table:
        cols = batch.to_pydict()
        refs = [
            ImageRef(os.fsdecode(p), k, s, m, e)
            for p, k, s, m, e in zip(cols["path"], cols["key"], cols["size"], cols["mtime_ns"], cols["etag"])
        ]
        table = rows_to_table(self.judge.judge(refs), self.label)
        self.counter.add.remote(len(refs))
        return table


def _counter_class(ray):
    @ray.remote(num_cpus=0)
    class Counter:
        def __init__(self) -> None:
            self.n = 0

        def add(self, n: int) -> None:
            self.n += n

        def value(self) -> int:
            return self.n

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


class RayScanner:
    """A scan whose decode and inference run on Ray; listing, resume and output stay on the driver."""

    def __init__(
        self, opts: ScanOptions, console: Console, address: str | None, workers: int, gpus_per_worker: float
    ) -> None:
        self.opts, self.console = opts, console
        from aidetect.io.s3 import configure

        configure(opts.endpoint_url)
        check_sources(opts.sources)
        if opts.output == "-":
            raise RayError("--engine ray writes a Parquet folder or s3:// prefix; '-o -' is for the local engine")
        self.model = resolve_model(opts.model)
        uses_s3 = any(is_s3(u) for u in [*opts.sources, opts.output])
        self.credentials = resolve_credentials() if uses_s3 else None
        self.ray = connect(address, gpus_per_worker)
        self.workers, self.gpus = workers, gpus_per_worker
        self.sink = ParquetSink(opts.output, "")
        self.to_stdout = False
        self.result = ScanResult(output=opts.output, runtime="Ray", decoder="DALI on Ray workers")

    def run(self, refs=None) -> ScanResult:
        ray = self.ray
        index = self.sink.open(self.opts.overwrite)
        stats = WalkStats()
        start = time.monotonic()
        todo = [r for r in self._fresh(list_refs(self.opts, stats), index)]
        self.result.ignored, self.result.unreadable_dirs = stats.ignored, stats.unreadable_dirs
        if todo:
            run_id = time.strftime("%Y%m%dT%H%M%S") + "-ray-" + uuid.uuid4().hex[:6]
            staged = self._write(todo, run_id)
            self._commit(staged, run_id)
        self.sink.close()
        self.result.seconds = time.monotonic() - start
        del ray
        return self.result

    def _dataset(self, todo: list[ImageRef]):
        """One block per batch, made on the driver: no upstream task competes with the actors for CPUs."""
        size = max(self.opts.batch_size, 1)
        blocks = [_refs_table(todo[i : i + size]) for i in range(0, len(todo), size)]
        return self.ray.data.from_arrow(blocks)

    def _write(self, todo: list[ImageRef], run_id: str) -> str:
        ray = self.ray
        counter = _counter_class(ray).remote()
        settings = {
            "device": "gpu" if self.gpus else "cpu",
            "threads": 1,
            "batch_size": self.opts.batch_size,
            "threshold": self.opts.threshold,
            "limits": self.opts.limits,
            "credentials": self.credentials,
            "provenance": self.opts.provenance,
            "c2pa_trust": open(self.opts.c2pa_trust).read() if self.opts.c2pa_trust else None,
            "tta": self.opts.tta,
            "max_spread": self.opts.max_spread,
            "counter": counter,
        }
        with open(self.model, "rb") as f:
            model = f.read()  # Ray Data puts constructor arguments in the object store once
        ds = self._dataset(todo).map_batches(
            RayJudge,
            fn_constructor_args=(model, settings),
            batch_size=self.opts.batch_size,
            batch_format="pyarrow",
            concurrency=self.workers,
            num_gpus=self.gpus or None,
            num_cpus=1,
        )
        staging = self._staging(run_id)
        errors: list[BaseException] = []

        path, filesystem = _target(staging, self.credentials)

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
        with progress_bar(self.console, self.opts.quiet) as progress:
            task = progress.add_task("scanning on Ray", total=len(todo), rate="")
            while thread.is_alive():
                thread.join(0.5)
                done = ray.get(counter.value.remote())
                elapsed = max(time.monotonic() - progress.tasks[0].start_time, 1e-6)
                progress.update(task, completed=done, rate=f"{done / elapsed:.1f} img/s")
        if errors:
            raise errors[0]
        return staging

    def _staging(self, run_id: str) -> str:
        if is_s3(self.opts.output):
            return f"{self.opts.output.rstrip('/')}/_staging-{run_id}"
        return os.path.join(os.path.abspath(self.opts.output), f".staging-{run_id}")

    def _commit(self, staging: str, run_id: str) -> None:
        """Move each finished file into OUTPUT as a part file, then drop superseded rows."""
        store = self.sink.store
        staged = LocalPartStore(staging) if isinstance(store, LocalPartStore) else type(store)(staging)
        for name in staged.names():
            data = staged.get(name)
            self._tally(pq.read_table(pa.BufferReader(data), columns=["label", "error", "verdict_source", "model"]))
            store.put(name, data)
            staged.delete(name)
        if isinstance(staged, LocalPartStore):
            os.rmdir(staging)
        if self._superseded:
            drop_rows(store, self._superseded, keep_run=run_id)

    def _fresh(self, refs, index):
        self._superseded: set[str] = set()
        for ref in refs:
            status = index.status(ref)
            if status == "done":
                self.result.skipped += 1
                continue
            if status == "changed":
                self._superseded.add(ref.key)
            yield ref

    def _tally(self, table: pa.Table) -> None:
        cols = table.to_pydict()
        self.result.model = self.result.model or next(iter(cols["model"]), "")
        for label, error, source in zip(cols["label"], cols["error"], cols["verdict_source"]):
            self.result.scanned += 1
            if error is not None:
                self.result.errors += 1
            elif label in ("ai", "real", "uncertain"):
                setattr(self.result, label, getattr(self.result, label) + 1)
            self.result.by_provenance += source == "provenance"


def _refs_table(refs: list[ImageRef]) -> pa.Table:
    return pa.table(
        {
            # Bytes: a file name need not be UTF-8, and Arrow strings must be.
            "path": pa.array([os.fsencode(r.path) for r in refs], pa.binary()),
            "key": pa.array([r.key for r in refs], pa.string()),
            "size": pa.array([r.size for r in refs], pa.int64()),
            "mtime_ns": pa.array([column_mtime(r.mtime_ns) for r in refs], pa.int64()),
            "etag": pa.array([r.etag for r in refs], pa.string()),
        }
    )


def _target(uri: str, credentials: Credentials | None):
    """Path and pyarrow filesystem for Ray's writer (S3 endpoint and region from the environment)."""
    if not is_s3(uri):
        return uri, None
    import pyarrow.fs as pafs

    endpoint = os.environ.get("AWS_ENDPOINT_URL")
    kwargs = {"region": os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"}
    if endpoint:
        scheme, _, host = endpoint.partition("://")
        kwargs.update(endpoint_override=host or scheme, scheme=scheme if host else "https")
    if credentials is not None:
        kwargs.update(credentials.pyarrow_kwargs())
    return uri[len("s3://") :], pafs.S3FileSystem(**kwargs)


def _names(run_id: str):
    """Ray file names that `aidetect scan` recognises as its own part files."""
    from ray.data.datasource import FilenameProvider

    class PartNames(FilenameProvider):
        def get_filename_for_block(self, block, write_uuid, task_index, block_index) -> str:
            return f"{PART_PREFIX}{run_id}-{write_uuid}-{task_index:05d}-{block_index:04d}.parquet"

        def get_filename_for_task(self, write_uuid, task_index) -> str:
            return f"{PART_PREFIX}{run_id}-{write_uuid}-{task_index:05d}.parquet"

    return PartNames()
