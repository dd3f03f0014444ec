#!/usr/bin/env python
"""Check every GPU path of aidetect at once, in a few minutes, and print one table.

  torch       CUDA as torch sees it: the GPU, its memory, the driver's CUDA version
  train       a few training steps of CoAtNet-2 at 224 px with bf16 autocast and channels_last
              (images/s, peak GPU memory)
  onnxruntime the CUDA and TensorRT providers on the bundled model (model-only images/s), and
              that `session.get_providers()` really lists them (onnxruntime falls back silently)
  dali        DALI `mixed` (nvJPEG) decoding of the benchmark corpus (images/s)
  scan        `aidetect scan --device gpu` end to end on that corpus

A part that cannot run says why in one line and the rest go on. Needs, besides
`pip install .[train]`: an NVIDIA driver with CUDA 13, and for the scan paths the packages the
project installs (onnxruntime-gpu, nvidia-dali-cuda130); TensorRT is used when its libraries are
on the library path. Usage: python scripts/gpu_check.py [--images 200] [--steps 20]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
CACHE = Path(os.environ.get("AIDETECT_BENCH_CACHE", Path.home() / ".cache" / "aidetect-bench"))


class Skip(Exception):
    """A part that cannot run here, and why (one line)."""


def check_torch(args) -> str:
    import torch

    if not torch.cuda.is_available():
        raise Skip(f"torch {torch.__version__} sees no CUDA GPU (torch.cuda.is_available() is False)")
    props = torch.cuda.get_device_properties(0)
    return f"{props.name}, {props.total_memory / 2**30:.0f} GiB, CUDA {torch.version.cuda}, {torch.cuda.device_count()} GPU(s)"


def check_train(args) -> str:
    import torch

    if not torch.cuda.is_available():
        raise Skip("no CUDA GPU for torch")
    import timm.optim

    from train.loop import build_model

    model = build_model("coatnet_2_rw_224", 224, 2).cuda().to(memory_format=torch.channels_last)
    optimizer = timm.optim.create_optimizer_v2(model, "lamb", lr=1e-3, weight_decay=0.05)  # the recipe's
    images = torch.randn(args.batch, 3, 224, 224, device="cuda").contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, 2, (args.batch,), device="cuda")
    torch.cuda.reset_peak_memory_stats()
    for step in range(args.steps + 3):
        if step == 3:  # the first steps pick kernels: not timed
            torch.cuda.synchronize()
            start = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = torch.nn.functional.cross_entropy(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    torch.cuda.synchronize()
    rate = args.steps * args.batch / (time.perf_counter() - start)
    return f"{rate:.0f} images/s (batch {args.batch}), peak {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB"


def check_onnxruntime(args) -> str:
    try:
        import onnxruntime as ort
    except ImportError:
        raise Skip("onnxruntime is not installed (pip install onnxruntime-gpu)") from None
    available = ort.get_available_providers()
    if "CUDAExecutionProvider" not in available:
        raise Skip(f"onnxruntime {ort.__version__} has no CUDA provider (providers: {', '.join(available)})")
    from aidetect.pipeline.detector import Detector, gpu_present

    if not gpu_present():
        raise Skip("no NVIDIA driver loaded (onnxruntime would fall back to the CPU)")
    import numpy as np

    from aidetect.engines.base import resolve_model

    detector = Detector(resolve_model(None), "gpu")
    used = detector.session.get_providers()
    size = detector.info.preprocess.input_size
    batch = np.random.default_rng(0).standard_normal((64, 3, size, size)).astype(np.float32)
    detector.predict(batch)
    start, done = time.perf_counter(), 0
    while time.perf_counter() - start < 5:
        detector.predict(batch)
        done += len(batch)
    rate = done / (time.perf_counter() - start)
    return f"providers {', '.join(used)}; {rate:.0f} images/s model-only ({detector.runtime})"


def _corpus(count: int) -> Path:
    from corpus import make_corpus

    folder = CACHE / f"photos-{count}"
    make_corpus(folder, count)
    return folder


def check_dali(args) -> str:
    try:
        import nvidia.dali  # noqa: F401
    except ImportError:
        raise Skip("DALI is not installed (pip install nvidia-dali-cuda130)") from None
    from aidetect.pipeline.detector import gpu_present

    if not gpu_present():
        raise Skip("no NVIDIA driver loaded: DALI's mixed decoder needs a GPU")
    from aidetect.io.sources import walk_images
    from aidetect.pipeline.dali import DaliDecoder
    from aidetect.pipeline.preprocess import Preprocess
    from aidetect.pipeline.read import probe, read_file
    from aidetect.pipeline.views import upright_size

    items = [probe(ref, read_file(ref)) for ref in walk_images(str(_corpus(args.images)))]
    decoder = DaliDecoder(Preprocess(224, 224), 32, "gpu", os.cpu_count() or 1)
    decoder.pipe  # noqa: B018 -- built before the clock starts
    start = time.perf_counter()
    for i in range(0, len(items), 32):
        chunk = items[i : i + 32]
        decoder.run(
            [it.data for it in chunk], [upright_size(it.width, it.height, it.orientation)[::-1] for it in chunk]
        )
    return f"{len(items) / (time.perf_counter() - start):.0f} images/s (nvJPEG, 224 px resize view)"


def check_scan(args) -> str:
    from aidetect.pipeline.detector import gpu_present

    if not gpu_present():
        raise Skip("no NVIDIA driver loaded: `aidetect scan --device gpu` would refuse to start")
    folder = _corpus(args.images)
    with tempfile.TemporaryDirectory() as tmp:
        argv = [sys.executable, "-m", "aidetect", "scan", str(folder), "-o", f"{tmp}/out", "--device", "gpu"]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=240)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    if proc.returncode != 0:
        raise Skip(f"scan failed (exit {proc.returncode}): {lines[-1] if lines else 'no output'}")
    return next((line for line in lines if line.startswith("scanned")), lines[-1] if lines else "")


CHECKS: dict[str, Callable] = {
    "torch": check_torch,
    "train": check_train,
    "onnxruntime": check_onnxruntime,
    "dali": check_dali,
    "scan": check_scan,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=200, help="benchmark corpus size for the decode and scan parts")
    parser.add_argument("--steps", type=int, default=20, help="timed training steps")
    parser.add_argument("--batch", type=int, default=32, help="training batch size")
    args = parser.parse_args()
    print(f"aidetect GPU check, {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC\n")
    print("| part | result | seconds |\n| --- | --- | --- |")
    failures = 0
    for name, check in CHECKS.items():
        start = time.perf_counter()
        try:
            result = f"ok: {check(args)}"
        except Skip as why:
            result = f"skipped: {why}"
        except Exception as exc:  # a broken part must not hide the others
            failures += 1
            result = f"FAILED: {type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
        print(f"| {name} | {result} | {time.perf_counter() - start:.1f} |", flush=True)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
