"""The resume index: which files an OUTPUT already holds, by path and by version.

A version is path + size + mtime (+ ETag), hashed to 64 bits (about 16 bytes a row in memory).
Rows whose error is of the moment (a permission, the network, a bug) get no version, so the
next run scans those files again.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa

from aidetect.io.parts import PartStore, part_names, read_part, table_bytes
from aidetect.records import ImageRef

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


def path_hash(text: str) -> int:
    return int.from_bytes(
        hashlib.blake2b(text.encode("utf-8", "surrogateescape"), digest_size=8).digest(), "little", signed=True
    )


def column_mtime(mtime_ns: int | None) -> int | None:
    """The mtime as the `mtime` column holds it: None when outside what it can hold."""
    return mtime_ns if isinstance(mtime_ns, int) and mtime_ns in _NS_RANGE else None


def version_key(path: str, size: int | None, mtime_ns: int | None, etag: str | None) -> int:
    """What identifies one version of a file: path + size + mtime (+ ETag for objects)."""
    return path_hash(f"{path}\0{size}\0{column_mtime(mtime_ns)}\0{etag or ''}")


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

    def holds(self, path: str) -> bool:
        """Whether the output has a row for `path` (any version)."""
        return bool(len(self.paths)) and self._has(self.paths, path_hash(path))

    def wants(self, ref: ImageRef) -> bool:
        """Whether `ref` still needs a row (its bytes are worth reading)."""
        return self.status(ref) != "done"

    def status(self, ref: ImageRef) -> str:
        """'done' (same version already scanned), 'changed' (older version in output) or 'new'."""
        if not self.holds(ref.key):
            return "new"
        return "done" if self._has(self.versions, version_key(ref.key, ref.size, ref.mtime_ns, ref.etag)) else "changed"


def load_index(store: PartStore) -> ResumeIndex:
    """Every path in the output; a version only for rows a rerun keeps (not retryable errors)."""
    paths, versions = [], []
    for name in part_names(store):
        table = read_part(store, name, ["path", "bytes", "mtime", "etag", "error"])
        cols = table.to_pydict()
        mtimes = table.column("mtime").cast(pa.int64()).to_pylist()
        for path, size, mtime, etag, error in zip(cols["path"], cols["bytes"], mtimes, cols["etag"], cols["error"]):
            paths.append(path_hash(path))
            if not is_retryable(error):
                versions.append(version_key(path, size, mtime, etag))
    return ResumeIndex(np.array(paths, np.int64), np.array(versions, np.int64))


def _filter_part(store: PartStore, name: str, keep: list[bool]) -> None:
    if all(keep):
        return
    if any(keep):
        store.put(name, table_bytes(read_part(store, name).filter(pa.array(keep))))
    else:
        store.delete(name)


def drop_rows(store: PartStore, paths: set[str], keep_run: str) -> None:
    """Rewrite the parts of earlier runs without the rows of `paths` (their new rows stay)."""
    for name in part_names(store):
        if keep_run not in name:
            column = read_part(store, name, ["path"]).column("path").to_pylist()
            _filter_part(store, name, [p not in paths for p in column])


def heal_duplicates(store: PartStore) -> None:
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
