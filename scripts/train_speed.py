#!/usr/bin/env python
"""Training speed, loader and model apart: is the data loader or the model the limit?

  loader  `aidetect train`'s own data path (train/data.py: decode, resize, random crop, flip,
          batching in DataLoader worker processes) on the benchmark corpus, no model
  model   CoAtNet-2 at 224 px, forward + backward + the LAMB step, on random tensors already in
          memory (bf16 autocast and channels_last on a GPU, as training does)

Usage: python scripts/train_speed.py [--images 300] [--workers N] [--device auto] [--seconds 60]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
CACHE = Path(os.environ.get("AIDETECT_BENCH_CACHE", Path.home() / ".cache" / "aidetect-bench"))


def loader_rate(folder: Path, workers: int, batch: int, seconds: float) -> float:
    import torch

    from aidetect.evaluation.labels import Item
    from aidetect.pipeline.preprocess import Preprocess
    from train.data import ImageDataset, collate_windows

    items = [Item(str(path), 1, None) for path in sorted(folder.glob("*.jpg"))]
    dataset = ImageDataset(items, Preprocess(224, 224), train=True)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch, shuffle=True, num_workers=workers, collate_fn=collate_windows
    )
    done, start = 0, time.perf_counter()
    for images, _, _ in loader:
        done += len(images)
        if time.perf_counter() - start > seconds:
            break
    return done / (time.perf_counter() - start)


def model_rate(device: str, batch: int, seconds: float) -> tuple[float, str]:
    import timm.optim
    import torch

    from train.loop import build_model, pick_device

    dev = pick_device(device)
    model = build_model("coatnet_2_rw_224", 224, 2).to(dev)
    if dev.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    optimizer = timm.optim.create_optimizer_v2(model, "lamb", lr=1e-3, weight_decay=0.05)
    images, labels = torch.randn(batch, 3, 224, 224, device=dev), torch.randint(0, 2, (batch,), device=dev)
    done, start, steps = 0, None, 0
    while start is None or time.perf_counter() - start < seconds:
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=dev.type == "cuda"):
            loss = torch.nn.functional.cross_entropy(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        steps += 1
        if steps == 2:  # the first steps allocate and pick kernels: not timed
            start = time.perf_counter()
        elif steps > 2:
            done += batch
    return done / (time.perf_counter() - start), str(dev)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--images", type=int, default=300, help="benchmark corpus size (photo-like JPEGs, VGA to 12 MP)"
    )
    parser.add_argument("--workers", type=int, default=os.cpu_count(), help="loader worker processes")
    parser.add_argument("--batch", type=int, default=32, help="loader batch size")
    parser.add_argument("--model-batch", type=int, default=8, help="training batch size for the model part")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seconds", type=float, default=60.0, help="how long each part runs")
    args = parser.parse_args()
    from corpus import make_corpus

    folder = CACHE / f"photos-{args.images}"
    make_corpus(folder, args.images)
    loader = loader_rate(folder, args.workers, args.batch, args.seconds)
    print(f"loader  {loader:8.1f} images/s ({args.workers} workers, CoAtNet-2's 224 px resize view)", flush=True)
    model, device = model_rate(args.device, args.model_batch, args.seconds)
    print(f"model   {model:8.1f} images/s (CoAtNet-2 at 224 px on {device}, batch {args.model_batch})")
    print(json.dumps({"loader_images_per_s": loader, "model_images_per_s": model, "device": device}))


if __name__ == "__main__":
    main()
