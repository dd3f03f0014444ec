"""The `aidetect` command line: parses options and calls into the stages; no work happens here."""

from __future__ import annotations

import os
import sys

import typer

from aidetect.pipeline.limits import DEFAULT_DECODE_TIMEOUT, DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS, MIB, Limits

app = typer.Typer(
    help="Tell AI-generated images from real ones, fast, with one verdict row per image in Parquet.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _print_version(value: bool) -> None:
    if value:
        from aidetect import __version__

        print(f"aidetect {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    pass  # options for every command; the help text is the Typer app's


@app.command()
def scan(
    sources: list[str] = typer.Argument(
        ..., help="Folders (walked recursively), image files, or s3://bucket/prefix listings.", show_default=False
    ),
    output: str = typer.Option(
        "verdicts.parquet",
        "-o",
        "--output",
        help="Parquet dataset folder to write (read it with pandas.read_parquet); '-' writes one Parquet file to stdout at the end.",
    ),
    model: str | None = typer.Option(
        None, "--model", help="ONNX detector made by `aidetect train`/`export` (default: the bundled model)."
    ),
    batch_size: int = typer.Option(32, "--batch-size", min=1, help="Images per decode and inference batch."),
    device: str = typer.Option("auto", "--device", help="auto (GPU when usable), cpu, or gpu (fails if no GPU)."),
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
    threads: int | None = typer.Option(
        None, "--threads", min=1, help="CPU threads for decoding and inference together (default: all usable cores)."
    ),
    read_workers: int = typer.Option(
        16, "--read-workers", min=1, help="Files or S3 objects fetched at once (a bounded pool)."
    ),
    tta: bool = typer.Option(
        False,
        "--tta",
        help="Also score a flipped and a JPEG-85 variant, plus a 0.75x-rescaled one for models trained with --aug-rescale (3-4x the model work; about 2x slower end to end with the default model on photos); label 'uncertain' when they disagree.",
    ),
    max_spread: float = typer.Option(
        0.3,
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
) -> None:
    """Scan images and write one verdict row per image (label, prob_ai, error, size, ...) to Parquet.

    Rerunning the same command resumes: files already in OUTPUT with the same size and
    mtime are skipped. Bad files become rows with `error` set; the exit code is 0 when the
    scan ran, 2 for a missing source, unusable model, device or OUTPUT.
    """
    from aidetect.engines.local import ScanOptions, run_cli_scan

    if device not in ("auto", "cpu", "gpu"):
        raise typer.BadParameter("must be auto, cpu or gpu", param_hint="--device")
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
        tta=tta,
        max_spread=max_spread,
    )
    if engine not in ("local", "ray"):
        raise typer.BadParameter("must be local or ray", param_hint="--engine")
    code = run_cli_scan(opts, engine, ray_address, workers, gpus_per_worker)
    global _SKIP_TEARDOWN
    _SKIP_TEARDOWN = engine == "local"  # Ray's own exit handlers must run: they stop its processes
    raise typer.Exit(code)


@app.command("eval")
def evaluate(
    data: str = typer.Argument(
        ...,
        help="Labelled images: real/ and fake/ (or human/ and ai/) subfolders; a test/ or val/ split inside is used when present.",
        show_default=False,
    ),
    model: str | None = typer.Option(None, "--model", help="ONNX detector (default: the bundled model)."),
    report_dir: str = typer.Option(
        "eval-report", "-o", "--output", help="Folder for metrics.json, predictions.parquet and the PNG plots."
    ),
    target_fpr: float = typer.Option(
        0.01,
        "--target-fpr",
        min=0.0,
        max=1.0,
        help="Report the threshold that flags at most this fraction of real images.",
    ),
    holdout: float | None = typer.Option(
        None, "--holdout", help="Evaluate the validation split `aidetect train --val-split HOLDOUT` held out of DATA."
    ),
    seed: int = typer.Option(0, "--seed", help="The training seed, with --holdout."),
    batch_size: int = typer.Option(32, "--batch-size", min=1, help="Images per batch."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or gpu."),
    threads: int | None = typer.Option(None, "--threads", min=1, help="CPU threads (default: all usable cores)."),
    robustness: int = typer.Option(
        1000,
        "--robustness",
        min=0,
        help="Rescan this many images (seeded sample) re-saved as JPEG 75/90, rescaled 0.5x/0.75x and cropped; 0 skips it.",
    ),
) -> None:
    """Measure a model on labelled images (same pipeline as scan): metrics table, Parquet predictions and plots."""
    from aidetect.engines.local import run_guarded
    from aidetect.evaluation.evaluate import EvalOptions, run_eval

    opts = EvalOptions(
        data=data,
        model=model,
        report_dir=report_dir,
        target_fpr=target_fpr,
        holdout=holdout,
        seed=seed,
        batch_size=batch_size,
        device=device,
        threads=threads,
        robustness=robustness,
    )
    raise typer.Exit(run_guarded(lambda console: run_eval(opts, console)))


@app.command()
def calibrate(
    data: str = typer.Argument(..., help="Labelled images, laid out as for `aidetect eval`.", show_default=False),
    model: str | None = typer.Option(None, "--model", help="ONNX detector (default: the bundled model)."),
    output: str = typer.Option(..., "-o", "--output", help="New ONNX file to write (the original is never changed)."),
    target_fpr: float = typer.Option(
        0.01,
        "--target-fpr",
        min=0.0,
        max=1.0,
        help="The new default threshold flags at most this fraction of real images.",
    ),
    holdout: float | None = typer.Option(
        None, "--holdout", help="Use the validation split `aidetect train --val-split HOLDOUT` held out of DATA."
    ),
    seed: int = typer.Option(0, "--seed", help="The training seed, with --holdout."),
    batch_size: int = typer.Option(32, "--batch-size", min=1, help="Images per batch."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or gpu."),
) -> None:
    """Refit temperature scaling and the default threshold on your own labelled images; writes a new ONNX file."""
    from aidetect.engines.local import run_guarded
    from aidetect.evaluation.calibration import calibrate as run_calibrate

    def work(console):
        run_calibrate(
            data, model, output, target_fpr, console, holdout=holdout, seed=seed, batch_size=batch_size, device=device
        )

    raise typer.Exit(run_guarded(work))


@app.command()
def report(
    output: str = typer.Argument(
        ..., help="A scan's OUTPUT (Parquet folder, file, or s3:// prefix).", show_default=False
    ),
    html_path: str = typer.Option(
        "report.html", "-o", "--output", help="HTML file to write (self-contained: open it in any browser, offline)."
    ),
    threshold: float | None = typer.Option(
        None,
        "--threshold",
        help="Where the histogram marks the threshold and 'closest calls' are measured from (default: the scan's own, read back from its labels).",
    ),
) -> None:
    """Write one self-contained HTML page for looking through a scan: counts, histogram, likely-AI, uncertain, errors, provenance."""
    from aidetect.engines.local import run_guarded
    from aidetect.evaluation.report import write_report

    def work(console):
        write_report(output, html_path, threshold)
        console.print(f"wrote {html_path}")

    raise typer.Exit(run_guarded(work))


def missing_training_packages() -> list[str]:
    import importlib.util

    return [m for m in ("torch", "timm") if importlib.util.find_spec(m) is None]


def register_training(target: typer.Typer, missing: list[str]) -> None:
    """Training commands need the `train` extra; without it they answer with one line saying so."""
    from train.cli import export, train

    if not missing:
        target.command("train")(train)
        target.command("export")(export)
        return

    def unavailable(ctx: typer.Context) -> None:
        typer.echo(
            f"aidetect {ctx.command.name}: needs the training extra ({', '.join(missing)} missing): "
            "pip install 'aidetect[train]'",
            err=True,
        )
        raise typer.Exit(2)

    settings = {"ignore_unknown_options": True, "allow_extra_args": True}
    for name in ("train", "export"):
        target.command(name, context_settings=settings, help=f"(needs aidetect[train]) {name} a detector.")(unavailable)


register_training(app, missing_training_packages())


# Set by a local scan once everything it wrote is committed and closed, so the process can end
# without interpreter teardown: freeing the onnxruntime session, DALI and pandas takes 0.2-0.4 s
# that the operating system does anyway, and a user waits for it after every scan.
_SKIP_TEARDOWN = False


def main() -> None:
    try:
        app()
    except SystemExit as exc:
        if not _SKIP_TEARDOWN or not isinstance(exc.code, int | None):
            raise
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(exc.code or 0)
