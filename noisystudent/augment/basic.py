"""The weak augmentation used for every training run (teacher and students): crop + flip.

`random_crop_flip` is the batched, per-sample form of "pad by `pad` pixels, take a random
H x W crop, flip left-right with probability 1/2": each image is translated by a random
(dy, dx) in [-pad, pad]^2 pixels, the uncovered border is filled with zeros (or the edge pixels
repeated), then mirrored horizontally in about half of the samples.
"""

from __future__ import annotations

import torch

from noisystudent.augment.ops import check_images, randint

PAD_MODES = ("zeros", "edge")


def random_crop_flip(
    images: torch.Tensor,
    pad: int = 2,
    flip: bool = True,
    generator: torch.Generator | None = None,
    mode: str = "zeros",
) -> torch.Tensor:
    """Random translation by up to `pad` pixels per axis and a random horizontal flip, per sample.

    images: (B, C, H, W) uint8 on any device. pad: max shift in pixels (>= 0). flip: whether to
    mirror (probability 1/2 per sample). mode: "zeros" fills uncovered pixels with 0, "edge"
    repeats the nearest edge pixel. Returns a new (B, C, H, W) uint8 tensor on the same device.
    """
    check_images(images)
    if pad < 0:
        raise ValueError(f"pad must be >= 0 pixels, got {pad}")
    if mode not in PAD_MODES:
        raise ValueError(f"mode must be one of {PAD_MODES}, got {mode!r}")
    b, c, h, w = images.shape
    device = images.device
    shift = randint(-pad, pad + 1, (b, 2), generator, device)  # (B, 2) pixels (dy, dx)
    rows = torch.arange(h, device=device) + shift[:, 0:1]  # (B, H) source row of each output row
    cols = torch.arange(w, device=device).expand(b, w)  # (B, W)
    if flip:
        mirrored = randint(0, 2, (b, 1), generator, device).bool()  # (B, 1)
        cols = torch.where(mirrored, w - 1 - cols, cols)
    cols = cols + shift[:, 1:2]  # (B, W) source column of each output column
    valid = ((rows >= 0) & (rows < h))[:, :, None] & ((cols >= 0) & (cols < w))[:, None, :]  # (B, H, W)
    rows, cols = rows.clamp(0, h - 1), cols.clamp(0, w - 1)  # "edge" mode; zeroed below otherwise
    index = (rows[:, :, None] * w + cols[:, None, :]).view(b, 1, h * w).expand(b, c, h * w)
    out = torch.gather(images.reshape(b, c, h * w), 2, index).view(b, c, h, w)
    if mode == "zeros":
        out = out * valid[:, None].to(torch.uint8)
    return out
