#!/usr/bin/env python
"""Does the view matter? A controlled experiment anyone can rerun on a CPU in about ten minutes.

Photo-like images of 512-1024 px in two classes that differ only in a faint trace at native
resolution, of the kind generators leave. Both carry i.i.d. sensor-like noise (+-2 levels);
"ai" also carries the trace (`--trace`): `checkerboard`, the period-2 peak in the spectrum that
transposed-convolution upsampling leaves (+-2 levels), or `blocks`, noise of the same strength
as the sensor noise's but 2x nearest-upsampled (an upsampling layer's 2x2 blocks), which only a
second-order statistic tells apart and which a small model learns far more slowly. The same small CoAtNet is trained with `--view resize` and with `--view crop` on the
same split, then `aidetect eval` measures ROC-AUC on a held-out split: as saved (PNG), after a
JPEG q90 re-encode and after a 0.5x rescale. Everything runs through the CLI a user runs.

Usage: python scripts/fingerprint_demo.py [--train 240] [--test 80] [--epochs 6] [--work DIR]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

ARCH = "coatnet_nano_rw_224"
SIZE = 64  # the model input: the resize view sees the whole image at 64 px, the crop view 64 px windows
AMPLITUDE = 2


def scene(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Photo-like content: smooth shapes and mid-frequency detail (as scripts/corpus.py, without
    its grain: here the noise is what the classes differ in)."""
    layers = []
    for scale, amplitude in ((64, 120), (16, 50)):
        small = rng.random((max(2, height // scale), max(2, width // scale), 3)).astype(np.float32)
        layer = Image.fromarray((small * 255).astype(np.uint8)).resize((width, height), Image.BICUBIC)
        layers.append((np.asarray(layer, np.float32) / 255 - 0.5) * amplitude)
    return np.rint(128 + sum(layers)).astype(np.int16)


def traced(rng: np.random.Generator, width: int, height: int, trace: str | None) -> Image.Image:
    """Photo-like content, sensor-like noise, and the generator's trace when there is one."""
    pixels = scene(rng, width, height)
    if trace == "blocks":  # the sensor noise's strength, in 2x2 blocks instead of per pixel
        small = rng.integers(-AMPLITUDE, AMPLITUDE + 1, ((height + 1) // 2, (width + 1) // 2, 1))
        return Image.fromarray(
            np.clip(pixels + small.repeat(2, 0).repeat(2, 1)[:height, :width], 0, 255).astype(np.uint8)
        )
    pixels += rng.integers(-AMPLITUDE, AMPLITUDE + 1, (height, width, 1))
    if trace == "checkerboard":
        y, x = np.mgrid[0:height, 0:width]
        pixels += (AMPLITUDE * (1 - 2 * ((x + y) % 2)))[..., None].astype(np.int16)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def make_split(folder: Path, count: int, seed: int, trace: str) -> None:
    for label in ("real", "ai"):
        (folder / label).mkdir(parents=True, exist_ok=True)
        for i in range(count // 2):
            rng = np.random.default_rng([seed, i, label == "ai"])
            width, height = (int(v) for v in rng.integers(512, 1025, 2))
            traced(rng, width, height, trace if label == "ai" else None).save(folder / label / f"{i:04d}.png")


def perturbed(source: Path, target: Path, how: str) -> Path:
    """A copy of a labelled split re-encoded as JPEG q90 or rescaled by 0.5x."""
    for path in source.rglob("*.png"):
        out = target / path.relative_to(source)
        out.parent.mkdir(parents=True, exist_ok=True)
        image = Image.open(path)
        if how == "jpeg q90":
            buf = io.BytesIO()
            image.save(buf, "JPEG", quality=90)
            out.with_suffix(".jpg").write_bytes(buf.getvalue())
        else:
            image.resize((image.width // 2, image.height // 2), Image.BILINEAR).save(out)
    return target


def aidetect(*args: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "aidetect", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"aidetect {' '.join(args[:2])} failed:\n{proc.stderr[-2000:]}")


def roc_auc(data: Path, model: Path, report: Path) -> float:
    aidetect("eval", str(data), "--model", str(model), "-o", str(report), "--robustness", "0")
    return json.loads((report / "metrics.json").read_text())["roc_auc"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", type=int, default=240, help="training images (half per class)")
    parser.add_argument("--test", type=int, default=80, help="held-out images (half per class)")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--crops", type=int, default=5, help="windows the crop-view model scores per image")
    parser.add_argument("--trace", choices=("checkerboard", "blocks"), default="checkerboard")
    parser.add_argument("--views", default="resize,crop", help="the views to train and compare")
    parser.add_argument("--work", type=Path, help="keep the data and models here (default: a temporary folder)")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="aidetect-fingerprint-"))
    start = time.time()
    if not (work / "data").exists():
        make_split(work / "data" / "train", args.train, seed=0, trace=args.trace)
        make_split(work / "data" / "test", args.test, seed=1, trace=args.trace)
    tests = {"as saved (PNG)": work / "data" / "test"}
    for how in ("jpeg q90", "rescale 0.5x"):
        folder = work / how.replace(" ", "-")
        tests[how] = folder if folder.exists() else perturbed(work / "data" / "test", folder, how)
    print(
        f"data: {args.train} train and {args.test} test images, 512-1024 px, trace {args.trace} ({time.time() - start:.0f} s)"
    )
    results = {}
    for view in args.views.split(","):
        model = work / f"{view}.onnx"
        began = time.time()
        common = ["--arch", ARCH, "--img-size", str(SIZE), "--epochs", str(args.epochs), "--batch-size", "16"]
        crops = ["--crops", str(args.crops)] if view == "crop" else []
        aidetect("train", str(work / "data"), "-o", str(model), *common, "--view", view, *crops, "--val-split", "0.1")
        trained = time.time() - began
        results[view] = {
            name: roc_auc(data, model, work / f"eval-{view}-{i}") for i, (name, data) in enumerate(tests.items())
        }
        print(
            f"{view}: trained in {trained:.0f} s; ROC-AUC "
            + ", ".join(f"{k} {v:.3f}" for k, v in results[view].items())
        )
    print(f"\n| view | {' | '.join(tests)} |\n|---|{'---|' * len(tests)}")
    for view, aucs in results.items():
        print(f"| `{view}` | " + " | ".join(f"{aucs[name]:.3f}" for name in tests) + " |")
    print(f"\n{time.time() - start:.0f} s in all on {os.cpu_count()} cores; data and models in {work}")


if __name__ == "__main__":
    main()
