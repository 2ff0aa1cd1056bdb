"""Blur corruptions: defocus, glass, motion and zoom blur.

Each function maps float32 images x: (B, C, H, W) in [0, 1] and one row of the severity table
(`SEVERITY_PARAMS` in `corruptions.py`) to float32 images of the same shape, not yet clipped.
Lengths in the table are pixels at 32x32 and are multiplied by `length_scale(H, W)`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from noisystudent.robustness import filters


def disk_kernel(radius: float, alias_sigma: float, device: torch.device) -> torch.Tensor:
    """Hendrycks' `disk`: the pixels with x^2 + y^2 <= radius^2, normalised, then Gaussian-blurred
    with `alias_sigma` (anti-aliasing). Returns an odd square (k, k) kernel summing to 1."""
    r = int(math.floor(radius))
    t = torch.arange(-r, r + 1, device=device, dtype=torch.float32)
    disk = ((t.view(-1, 1) ** 2 + t.view(1, -1) ** 2) <= radius**2).float()  # (2r+1, 2r+1)
    disk = disk / disk.sum()
    g = filters.gaussian_kernel1d(alias_sigma, truncate=3.0, device=device)  # (2g+1,)
    pad = len(g) // 2
    kernel = F.conv2d(F.pad(disk.view(1, 1, 2 * r + 1, 2 * r + 1), (pad, pad, pad, pad)),
                      (g.view(-1, 1) * g.view(1, -1)).view(1, 1, len(g), len(g)), padding=pad)
    kernel = kernel[0, 0]
    return kernel / kernel.sum()


def defocus_blur(x: torch.Tensor, params: tuple, gen: torch.Generator) -> torch.Tensor:
    """Filter with an anti-aliased disk. params: (radius px, anti-alias sigma px)."""
    radius, alias_sigma = params
    s = filters.length_scale(*x.shape[-2:])
    return filters.conv2d_same(x, disk_kernel(radius * s, alias_sigma * s, x.device))


def glass_blur(x: torch.Tensor, params: tuple, gen: torch.Generator) -> torch.Tensor:
    """Gaussian blur, local pixel shuffles, Gaussian blur. params: (sigma px, max shift px, passes).

    Hendrycks swaps every pixel in turn (bottom-right to top-left) with a random neighbour at most
    `max shift` pixels away. Here the swaps run in parallel: the pixels of one pass are split into
    (2d + 1)^2 interleaved grids of spacing 2d + 1, so that the swaps within one grid never touch
    the same pixel, and the grids go from bottom-right to top-left; as in Hendrycks' scan, a
    pixel can be carried along by several swaps of one pass. Shifts are uniform in [-d, d] for
    both axes (Hendrycks' numpy draw gives [-d, d - 1]).
    """
    sigma, max_shift, passes = params
    b, c, h, w = x.shape
    s = filters.length_scale(h, w)
    d = max(1, int(round(max_shift * s)))
    x = filters.gaussian_blur(x, sigma * s, mode="replicate")
    perm = torch.arange(h * w, device=x.device).expand(b, h * w).clone()  # (B, H*W) source pixel
    rows = torch.arange(d, h - d, device=x.device)  # pixels whose every neighbour is inside
    cols = torch.arange(d, w - d, device=x.device)
    span = 2 * d + 1
    grids = []  # flat positions of each interleaved grid, bottom-right grid first
    for oy in reversed(range(span)):
        for ox in reversed(range(span)):
            grid_rows, grid_cols = rows[rows % span == oy], cols[cols % span == ox]
            if len(grid_rows) and len(grid_cols):
                grids.append((grid_rows.view(-1, 1) * w + grid_cols.view(1, -1)).flatten())  # (M,)
    for _ in range(int(passes)):
        for here in grids:
            here = here.expand(b, -1)  # (B, M)
            step = torch.randint(0, span * span, here.shape, generator=gen, device=gen.device).to(x.device)
            there = here + (step // span - d) * w + (step % span - d)  # (B, M) partners, all distinct
            mine = perm.gather(1, here)
            perm.scatter_(1, here, perm.gather(1, there))
            perm.scatter_(1, there, mine)
    index = perm.view(b, 1, h * w).expand(b, c, h * w)
    x = torch.gather(x.reshape(b, c, h * w), 2, index).view(b, c, h, w)
    return filters.gaussian_blur(x, sigma * s, mode="replicate")


def motion_blur(x: torch.Tensor, params: tuple, gen: torch.Generator) -> torch.Tensor:
    """One-sided Gaussian streak at a random angle in [-45, 45) degrees. params: (radius px, sigma px)."""
    radius, sigma = params
    s = filters.length_scale(*x.shape[-2:])
    angle = filters.uniform((x.shape[0],), gen, -45.0, 45.0)
    return filters.motion_blur(x, radius * s, sigma * s, angle)


def zoom_blur(x: torch.Tensor, params: tuple, gen: torch.Generator) -> torch.Tensor:
    """Mean of the image and its centre zooms by 1, 1 + step, ..., max zoom. params: (max zoom, step)."""
    max_zoom, step = params
    n = int(round((max_zoom - 1.0) / step)) + 1
    out = x.clone()
    for k in range(n):
        out += filters.zoom(x, 1.0 + k * step)
    return out / (n + 1)
