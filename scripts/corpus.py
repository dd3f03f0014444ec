"""A reproducible corpus of photo-like JPEGs for the benchmark (seeded; not flat colour).

Texture at several scales (smooth shapes, mid-frequency detail, sensor-like grain) makes the
files compress and decode like camera photos: about 1-2 bits a pixel at quality 90.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

# A realistic mix, from VGA up to 12-megapixel phone photos (width, height, share).
SIZES = [((640, 480), 0.25), ((1280, 960), 0.25), ((1920, 1080), 0.2), ((2592, 1944), 0.15), ((4000, 3000), 0.15)]


def photo_like(width: int, height: int, rng: np.random.Generator) -> Image.Image:
    layers = []
    for scale, amplitude in ((64, 120), (16, 50), (4, 20)):
        small = rng.random((max(2, height // scale), max(2, width // scale), 3)).astype(np.float32)
        layer = Image.fromarray((small * 255).astype(np.uint8)).resize((width, height), Image.BICUBIC)
        layers.append((np.asarray(layer, np.float32) / 255 - 0.5) * amplitude)
    base = 128 + sum(layers)
    grain = rng.normal(0, 3, (height, width, 1)).astype(np.float32)
    image = Image.fromarray(np.clip(base + grain, 0, 255).astype(np.uint8))
    return image.filter(ImageFilter.SMOOTH) if width * height < 2_000_000 else image


def make_corpus(folder: Path, count: int, seed: int = 0) -> list[Path]:
    """Write `count` JPEGs (sizes drawn from SIZES) unless they exist; returns their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    shares = np.array([s for _, s in SIZES])
    picks = rng.choice(len(SIZES), size=count, p=shares / shares.sum())
    paths = []
    for i, pick in enumerate(picks):
        path = folder / f"photo_{seed}_{i:05d}.jpg"
        paths.append(path)
        if path.exists():
            continue
        width, height = SIZES[pick][0]
        buf = io.BytesIO()
        photo_like(width, height, np.random.default_rng([seed, i])).save(buf, "JPEG", quality=90)
        path.write_bytes(buf.getvalue())
    return paths
