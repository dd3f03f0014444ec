"""`aidetect scan`: the options, the engine run, the per-image table of small scans and the summary."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from aidetect.cli import options
from aidetect.cli.guard import exit_without_teardown, run_guarded
from aidetect.engines import ENGINES, create_engine
from aidetect.engines.base import STDOUT, ScanOptions, ScanResult
from aidetect.pipeline.limits import DEFAULT_DECODE_TIMEOUT, DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS, MIB, Limits
from aidetect.pipeline.tta import DEFAULT_MAX_SPREAD
from aidetect.pipeline.watermark import MODES as WATERMARK_MODES
from aidetect.records import Row


def scan(
    sources: list[str] = typer.Argument(
        ...,
        help="Folders (walked recursively), image files, webdataset .tar shards, Parquet files of image bytes, or s3://bucket/prefix listings of any of them.",
        show_default=False,
    ),
    output: str = typer.Option(
        "verdicts.parquet",
        "-o",
        "--output",
        help="Parquet dataset folder to write (read it with pandas.read_parquet); '-' writes one Parquet file to stdout at the end.",
    ),
    model: options.Model = None,
    batch_size: options.BatchSize = 32,
    device: options.Device = "auto",
    threshold: float | None = typer.Option(
        None, "--threshold", min=0.0, max=1.0, help="prob_ai at or above this is 'ai' (default: the model's)."
    ),
    recursive: bool = typer.Option(True, "--recursive/--no-recursive", help="Walk subfolders."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Start over instead of resuming from OUTPUT."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar and no summary."),
    max_megapixels: float = typer.Option(
        DEFAULT_MAX_PIXELS / 1e6,
        "--max-megapixels",
        min=0.001,
        help="Refuse (as an error row) images larger than this, from their header, before decoding. Also the pixels decoded at once by all threads together.",
    ),
    max_file_mb: float = typer.Option(
        DEFAULT_MAX_BYTES / MIB,
        "--max-file-mb",
        min=0.001,
        help="Refuse (as an error row) files larger than this (MiB), from the listing, before reading them.",
    ),
    decode_timeout: float = typer.Option(
        DEFAULT_DECODE_TIMEOUT,
        "--decode-timeout",
        min=0.01,
        help="Seconds one image may take to decode; past it, its row says 'decode timed out' and the scan goes on.",
    ),
    threads: options.Threads = None,
    crops: options.Crops = None,
    read_workers: int = typer.Option(
        16, "--read-workers", min=1, help="Files or S3 objects fetched at once (a bounded pool)."
    ),
    tta: bool = typer.Option(
        False,
        "--tta",
        help="Also score a flipped and a JPEG-85 variant, plus a 0.75x-rescaled one for models trained with --aug-rescale (3-4x the model work; about 2x slower end to end with the default model on photos); label 'uncertain' when they disagree.",
    ),
    max_spread: float = typer.Option(
        DEFAULT_MAX_SPREAD,
        "--max-spread",
        min=0.0,
        max=1.0,
        help="With --tta: 'uncertain' when max - min of the variants' prob_ai exceeds this (with the default model about 2% of its validation images come out uncertain, and it is wrong on 35% of those against 1.2% of the rest).",
    ),
    provenance: bool = typer.Option(
        True,
        "--provenance/--no-provenance",
        help="Read C2PA, IPTC/XMP, EXIF and generator metadata beside the model's verdict.",
    ),
    c2pa_trust: str | None = typer.Option(
        None,
        "--c2pa-trust",
        help="PEM file of trust anchors; C2PA manifests signed under them are 'trusted', not just 'valid'.",
    ),
    watermarks: str = typer.Option(
        "auto",
        "--watermarks",
        help="Read Stable Diffusion's invisible watermark: auto (PNG and WebP at generator sizes: sides multiples of 64, 256-2048; about 10 ms a megapixel plus a full-size decode), all (every image of 256x256 or more, at any size and format), off.",
    ),
    engine: str = typer.Option(
        "local",
        "--engine",
        help="local (one process; the fast choice on one machine) or ray (a Ray cluster; needs aidetect[ray]).",
    ),
    ray_address: str | None = typer.Option(
        None,
        "--ray-address",
        help="With --engine ray: auto (a running cluster) or ray://host:port (default: start a local Ray).",
    ),
    workers: int = typer.Option(
        2, "--workers", min=1, help="With --engine ray: actors, each holding one model session."
    ),
    gpus_per_worker: float = typer.Option(
        0.0,
        "--gpus-per-worker",
        min=0.0,
        help="With --engine ray: GPUs each actor asks for (checked against the cluster first).",
    ),
    endpoint_url: str | None = typer.Option(
        None, "--endpoint-url", help="S3-compatible endpoint (MinIO, Ceph, R2) (default: AWS_ENDPOINT_URL)."
    ),
    shards: bool = typer.Option(
        False,
        "--shards",
        help="Read every file of the sources as a webdataset tar shard, whatever its name (.tar files are read so anyway); sidecars (.json, .txt, .parquet, ...) are ignored.",
    ),
    image_column: str | None = typer.Option(
        None,
        "--image-column",
        help="Parquet sources: the column of encoded images, binary or Hugging Face's {bytes, path} struct (default: the only such column).",
    ),
    key_column: str | None = typer.Option(
        None,
        "--key-column",
        help="Parquet sources: the column that identifies a row; it becomes the `key` column (default: the row's position in its file).",
    ),
) -> None:
    """Scan images and write one verdict row per image (label, prob_ai, error, size, ...) to Parquet.

    Rerunning the same command resumes: files already in OUTPUT with the same size and
    mtime are skipped (members of tar shards and Parquet files too, while their container is
    unchanged). Bad files become rows with `error` set; the exit code is 0 when the
    scan ran, 2 for a missing source, unusable model, device or OUTPUT.
    """
    from aidetect.engines.base import ScanOptions

    opts = ScanOptions(
        sources=sources,
        output=output,
        model=model,
        batch_size=batch_size,
        device=device,
        threshold=threshold,
        recursive=recursive,
        overwrite=overwrite,
        quiet=quiet,
        limits=Limits(
            max_bytes=int(max_file_mb * MIB),
            max_pixels=int(max_megapixels * 1_000_000),
            decode_timeout=decode_timeout,
        ),
        threads=threads,
        read_workers=read_workers,
        endpoint_url=endpoint_url,
        provenance=provenance,
        c2pa_trust=c2pa_trust,
        watermarks=watermarks,
        tta=tta,
        max_spread=max_spread,
        crops=crops,
        shards=shards,
        image_column=image_column,
        key_column=key_column,
    )
    if watermarks not in WATERMARK_MODES:
        raise typer.BadParameter(f"must be one of {', '.join(WATERMARK_MODES)}", param_hint="--watermarks")
    if engine not in ENGINES:
        raise typer.BadParameter(f"must be one of {', '.join(ENGINES)}", param_hint="--engine")
    code = run_scan(opts, engine, {"address": ray_address, "workers": workers, "gpus_per_worker": gpus_per_worker})
    if engine == "local":
        exit_without_teardown()  # Ray's own exit handlers must run: they stop its processes
    raise typer.Exit(code)


def preview_table(rows: list[Row]) -> Table:
    """Per-image verdicts, for scans small enough to read on screen."""
    table = Table(box=None, header_style="bold")
    for name in ("path", "label", "prob_ai", "verdict", "evidence / error"):
        table.add_column(name, justify="right" if name == "prob_ai" else "left", overflow="fold")
    for row in rows:
        colour = {"ai": "red", "real": "green", "uncertain": "magenta"}.get(row.label or "", "yellow")
        prob = "" if row.prob_ai is None else f"{row.prob_ai:.3f}"
        verdict, source = row.verdict
        evidence = row.provenance.kind and f"{row.provenance.kind}: {row.provenance.generator or '?'}"
        table.add_row(
            Text(row.ref.key),
            Text(row.label or "-", style=colour),
            prob,
            f"{verdict or '-'} ({source or '-'})",
            Text(row.error or evidence or ""),
        )
    return table


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


OUTSIDE_WORDS = {
    "larger": "far larger than anything this model learned",
    "smaller": "far smaller than anything this model learned",
    "format": "in a format family it never learned",
    "outside": "outside what this model learned",
}


def outside_line(result: ScanResult) -> str:
    """How many verdicts are the model extrapolating (pipeline/domain.py has the rule)."""
    judged = _count(result.scanned - result.errors, "image")
    reasons = sorted(result.outside.items(), key=lambda item: -item[1])
    if len(reasons) == 1:
        reason, n = reasons[0]
        head = f"{n} of {judged} are {OUTSIDE_WORDS.get(reason, reason)}"
    else:
        parts = ", ".join(f"{n} {OUTSIDE_WORDS.get(reason, reason)}" for reason, n in reasons)
        head = f"{sum(result.outside.values())} of {judged} lie outside what this model learned ({parts})"
    learned = f" (it learned {result.domain})" if result.domain else ""
    return f"{head}{learned}; its verdicts on them are weak: see the model card (in_domain is false on their rows)"


def summary_lines(result: ScanResult) -> list[str]:
    lines = [
        f"scanned {_count(result.scanned, 'image')} in {result.seconds:.1f}s ({result.images_per_s:.1f} images/s) "
        f"with {result.model} on {result.runtime} ({result.decoder})",
        f"  {result.real} real, {result.ai} ai"
        + (f", {result.uncertain} uncertain" if result.uncertain else "")
        + f" (model), {result.by_provenance} decided by provenance, "
        f"{_count(result.errors, 'error')}; {result.skipped} skipped "
        f"(already in the output, unchanged), {result.ignored} ignored (not images)",
    ]
    if result.outside:
        lines.append("  " + outside_line(result))
    if not result.scanned and not result.skipped:
        lines.append("  no image files found in the sources")
    if result.unreadable_dirs:
        lines.append(
            f"  {_count(len(result.unreadable_dirs), 'folder')} could not be listed, e.g. {result.unreadable_dirs[0]}"
        )
    if result.output != STDOUT:
        lines.append(f"  results: {result.output}  (pandas.read_parquet({result.output!r}))")
    return lines


def run_scan(opts: ScanOptions, engine: str, engine_options: dict) -> int:
    """Run the scan on the chosen engine, then print the small-scan table and the summary."""

    def work(console: Console) -> None:
        result = create_engine(engine, opts, console, **engine_options).run()
        if not opts.quiet:
            if result.scanned <= ScanResult.PREVIEW_ROWS and result.preview:
                console.print(preview_table(result.preview))
            for line in summary_lines(result):
                console.print(line, highlight=False, soft_wrap=True)

    return run_guarded(work)
