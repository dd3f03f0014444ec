"""`aidetect train` and `aidetect export`: option parsing only; the work is in loop.py and export.py."""

from __future__ import annotations

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
) -> None:
    """Train a CoAtNet real-vs-AI classifier from scratch (cross-entropy, LAMB, cosine) and export it to ONNX."""
    from aidetect.errors import DataError, ExportError
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
    )
    try:
        run_training(cfg, str(resume) if resume else None, str(init) if init else None)
    except (DataError, ExportError, ValueError, RuntimeError) as exc:
        console.print(styled("error: ", "red", str(exc)), highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None


def run_training(cfg, resume: str | None = None, init: str | None = None) -> dict:
    """Find the data, train, test and export; returns the exported model's metadata."""
    from train.data import find_splits, labelled_items
    from train.export import export_checkpoint
    from train.loop import Trainer

    if resume and init:
        raise ValueError("--resume continues a run; --init starts a new one from its weights: pick one")
    splits = find_splits(cfg.data, cfg.val_split, cfg.seed, cfg.exclude_generators, cfg.binary)
    if cfg.test:
        splits.test = labelled_items(cfg.test)
    _print_counts(splits.counts(), splits.val_held_out, cfg.val_split)
    _print_generators(splits.generator_counts(), cfg.exclude_generators)
    trainer = Trainer(cfg, splits, console)
    if init:
        trainer.init_weights(init)
        console.print(f"starting from the weights of {init}")
    if resume:
        trainer.load(resume)
        console.print(f"resuming after epoch {trainer.epoch} from {resume}")
    trainer.make_datasets()
    console.print(f"training {cfg.arch} at {cfg.img_size}px on {trainer.device.type} for {cfg.epochs} epochs")
    trainer.fit()
    best_path = str(trainer.run_dir / "best.pt")
    trainer.load(best_path)
    calibration = trainer.calibrate()
    if calibration:
        console.print(
            f"calibration: temperature {calibration['temperature']:.3f}, ECE {calibration['ece_before']:.4f} -> "
            f"{calibration['ece_after']:.4f} on the validation split"
        )
    test_metrics = None
    if "test" in trainer.datasets:
        test_metrics = trainer.evaluate("test")
        console.print(
            f"test: accuracy {test_metrics['accuracy']:.4f}  F1 {test_metrics['f1']:.4f}  "
            f"loss {test_metrics['loss']:.4f}  ROC-AUC {_f(test_metrics['roc_auc'])}  confusion {test_metrics['confusion']}"
        )
    metadata = export_checkpoint(best_path, cfg.output, test_metrics, calibration)
    console.print(f"wrote {cfg.output} (best epoch {metadata['metrics']['val'].get('epoch')})")
    return metadata


def _f(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _print_counts(counts: dict, held_out: bool, fraction: float) -> None:
    for split, per_class in counts.items():
        note = f" (held out {fraction:.0%} of train)" if split == "val" and held_out else ""
        console.print(f"{split}: " + ", ".join(f"{n} {name}" for name, n in per_class.items()) + note)


def _print_generators(counts: dict[str, dict[str, int]], excluded: tuple[str, ...]) -> None:
    """The split x generator table the model will learn attribution from (nothing for binary data)."""
    if not counts:
        return
    from rich.table import Table

    table = Table(title="AI images per generator", box=None, header_style="bold")
    table.add_column("generator")
    for split in counts:
        table.add_column(split, justify="right")
    for name in sorted({g for per_split in counts.values() for g in per_split}):
        table.add_row(name, *(str(per_split.get(name, 0)) for per_split in counts.values()))
    console.print(table)
    if excluded:
        console.print(f"left out of training: {', '.join(excluded)}")


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
