"""Noise corruptions: Gaussian, shot (Poisson) and impulse (salt-and-pepper) noise.

Each function maps float32 images x: (B, C, H, W) in [0, 1] and one row of the severity table
(`SEVERITY_PARAMS` in `corruptions.py`) to float32 images of the same shape, not yet clipped.
Noise is drawn independently per channel value, as in Hendrycks' code.
"""

from __future__ import annotations

import math

import torch

from noisystudent.robustness import filters


def gaussian_noise(x: torch.Tensor, params: tuple, gen: torch.Generator) -> torch.Tensor:
    """x + N(0, sigma^2). params: (sigma in [0, 1] units,)."""
    (sigma,) = params
    return x + sigma * filters.normal(tuple(x.shape), gen)


def shot_noise(x: torch.Tensor, params: tuple, gen: torch.Generator) -> torch.Tensor:
    """Poisson(x * photons) / photons. params: (photons per unit intensity,); fewer is noisier."""
    (photons,) = params
    return torch.poisson(x * photons, generator=gen) / photons


def impulse_noise(x: torch.Tensor, params: tuple, gen: torch.Generator) -> torch.Tensor:
    """Salt and pepper: exactly max(ceil(amount * C * H * W), min count) values of each image set
    to 0 or 1 (half each on average). params: (fraction of values replaced, minimum count).

    An exact count per image (skimage flips a coin per value) with a minimum that grows with the
    severity keeps 8x8 images from coming out unchanged, or the same at two severities. The
    values replaced at one severity are a subset of those replaced at the next (same seed).
    """
    amount, min_count = params
    b = x.shape[0]
    flat = x.reshape(b, -1)  # (B, C*H*W)
    count = min(flat.shape[1], max(int(min_count), int(math.ceil(amount * flat.shape[1]))))
    keys = filters.uniform(tuple(flat.shape), gen)
    chosen = torch.zeros_like(flat, dtype=torch.bool)
    chosen.scatter_(1, keys.topk(count, dim=1, largest=False).indices, True)  # (B, C*H*W)
    salt = (filters.uniform(tuple(flat.shape), gen) < 0.5).to(flat.dtype)
    return torch.where(chosen, salt, flat).view_as(x)
