"""Webdataset tar shards: each image member becomes one ref, read from one pass over the shard.

The shard is read once, in order (a seek over what is skipped on a local file, chunked reads
on an S3 body): an image member's bytes are read while the stream stands at them, only when the
resume index still wants the member and it is within the size limit, so memory holds what one
batch needs, never a shard. Member names are reported as they are (`../x.jpg`, `/etc/x.jpg`):
nothing is ever written under them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import replace

from aidetect.io.containers import ContainerSpec, Keep, chained, container_row, member_ref
from aidetect.io.s3 import open_stored
from aidetect.io.sources import is_image_name
from aidetect.io.tar import TarError, TarMember, TarReader
from aidetect.records import ImageRef, Payload


def webdataset_key(name: str) -> str:
    """The sample key webdataset groups members by: the name up to the first dot of its base name."""
    folder, base = os.path.split(name)
    return os.path.join(folder, base.split(".", 1)[0])


def shard_members(shard: ImageRef, spec: ContainerSpec, keep: Keep) -> Iterator[ImageRef]:
    """A ref per image member of a shard; damage or a failed read ends the shard with its own row."""
    position = 0
    try:
        with open_stored(shard) as stream:  # a local file is seekable: skipped data is not read
            reader = TarReader(stream)
            for member in reader:
                position = reader.position
                name = os.fsdecode(member.name)
                if member.is_file and is_image_name(name):
                    yield _member(shard, reader, member, name, spec, keep)
                    if reader.failed is not None:  # the stream broke inside that member: the shard ends
                        raise reader.failed
            return
    except TarError as exc:
        problem = str(exc)
    except OSError as exc:
        from aidetect.pipeline.read import describe_os_error

        where = f" at byte {position} of the shard" if position else ""
        problem = f"{describe_os_error(exc)}{where}"
    yield container_row(shard, f"{problem} (members after it not scanned)" if position else problem)


def _member(
    shard: ImageRef, reader: TarReader, member: TarMember, name: str, spec: ContainerSpec, keep: Keep
) -> ImageRef:
    mtime_ns = int(member.mtime * 1e9) if member.mtime is not None else None
    ref = member_ref(shard, chained("tar", name, shard.key), member.size, mtime_ns, webdataset_key(name))
    if member.size <= spec.max_bytes and keep(ref):
        payload = Payload.read(lambda: reader.read_data(member))
    else:
        payload = Payload(problem="not read")  # done already, or refused by its size before any read
    return replace(ref, payload=payload)
