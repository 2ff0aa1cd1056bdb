"""From stored uint8 images to what a model reads."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def channel_stats(images: torch.Tensor, max_images: int = 50_000) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std in [0, 1] units of (N, C, H, W) uint8 images (a seeded-free prefix sample)."""
    x = images[:max_images].float().div_(255)
    mean = x.mean(dim=(0, 2, 3))
    std = x.std(dim=(0, 2, 3)).clamp_min(1e-3)
    return mean, std


def to_model_input(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) uint8 -> normalised float32 in channels_last (faster convolutions on CPU and GPU)."""
    x = images.float().div_(255)
    x = (x - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)
    return x.contiguous(memory_format=torch.channels_last)


def resize_uint8(images: torch.Tensor, size: int) -> torch.Tensor:
    """Resize (N, C, H, W) uint8 to (N, C, size, size) with bilinear (antialiased when shrinking)."""
    if images.shape[-2:] == (size, size):
        return images
    out = []
    for start in range(0, len(images), 4096):  # bounded float memory
        x = images[start:start + 4096].float()
        shrink = size < images.shape[-1] or size < images.shape[-2]
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=shrink)
        out.append(x.round_().clamp_(0, 255).to(torch.uint8))
    return torch.cat(out)
