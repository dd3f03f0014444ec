"""Generator-labelled folders for tests and the attribution demo: real photos and three synthetic
"generators" whose images carry different, learnable fingerprints (a colour cast, stripes,
smoothness), in aidetect's `fake/<generator>/` layout or in GenImage's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

GENERATORS = ("alpha", "beta", "gamma")


def photo(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A textured RGB array (gradients + noise at two scales)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([x / width, y / height, (x + y) / (width + height)], -1) * 160
    coarse = rng.random((height // 8 + 1, width // 8 + 1, 3)).repeat(8, 0).repeat(8, 1)[:height, :width] * 60
    return np.clip(base + coarse + rng.random((height, width, 3)) * 40, 0, 255).astype(np.uint8)


def save_png(array: np.ndarray, path: Path) -> None:
    Image.fromarray(array).save(path, "PNG")


def fingerprinted(generator: str | None, seed: int, size: int = 40) -> np.ndarray:
    array = photo(size, size, seed=seed).astype(np.float32)
    if generator == "alpha":  # a red cast
        array[..., 0] = array[..., 0] * 0.4 + 150
    elif generator == "beta":  # horizontal stripes
        array[::2] *= 0.3
    elif generator == "gamma":  # smooth and dark
        array = array * 0.2 + 30
    return np.clip(array, 0, 255).astype(np.uint8)


def make_generator_folder(root: Path, per_class: int = 12, generators=GENERATORS, seed: int = 0) -> Path:
    """root/real/*.png and root/fake/<generator>/*.png."""
    (root / "real").mkdir(parents=True)
    for i in range(per_class):
        save_png(fingerprinted(None, seed + i), root / "real" / f"{i:03d}.png")
    for n, name in enumerate(generators):
        (root / "fake" / name).mkdir(parents=True)
        for i in range(per_class):
            save_png(fingerprinted(name, seed + 1000 * (n + 1) + i), root / "fake" / name / f"{i:03d}.png")
    return root


def make_genimage_folder(root: Path, per_class: int = 10, generators=GENERATORS) -> Path:
    """GenImage's layout: root/<generator>/{train,val}/{ai,nature}/*.png."""
    for n, name in enumerate(generators):
        for split, count in (("train", per_class), ("val", 2)):
            for cls in ("ai", "nature"):
                folder = root / name / split / cls
                folder.mkdir(parents=True)
                for i in range(count):
                    image = fingerprinted(name if cls == "ai" else None, 100 * n + 10 * (split == "val") + i)
                    save_png(image, folder / f"{i:03d}.png")
    return root
