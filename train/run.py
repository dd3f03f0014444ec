"""A training run: find the data, train, calibrate, test, export; in one process, in `--nproc N`
processes started here, or in the processes torchrun started (train/distributed.py)."""

from __future__ import annotations

from rich.console import Console
from torch.distributed.elastic.multiprocessing.errors import record

from train.cli import console
from train.distributed import place_from_env


def launch_training(cfg, nproc: int, resume: str | None, init: str | None) -> None:
    """`--nproc N`: check what can be checked once, then start N processes as torchrun would."""
    from train.data import find_splits
    from train.distributed import check_gpus, launch

    if place_from_env().many:
        raise ValueError("--nproc: this process was started by torchrun; give torchrun --nproc-per-node instead")
    check_gpus(nproc, cfg.device)
    find_splits(cfg.data, cfg.val_split, cfg.seed, cfg.exclude_generators, cfg.binary)  # bad data: one line here
    launch(nproc, _launched, cfg, resume, init)


@record
def _launched(cfg, resume: str | None, init: str | None) -> None:
    """A process `--nproc` started: its error goes, as a one-line message, to the launcher
    (`record` writes it where the launcher reads it), which reports the first to fail."""
    from aidetect.errors import DataError, ExportError

    try:
        run_torchrun_process(cfg, resume, init)
    except (DataError, ExportError, ValueError) as exc:
        raise RuntimeError(str(exc)) from None


def run_torchrun_process(cfg, resume: str | None, init: str | None) -> None:
    """One of several training processes: join the others, train, leave."""
    from train.distributed import join, leave
    from train.loop import pick_device

    place = place_from_env()
    try:
        join(place, pick_device(cfg.device, place), cfg.rendezvous_timeout)
        run_training(cfg, resume, init, place)
    finally:
        leave()


def run_training(cfg, resume: str | None = None, init: str | None = None, place=None) -> dict:
    """Find the data, train, test and export; returns the exported model's metadata. With several
    processes, each trains; rank 0 alone prints, calibrates, tests and exports."""
    from train.data import find_splits, labelled_items
    from train.distributed import SINGLE, leave
    from train.export import export_checkpoint
    from train.loop import Trainer

    place = place or SINGLE
    out = console if place.main else Console(stderr=True, quiet=True)
    if resume and init:
        raise ValueError("--resume continues a run; --init starts a new one from its weights: pick one")
    splits = find_splits(cfg.data, cfg.val_split, cfg.seed, cfg.exclude_generators, cfg.binary)
    if cfg.test:
        splits.test = labelled_items(cfg.test)
    _print_counts(out, splits.counts(), splits.val_held_out, cfg.val_split)
    _print_generators(out, splits.generator_counts(), cfg.exclude_generators)
    trainer = Trainer(cfg, splits, out, place)
    if init:
        trainer.init_weights(init)
        out.print(f"starting from the weights of {init}")
    if resume:
        trainer.load(resume)
        out.print(f"resuming after epoch {trainer.epoch} from {resume}")
    trainer.make_datasets()
    processes = f" in {place.world} processes" if place.many else ""
    out.print(f"training {cfg.arch} at {cfg.img_size}px on {trainer.device.type}{processes} for {cfg.epochs} epochs")
    trainer.fit()
    if place.many:  # the rest (calibration, test, export) is rank 0's, on the whole splits
        leave()
        if not place.main:
            return {}
        trainer.place = SINGLE
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


def _print_counts(out: Console, counts: dict, held_out: bool, fraction: float) -> None:
    for split, per_class in counts.items():
        note = f" (held out {fraction:.0%} of train)" if split == "val" and held_out else ""
        out.print(f"{split}: " + ", ".join(f"{n} {name}" for name, n in per_class.items()) + note)


def _print_generators(out: Console, counts: dict[str, dict[str, int]], excluded: tuple[str, ...]) -> None:
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
    out.print(table)
    if excluded:
        out.print(f"left out of training: {', '.join(excluded)}")
