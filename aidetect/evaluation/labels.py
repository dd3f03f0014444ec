"""Labelled data layouts, shared by `aidetect train` and `aidetect eval`.

A labelled folder holds `real/` and `fake/` subfolders (case-insensitive; `human/` and `ai/`
too, as Kaggle sets name them), optionally inside `train/`, `val/` and `test/` splits.
"""

from __future__ import annotations

import os
import random

from aidetect.errors import DataError
from aidetect.io.sources import walk_images

CLASS_NAMES = ("real", "ai")  # output index 0 is real, 1 is AI-generated
CLASS_ALIASES = {"real": 0, "human": 0, "fake": 1, "ai": 1}

Item = tuple[str, int]  # (path, class index)


def class_counts(items: list[Item]) -> dict[str, int]:
    counts = dict.fromkeys(CLASS_NAMES, 0)
    for _, label in items:
        counts[CLASS_NAMES[label]] += 1
    return counts


def subdirs(folder: str) -> dict[str, str]:
    return {e.name.lower(): e.path for e in os.scandir(folder) if e.is_dir()}


def labelled_items(folder: str, require_both: bool = True) -> list[Item]:
    """Every image under the class subfolders of `folder`, sorted."""
    if not os.path.isdir(folder):
        raise DataError(f"{folder}: not a folder")
    items: list[Item] = []
    found: set[int] = set()
    for name, path in subdirs(folder).items():
        if name in CLASS_ALIASES:
            label = CLASS_ALIASES[name]
            found.add(label)
            items += [(ref.path, label) for ref in walk_images(path)]
    if not found:
        raise DataError(f"{folder}: no class folders; expected subfolders named real/fake (or human/ai)")
    if require_both:
        for label in (0, 1):
            if label not in found:
                names = " or ".join(f"{n}/" for n, i in CLASS_ALIASES.items() if i == label)
                kind = ("real", "AI-generated")[label]
                raise DataError(f"{folder}: only one class; add a {names} folder of {kind} images")
        for label, count in class_counts(items).items():
            if count == 0:
                raise DataError(f"{folder}: the '{label}' class has no images")
    if not items:
        raise DataError(f"{folder}: no images in the class folders")
    return sorted(items)


def stratified_split(items: list[Item], fraction: float, seed: int) -> tuple[list[Item], list[Item]]:
    """Hold out `fraction` of each class, chosen by a seeded shuffle; returns (kept, held out)."""
    rng = random.Random(seed)
    keep, held = [], []
    for label in (0, 1):
        group = [it for it in items if it[1] == label]
        rng.shuffle(group)
        n_held = max(1, round(len(group) * fraction)) if len(group) > 1 else 0
        held += group[:n_held]
        keep += group[n_held:]
    return sorted(keep), sorted(held)
