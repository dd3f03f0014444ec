"""Sink: verdict rows -> a Parquet dataset folder of atomically committed part files.

Each part is written to a hidden temporary name, fsynced and renamed into place, so at any
moment (after a crash or `kill -9` too) `pandas.read_parquet(OUTPUT)` reads every committed
row and nothing half-written. The same folder is the resume index for the next run.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import os
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from aidetect.errors import OutputError
from aidetect.records import ImageRef, Row

SCHEMA = pa.schema(
    [
        pa.field("path", pa.string(), nullable=False),
        pa.field("label", pa.string()),
        pa.field("prob_ai", pa.float32()),
        pa.field("prob_spread", pa.float32()),
        pa.field("error", pa.string()),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("bytes", pa.int64()),
        pa.field("mtime", pa.timestamp("ns", tz="UTC")),
        pa.field("etag", pa.string()),
        pa.field("model", pa.string()),
        pa.field("scanned_at", pa.timestamp("us", tz="UTC")),
        pa.field("provenance", pa.string()),
        pa.field("generator", pa.string()),
        pa.field("c2pa_state", pa.string()),
        pa.field("verdict", pa.string()),
        pa.field("verdict_source", pa.string()),
        pa.field("provenance_partial", pa.bool_()),
    ]
)
MARKER = "_aidetect.json"  # pyarrow skips names starting with "_" or "."
LOCK = ".aidetect.lock"
S3_LOCK = "_aidetect.lock"  # S3 has no hidden names; the lease object (s3.py)
PART_PREFIX = "part-"
# Parquet's nanosecond timestamps (and pandas') end in 1677 and 2262: an mtime outside is null in
# the `mtime` column, and resume then knows the file by path, size (and ETag) alone.
_NS_RANGE = range(-(1 << 63), 1 << 63)

# Error rows a rerun retries: failures of the moment (permissions, a vanished file, the network,
# a bug of ours), not of the file (not an image, truncated, too large), which stay until it changes.
RETRYABLE_ERRORS = (
    "permission denied",
    "file not found",
    "read error",
    "object not found",
    "access denied",
    "S3 error",
    "internal error",
)


def _hash64(text: str) -> int:
    return int.from_bytes(
        hashlib.blake2b(text.encode("utf-8", "surrogateescape"), digest_size=8).digest(), "little", signed=True
    )


def column_mtime(mtime_ns: int | None) -> int | None:
    """The mtime as the `mtime` column holds it: None when outside what it can hold."""
    return mtime_ns if isinstance(mtime_ns, int) and mtime_ns in _NS_RANGE else None


def version_key(path: str, size: int | None, mtime_ns: int | None, etag: str | None) -> int:
    """What identifies one version of a file: path + size + mtime (+ ETag for objects)."""
    return _hash64(f"{path}\0{size}\0{column_mtime(mtime_ns)}\0{etag or ''}")


def is_retryable(error: str | None) -> bool:
    return error is not None and error.startswith(RETRYABLE_ERRORS)


class ResumeIndex:
    """Which paths the output already holds, as sorted 64-bit hashes (about 16 bytes a row)."""

    def __init__(self, paths: np.ndarray | None = None, versions: np.ndarray | None = None) -> None:
        self.paths = np.sort(paths) if paths is not None else np.empty(0, np.int64)
        self.versions = np.sort(versions) if versions is not None else np.empty(0, np.int64)

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def has_duplicates(self) -> bool:
        return bool(len(self.paths) > 1 and (np.diff(self.paths) == 0).any())

    @staticmethod
    def _has(array: np.ndarray, key: int) -> bool:
        i = np.searchsorted(array, key)
        return bool(i < len(array) and array[i] == key)

    def status(self, ref: ImageRef) -> str:
        """'done' (same version already scanned), 'changed' (older version in output) or 'new'."""
        if not len(self.paths) or not self._has(self.paths, _hash64(ref.key)):
            return "new"
        return "done" if self._has(self.versions, version_key(ref.key, ref.size, ref.mtime_ns, ref.etag)) else "changed"


class LocalPartStore:
    """Parquet parts as files in a folder, each written to a hidden name, fsynced and renamed."""

    def __init__(self, folder: str) -> None:
        self.uri = folder
        self._lock_fd: int | None = None

    def names(self) -> list[str]:
        return sorted(os.listdir(self.uri)) if os.path.isdir(self.uri) else []

    def put(self, name: str, data: bytes) -> None:
        path = os.path.join(self.uri, name)
        try:
            atomic_write(path, data)
        except OSError as exc:  # a full disk, a lost mount: one line, and committed rows stay
            raise OutputError(
                f"cannot write {path}: {exc.strerror or exc} (rows committed before stay; rerun to resume)"
            ) from None

    def get(self, name: str) -> bytes:
        with open(os.path.join(self.uri, name), "rb") as f:
            return f.read()

    def delete(self, name: str) -> None:
        os.unlink(os.path.join(self.uri, name))

    def check_location(self) -> None:
        if os.path.exists(self.uri) and not os.path.isdir(self.uri):
            raise OutputError(f"{self.uri} is a file, not an aidetect results folder (choose another -o)")
        try:
            os.makedirs(self.uri, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"cannot write to {self.uri}: {exc.strerror or exc}") from None

    def lock(self) -> None:
        """Hold an exclusive lock on OUTPUT until close (the kernel drops it if the process dies)."""
        import fcntl

        path = os.path.join(self.uri, LOCK)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise OutputError(f"cannot write to {self.uri}: {exc.strerror or exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "?"
            os.close(fd)
            raise OutputError(
                f"{self.uri} is being written by another scan, pid {holder}; wait for it or choose another -o"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._lock_fd = fd

    def unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing releases the flock; the file stays, empty of meaning
            self._lock_fd = None


def atomic_write(path: str, data: bytes) -> None:
    """Write to a hidden temporary name beside `path`, fsync, rename over it, fsync the folder:
    readers see the old file or the new one, never half of one, whatever kills the process."""
    folder, name = os.path.split(path)
    tmp = os.path.join(folder, f".{name}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_dir(folder or ".")


def _fsync_dir(folder: str) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def open_store(uri: str):
    if uri.startswith("s3://"):
        from aidetect.io.s3 import S3PartStore

        return S3PartStore(uri)
    return LocalPartStore(uri)


def is_part(name: str) -> bool:
    return name.startswith(PART_PREFIX) and name.endswith(".parquet")


def is_ours(name: str) -> bool:
    """Names aidetect writes into OUTPUT: parts, the marker, the lock, temporary files of a
    write in progress, and the Ray engine's staging folders."""
    return (
        is_part(name)
        or name in (MARKER, LOCK, S3_LOCK, ".write-test")
        or (name.startswith(".") and name.endswith(".tmp"))
        or name.startswith((".staging-", "_staging-"))
    )


def prepare_output(store, overwrite: bool) -> None:
    """Claim OUTPUT: refuse anything aidetect did not create (no marker) or that holds files it
    did not write; lock it against a second scan; then clear what a killed run left (and, with
    `overwrite`, the earlier parts). Nothing but aidetect's own files is ever changed or deleted."""
    store.check_location()
    names = store.names()
    foreign = [n for n in names if not is_ours(n)]
    if foreign:
        raise OutputError(f"{store.uri} holds files aidetect did not write (e.g. {foreign[0]}); choose another -o")
    if set(names) - {LOCK, S3_LOCK} and MARKER not in names:  # a lock alone: a scan just starting
        raise OutputError(f"{store.uri} was not created by aidetect (no {MARKER} in it); choose another -o")
    store.lock()
    try:
        store.put(".write-test", b"")
        store.delete(".write-test")
        store.put(MARKER, json.dumps({"written_by": "aidetect", "schema": SCHEMA.names}).encode())
        for name in store.names():
            # Another scan cannot be writing these: it would hold the lock.
            if (name.startswith(".") and name.endswith(".tmp")) or (overwrite and is_part(name)):
                store.delete(name)
    except BaseException:
        store.unlock()
        raise


def table_bytes(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return buf.getvalue()


def read_part(store, name: str, columns: list[str] | None = None) -> pa.Table:
    try:
        return pq.read_table(io.BytesIO(store.get(name)), columns=columns)
    except (pa.ArrowInvalid, OSError) as exc:
        raise OutputError(f"cannot read {store.uri}/{name}: {exc}") from None


def part_names(store) -> list[str]:
    return [n for n in store.names() if is_part(n)]


@dataclass
class ParquetSink:
    """Appends rows and commits them as part files every `flush_rows` rows or `flush_seconds`."""

    location: str
    model: str
    flush_rows: int = 2048
    flush_seconds: float = 5.0
    written: int = 0
    _buffer: list[Row] = field(default_factory=list)
    _last_flush: float = field(default_factory=time.monotonic)
    _run_id: str = field(default_factory=lambda: time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6])
    _parts: int = 0
    _superseded: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.store = open_store(self.location)

    def open(self, overwrite: bool) -> ResumeIndex:
        """Claim and lock the output and return what it already holds (empty with `overwrite`)."""
        prepare_output(self.store, overwrite)
        index = load_index(self.store)
        if index.has_duplicates:
            heal_duplicates(self.store)
            index = load_index(self.store)
        return index

    def supersede(self, key: str) -> None:
        """An older row of this path is replaced by the new one; it is dropped at close."""
        self._superseded.add(key)

    def write(self, rows: Iterable[Row]) -> None:
        self._buffer.extend(rows)
        if len(self._buffer) >= self.flush_rows or time.monotonic() - self._last_flush >= self.flush_seconds:
            self.flush()

    def flush(self) -> None:
        self._last_flush = time.monotonic()
        if not self._buffer:
            return
        name = f"{PART_PREFIX}{self._run_id}-{self._parts:05d}.parquet"
        self.store.put(name, table_bytes(rows_to_table(self._buffer, self.model)))
        self._parts += 1
        self.written += len(self._buffer)
        self._buffer.clear()

    def close(self) -> None:
        try:
            self.flush()
            if self._superseded:
                drop_rows(self.store, self._superseded, keep_run=self._run_id)
                self._superseded.clear()
            if not part_names(self.store):
                # A scan that found nothing still leaves a dataset with the columns, so that
                # `df[df.label == "ai"]` on it is an empty frame rather than a KeyError.
                self.store.put(f"{PART_PREFIX}{self._run_id}-empty.parquet", table_bytes(SCHEMA.empty_table()))
        finally:
            self.store.unlock()

    def read_all(self) -> pa.Table:
        tables = [read_part(self.store, n) for n in part_names(self.store)]
        return pa.concat_tables(tables) if tables else SCHEMA.empty_table()


def warm_up() -> None:
    """Build one array: pyarrow imports pandas and its compute kernels on the first (~0.3 s).
    Run in a thread while the model loads, that cost leaves the first batch's path."""
    pa.array([0.0], type=pa.float32())


def rows_to_table(rows: list[Row], model: str) -> pa.Table:
    now = dt.datetime.now(dt.timezone.utc)
    cols = {
        "path": [r.ref.key for r in rows],
        "label": [r.label for r in rows],
        "prob_ai": [r.prob_ai for r in rows],
        "prob_spread": [r.prob_spread for r in rows],
        "error": [r.error for r in rows],
        "width": [r.width for r in rows],
        "height": [r.height for r in rows],
        "bytes": [r.ref.size for r in rows],
        "mtime": [column_mtime(r.ref.mtime_ns) for r in rows],
        "etag": [r.ref.etag for r in rows],
        "model": [model] * len(rows),
        "scanned_at": [now] * len(rows),
        "provenance": [r.provenance.kind for r in rows],
        "generator": [r.provenance.generator for r in rows],
        "c2pa_state": [r.provenance.c2pa_state for r in rows],
        "verdict": [r.verdict[0] for r in rows],
        "verdict_source": [r.verdict[1] for r in rows],
        "provenance_partial": [r.provenance.partial or None for r in rows],
    }
    return pa.Table.from_pydict(cols, schema=SCHEMA)


def load_index(store) -> ResumeIndex:
    """Every path in the output; a version only for rows a rerun keeps (not retryable errors)."""
    paths, versions = [], []
    for name in part_names(store):
        table = read_part(store, name, ["path", "bytes", "mtime", "etag", "error"])
        cols = table.to_pydict()
        mtimes = table.column("mtime").cast(pa.int64()).to_pylist()
        for path, size, mtime, etag, error in zip(cols["path"], cols["bytes"], mtimes, cols["etag"], cols["error"]):
            paths.append(_hash64(path))
            if not is_retryable(error):
                versions.append(version_key(path, size, mtime, etag))
    return ResumeIndex(np.array(paths, np.int64), np.array(versions, np.int64))


def _filter_part(store, name: str, keep: list[bool]) -> None:
    if all(keep):
        return
    if any(keep):
        store.put(name, table_bytes(read_part(store, name).filter(pa.array(keep))))
    else:
        store.delete(name)


def drop_rows(store, paths: set[str], keep_run: str) -> None:
    """Rewrite the parts of earlier runs without the rows of `paths` (their new rows stay)."""
    for name in part_names(store):
        if keep_run not in name:
            column = read_part(store, name, ["path"]).column("path").to_pylist()
            _filter_part(store, name, [p not in paths for p in column])


def heal_duplicates(store) -> None:
    """A run killed between committing new rows and dropping superseded ones leaves two rows
    for a path; keep the newest."""
    tables = {n: read_part(store, n, ["path", "scanned_at"]) for n in part_names(store)}
    newest: dict[str, int] = {}
    for table in tables.values():
        for path, at in zip(table.column("path").to_pylist(), table.column("scanned_at").cast(pa.int64()).to_pylist()):
            newest[path] = max(at, newest.get(path, at))
    for name, table in tables.items():
        stamps = table.column("scanned_at").cast(pa.int64()).to_pylist()
        _filter_part(store, name, [at >= newest[p] for p, at in zip(table.column("path").to_pylist(), stamps)])
