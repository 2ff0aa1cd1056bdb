"""Gaussian pixel noise, batched and per sample: an input noise that RandAugment lacks.

No RandAugment op changes pixels independently of their neighbours, so a student trained on
RandAugment alone never sees a textured background on images whose background is flat (Fashion-MNIST
is half zeros). `gaussian_pixel_noise` adds N(0, s^2) to every value of every image, with a std s
drawn per sample uniformly in [0, max_std] (so the batch spans clean to fully noised), rounds and
clips to uint8 like the robustness suite's noise corruptions.
"""

from __future__ import annotations

import torch

from noisystudent.augment.ops import check_images, normal, uniform


def gaussian_pixel_noise(images: torch.Tensor, max_std: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """images: (B, C, H, W) uint8 on any device. max_std: the largest per-sample std, in [0, 1] units
    of the pixel range (0.03 = 7.65 gray levels). Returns a new (B, C, H, W) uint8 tensor (a copy of
    the images when max_std is 0)."""
    check_images(images)
    if not 0.0 <= max_std <= 1.0:
        raise ValueError(f"max_std must be in [0, 1] (units of the pixel range), got {max_std}")
    if max_std == 0.0 or images.numel() == 0:
        return images.clone()
    b = images.shape[0]
    out = torch.empty(images.shape, dtype=torch.uint8, device=images.device)  # an ordinary tensor for the caller
    with torch.inference_mode():  # (cheaper dispatch for the small ops)
        stds = uniform((b,), generator, images.device) * (255.0 * max_std)  # gray levels
        x = images.float()
        x += normal(tuple(images.shape), generator, images.device) * stds.view(b, 1, 1, 1)
        out.copy_(x.round_().clamp_(0, 255))
    return out
