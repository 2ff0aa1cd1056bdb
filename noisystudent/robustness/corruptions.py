"""The 15 ImageNet-C corruptions (Hendrycks & Dietterich, ICLR 2019) at severities 1..5, batched.

    from noisystudent.robustness import CORRUPTIONS, corrupt
    foggy = corrupt(images, "fog", severity=3, seed=0)   # (N, C, H, W) uint8 -> same

Images are (N, C, H, W) uint8 with C in {1, 3}, any size, on any device; the whole batch is
corrupted with tensor ops (no loop over images). Every parameter is in `SEVERITY_PARAMS` below
(also in docs/ROBUSTNESS.md, with units). Values follow Hendrycks' CIFAR-10-C code
(`make_cifar_c.py`), which was written for 32x32 images like ours, except where noted there.

Sizes: lengths in pixels (blur radii, shuffle distances, streak lengths, displacements, texture
cells) are the 32x32 values, multiplied by min(H, W) / 32 for images larger than 32x32 and kept
as they are for smaller ones (a 0.4 px blur shrunk to 0.1 px would not change an 8x8 image).
Pixelate and zoom factors and the fog map are relative to the image size anyway.

Randomness: one `torch.Generator` on the images' device, seeded with `seed`, drawn from in a
fixed order; the same images, seed and device give exactly the same output, and every severity
of a corruption draws the same random numbers (so severities differ only by their parameters).
The CPU and a GPU give different (equally valid) draws.
"""

from __future__ import annotations

import numbers
from typing import Callable

import torch

from noisystudent.errors import UserError
from noisystudent.robustness import blur, digital, noise, weather

CorruptionFn = Callable[[torch.Tensor, tuple, torch.Generator], torch.Tensor]

# One row per corruption, one tuple per severity 1..5. Units (see docs/ROBUSTNESS.md):
# "px" = pixels at 32x32 (scaled up for larger images), intensities in [0, 1] units.
SEVERITY_PARAMS: dict[str, tuple[tuple[float, ...], ...]] = {
    # (sigma of the added noise,)
    "gaussian_noise": ((0.04,), (0.06,), (0.08,), (0.09,), (0.10,)),
    # (photons per unit intensity,)
    "shot_noise": ((500,), (250,), (100,), (75,), (50,)),
    # (fraction of values set to 0 or 1, minimum count per image)
    "impulse_noise": ((0.01, 1), (0.02, 2), (0.03, 3), (0.05, 4), (0.07, 5)),
    # (disk radius px, anti-alias Gaussian sigma px)
    "defocus_blur": ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1.0, 0.2), (1.5, 0.1)),
    # (Gaussian sigma px, max shuffle distance px, shuffle passes)
    "glass_blur": ((0.4, 1, 1), (0.4, 1, 2), (0.4, 1, 3), (0.4, 1, 5), (0.4, 1, 8)),
    # (kernel radius px, Gaussian sigma px)
    "motion_blur": ((10, 1.0), (10, 1.5), (10, 2.0), (10, 2.5), (12, 3.0)),
    # (largest zoom factor, zoom step)
    "zoom_blur": ((1.05, 0.01), (1.10, 0.01), (1.15, 0.01), (1.20, 0.01), (1.25, 0.01)),
    # (flake noise mean, std, zoom, threshold, streak radius px, streak sigma px, image weight)
    "snow": (
        (0.10, 0.20, 1.00, 0.60, 8, 3, 0.95),
        (0.10, 0.20, 1.00, 0.50, 10, 4, 0.90),
        (0.15, 0.30, 1.50, 0.50, 10, 4, 0.875),
        (0.25, 0.30, 1.50, 0.55, 12, 6, 0.85),
        (0.30, 0.30, 1.50, 0.50, 14, 8, 0.80),
    ),
    # (image weight, frost weight)
    "frost": ((1.0, 0.2), (1.0, 0.3), (0.9, 0.45), (0.85, 0.55), (0.75, 0.65)),
    # (fog amount, fractal decay)
    "fog": ((0.2, 3.0), (0.5, 3.0), (0.75, 2.5), (1.0, 2.0), (1.5, 1.75)),
    # (added HSV value,)
    "brightness": ((0.05,), (0.10,), (0.15,), (0.20,), (0.30,)),
    # (contrast factor,)
    "contrast": ((0.75,), (0.50,), (0.40,), (0.30,), (0.15,)),
    # (displacement RMS px, displacement smoothness sigma px, affine jitter px)
    "elastic_transform": ((0.4, 3.0, 0.25), (0.6, 3.0, 0.4), (0.8, 3.0, 0.55), (1.0, 3.0, 0.7), (1.25, 3.0, 0.85)),
    # (size factor, minimum shrink px)
    "pixelate": ((0.95, 1), (0.90, 2), (0.85, 3), (0.75, 4), (0.65, 5)),
    # (JPEG quality,)
    "jpeg_compression": ((80,), (65,), (58,), (50,), (40,)),
}

CORRUPTION_FUNCS: dict[str, CorruptionFn] = {
    "gaussian_noise": noise.gaussian_noise,
    "shot_noise": noise.shot_noise,
    "impulse_noise": noise.impulse_noise,
    "defocus_blur": blur.defocus_blur,
    "glass_blur": blur.glass_blur,
    "motion_blur": blur.motion_blur,
    "zoom_blur": blur.zoom_blur,
    "snow": weather.snow,
    "frost": weather.frost,
    "fog": weather.fog,
    "brightness": digital.brightness,
    "contrast": digital.contrast,
    "elastic_transform": digital.elastic_transform,
    "pixelate": digital.pixelate,
    "jpeg_compression": digital.jpeg_compression,
}

CORRUPTIONS: tuple[str, ...] = tuple(SEVERITY_PARAMS)
SEVERITIES: tuple[int, ...] = (1, 2, 3, 4, 5)
# Corruptions that draw no random numbers (the seed does not matter).
DETERMINISTIC: tuple[str, ...] = ("defocus_blur", "zoom_blur", "brightness", "contrast", "jpeg_compression")
# Images are corrupted in blocks of at most this many values (C * H * W * images), to bound memory.
BLOCK_VALUES = 1 << 21


def check_corruption(name: str, severity: int) -> None:
    """Raise UserError unless `name` is one of CORRUPTIONS and `severity` one of 1..5."""
    if name not in SEVERITY_PARAMS:
        raise UserError(f"unknown corruption {name!r}; expected one of: {', '.join(CORRUPTIONS)}")
    if isinstance(severity, bool) or not isinstance(severity, numbers.Integral) or severity not in SEVERITIES:
        raise UserError(f"severity must be an integer from 1 to 5, got {severity!r}")


def check_images(images: torch.Tensor) -> None:
    """Raise UserError unless images is an (N, C, H, W) uint8 tensor with C in {1, 3}."""
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.dim() != 4 \
            or images.shape[1] not in (1, 3):
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        dtype = images.dtype if isinstance(images, torch.Tensor) else ""
        raise UserError(f"expected (N, C, H, W) uint8 images with C = 1 or 3, got {shape} {dtype}".rstrip())


def corrupt(images: torch.Tensor, name: str, severity: int, seed: int = 0) -> torch.Tensor:
    """Corrupt (N, C, H, W) uint8 images with corruption `name` at `severity` (1..5).

    Returns a new (N, C, H, W) uint8 tensor on the same device. The same images, seed and device
    give exactly the same output; raises UserError for an unknown name or severity.
    """
    check_corruption(name, severity)
    check_images(images)
    params = SEVERITY_PARAMS[name][int(severity) - 1]
    fn = CORRUPTION_FUNCS[name]
    gen = torch.Generator(device=images.device).manual_seed(int(seed))
    n, c, h, w = images.shape
    block = max(1, BLOCK_VALUES // max(1, c * h * w))
    out = torch.empty_like(images)
    for start in range(0, n, block):
        x = images[start:start + block].float().div_(255)  # (b, C, H, W) in [0, 1]
        y = fn(x, params, gen)
        out[start:start + block] = y.mul_(255).round_().clamp_(0, 255).to(torch.uint8)
    return out
