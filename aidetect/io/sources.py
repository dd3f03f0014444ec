"""Sources: turn what the user named (folders, files) into a stream of `ImageRef`s.

The walk streams: it never lists a whole tree before yielding, so a folder of a
million files starts producing verdicts at once and memory stays flat.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

from PIL import features

from aidetect.errors import NotRegularFile
from aidetect.records import ImageRef

BASE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"})


def _optional_extensions() -> frozenset[str]:
    """HEIC/HEIF/AVIF count only where a decoder for them is installed."""
    extra: set[str] = set()
    if features.check("avif"):
        extra.add(".avif")
    try:
        import pillow_heif  # noqa: F401

        extra |= {".heic", ".heif"}
    except ImportError:
        pass
    return frozenset(extra)


IMAGE_EXTENSIONS = BASE_EXTENSIONS | _optional_extensions()


def is_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def display_path(path: str) -> str:
    """A valid UTF-8 form of an OS path, unique and reversible (`path_from_display`): bytes that
    are not UTF-8 become \\xNN, and a backslash itself becomes \\\\, so a file literally named
    `caf\\xe9.jpg` and one whose name holds the byte 0xE9 never share a `path`."""
    return os.fsencode(path).replace(b"\\", b"\\\\").decode("utf-8", "backslashreplace")


_ESCAPE = re.compile(rb"\\(\\|x[0-9a-f]{2})")


def _unescape(match: re.Match) -> bytes:
    code = match.group(1)
    return b"\\" if code == b"\\" else bytes([int(code[1:], 16)])


def path_from_display(key: str) -> str:
    """The OS path a `display_path` string stands for."""
    return os.fsdecode(_ESCAPE.sub(_unescape, key.encode("utf-8")))


@contextlib.contextmanager
def open_local(ref: ImageRef) -> Iterator[BinaryIO]:
    """A local file opened for reading; never a FIFO, device or folder."""
    # O_NONBLOCK: a FIFO named like an image must not hang the scan; it is refused below.
    fd = os.open(ref.path, os.O_RDONLY | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise NotRegularFile("not a regular file")
        yield f


@dataclass
class WalkStats:
    """Counts a source keeps while it lists, read by the runner for its summary."""

    listed: int = 0
    ignored: int = 0
    unreadable_dirs: list[str] = field(default_factory=list)
    done: bool = False


def file_ref(path: str) -> ImageRef:
    """An ImageRef for a local file; a file that cannot be stat'ed still gets one (its row says why)."""
    try:
        st = os.stat(path)
        size, mtime = st.st_size, st.st_mtime_ns
    except OSError:
        size, mtime = None, None
    return ImageRef(path=path, key=display_path(os.path.abspath(path)), size=size, mtime_ns=mtime)


def walk_images(
    root: str, recursive: bool = True, stats: WalkStats | None = None, wanted: Callable[[str], bool] = is_image_name
) -> Iterator[ImageRef]:
    """Yield every image file under `root` (or `root` itself when it is a file); `wanted` says
    which names to list (images; the scan adds containers of them: tar shards, Parquet files).

    Directory symlinks are followed, but each real directory is visited once, so a
    symlink loop cannot hang the walk.
    """
    stats = stats if stats is not None else WalkStats()
    root = os.path.abspath(root)
    if not os.path.isdir(root):
        stats.listed += 1
        yield file_ref(root)
        return
    seen: set[tuple[int, int]] = set()
    pending = [root]
    while pending:
        folder = pending.pop()
        try:
            st = os.stat(folder)
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            entries = os.scandir(folder)
        except OSError:
            stats.unreadable_dirs.append(display_path(folder))
            continue
        subfolders = []
        with entries:
            for entry in entries:
                if _is_dir(entry):
                    if recursive:
                        subfolders.append(entry.path)
                elif wanted(entry.name) and _is_file_or_broken_link(entry):
                    stats.listed += 1
                    yield file_ref(entry.path)
                else:
                    stats.ignored += 1
        pending.extend(sorted(subfolders, reverse=True))


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir(follow_symlinks=True)
    except OSError:
        return False


def _is_file_or_broken_link(entry: os.DirEntry) -> bool:
    """Regular files, and dangling links (they become "file not found" rows); never FIFOs or devices."""
    try:
        return entry.is_file(follow_symlinks=True) or (entry.is_symlink() and not os.path.exists(entry.path))
    except OSError:
        return False
