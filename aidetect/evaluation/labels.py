"""Labelled data layouts, shared by `aidetect train` and `aidetect eval`.

A labelled folder holds `real/` and `fake/` subfolders (case-insensitive; `human/` and `ai/`
too, as Kaggle sets name them), optionally inside `train/`, `val/` and `test/` splits. Images
in subfolders of `fake/` carry their subfolder's name as a generator label (`fake/sdxl/…`;
files directly under `fake/` are the `unknown` generator). GenImage's layout,
`<generator>/{train,val}/{ai,nature}/…`, is read too (`nature` images are real).
"""

from __future__ import annotations

import os
import random
from typing import NamedTuple

from aidetect.errors import DataError
from aidetect.io.sources import walk_images

CLASS_NAMES = ("real", "ai")  # a binary model's outputs: index 0 is real, 1 is AI-generated
CLASS_ALIASES = {"real": 0, "human": 0, "fake": 1, "ai": 1, "nature": 0}
UNKNOWN_GENERATOR = "unknown"
# A generator needs this many training images: one or more held out to validate on, the rest to learn from.
MIN_GENERATOR_IMAGES = 10


class Item(NamedTuple):
    """One labelled image: `label` 1 for AI-generated, 0 for real; `generator` names the AI
    image's generator (`unknown` for files directly under `fake/`; None for real images)."""

    path: str
    label: int
    generator: str | None = None


def class_counts(items: list[Item]) -> dict[str, int]:
    counts = dict.fromkeys(CLASS_NAMES, 0)
    for item in items:
        counts[CLASS_NAMES[item.label]] += 1
    return counts


def generator_counts(items: list[Item]) -> dict[str, int]:
    """Images per generator among the AI images (the `unknown` ones included), sorted by name."""
    counts: dict[str, int] = {}
    for item in items:
        if item.label == 1:
            name = item.generator or UNKNOWN_GENERATOR
            counts[name] = counts.get(name, 0) + 1
    return dict(sorted(counts.items()))


def has_generators(items: list[Item]) -> bool:
    """Whether the layout names generators: some AI image lies in a generator subfolder."""
    return any(item.generator not in (None, UNKNOWN_GENERATOR) for item in items if item.label == 1)


def output_classes(items: list[Item]) -> tuple[str, ...]:
    """A model's outputs for these images: ("real", "ai"), or "real" and one per generator."""
    if not has_generators(items):
        return CLASS_NAMES
    return ("real", *generator_counts(items))


def class_index(item: Item, classes: tuple[str, ...]) -> int:
    """The output an image trains: its binary label, or its generator's output."""
    if item.label == 0 or classes == CLASS_NAMES:
        return item.label
    return classes.index(item.generator or UNKNOWN_GENERATOR)


def subdirs(folder: str) -> dict[str, str]:
    return {e.name.lower(): e.path for e in os.scandir(folder) if e.is_dir()}


def _ai_items(folder: str) -> list[Item]:
    """AI images, each labelled with the `fake/` subfolder it lies in (its generator)."""
    items = []
    for ref in walk_images(folder):
        parts = os.path.relpath(ref.path, folder).split(os.sep)
        items.append(Item(ref.path, 1, parts[0] if len(parts) > 1 else UNKNOWN_GENERATOR))
    return items


def labelled_items(folder: str, require_both: bool = True) -> list[Item]:
    """Every image under the class subfolders of `folder`, sorted (or under each generator's
    class folders in GenImage's layout: `folder/<generator>/{ai,nature}`)."""
    if not os.path.isdir(folder):
        raise DataError(f"{folder}: not a folder")
    items: list[Item] = []
    found: set[int] = set()
    for name, path in subdirs(folder).items():
        if name in CLASS_ALIASES:
            label = CLASS_ALIASES[name]
            found.add(label)
            items += _ai_items(path) if label == 1 else [Item(ref.path, 0) for ref in walk_images(path)]
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


def genimage_split(root: str, split: str) -> list[Item]:
    """GenImage's layout: the images of every `<generator>/<split>/{ai,nature}` under `root`."""
    items = []
    for generator_dir in subdirs(root).values():
        inner = subdirs(generator_dir).get(split)
        if inner is None:
            continue
        generator = os.path.basename(generator_dir)
        for name, path in subdirs(inner).items():
            if name in CLASS_ALIASES:
                label = CLASS_ALIASES[name]
                items += [Item(ref.path, label, generator if label else None) for ref in walk_images(path)]
    return sorted(items)


def is_genimage(root: str) -> bool:
    """Whether `root` holds generator folders with train/ or val/ splits of ai/ and nature/."""
    found = subdirs(root)
    if set(found) & {*CLASS_ALIASES, "train", "val", "test"}:
        return False
    return any(
        set(subdirs(split)) & set(CLASS_ALIASES)
        for folder in found.values()
        for name, split in subdirs(folder).items()
        if name in ("train", "val")
    )


def check_generators(items: list[Item], where: str) -> None:
    """Refuse, in one line, a generator with too few images to hold some out and learn from the rest."""
    if not has_generators(items):
        return
    small = {name: n for name, n in generator_counts(items).items() if n < MIN_GENERATOR_IMAGES}
    if small:
        listing = ", ".join(f"{name} ({n})" for name, n in small.items())
        raise DataError(
            f"{where}: too few images for generator {listing}: each needs at least {MIN_GENERATOR_IMAGES} "
            "(some held out to validate, the rest to learn from); add images, leave it out with "
            "--exclude-generators, or train a binary model with --binary"
        )


def stratified_split(items: list[Item], fraction: float, seed: int) -> tuple[list[Item], list[Item]]:
    """Hold out `fraction` of each class (of each generator, where the layout names them),
    chosen by a seeded shuffle; returns (kept, held out)."""
    rng = random.Random(seed)
    keep, held = [], []
    strata = sorted({(it.label, it.generator or "") for it in items})
    for label, generator in strata:
        group = [it for it in items if (it.label, it.generator or "") == (label, generator)]
        rng.shuffle(group)
        n_held = max(1, round(len(group) * fraction)) if len(group) > 1 else 0
        held += group[:n_held]
        keep += group[n_held:]
    return sorted(keep), sorted(held)
