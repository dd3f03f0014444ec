"""What every engine shares: the options, the result, the listing, the resume filter, the tally
and the building of the batch worker. An engine only decides where the batches run (threads in
this process: local.py; Ray Data actors: ray.py), as img2dataset's distributors drive one
downloader."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from aidetect.errors import ModelError, SourceError
from aidetect.io.containers import ContainerSpec, Keep, container_kind, expand
from aidetect.io.resume import ResumeIndex, path_hash
from aidetect.io.s3 import check_bucket, is_s3, list_images
from aidetect.io.sources import WalkStats, is_image_name, walk_images
from aidetect.io.tables import check_table
from aidetect.pipeline.limits import Limits, usable_cores
from aidetect.pipeline.tta import DEFAULT_MAX_SPREAD
from aidetect.records import ImageRef, Row

STDOUT = "-"


@dataclass
class ScanOptions:
    """Everything a scan is asked to do (the CLI's options; eval and calibrate fill them too)."""

    sources: list[str]
    output: str = "verdicts.parquet"
    model: str | None = None
    batch_size: int = 32
    device: str = "auto"
    threshold: float | None = None
    recursive: bool = True
    overwrite: bool = False
    quiet: bool = False
    limits: Limits = field(default_factory=Limits)
    threads: int | None = None
    read_workers: int = 16
    endpoint_url: str | None = None
    provenance: bool = True
    tta: bool = False
    max_spread: float = DEFAULT_MAX_SPREAD
    c2pa_trust: str | None = None  # PEM trust anchors: manifests signed under them are "trusted"
    watermarks: str = "auto"  # pipeline/watermark.py: auto, all or off
    crops: int | None = None  # windows per image for crop-view models (None: the model's own count)
    attribute_real: bool = False  # name a generator on rows judged real too (eval measures attribution so)
    shards: bool = False  # read every listed file as a webdataset tar shard, whatever its name
    image_column: str | None = None  # Parquet sources: the column of image bytes (None: the only one)
    key_column: str | None = None  # Parquet sources: the column that becomes `key` (None: row position)

    def containers(self) -> ContainerSpec:
        return ContainerSpec(self.shards, self.image_column, self.key_column, self.limits.max_bytes)

    def trust_anchors(self) -> str | None:
        if not self.c2pa_trust:
            return None
        with open(self.c2pa_trust) as f:
            return f.read()


@dataclass
class ScanResult:
    """What a scan did, for the summary and for callers."""

    output: str
    model: str = ""
    runtime: str = ""
    decoder: str = ""
    scanned: int = 0
    real: int = 0
    ai: int = 0
    uncertain: int = 0
    errors: int = 0
    by_provenance: int = 0
    skipped: int = 0
    ignored: int = 0
    seconds: float = 0.0
    unreadable_dirs: list[str] = field(default_factory=list)
    preview: list[Row] = field(default_factory=list)  # the first rows, shown for small scans
    outside: dict[str, int] = field(default_factory=dict)  # images outside the model's domain, by reason
    domain: str = ""  # what the model learned from, in words (pipeline/domain.py)

    PREVIEW_ROWS = 20

    @property
    def images_per_s(self) -> float:
        return self.scanned / self.seconds if self.seconds else 0.0

    def tally(
        self, label: str | None, error: str | None, verdict_source: str | None, outside: str | None = None
    ) -> None:
        """Count one row (both engines count the same columns, from rows or from a table)."""
        self.scanned += 1
        if outside and outside != "unknown" and error is None:
            self.outside[outside] = self.outside.get(outside, 0) + 1
        if error is not None:
            self.errors += 1
        elif label in ("ai", "real", "uncertain"):
            setattr(self, label, getattr(self, label) + 1)
        self.by_provenance += verdict_source == "provenance"

    def tally_rows(self, rows: list[Row]) -> None:
        for row in rows:
            self.tally(row.label, row.error, row.verdict[1], row.outside)
        room = self.PREVIEW_ROWS + 1 - len(self.preview)
        self.preview.extend(rows[: max(room, 0)])


def thread_split(threads: int | None) -> tuple[int, int]:
    """(inference threads, decoding threads), each up to the usable cores (or --threads).

    The stages take turns on the same cores rather than splitting them: whichever is the
    bottleneck (decoding for small models and big photos, inference for CoAtNet-2 at 224 px)
    gets every core while the other waits, and idle onnxruntime threads sleep instead of
    spinning (detector.py), so the two never oversubscribe the machine."""
    total = max(1, threads or usable_cores())
    return total, total


def resolve_model(path: str | None) -> str:
    from aidetect.pipeline.detector import DEFAULT_MODEL

    if path:
        return path
    if DEFAULT_MODEL.is_file():
        return str(DEFAULT_MODEL)
    raise ModelError(
        "no model given and no default model installed: pass --model PATH (make one with `aidetect train`)"
    )


def check_sources(sources: list[str], spec: ContainerSpec | None = None) -> None:
    """Every source must exist (and every bucket answer) before any work starts; a Parquet file
    named itself must hold one column of images."""
    spec = spec or ContainerSpec()
    for source in sources:
        if is_s3(source):
            check_bucket(source)
        elif not os.path.exists(source):
            raise SourceError(f"{source}: no such file or folder")
        if container_kind(source, spec) == "parquet" and not os.path.isdir(source):
            check_table(source, spec)


def list_refs(
    opts: ScanOptions, stats: WalkStats, keep: Keep = lambda ref: True, members: bool = True
) -> Iterator[ImageRef]:
    """Every image of every source, streaming; a file named by two overlapping sources once.
    Containers are listed member by member (`keep` says which members' bytes to read), or, with
    `members` False, as one ref each (Ray hands whole containers to its workers)."""
    seen: set[int] | None = set() if len(opts.sources) > 1 else None
    spec = opts.containers()
    for source in opts.sources:
        listing = list_images if is_s3(source) else walk_images
        for ref in listing(source, opts.recursive, stats, lambda name: is_listed(name, spec)):
            if seen is not None:
                key = path_hash(ref.key)
                if key in seen:
                    continue
                seen.add(key)
            kind = container_kind(ref.key, spec)
            if kind is None:
                yield ref
            elif members:
                yield from expand(replace(ref, container=kind), spec, keep, stats)
            else:
                yield replace(ref, container=kind)
    stats.done = True


def is_listed(name: str, spec: ContainerSpec) -> bool:
    """Images and containers; with --shards, shards only (loose images are not what was asked)."""
    return container_kind(name, spec) is not None or (is_image_name(name) and not spec.shards)


def counted(refs: Iterable[ImageRef], stats: WalkStats) -> Iterator[ImageRef]:
    """Refs given by a caller (eval's labelled files) counted as a listing would count them."""
    for ref in refs:
        stats.listed += 1
        yield ref
    stats.done = True


def fresh(refs: Iterable[ImageRef], index: ResumeIndex, result: ScanResult, superseded: set[str]) -> Iterator[ImageRef]:
    """The resume filter: drop refs the output already holds in this version (counted as skipped);
    note the paths whose older row the new one replaces."""
    last_container = None
    for ref in refs:
        if ref.container is not None:  # a whole container (Ray): its members are filtered where it is read
            if index.holds(ref.key):
                superseded.add(ref.key)
            yield ref
            continue
        if ref.within is not None and ref.within != last_container:
            last_container = ref.within
            if index.holds(ref.within):  # an earlier run's row for the container itself: replaced
                superseded.add(ref.within)
        if ref.within == ref.key:  # a container's own row (what ended it): written on every run
            yield ref
            continue
        status = index.status(ref)
        if status == "done":
            result.skipped += 1
            continue
        if status == "changed":
            superseded.add(ref.key)
        yield ref


def build_worker(
    opts: ScanOptions, model_path: str, device: str, threads: int, decode_threads: int, trust_pem: str | None
):
    """The batch worker every engine runs: one detector, one decoder, the scan's options.
    `trust_pem` is read once where the scan starts (a Ray worker may not have the file)."""
    from aidetect.pipeline.decode import BatchDecoder
    from aidetect.pipeline.detector import Detector
    from aidetect.pipeline.views import with_crops
    from aidetect.pipeline.worker import BatchWorker

    detector = Detector(model_path, device, threads)
    pre = with_crops(detector.info.preprocess, opts.crops)
    decoder = BatchDecoder(pre, opts.batch_size, detector.device, decode_threads, opts.limits)
    threshold = opts.threshold if opts.threshold is not None else detector.info.threshold
    return BatchWorker(
        detector,
        decoder,
        threshold,
        opts.limits,
        opts.provenance,
        trust_pem,
        opts.tta,
        opts.max_spread,
        opts.watermarks,
        opts.attribute_real,
    )


def progress_bar(console: Console, quiet: bool) -> Progress:
    """Files done, images/s and ETA on stderr; off with --quiet or when stderr is not a terminal."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeRemainingColumn(),
        console=console,
        transient=True,
        disable=quiet or not console.is_terminal,
    )
