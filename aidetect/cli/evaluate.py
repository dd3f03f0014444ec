"""`aidetect eval` and `aidetect calibrate`: measure a model on labelled images, or refit its calibration."""

from __future__ import annotations

from typing import Annotated

import typer

from aidetect.cli import options
from aidetect.cli.guard import run_guarded


def evaluate(
    data: options.LabelledData,
    model: options.Model = None,
    report_dir: Annotated[
        str, typer.Option("-o", "--output", help="Folder for metrics.json, predictions.parquet and the PNG plots.")
    ] = "eval-report",
    target_fpr: options.TargetFpr = 0.01,
    holdout: options.Holdout = None,
    seed: options.Seed = 0,
    batch_size: options.BatchSize = 32,
    device: options.Device = "auto",
    threads: options.Threads = None,
    crops: options.Crops = None,
    unseen: Annotated[
        str,
        typer.Option(
            "--unseen",
            help="Generators (comma-separated) the model was trained without (`train --exclude-generators`): "
            "their detection is reported apart, each against all real images (the cross-generator test).",
        ),
    ] = "",
    robustness: Annotated[
        int,
        typer.Option(
            "--robustness",
            min=0,
            help="Rescan this many images (seeded sample) re-saved as JPEG 75/90, rescaled 0.5x/0.75x and cropped; 0 skips it.",
        ),
    ] = 1000,
) -> None:
    """Measure a model on labelled images (same pipeline as scan): metrics table, Parquet predictions and plots."""
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
        crops=crops,
        unseen=tuple(name.strip() for name in unseen.split(",") if name.strip()),
        robustness=robustness,
    )
    raise typer.Exit(run_guarded(lambda console: run_eval(opts, console)))


def calibrate(
    data: options.LabelledData,
    output: Annotated[
        str, typer.Option("-o", "--output", help="New ONNX file to write (the original is never changed).")
    ],
    model: options.Model = None,
    target_fpr: options.TargetFpr = 0.01,
    holdout: options.Holdout = None,
    seed: options.Seed = 0,
    batch_size: options.BatchSize = 32,
    device: options.Device = "auto",
) -> None:
    """Refit temperature scaling and the default threshold on your own labelled images; writes a new ONNX file."""
    from aidetect.evaluation.calibration import calibrate as run_calibrate

    def work(console):
        run_calibrate(
            data, model, output, target_fpr, console, holdout=holdout, seed=seed, batch_size=batch_size, device=device
        )

    raise typer.Exit(run_guarded(work))
