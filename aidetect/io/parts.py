"""Part stores: where committed Parquet parts live, and who may touch them.

A part store holds named blobs (`names`, `get`, `put`, `delete`), each `put` atomic, plus
`check_location`, `lock` and `unlock`. `LocalPartStore` is a folder (atomic rename); the S3 one
is in s3.py (one PUT is atomic). `prepare_output` claims an OUTPUT for a scan: only a location
aidetect created is ever changed, and only aidetect's own names in it.
"""

from __future__ import annotations

import io
import os
from typing import Protocol

import pyarrow as pa
import pyarrow.parquet as pq

from aidetect.errors import OutputError
from aidetect.io.atomic import atomic_write

MARKER = "_aidetect.json"  # pyarrow skips names starting with "_" or "."
LOCK = ".aidetect.lock"
S3_LOCK = "_aidetect.lock"  # S3 has no hidden names; the lease object (s3.py)
PART_PREFIX = "part-"


class PartStore(Protocol):
    """Where committed parts live: a folder (`LocalPartStore`) or an S3 prefix (`s3.S3PartStore`)."""

    uri: str

    def names(self) -> list[str]: ...
    def get(self, name: str) -> bytes: ...
    def put(self, name: str, data: bytes) -> None: ...  # atomic: readers see all of it or nothing
    def delete(self, name: str) -> None: ...
    def check_location(self) -> None: ...  # usable as OUTPUT, or a UsageError saying why
    def lock(self) -> None: ...  # exclusive until unlock, or an error naming the holder
    def unlock(self) -> None: ...


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


def open_store(uri: str) -> PartStore:
    from aidetect.io.s3 import S3PartStore, is_s3

    if is_s3(uri):
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


def prepare_output(store: PartStore, overwrite: bool, marker: bytes) -> None:
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
        store.put(MARKER, marker)
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


def read_part(store: PartStore, name: str, columns: list[str] | None = None) -> pa.Table:
    try:
        return pq.read_table(io.BytesIO(store.get(name)), columns=columns)
    except (pa.ArrowInvalid, OSError) as exc:
        raise OutputError(f"cannot read {store.uri}/{name}: {exc}") from None


def part_names(store: PartStore) -> list[str]:
    return [n for n in store.names() if is_part(n)]
