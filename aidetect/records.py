"""The records that flow between stages: a reference to an image, its provenance, its verdict row.

Sources make `ImageRef`s, the pipeline turns them into `Row`s, sinks write the rows. They live
here, apart from all three, so no stage imports another to name what it hands on.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO

from aidetect.errors import ObjectError


class Payload:
    """A member's bytes, read by a streaming container listing (a tar shard, a Parquet file) while
    the stream stands at them, and handed to the reader once; or the reason they could not be."""

    __slots__ = ("data", "problem")

    def __init__(self, data: bytes | None = None, problem: str | None = None) -> None:
        self.data, self.problem = data, problem

    @classmethod
    def read(cls, fetch: Callable[[], bytes]) -> Payload:
        try:
            return cls(fetch())
        except (OSError, ValueError) as exc:  # the row says why; the listing goes on if it can
            return cls(problem=str(exc))

    def open(self) -> BinaryIO:
        """The bytes as a stream, once: the holder lets go of them, so rows never keep them."""
        data, self.data = self.data, None
        if self.problem is not None:
            raise ObjectError(self.problem)
        if data is None:
            raise ObjectError("internal error: member bytes were not read")
        return io.BytesIO(data)


@dataclass(frozen=True, slots=True)
class ImageRef:
    """One image to scan: where it is and what identifies this version of it."""

    path: str  # what the reader opens (OS path or URI)
    key: str  # what the output shows: absolute path or URI, valid UTF-8
    size: int | None  # bytes; None when the listing could not stat it
    mtime_ns: int | None
    etag: str | None = None
    container: str | None = None  # "tar" or "parquet": the listing expands this ref into its members
    within: str | None = None  # for a member (or a container's own error row): the container's `key`
    sample: str | None = None  # the `key` column: a webdataset sample key or a Parquet row's key
    payload: Payload | None = None  # a member's bytes, when its container is read as a stream


@dataclass(frozen=True)
class Provenance:
    """The strongest metadata evidence found (or none), ready for the output columns."""

    kind: str | None = None
    generator: str | None = None
    c2pa_state: str | None = None
    decisive: bool = False
    says: str = "ai"  # what decisive evidence decides: "ai", or "real" for a trusted signed capture
    partial: bool = False  # the metadata walk stopped at its budget before the end of the file
    watermark_bits: str | None = None  # "36/48": the best watermark match; None when not checked
    source_type: str | None = None  # the strongest IPTC digital source type declared (C2PA or XMP)


NO_PROVENANCE = Provenance()


@dataclass
class Row:
    """One image's verdict (or the reason it has none): what becomes one Parquet row."""

    ref: ImageRef
    label: str | None
    prob_ai: float | None
    error: str | None
    width: int | None
    height: int | None
    provenance: Provenance = NO_PROVENANCE
    prob_spread: float | None = None  # with --tta: max - min of the variants' P(ai)
    outside: str | None = None  # why the image lies outside what the model learned (domain.py), or None
    crops: int | None = None  # windows the model scored (views.py); None on error rows
    prob_ai_max: float | None = None  # the highest window's P(ai), when more than one was scored
    generator_pred: str | None = None  # models that name generators: the likeliest, unless judged real
    generator_prob: float | None = None  # its probability given the image is AI

    @property
    def in_domain(self) -> bool | None:
        """False outside the model's training domain; None when unknown (an error, or no record)."""
        if self.error is not None or self.outside == "unknown":
            return None
        return self.outside is None

    @property
    def verdict(self) -> tuple[str | None, str | None]:
        """Decisive provenance decides ("ai", or "real" for a trusted capture); otherwise the model's label."""
        if self.provenance.decisive:
            return self.provenance.says, "provenance"
        return (self.label, "model") if self.label else (None, None)
