"""Sink: verdict rows -> a Parquet dataset folder of atomically committed part files.

Each part is written to a hidden temporary name, fsynced and renamed into place, so at any
moment (after a crash or `kill -9` too) `pandas.read_parquet(OUTPUT)` reads every committed
row and nothing half-written. The same folder is the resume index for the next run.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from aidetect.sources import ImageRef

SCHEMA = pa.schema(
    [
        pa.field("path", pa.string(), nullable=False),
        pa.field("label", pa.string()),
        pa.field("prob_ai", pa.float32()),
        pa.field("error", pa.string()),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("bytes", pa.int64()),
        pa.field("mtime", pa.timestamp("ns", tz="UTC")),
        pa.field("etag", pa.string()),
        pa.field("model", pa.string()),
        pa.field("scanned_at", pa.timestamp("us", tz="UTC")),
    ]
)
MARKER = "_aidetect.json"  # pyarrow skips names starting with "_" or "."
PART_PREFIX = "part-"


class OutputError(RuntimeError):
    """OUTPUT cannot be used: not writable, or something other than an aidetect results folder."""


def _hash64(text: str) -> int:
    return int.from_bytes(
        hashlib.blake2b(text.encode("utf-8", "surrogateescape"), digest_size=8).digest(), "little", signed=True
    )


def version_key(path: str, size: int | None, mtime_ns: int | None, etag: str | None) -> int:
    """What identifies one version of a file: path + size + mtime (+ ETag for objects)."""
    return _hash64(f"{path}\0{size}\0{mtime_ns}\0{etag or ''}")


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


@dataclass
class Row:
    ref: ImageRef
    label: str | None
    prob_ai: float | None
    error: str | None
    width: int | None
    height: int | None


@dataclass
class ParquetSink:
    """Appends rows and commits them as part files every `flush_rows` rows or `flush_seconds`."""

    folder: str
    model: str
    flush_rows: int = 2048
    flush_seconds: float = 5.0
    written: int = 0
    _buffer: list[Row] = field(default_factory=list)
    _last_flush: float = field(default_factory=time.monotonic)
    _run_id: str = field(default_factory=lambda: time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6])
    _parts: int = 0
    _superseded: set[str] = field(default_factory=set)

    def open(self, overwrite: bool) -> ResumeIndex:
        """Prepare the folder and return what it already holds (empty with `overwrite`)."""
        prepare_output(self.folder, overwrite)
        with open(os.path.join(self.folder, MARKER), "w") as f:
            json.dump({"written_by": "aidetect", "schema": SCHEMA.names}, f)
        index = load_index(self.folder)
        if index.has_duplicates:
            heal_duplicates(self.folder)
            index = load_index(self.folder)
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
        table = rows_to_table(self._buffer, self.model)
        name = f"{PART_PREFIX}{self._run_id}-{self._parts:05d}.parquet"
        write_atomic(table, os.path.join(self.folder, name))
        self._parts += 1
        self.written += len(self._buffer)
        self._buffer.clear()

    def close(self) -> None:
        self.flush()
        if self._superseded:
            drop_rows(self.folder, self._superseded, keep_run=self._run_id)
            self._superseded.clear()


def rows_to_table(rows: list[Row], model: str) -> pa.Table:
    now = dt.datetime.now(dt.timezone.utc)
    cols = {
        "path": [r.ref.key for r in rows],
        "label": [r.label for r in rows],
        "prob_ai": [r.prob_ai for r in rows],
        "error": [r.error for r in rows],
        "width": [r.width for r in rows],
        "height": [r.height for r in rows],
        "bytes": [r.ref.size for r in rows],
        "mtime": [r.ref.mtime_ns for r in rows],
        "etag": [r.ref.etag for r in rows],
        "model": [model] * len(rows),
        "scanned_at": [now] * len(rows),
    }
    return pa.Table.from_pydict(cols, schema=SCHEMA)


def write_atomic(table: pa.Table, path: str) -> None:
    folder, name = os.path.split(path)
    tmp = os.path.join(folder, f".{name}.tmp")
    try:
        with open(tmp, "wb") as f:
            pq.write_table(table, f, compression="zstd")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_dir(folder)


def _fsync_dir(folder: str) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def part_files(folder: str) -> list[str]:
    return sorted(
        os.path.join(folder, n) for n in os.listdir(folder) if n.startswith(PART_PREFIX) and n.endswith(".parquet")
    )


def prepare_output(folder: str, overwrite: bool) -> None:
    if os.path.exists(folder) and not os.path.isdir(folder):
        if not overwrite:
            raise OutputError(f"{folder} is a file, not an aidetect results folder (choose another -o, or --overwrite)")
        os.unlink(folder)
    if os.path.isdir(folder):
        names = [n for n in os.listdir(folder) if not n.startswith(".")]
        ours = [n for n in names if n == MARKER or (n.startswith(PART_PREFIX) and n.endswith(".parquet"))]
        if len(ours) != len(names):
            raise OutputError(f"{folder} holds files aidetect did not write; choose another -o")
        if overwrite:
            shutil.rmtree(folder)
    try:
        os.makedirs(folder, exist_ok=True)
        probe = os.path.join(folder, f".write-test-{uuid.uuid4().hex[:6]}")
        open(probe, "wb").close()
        os.unlink(probe)
    except OSError as exc:
        raise OutputError(f"cannot write to {folder}: {exc.strerror or exc}") from None
    for name in os.listdir(folder):  # temporary files of a killed run
        if name.startswith(".part-") and name.endswith(".tmp"):
            os.unlink(os.path.join(folder, name))


def _read_columns(folder: str, columns: list[str]) -> list[tuple[str, pa.Table]]:
    out = []
    for path in part_files(folder):
        try:
            out.append((path, pq.read_table(path, columns=columns)))
        except (pa.ArrowInvalid, OSError) as exc:
            raise OutputError(f"cannot read {path}: {exc}") from None
    return out


def load_index(folder: str) -> ResumeIndex:
    paths, versions = [], []
    for _, table in _read_columns(folder, ["path", "bytes", "mtime", "etag"]):
        cols = table.to_pydict()
        mtimes = table.column("mtime").cast(pa.int64()).to_pylist()
        for path, size, mtime, etag in zip(cols["path"], cols["bytes"], mtimes, cols["etag"]):
            paths.append(_hash64(path))
            versions.append(version_key(path, size, mtime, etag))
    return ResumeIndex(np.array(paths, np.int64), np.array(versions, np.int64))


def drop_rows(folder: str, paths: set[str], keep_run: str) -> None:
    """Rewrite the parts of earlier runs without the rows of `paths` (their new rows stay)."""
    for part in part_files(folder):
        if keep_run in os.path.basename(part):
            continue
        table = pq.read_table(part)
        keep = np.array([p not in paths for p in table.column("path").to_pylist()], bool)
        if keep.all():
            continue
        if keep.any():
            write_atomic(table.filter(pa.array(keep)), part)
        else:
            os.unlink(part)


def heal_duplicates(folder: str) -> None:
    """A run killed between committing new rows and dropping superseded ones leaves two rows
    for a path; keep the newest."""
    tables = _read_columns(folder, ["path", "scanned_at"])
    newest: dict[str, int] = {}
    dupes: set[str] = set()
    for _, table in tables:
        for path, at in zip(table.column("path").to_pylist(), table.column("scanned_at").cast(pa.int64()).to_pylist()):
            if path in newest:
                dupes.add(path)
            newest[path] = max(at, newest.get(path, at))
    if not dupes:
        return
    for part, table in tables:
        stamps = table.column("scanned_at").cast(pa.int64()).to_pylist()
        keep = [not (p in dupes and at < newest[p]) for p, at in zip(table.column("path").to_pylist(), stamps)]
        if not all(keep):
            full = pq.read_table(part)
            if any(keep):
                write_atomic(full.filter(pa.array(keep)), part)
            else:
                os.unlink(part)
