"""Batched building blocks shared by the corruptions.

Every function takes float32 images x: (B, C, H, W) in [0, 1] on any device and returns a new
float tensor on x.device; none loops over images in Python. Random draws come from the
`torch.Generator` passed in, which lives on x.device (see `corrupt`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

REFERENCE_SIDE = 32  # the table's pixel lengths are for 32x32 images (CIFAR-10-C)


def length_scale(height: int, width: int) -> float:
    """Factor applied to the table's pixel lengths: 1 up to 32 pixels, min(H, W) / 32 above.

    Images smaller than 32x32 keep the CIFAR-10-C pixel lengths: shrinking a blur radius of 0.4 px
    with the image would make it invisible at 8x8.
    """
    return max(1.0, min(height, width) / REFERENCE_SIDE)


# ----------------------------------------------------------------------------------------------
# Random draws from a generator on the images' device
# ----------------------------------------------------------------------------------------------


def uniform(shape: tuple[int, ...], gen: torch.Generator, low: float = 0.0, high: float = 1.0) -> torch.Tensor:
    """Uniform float32 in [low, high) of `shape` on the generator's device."""
    return torch.rand(shape, generator=gen, device=gen.device).mul_(high - low).add_(low)


def normal(shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
    """Standard normal float32 of `shape` on the generator's device."""
    return torch.randn(shape, generator=gen, device=gen.device)


# ----------------------------------------------------------------------------------------------
# Convolutions
# ----------------------------------------------------------------------------------------------


def pad2d(x: torch.Tensor, left: int, right: int, top: int, bottom: int, mode: str = "reflect") -> torch.Tensor:
    """Pad the last two dims; "reflect" falls back to "replicate" where the image is too small."""
    h, w = x.shape[-2:]
    if mode == "reflect" and (max(top, bottom) >= h or max(left, right) >= w):
        mode = "replicate"
    return F.pad(x, (left, right, top, bottom), mode=mode)


def gaussian_kernel1d(sigma: float, truncate: float, device: torch.device) -> torch.Tensor:
    """(2r + 1,) normalised Gaussian taps, r = int(truncate * sigma + 0.5) as scipy.ndimage does."""
    radius = int(truncate * sigma + 0.5)
    if sigma <= 0 or radius == 0:
        return torch.ones(1, device=device)
    t = torch.arange(-radius, radius + 1, device=device, dtype=torch.float32)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return k / k.sum()


def conv2d_same(x: torch.Tensor, kernel: torch.Tensor, mode: str = "reflect") -> torch.Tensor:
    """Filter every channel with the odd-sized (kh, kw) kernel (correlation), borders padded by `mode`."""
    b, c, h, w = x.shape
    kh, kw = kernel.shape
    if kh == 1 and kw == 1:
        return x * kernel[0, 0]
    y = pad2d(x.reshape(b * c, 1, h, w), kw // 2, kw // 2, kh // 2, kh // 2, mode)
    return F.conv2d(y, kernel.view(1, 1, kh, kw).to(x)).view(b, c, h, w)


def gaussian_blur(x: torch.Tensor, sigma: float, truncate: float = 4.0, mode: str = "reflect") -> torch.Tensor:
    """Separable Gaussian blur with standard deviation `sigma` pixels (skimage.filters.gaussian)."""
    k = gaussian_kernel1d(sigma, truncate, x.device)
    if len(k) == 1:
        return x.clone()
    return conv2d_same(conv2d_same(x, k.view(1, -1), mode), k.view(-1, 1), mode)


def smooth_field(shape: tuple[int, int, int, int], sigma: float, gen: torch.Generator) -> torch.Tensor:
    """(B, C, H, W) Gaussian-smoothed white noise scaled to unit RMS per image and channel."""
    field = gaussian_blur(normal(shape, gen), sigma, truncate=3.0)
    rms = field.pow(2).mean(dim=(2, 3), keepdim=True).sqrt().clamp_min(1e-6)
    return field / rms


# ----------------------------------------------------------------------------------------------
# Resampling
# ----------------------------------------------------------------------------------------------


def shift(x: torch.Tensor, dx: torch.Tensor, dy: torch.Tensor) -> torch.Tensor:
    """out[b, :, y, x] = x[b, :, y - dy[b], x - dx[b]], edge pixels repeated. dx, dy: (B,) int64."""
    b, c, h, w = x.shape
    rows = (torch.arange(h, device=x.device).view(1, h, 1) - dy.view(b, 1, 1)).clamp_(0, h - 1)
    cols = (torch.arange(w, device=x.device).view(1, 1, w) - dx.view(b, 1, 1)).clamp_(0, w - 1)
    index = (rows * w + cols).view(b, 1, h * w).expand(b, c, h * w)  # (B, C, H*W)
    return torch.gather(x.reshape(b, c, h * w), 2, index).view(b, c, h, w)


def roll(x: torch.Tensor, dx: torch.Tensor, dy: torch.Tensor) -> torch.Tensor:
    """Like `shift` but wrapping around the borders (torch.roll with one offset per image)."""
    b, c, h, w = x.shape
    rows = (torch.arange(h, device=x.device).view(1, h, 1) - dy.view(b, 1, 1)).remainder_(h)
    cols = (torch.arange(w, device=x.device).view(1, 1, w) - dx.view(b, 1, 1)).remainder_(w)
    index = (rows * w + cols).view(b, 1, h * w).expand(b, c, h * w)
    return torch.gather(x.reshape(b, c, h * w), 2, index).view(b, c, h, w)


def motion_blur(x: torch.Tensor, radius: float, sigma: float, angle_deg: torch.Tensor) -> torch.Tensor:
    """Hendrycks' `_motion_blur` (ImageMagick's -motion-blur), one angle per image.

    Tap i = 0 .. 2*radius (pixels) takes the image shifted by i pixels along the angle, rounded to
    whole pixels, with weight exp(-i^2 / 2 sigma^2). Taps below 1e-4 of the first are skipped
    (<= 0.01% of the weight each), as are taps that would shift by a whole image side (Hendrycks
    stops there too); the weights used are renormalised to sum to 1. angle_deg: (B,).
    """
    b = x.shape[0]
    h, w = x.shape[-2:]
    n_taps = min(2 * int(round(radius)) + 1, int(sigma * math.sqrt(2 * math.log(1e4))) + 1)
    angle = angle_deg.to(x.device, torch.float32) * (math.pi / 180.0)
    sin, cos = torch.sin(angle), torch.cos(angle)
    out = torch.zeros_like(x)
    total = torch.zeros(b, device=x.device)
    for i in range(n_taps):
        dy = -torch.ceil(i * sin - 0.5).long()  # (B,)
        dx = -torch.ceil(i * cos - 0.5).long()
        inside = (dy.abs() < h) & (dx.abs() < w)
        if not bool(inside.any()):
            break
        weight = math.exp(-(i * i) / (2.0 * sigma * sigma)) * inside.float()  # (B,)
        out += weight.view(b, 1, 1, 1) * shift(x, dx, dy)
        total += weight
    return out / total.view(b, 1, 1, 1)


def zoom_matrix(n: int, zoom: float, device: torch.device) -> torch.Tensor:
    """(n, n) linear-interpolation matrix that zooms a length-n axis by `zoom` about its centre.

    Output pixel i samples the input at c + (i - c) / zoom, c = (n - 1) / 2, edges repeated.
    """
    c = (n - 1) / 2.0
    src = c + (torch.arange(n, device=device, dtype=torch.float32) - c) / zoom  # (n,)
    lo = torch.floor(src)
    frac = src - lo
    lo = lo.long()
    rows = torch.arange(n, device=device)
    m = torch.zeros(n, n, device=device)
    m.index_put_((rows, lo.clamp(0, n - 1)), 1.0 - frac, accumulate=True)
    m.index_put_((rows, (lo + 1).clamp(0, n - 1)), frac, accumulate=True)
    return m


def zoom(x: torch.Tensor, factor: float) -> torch.Tensor:
    """Centre zoom by `factor` >= 1 keeping the size (Hendrycks' `clipped_zoom`, bilinear)."""
    h, w = x.shape[-2:]
    my = zoom_matrix(h, factor, x.device)  # (H, H)
    mx = zoom_matrix(w, factor, x.device)  # (W, W)
    return torch.matmul(torch.matmul(my, x), mx.t())


def pixelate_matrix(n_cells: int, n: int, offset: torch.Tensor) -> torch.Tensor:
    """(B, n, n) matrices that replace each pixel of a length-n axis by the mean of the cells it
    overlaps, cells being n / n_cells pixels wide and starting `offset` (B,) cell widths before 0.

    Down: each cell averages the pixels it overlaps, weighted by the overlap (PIL's BOX). Up: each
    pixel takes the cells it overlaps, weighted the same way (nearest neighbour, except for pixels
    that straddle two cells, which mix them).
    """
    width = n / n_cells
    k = torch.arange(n_cells + 2, device=offset.device, dtype=torch.float32)  # edges of n_cells + 1 cells
    edges = (k.view(1, -1) - offset.float().view(-1, 1)) * width  # (B, n_cells + 2)
    lo, hi = edges[:, :-1, None], edges[:, 1:, None]  # (B, n_cells + 1, 1)
    pix = torch.arange(n, device=offset.device, dtype=torch.float32).view(1, 1, -1)
    overlap = (torch.minimum(hi, pix + 1) - torch.maximum(lo, pix)).clamp_(min=0)  # (B, cells, n)
    down = overlap / overlap.sum(dim=2, keepdim=True).clamp_min(1e-12)
    return overlap.transpose(1, 2) @ down  # (B, n, n); the rows of overlap.T sum to 1


def sample(x: torch.Tensor, src_x: torch.Tensor, src_y: torch.Tensor, padding: str = "reflection") -> torch.Tensor:
    """Bilinear sample of x at pixel positions (src_x, src_y): (B, H, W) each, pixel i centred at i."""
    h, w = x.shape[-2:]
    grid = torch.stack([(2 * src_x + 1) / w - 1, (2 * src_y + 1) / h - 1], dim=-1)  # (B, H, W, 2)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode=padding, align_corners=False)
