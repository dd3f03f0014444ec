"""Containers of images: webdataset tar shards and Parquet files of image bytes, as sources.

A listing yields a container as one ref (`ImageRef.container` names its format); `expand` turns
it into a ref per member, in the container's order, reading the container once as a stream.
A member's `path` names the container and the member in fsspec's chained form
(`tar://000010001.jpg::s3://bucket/shards/00001.tar`, `parquet://17::/data/train.parquet`), its
`sample` (the `key` column) joins it back to its captions, and its version is its own size and
time plus its container's version, so a changed container rescans its members. Damage that ends
a container early becomes one row for the container itself, after the members read before it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from aidetect.io.sources import WalkStats, display_path, path_from_display
from aidetect.records import ImageRef, Payload

TAR_EXTENSIONS = (".tar",)
PARQUET_EXTENSIONS = (".parquet", ".parq")
_COLONS = "\\x3a\\x3a"

Keep = Callable[[ImageRef], bool]  # does this member still need a row? (the resume index decides)


@dataclass(frozen=True)
class ContainerSpec:
    """How to read containers: `shards` reads every listed file as a tar shard, whatever its name."""

    shards: bool = False
    image_column: str | None = None
    key_column: str | None = None
    max_bytes: int = 64 << 20  # members above it are never read (load refuses them by size)


# What shard writers (img2dataset, webdataset) keep beside their shards: never read as shards.
SIDECAR_EXTENSIONS = (".json", ".jsonl", ".txt", ".csv", ".md", ".idx", ".index", ".yaml", ".yml")


def container_kind(name: str, spec: ContainerSpec) -> str | None:
    """The container format of a listed name ("tar", "parquet"), or None for a plain file; with
    `shards`, every name but sidecars' and Parquet's is a tar shard (shards need not end in .tar)."""
    lower = name.lower()
    if lower.endswith(PARQUET_EXTENSIONS):
        return None if spec.shards else "parquet"
    if lower.endswith(TAR_EXTENSIONS) or (spec.shards and not lower.endswith(SIDECAR_EXTENSIONS)):
        return "tar"
    return None


def chained(scheme: str, member: str, container: str) -> str:
    """`scheme://member::container`, fsspec's chained form. `member` is escaped as `display_path`
    escapes names and `::` in it becomes `\\x3a\\x3a`, so splitting at the first `::` recovers both."""
    escaped = display_path(member).replace("::", _COLONS)
    return f"{scheme}://{escaped}::{container}"


def split_chained(path: str) -> tuple[str, str, str]:
    """(scheme, member name, container) of a chained `path`: `chained` undone."""
    scheme, _, rest = path.partition("://")
    member, _, container = rest.partition("::")
    return scheme, path_from_display(member), container


def version_of(ref: ImageRef) -> str:
    """What its members' `etag` holds: the container's ETag, or its size and mtime on disk."""
    return ref.etag or f"{ref.size}-{ref.mtime_ns}"


def member_ref(container: ImageRef, path: str, size: int, mtime_ns: int | None, sample: str) -> ImageRef:
    return ImageRef(container.path, path, size, mtime_ns, version_of(container), within=container.key, sample=sample)


def container_row(container: ImageRef, problem: str) -> ImageRef:
    """The container's own row: what ended it early (members read before keep their rows)."""
    return ImageRef(
        container.path,
        container.key,
        None,  # not the container's size: the load stage would refuse a big shard as "file too large"
        container.mtime_ns,
        container.etag,
        within=container.key,
        payload=Payload(problem=problem),
    )


def expand(ref: ImageRef, spec: ContainerSpec, keep: Keep, stats: WalkStats) -> Iterator[ImageRef]:
    """The member refs of a container ref (payloads read for those `keep` wants), in order; each
    counted as listed in `stats`, the container itself no longer (a Parquet file with no image
    column at all is metadata, not images: counted as ignored). A member name (or Parquet key)
    seen twice in one container names one `path`: the first is scanned, the others ignored."""
    stats.listed -= 1
    seen: set[int] = set()  # hashes, not names: a million-row table costs tens of MB, not hundreds
    if ref.container == "tar":
        from aidetect.io.shards import shard_members

        members = shard_members(ref, spec, keep)
    else:
        from aidetect.io.tables import table_members

        members = table_members(ref, spec, keep, stats)
    for member in members:
        if member.key != ref.key:  # not the container's own row
            if hash(member.key) in seen:
                stats.ignored += 1
                continue
            seen.add(hash(member.key))
        stats.listed += 1
        yield member
