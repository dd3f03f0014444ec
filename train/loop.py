"""The training loop: the seed's recipe (cross-entropy, LAMB, cosine), with per-epoch metrics,
best-by-val checkpoints and exact resume.

Over 300 lines on purpose: the model, optimiser, scheduler, epoch and RNG state that exact resume
saves and restores together live in one Trainer, so they cannot drift apart across modules."""

from __future__ import annotations

import json
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import timm.optim
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from aidetect.errors import DataError
from aidetect.evaluation.calibration import calibration_report
from aidetect.evaluation.metrics import summarize
from aidetect.io.atomic import atomic_path
from aidetect.pipeline.detector import ai_margin, sigmoid
from aidetect.pipeline.domain import survey
from aidetect.pipeline.preprocess import Preprocess
from aidetect.pipeline.scoring import combine_logits
from train import DEFAULT_ARCH, distributed
from train.data import Augment, ImageDataset, Splits, collate_windows, fingerprint, mean_pixels, preload
from train.distributed import SINGLE, Place
from train.model import create_detector

REAL = 0  # the "real" output: first, in binary and attribution models alike
UNREADABLE_LIMIT = 0.01  # refuse a data set when more than this fraction will not decode


@dataclass
class TrainConfig:
    data: str
    output: str = "model.onnx"
    arch: str = DEFAULT_ARCH
    img_size: int = 224
    stem_stride: int = 2
    epochs: int = 15
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_epochs: int = 0
    label_smoothing: float = 0.0
    val_split: float = 0.05
    test: str | None = None
    device: str = "auto"
    workers: int = 2
    seed: int = 0
    cache_gb: float = 4.0
    augment: Augment = field(default_factory=Augment)
    view: str = "resize"  # views.py: resize, or crop (windows at native resolution)
    crops: int = 1  # windows a crop-view model scores per image in evaluation and scans
    combine: str = "mean"  # how those windows' logits become one: mean or max
    max_train_images: int | None = None
    init: str | None = None  # the checkpoint a warm start took its weights from
    exclude_generators: tuple[str, ...] = ()  # generators left out of training (cross-generator tests)
    binary: bool = False  # ignore generator labels: real vs ai only
    rendezvous_timeout: int = 120  # seconds a process waits for the others (train/distributed.py)

    def run_dir(self) -> Path:
        """Checkpoints and metrics.jsonl live beside the ONNX output."""
        out = Path(self.output)
        return out.parent / f"{out.stem}.run"


def pick_device(choice: str, place: Place = SINGLE) -> torch.device:
    """The device this process trains on: with several processes, each takes its own GPU."""
    if choice == "gpu" or choice == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("--device gpu: no usable CUDA GPU on this machine")
    elif choice == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    torch.cuda.set_device(place.local_rank)
    return torch.device("cuda", place.local_rank)


def build_model(arch: str, img_size: int, stem_stride: int, num_classes: int = 2) -> torch.nn.Module:
    """A stem stride of 1 keeps full resolution in the first stage (fine texture matters here);
    the model is then built for twice the input so its attention tables match the feature maps."""
    if stem_stride not in (1, 2):
        raise ValueError("--stem-stride must be 1 or 2")
    model = create_detector(arch, img_size * (2 // stem_stride), num_classes)
    if stem_stride == 1:
        model.stem.conv1.stride = (1, 1)
    return model


class Trainer:
    """Owns the model, optimiser, scheduler and data of one training run."""

    def __init__(self, cfg: TrainConfig, splits: Splits, console: Console, place: Place = SINGLE) -> None:
        self.cfg, self.splits, self.console, self.place = cfg, splits, console, place
        self.device = pick_device(cfg.device, place)
        self.pre = Preprocess(
            input_size=cfg.img_size, resize_size=cfg.img_size, view=cfg.view, crops=cfg.crops, combine=cfg.combine
        )
        _seed_everything(cfg.seed)
        self.classes = splits.classes  # ("real", "ai"), or "real" and one output per generator
        self.model = build_model(cfg.arch, cfg.img_size, cfg.stem_stride, len(self.classes)).to(self.device)
        if self.device.type == "cuda" or place.many:
            # On CPUs too with DDP: convolutions return 1x1 kernels' gradients channels_last, and
            # with the weights laid out so too DDP's buckets match them (else it warns and copies).
            self.model = self.model.to(memory_format=torch.channels_last)
        # The learning rate follows the global batch: --lr is for --batch-size images a step, and N
        # processes step with N times as many (linear scaling).
        lr = cfg.lr * place.world
        self.optimizer = timm.optim.create_optimizer_v2(self.model, "lamb", lr=lr, weight_decay=cfg.weight_decay)
        # Training steps go through DDP (gradients averaged over the processes); everything else
        # (evaluation, checkpoints, export) uses the plain model, so a checkpoint loads anywhere.
        self.net = self.model
        if place.many:
            ids = [place.local_rank] if self.device.type == "cuda" else None
            self.net = torch.nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        self.scheduler = _make_scheduler(self.optimizer, cfg)
        self.loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
        self.epoch = 0
        self.best: dict | None = None
        self.mean = torch.tensor(self.pre.mean, device=self.device).view(1, 3, 1, 1) * 255
        self.std = torch.tensor(self.pre.std, device=self.device).view(1, 3, 1, 1) * 255
        self.run_dir = cfg.run_dir()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        # What the images looked like, for the scanner's in_domain column (pipeline/domain.py).
        found = survey([item.path for item in splits.train])
        self.domain = found.to_dict() if found else None

    # ---- data ---------------------------------------------------------------------

    def make_datasets(self) -> None:
        """Decode everything once into memory when it fits, else stream from disk per batch."""
        splits = self.splits
        named = [("train", splits.train), ("val", splits.val), ("test", splits.test)]
        total = sum(len(items) for _, items in named)
        if self.pre.view == "resize":
            per_image = self.pre.resize_size**2 * 3 * 1.5
        else:  # the crop view caches native pixels
            per_image = mean_pixels([item.path for _, items in named for item in items]) * 3
        est_gb = total * per_image / 1e9
        self.datasets: dict[str, ImageDataset] = {}
        for name, items in named:
            if not items:
                continue
            cache = None
            if est_gb <= self.cfg.cache_gb:
                start = time.time()
                cache, bad = preload(items, self.pre, max(1, self.cfg.workers))
                items = _drop_unreadable(items, bad, name)
                self.console.print(
                    Text(f"{name}: decoded {len(items)} images in {time.time() - start:.0f}s", style="dim")
                )
            self.datasets[name] = ImageDataset(
                items, self.pre, train=name == "train", aug=self.cfg.augment, cache=cache, classes=self.classes
            )

    def _loader(self, name: str, shuffle: bool) -> torch.utils.data.DataLoader:
        """Batches of a split; with several processes, this process's shard of it (a new
        seeded shuffle each epoch when training, every world-th image when evaluating)."""
        ds = self.datasets[name]
        gen = torch.Generator().manual_seed(self.cfg.seed * 1000 + self.epoch)
        streaming = ds.cache is None
        sampler = None
        if self.place.many and shuffle:
            sampler = torch.utils.data.DistributedSampler(
                ds, self.place.world, self.place.rank, shuffle=True, seed=self.cfg.seed
            )
            sampler.set_epoch(self.epoch)
        elif self.place.many:
            ds = torch.utils.data.Subset(ds, range(self.place.rank, len(ds), self.place.world))
        return torch.utils.data.DataLoader(
            ds,
            batch_size=self.cfg.batch_size,
            shuffle=shuffle and sampler is None,
            sampler=sampler,
            generator=gen,
            num_workers=self.cfg.workers if streaming else 0,
            pin_memory=self.device.type == "cuda",
            drop_last=False,
            collate_fn=collate_windows,
        )

    def _to_input(self, images: torch.Tensor) -> torch.Tensor:
        images = images.to(self.device, non_blocking=True).float()
        images = (images - self.mean) / self.std
        if self.device.type == "cuda":
            images = images.contiguous(memory_format=torch.channels_last)
        return images

    def _autocast(self):
        return torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.device.type == "cuda")

    # ---- loop -----------------------------------------------------------------------

    def train_epoch(self, progress: Progress) -> tuple[float, float]:
        self.model.train()
        ds = self.datasets["train"]
        ds.epoch_seed = self.cfg.seed * 1000 + self.epoch
        loader = self._loader("train", shuffle=True)
        limit = (self.cfg.max_train_images or len(ds)) // self.place.world
        task = progress.add_task(f"epoch {self.epoch + 1}/{self.cfg.epochs}", total=min(limit, len(loader.dataset)))
        total_loss, seen, start = 0.0, 0, time.time()
        for images, labels, _ in loader:  # one window per image when training
            inputs, labels = self._to_input(images), labels.to(self.device)
            with self._autocast():
                loss = self.loss_fn(self.net(inputs), labels)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            total_loss += loss.item() * len(labels)
            seen += len(labels)
            progress.update(
                task, advance=len(labels), description=f"epoch {self.epoch + 1} loss {total_loss / seen:.4f}"
            )
            if seen >= limit:
                break
        progress.remove_task(task)
        if self.place.many:  # the figures of the whole step, all processes together
            total_loss, seen = distributed.total(total_loss, seen)
        return total_loss / max(seen, 1), seen / (time.time() - start)

    @torch.no_grad()
    def image_logits(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """Per image of a split: its windows' logits combined by the view's rule (scoring.py, as
        a scan combines them), and the labels."""
        self.model.eval()
        if self.place.many:
            distributed.share_buffers(self.model)
        out, labels_all = [], []
        for images, labels, counts in self._loader(name, shuffle=False):
            with self._autocast():
                logits = self.model(self._to_input(images)).float().cpu().numpy().astype(np.float64)
            out.append(combine_logits(logits, counts, self.pre.combine, REAL)[0])
            labels_all.append(labels.numpy())
        logits, labels = np.concatenate(out), np.concatenate(labels_all)
        if self.place.many:  # each process scored every world-th image: put the split back in order
            shards = distributed.gather((logits, labels))
            count = sum(len(shard_labels) for _, shard_labels in shards)
            logits = np.concatenate([shard[0] for shard in shards])[_interleaved(count, self.place.world)]
            labels = np.concatenate([shard[1] for shard in shards])[_interleaved(count, self.place.world)]
        return logits, labels

    def evaluate(self, name: str) -> dict:
        """Detection metrics (real vs any AI output), the loss, and attribution accuracy on the
        AI images when the model names generators."""
        logits, targets = self.image_logits(name)
        log_probs = torch.log_softmax(torch.from_numpy(logits), 1)
        result = summarize(targets != REAL, sigmoid(ai_margin(logits, REAL)))
        result["loss"] = float(torch.nn.functional.nll_loss(log_probs, torch.from_numpy(targets)))
        if len(self.classes) > 2:
            ai = targets != REAL
            picked = np.delete(logits, REAL, axis=1).argmax(1) + 1  # the likeliest generator
            result["attribution_accuracy"] = float((picked[ai] == targets[ai]).mean()) if ai.any() else None
        return result

    def margins(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """log P(ai) - log P(real) and the labels of a split, for temperature scaling."""
        logits, targets = self.image_logits(name)
        return ai_margin(logits, REAL), targets != REAL

    def calibrate(self) -> dict | None:
        """Fit temperature scaling on the validation split; logged to metrics.jsonl."""
        if "val" not in self.datasets:
            return None
        report = calibration_report(*self.margins("val"))
        with open(self.run_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps({"calibration": report}) + "\n")
        return report

    def fit(self, until: int | None = None) -> dict:
        """Train up to epoch `until` (default: all); checkpoints make any stop resumable."""
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=self.console,
            transient=True,
        ) as progress:
            while self.epoch < min(self.cfg.epochs, until or self.cfg.epochs):
                lr = self.optimizer.param_groups[0]["lr"]
                train_loss, speed = self.train_epoch(progress)
                self.scheduler.step()  # after the epoch's optimizer steps, as PyTorch expects
                val = self.evaluate("val") if "val" in self.datasets else {}
                self.epoch += 1
                record = {
                    "epoch": self.epoch,
                    "train_loss": train_loss,
                    "lr": lr,
                    "images_per_s": speed,
                    **{f"val_{k}": v for k, v in val.items() if k != "confusion"},
                }
                self._log(record)
                self._checkpoint(record)
        return self.best or {}

    # ---- bookkeeping ------------------------------------------------------------------

    def _log(self, record: dict) -> None:
        if not self.place.main:
            return
        with open(self.run_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        table = Table(show_header=True, header_style="bold", box=None)
        cols = ["epoch", "train_loss", "val_loss", "val_accuracy", "val_f1", "val_roc_auc", "lr", "images_per_s"]
        for col in cols:
            table.add_column(col.replace("_", " "), justify="right")
        table.add_row(*[_fmt(record.get(c)) for c in cols])
        self.console.print(table)

    def _is_better(self, record: dict) -> bool:
        if self.best is None:
            return True
        key = lambda r: (r.get("val_accuracy", 0.0), -r.get("val_loss", r["train_loss"]))  # noqa: E731
        return key(record) > key(self.best)

    def state(self) -> dict:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "epoch": self.epoch,
            "best": self.best,
            "config": _config_dict(self.cfg, self.classes),
            "preprocess": self.pre.to_dict(),
            "rng": _rng_state(),
            "processes": self.place.world,
            "data": {
                "counts": self.splits.counts(),
                "generators": self.splits.generator_counts(),
                "fingerprint": fingerprint(self.splits.train),
                "domain": self.domain,
            },
        }

    def _checkpoint(self, record: dict) -> None:
        """Every process keeps `best` (they compute the same metrics); rank 0 alone writes."""
        better = self._is_better(record)
        if better:
            self.best = record
        if not self.place.main:
            return
        if better:
            _atomic_save(self.state(), self.run_dir / "best.pt")
        _atomic_save(self.state(), self.run_dir / "last.pt")

    def init_weights(self, path: str) -> None:
        """Warm start: weights only; the shapes must match (same arch, input size and stem stride)."""
        state = read_checkpoint(path, self.device)
        try:
            self.model.load_state_dict(state["model"])
        except RuntimeError as exc:
            raise ValueError(f"--init {path}: not a checkpoint of this model ({str(exc).splitlines()[0]})") from None
        self.cfg.init = path

    def load(self, path: str) -> None:
        state = read_checkpoint(path, self.device)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.epoch, self.best = state["epoch"], state["best"]
        _set_rng_state(state["rng"])


def _interleaved(count: int, world: int) -> np.ndarray:
    """Where each image of a split sits in the concatenation of the shards rank::world."""
    sizes = [len(range(rank, count, world)) for rank in range(world)]
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    return np.array([starts[i % world] + i // world for i in range(count)], dtype=np.int64)


def read_checkpoint(path: str, device: torch.device | str = "cpu") -> dict:
    """A checkpoint written by training (best.pt, last.pt); anything else is a one-line ValueError."""
    try:
        state = torch.load(path, map_location=device, weights_only=False)
    except FileNotFoundError:
        raise ValueError(f"{path}: no such checkpoint") from None
    except Exception as exc:  # torch raises pickle, zip and runtime errors for foreign files
        raise ValueError(f"{path}: not a training checkpoint ({type(exc).__name__})") from None
    if not isinstance(state, dict) or not {"model", "config", "preprocess"} <= state.keys():
        raise ValueError(f"{path}: not a training checkpoint (written by `aidetect train`: best.pt or last.pt)")
    return state


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1e-3 or abs(value) >= 1000 else f"{value:.4f}"
    return str(value)


def _drop_unreadable(items: list, bad: list[str], split: str) -> list:
    if not bad:
        return items
    if len(bad) > UNREADABLE_LIMIT * len(items):
        listing = "\n  ".join(bad[:20]) + ("\n  …" if len(bad) > 20 else "")
        raise DataError(f"{split}: {len(bad)} of {len(items)} images cannot be read:\n  {listing}")
    bad_set = set(bad)
    return [it for it in items if it.path not in bad_set]


def _make_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig):
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, cfg.epochs - cfg.warmup_epochs))
    if cfg.warmup_epochs <= 0:
        return cosine
    warmup = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=0.1, total_iters=cfg.warmup_epochs)
    return torch.optim.lr_scheduler.SequentialLR(optimizer, [warmup, cosine], milestones=[cfg.warmup_epochs])


def _config_dict(cfg: TrainConfig, classes: tuple[str, ...]) -> dict:
    data = asdict(cfg)
    data["class_names"] = list(classes)
    return data


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _atomic_save(obj: dict, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
