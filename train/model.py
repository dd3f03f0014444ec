"""Model factory: timm CoAtNet/MaxViT with one output per class, random weights (nothing downloaded)."""

from __future__ import annotations

import timm
import torch


def create_detector(arch: str, img_size: int, num_classes: int = 2) -> torch.nn.Module:
    """A timm model with `num_classes` outputs (real and ai, or real and one per generator);
    `img_size` fixes CoAtNet's relative-position tables."""
    if not any(arch.startswith(p) for p in ("coatnet", "maxvit", "maxxvit", "coatnext")):
        raise ValueError(f"--arch {arch}: only timm CoAtNet/MaxViT models are supported")
    if arch not in timm.list_models():
        raise ValueError(f"--arch {arch}: timm has no such model (try `timm.list_models('coatnet*')`)")
    return timm.create_model(arch, pretrained=False, num_classes=num_classes, img_size=img_size)


class LogitMean(torch.nn.Module):
    """Several detectors that read the same input, as one: the mean of their logits.

    Models with different stems err on different images, so the mean is more accurate than either
    (the default model is one); for two classes it is the mean of their log-odds."""

    def __init__(self, members: list[torch.nn.Module]) -> None:
        super().__init__()
        self.members = torch.nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([member(x) for member in self.members]).mean(0)
