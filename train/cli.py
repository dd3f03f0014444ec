"""`aidetect train` and `aidetect export`: option parsing only; the work is in run.py (one or
several processes), loop.py and export.py."""

from __future__ import annotations

import os
from pathlib import Path

import typer
from rich.console import Console

from aidetect.console import styled
from train import DEFAULT_ARCH

# torch and timm are imported inside the commands, so `aidetect scan` never pays for them.

console = Console(stderr=True, markup=False)  # paths and messages print literally


def train(
    data: Path = typer.Argument(
        ...,
        help="Labelled images: real/ and fake/ (or human/ and ai/) subfolders, optionally inside train/, val/ and test/.",
    ),
    output: Path = typer.Option(
        Path("model.onnx"),
        "-o",
        "--output",
        help="ONNX file to write; checkpoints and metrics.jsonl go to OUTPUT's stem + '.run/' beside it.",
    ),
    arch: str = typer.Option(DEFAULT_ARCH, help="Any timm CoAtNet/MaxViT name; created with random weights."),
    img_size: int = typer.Option(224, help="Square model input, in pixels."),
    stem_stride: int = typer.Option(
        2, help="1 keeps full resolution in the stem (costs about 4x compute; for small inputs)."
    ),
    epochs: int = typer.Option(15, help="Training epochs (cosine schedule over all of them)."),
    batch_size: int = typer.Option(32, help="Images per optimiser step."),
    lr: float = typer.Option(1e-3, help="Peak LAMB learning rate."),
    weight_decay: float = typer.Option(0.05, help="LAMB weight decay."),
    warmup_epochs: int = typer.Option(0, help="Linear warm-up epochs before the cosine decay."),
    label_smoothing: float = typer.Option(0.0, help="Cross-entropy label smoothing."),
    val_split: float = typer.Option(
        0.05, help="Fraction of train held out (stratified, seeded) when DATA has no val/."
    ),
    test: Path | None = typer.Option(
        None, help="A labelled folder to test on at the end (default: DATA's test/ split)."
    ),
    device: str = typer.Option("auto", help="auto, cpu or gpu (bf16 autocast and channels_last on the GPU)."),
    workers: int = typer.Option(2, help="Processes that decode images."),
    resume: Path | None = typer.Option(None, help="A checkpoint (OUTPUT's run folder/last.pt) to continue exactly."),
    init: Path | None = typer.Option(
        None,
        help="Warm start: a checkpoint's weights only (same --arch, --img-size, --stem-stride), with a fresh "
        "optimiser and schedule; for a second cosine cycle or fine-tuning on new data.",
    ),
    seed: int = typer.Option(0, help="Seed for the split, the shuffling and the weights."),
    view: str = typer.Option(
        "resize",
        help="What the model sees. resize: the shorter side resized to --img-size, centre square (fast; for small "
        "images such as CIFAKE's 32 px). crop: --img-size windows at native resolution, no resize (for large photos "
        "from the wild: the traces generators leave live in the finest pixels; costs one inference per window).",
    ),
    crops: int = typer.Option(
        None,
        help="With --view crop: windows scored per image in validation, eval and scans (1 centre; 5 corners and "
        "centre; 4, 9, 16 a grid); stored in the model, `scan --crops` overrides it. Default: 1 (resize), 5 (crop).",
    ),
    combine: str = typer.Option(
        "mean",
        help="With --view crop: how the windows' logits become one score. mean (every window votes: a fully "
        "generated image scores high, one odd window cannot flip a photo) or max (the most AI-looking window "
        "decides: finds a generated patch in a real photo, at more false positives). prob_ai_max is written either way.",
    ),
    exclude_generators: str = typer.Option(
        "",
        "--exclude-generators",
        help="Generators (comma-separated folder names) to leave out of training, to measure later as unseen "
        "with `aidetect eval --unseen` (the cross-generator test).",
    ),
    binary: bool = typer.Option(
        False, "--binary", help="Ignore generator subfolders: one 'ai' output instead of one per generator."
    ),
    crop_padding: int = typer.Option(4, help="Random-crop padding in pixels (reflect); 0 crops without padding."),
    aug_jpeg: float = typer.Option(0.0, help="Robustness: probability of a JPEG re-encode at quality 50-95."),
    aug_rescale: float = typer.Option(0.0, help="Robustness: probability of a 0.5-0.9x down- and up-scale."),
    aug_blur: float = typer.Option(0.0, help="Robustness: probability of a slight Gaussian blur."),
    cache_gb: float = typer.Option(
        4.0, help="Decode the whole data set into memory first when it needs less than this."
    ),
    nproc: int = typer.Option(
        1,
        "--nproc",
        min=1,
        help="Training processes on this machine (DistributedDataParallel: one per GPU, or gloo on CPUs). "
        "--batch-size is per process, so a step takes N x --batch-size images and the learning rate is N x --lr "
        "(linear scaling); --resume keeps the schedule it started with. For several machines run "
        "`torchrun --nnodes ... -m train DATA ...` instead (README).",
    ),
    rendezvous_timeout: int = typer.Option(
        120, "--rendezvous-timeout", min=1, help="Seconds a process waits for the others to join before giving up."
    ),
) -> None:
    """Train a CoAtNet real-vs-AI classifier from scratch (cross-entropy, LAMB, cosine) and export it to ONNX."""
    from aidetect.errors import DataError, ExportError

    if nproc > 1 or int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # c10d logs its connection retries and failures with C++ stack frames; the one-line
        # errors say what failed. Read when torch loads, so set before it does (a user's setting wins).
        os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "FATAL")
    from train.loop import Augment, TrainConfig

    cfg = TrainConfig(
        data=str(data),
        output=str(output),
        arch=arch,
        img_size=img_size,
        stem_stride=stem_stride,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        weight_decay=weight_decay,
        warmup_epochs=warmup_epochs,
        label_smoothing=label_smoothing,
        val_split=val_split,
        test=str(test) if test else None,
        device=device,
        workers=workers,
        seed=seed,
        cache_gb=cache_gb,
        augment=Augment(crop_padding=crop_padding, jpeg=aug_jpeg, rescale=aug_rescale, blur=aug_blur),
        view=view,
        crops=crops if crops is not None else (5 if view == "crop" else 1),
        combine=combine,
        exclude_generators=tuple(name.strip() for name in exclude_generators.split(",") if name.strip()),
        binary=binary,
        rendezvous_timeout=rendezvous_timeout,
    )
    from train.distributed import place_from_env
    from train.run import launch_training, run_torchrun_process, run_training

    resumed, initial = str(resume) if resume else None, str(init) if init else None
    try:
        if nproc > 1:
            launch_training(cfg, nproc, resumed, initial)
        elif place_from_env().many:  # started by torchrun
            run_torchrun_process(cfg, resumed, initial)
        else:
            run_training(cfg, resumed, initial)
    except (DataError, ExportError, ValueError, RuntimeError) as exc:
        console.print(styled("error: ", "red", str(exc)), highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None


def export(
    checkpoints: list[Path] = typer.Argument(
        ...,
        help="Training checkpoints (best.pt or last.pt); several become one file that averages their logits (same input size).",
    ),
    output: Path = typer.Option(Path("model.onnx"), "-o", "--output", help="ONNX file to write."),
    fp16_weights: bool = typer.Option(
        False, "--fp16-weights", help="Store weights as float16 (half the file; compute stays float32)."
    ),
    int8_weights: bool = typer.Option(
        False,
        "--int8-weights",
        help="Store weights as int8, one scale per output channel (a quarter of the file; compute stays float32).",
    ),
) -> None:
    """Export training checkpoints to one self-describing ONNX file (checked against PyTorch)."""
    from aidetect.errors import ExportError
    from train.export import export_checkpoint, export_ensemble

    if fp16_weights and int8_weights:
        console.print(styled("error: ", "red", "choose one of --fp16-weights and --int8-weights"))
        raise typer.Exit(2)
    weights = "int8" if int8_weights else "float16" if fp16_weights else "float32"
    paths = [str(path) for path in checkpoints]
    try:
        if len(paths) == 1:
            metadata = export_checkpoint(paths[0], str(output), weights=weights)
        else:
            metadata = export_ensemble(paths, str(output), weights)
    except (OSError, KeyError, ValueError, ExportError, RuntimeError) as exc:
        console.print(
            styled("error: ", "red", f"cannot export {', '.join(paths)}: {exc}"), highlight=False, soft_wrap=True
        )
        raise typer.Exit(2) from None
    console.print(f"wrote {output} ({metadata['name']}, input {metadata['preprocess']['input_size']}px)")
