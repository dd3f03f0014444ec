"""Training data: find the labelled layout, split it, and load images as uint8 tensors.

Images go through `aidetect.pipeline.preprocess` (the scanner's own definition), so the
evaluation tensors here are the ones `aidetect scan` produces for the same file.
"""

from __future__ import annotations

import hashlib
import io
import os
import random
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image, ImageFilter

from aidetect.errors import DataError
from aidetect.evaluation.labels import (
    CLASS_NAMES,
    UNKNOWN_GENERATOR,
    Item,
    check_generators,
    class_counts,
    class_index,
    generator_counts,
    genimage_split,
    is_genimage,
    labelled_items,
    output_classes,
    stratified_split,
    subdirs,
)
from aidetect.pipeline.preprocess import Preprocess, open_upright
from aidetect.pipeline.views import view_base, view_windows

__all__ = ["CLASS_NAMES", "DataError", "Item", "Splits", "find_splits", "labelled_items"]

SPLIT_NAMES = ("train", "val", "test")


@dataclass
class Splits:
    train: list[Item]
    val: list[Item] = field(default_factory=list)
    test: list[Item] = field(default_factory=list)
    val_held_out: bool = False  # True when val was carved out of train

    def counts(self) -> dict[str, dict[str, int]]:
        return {name: class_counts(getattr(self, name)) for name in SPLIT_NAMES if getattr(self, name)}

    def generator_counts(self) -> dict[str, dict[str, int]]:
        """Per split, AI images per generator (empty without generator labels)."""
        if self.classes == CLASS_NAMES:
            return {}
        return {name: generator_counts(getattr(self, name)) for name in SPLIT_NAMES if getattr(self, name)}

    @property
    def classes(self) -> tuple[str, ...]:
        """The model's outputs: ("real", "ai"), or "real" and one per generator in train."""
        return output_classes(self.train + self.val)


def find_splits(
    root: str, val_split: float = 0.05, seed: int = 0, exclude: Sequence[str] = (), binary: bool = False
) -> Splits:
    """Read DATA as class folders, as train/val/test splits of class folders, or in GenImage's
    layout; `exclude` drops generators (the cross-generator protocol), `binary` ignores their names."""
    if not os.path.isdir(root):
        raise DataError(f"{root}: not a folder")
    found = subdirs(root)
    if "train" in found:
        splits = Splits(train=labelled_items(found["train"]))
        if "val" in found:
            splits.val = labelled_items(found["val"])
        if "test" in found:
            splits.test = labelled_items(found["test"])
    elif is_genimage(root):
        splits = Splits(train=genimage_split(root, "train"), val=genimage_split(root, "val"))
        if not splits.train:
            raise DataError(f"{root}: GenImage layout without train/ splits (<generator>/train/{{ai,nature}})")
    else:
        splits = Splits(train=labelled_items(root))
    for name in SPLIT_NAMES:
        items = getattr(splits, name)
        items = _without(items, exclude, root, strict=name == "train") if exclude else items
        if binary:
            items = [it._replace(generator=UNKNOWN_GENERATOR) if it.label else it for it in items]
        setattr(splits, name, items)
        if name != "train" and getattr(splits, name):
            _check_known(getattr(splits, name), splits.train, name, root)
    check_generators(splits.train, f"{root} (train)")
    if not splits.val and val_split > 0:
        splits.train, splits.val = stratified_split(splits.train, val_split, seed)
        splits.val_held_out = True
    return splits


def _without(items: list[Item], exclude: Sequence[str], root: str, strict: bool) -> list[Item]:
    known = set(generator_counts(items))
    missing = [name for name in exclude if name not in known]
    if missing and strict:
        raise DataError(
            f"--exclude-generators: no generator {', '.join(missing)} in {root} (found: {', '.join(sorted(known))})"
        )
    return [it for it in items if it.label == 0 or it.generator not in exclude]


def _check_known(items: list[Item], train: list[Item], split: str, root: str) -> None:
    """A val or test generator the training split lacks has no output to train or score."""
    if output_classes(train) == CLASS_NAMES:
        return
    unseen = set(generator_counts(items)) - set(generator_counts(train))
    if unseen:
        raise DataError(
            f"{root}: {split} has generator {', '.join(sorted(unseen))} that train lacks; measure unseen "
            "generators with `aidetect eval --unseen` instead"
        )


def fingerprint(items: Sequence[Item]) -> str:
    """A short hash of the (relative file name, label) list, to tell data sets apart."""
    digest = hashlib.sha256()
    for path, label, _ in items:
        digest.update(f"{os.path.basename(path)}\t{label}\n".encode("utf-8", "surrogateescape"))
    return digest.hexdigest()[:16]


# ---- loading -----------------------------------------------------------------------


def _load_base(args: tuple[str, Preprocess]) -> np.ndarray | str:
    path, pre = args
    try:
        return view_base(open_upright(path), pre)
    except Exception as exc:  # any decode failure is reported per file, not fatal
        return f"{type(exc).__name__}: {exc}"


def preload(items: Sequence[Item], pre: Preprocess, workers: int) -> tuple[list[np.ndarray], list[str]]:
    """Decode every image once into the array its view cuts windows from (resized, or native
    for the crop view), in parallel; return arrays and unreadable paths."""
    jobs = [(item.path, pre) for item in items]
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            results = list(pool.map(_load_base, jobs, chunksize=256))
    else:
        results = [_load_base(job) for job in jobs]
    bad = [item.path for item, r in zip(items, results) if isinstance(r, str)]
    return [r for r in results if not isinstance(r, str)], bad


@dataclass(frozen=True)
class Augment:
    """Training augmentation: the seed's random crop + flip, plus optional robustness ones."""

    crop_padding: int = 4
    flip: bool = True
    jpeg: float = 0.0  # probability of re-encoding as JPEG at quality 50-95
    rescale: float = 0.0  # probability of down- then up-scaling by 0.5-0.9
    blur: float = 0.0  # probability of a slight Gaussian blur


def _robustness(array: np.ndarray, aug: Augment, rng: random.Random) -> np.ndarray:
    if not (aug.jpeg or aug.rescale or aug.blur):
        return array
    image = Image.fromarray(array)
    if rng.random() < aug.rescale:
        factor = rng.uniform(0.5, 0.9)
        small = (max(1, round(image.width * factor)), max(1, round(image.height * factor)))
        image = image.resize(small, Image.BILINEAR).resize(array.shape[1::-1], Image.BILINEAR)
    if rng.random() < aug.blur:
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.0)))
    if rng.random() < aug.jpeg:
        buf = io.BytesIO()
        image.save(buf, "JPEG", quality=rng.randint(50, 95))
        image = Image.open(buf).convert("RGB")
    return np.asarray(image)


def random_crop(array: np.ndarray, size: int, padding: int, rng: random.Random) -> np.ndarray:
    """A random `size` window (after reflect-padding by `padding`), made RGB if grey."""
    if padding:
        pad = ((padding, padding), (padding, padding)) + ((0, 0),) * (array.ndim - 2)
        array = np.pad(array, pad, mode="reflect")
    top = rng.randint(0, array.shape[0] - size)
    left = rng.randint(0, array.shape[1] - size)
    window = array[top : top + size, left : left + size]
    return np.repeat(window[..., None], 3, axis=2) if window.ndim == 2 else window


def mean_pixels(paths: Sequence[str], limit: int = 200) -> float:
    """Mean pixels per image from the headers of an evenly spaced sample (to size the cache)."""
    step = max(1, len(paths) // limit)
    sizes = []
    for path in paths[::step]:
        try:
            with Image.open(path) as image:
                sizes.append(image.width * image.height)
        except Exception:  # unreadable files are reported by the decode itself
            continue
    return float(np.mean(sizes)) if sizes else 0.0


def collate_windows(batch: list[tuple[torch.Tensor, int]]) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """Samples of one or more windows each -> (all windows, labels, windows per sample)."""
    return torch.cat([w for w, _ in batch]), torch.tensor([label for _, label in batch]), [len(w) for w, _ in batch]


class ImageDataset(torch.utils.data.Dataset):
    """(uint8 windows x C x H x W tensor, label) pairs: one random window when training (the
    seed's padded random crop in the resize view; a window at native resolution in the crop
    view), the view's evaluation windows otherwise. Normalisation happens on the device."""

    def __init__(
        self,
        items: Sequence[Item],
        pre: Preprocess,
        train: bool,
        aug: Augment | None = None,
        cache: list[np.ndarray] | None = None,
        classes: tuple[str, ...] = CLASS_NAMES,
    ) -> None:
        self.items, self.pre, self.train = list(items), pre, train
        self.targets = [class_index(item, classes) for item in self.items]
        self.aug = aug or Augment()
        self.cache = cache
        self.epoch_seed = 0

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.items[index].path, self.targets[index]
        base = self.cache[index] if self.cache is not None else view_base(open_upright(path), self.pre)
        if not self.train:
            return torch.from_numpy(np.ascontiguousarray(view_windows(base, self.pre).transpose(0, 3, 1, 2))), label
        rng = random.Random(hash((self.epoch_seed, index)))
        if self.pre.view == "resize":
            window = random_crop(_robustness(base, self.aug, rng), self.pre.input_size, self.aug.crop_padding, rng)
        else:  # native pixels: no padding, and the robustness changes apply to the window itself
            window = _robustness(random_crop(base, self.pre.input_size, 0, rng), self.aug, rng)
        if self.aug.flip and rng.random() < 0.5:
            window = window[:, ::-1]
        return torch.from_numpy(np.ascontiguousarray(window.transpose(2, 0, 1)))[None], label
