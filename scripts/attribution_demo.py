#!/usr/bin/env python
"""Attribution and the cross-generator test, end to end through the CLI, on a CPU in minutes.

Makes a generator-labelled folder (`scripts/generator_corpus.py`: real photos and three synthetic
generators, alpha, beta and gamma, with different fingerprints), then:
  1. trains an attribution model on all three and evaluates it (per-generator table, attribution);
  2. trains again without gamma (`--exclude-generators gamma`) and evaluates with `--unseen gamma`.
Prints what `aidetect` prints; the reports stay in WORK.

Usage: python scripts/attribution_demo.py [--per-class 40] [--epochs 5] [--work DIR]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from generator_corpus import make_generator_folder  # noqa: E402

TINY = ["--arch", "coatnet_nano_rw_224", "--img-size", "32", "--batch-size", "16", "--lr", "3e-3"]


def aidetect(*args: str) -> str:
    """Run a command; returns what it printed (stderr), or exits with it on failure."""
    proc = subprocess.run([sys.executable, "-m", "aidetect", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"aidetect {args[0]} failed:\n{proc.stderr[-2000:]}")
    return proc.stderr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-class", type=int, default=40, help="training images per class (real and each generator)")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--work", type=Path, help="keep data, models and reports here (default: a temporary folder)")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="aidetect-attribution-"))
    data = work / "data"
    if not data.exists():
        make_generator_folder(data / "train", per_class=args.per_class)
        make_generator_folder(data / "test", per_class=max(4, args.per_class // 4), seed=50_000)
    epochs = ["--epochs", str(args.epochs)]
    print(aidetect("train", str(data), "-o", str(work / "attribution.onnx"), *TINY, *epochs))
    print(
        aidetect(
            "eval",
            str(data / "test"),
            "--model",
            str(work / "attribution.onnx"),
            "-o",
            str(work / "eval"),
            "--robustness",
            "0",
        )
    )
    held_out = work / "without-gamma.onnx"
    print(aidetect("train", str(data), "-o", str(held_out), *TINY, *epochs, "--exclude-generators", "gamma"))
    print(
        aidetect(
            "eval",
            str(data / "test"),
            "--model",
            str(held_out),
            "-o",
            str(work / "eval-unseen"),
            "--robustness",
            "0",
            "--unseen",
            "gamma",
        )
    )
    print(f"data, models and reports in {work}")


if __name__ == "__main__":
    main()
