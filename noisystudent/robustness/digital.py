"""Digital corruptions: brightness, contrast, elastic transform, pixelate, JPEG compression.

Each function maps float32 images x: (B, C, H, W) in [0, 1] and one row of the severity table
(`SEVERITY_PARAMS` in `corruptions.py`) to float32 images of the same shape, not yet clipped.
Lengths in the table are pixels at 32x32 and are multiplied by `length_scale(H, W)`.
"""

from __future__ import annotations

import math

import torch

from noisystudent.robustness import filters
from noisystudent.robustness.jpeg import jpeg


def brightness(x: torch.Tensor, params: tuple, gen: torch.Generator) -> torch.Tensor:
    """Add `delta` to the HSV value (max over channels), keeping hue and saturation. params: (delta,).

    With hue and saturation fixed, RGB scales with the value: x * V' / V, V' = min(V + delta, 1);
    a black pixel (V = 0) becomes gray V'. For C = 1 this is min(x + delta, 1).
    """
    (delta,) = params
    v = x.amax(dim=1, keepdim=True)  # (B, 1, H, W)
    v_new = (v + delta).clamp(max=1.0)
    return torch.where(v > 0, x * v_new / v.clamp_min(1e-12), v_new.expand_as(x))


def contrast(x: torch.Tensor, params: tuple, gen: torch.Generator) -> torch.Tensor:
    """(x - mean) * factor + mean, the mean per image and channel. params: (factor,)."""
    (factor,) = params
    mean = x.mean(dim=(2, 3), keepdim=True)
    return (x - mean) * factor + mean


def elastic_transform(x: torch.Tensor, params: tuple, gen: torch.Generator) -> torch.Tensor:
    """Random affine jitter plus a smooth random displacement field, one bilinear resampling.

    params: (displacement RMS px, field smoothness sigma px, affine jitter px). The affine maps
    three points around the centre (Hendrycks' triangle, +-min(H, W) // 3) to points jittered
    uniformly by +-jitter; the field is Gaussian-smoothed white noise scaled to the given RMS per
    image and axis. Borders reflect. Our own parameters: Hendrycks' tables are not monotone.
    """
    rms, sigma, jitter = params
    b, _, h, w = x.shape
    s = filters.length_scale(h, w)
    device = x.device
    # Affine: solve [p 1] @ A = p + jitter for the 3 source points, per image.
    cy, cx, r = (h - 1) / 2, (w - 1) / 2, max(1, min(h, w) // 3)
    pts = torch.tensor([[cx + r, cy + r], [cx + r, cy - r], [cx - r, cy - r]], device=device)  # (3, 2)
    moved = pts + filters.uniform((b, 3, 2), gen, -jitter * s, jitter * s)  # (B, 3, 2)
    ones = torch.ones(3, 1, device=device)
    affine = torch.linalg.solve(torch.cat([pts, ones], 1).expand(b, 3, 3), moved)  # (B, 3, 2)
    field = filters.smooth_field((b, 2, h, w), sigma * s, gen) * (rms * s)  # (B, 2, H, W)
    ys, xs = torch.meshgrid(torch.arange(h, device=device, dtype=torch.float32),
                            torch.arange(w, device=device, dtype=torch.float32), indexing="ij")
    px = xs + field[:, 0]  # (B, H, W) displaced positions
    py = ys + field[:, 1]
    src_x = affine[:, 0, 0].view(b, 1, 1) * px + affine[:, 1, 0].view(b, 1, 1) * py + affine[:, 2, 0].view(b, 1, 1)
    src_y = affine[:, 0, 1].view(b, 1, 1) * px + affine[:, 1, 1].view(b, 1, 1) * py + affine[:, 2, 1].view(b, 1, 1)
    return filters.sample(x, src_x, src_y, padding="reflection")


def pixelate_side(side: int, factor: float, min_shrink: int) -> int:
    """Side after pixelation: floor(factor * side) as in Hendrycks' code, but at least `min_shrink`
    pixels below `side`, and at least 1."""
    return max(1, min(int(math.floor(factor * side + 1e-9)), side - min_shrink))


def pixelate(x: torch.Tensor, params: tuple, gen: torch.Generator) -> torch.Tensor:
    """Average over cells side / new side pixels wide (PIL's BOX downscaling), then paint each
    pixel with the means of the cells it overlaps, weighted by the overlap (nearest neighbour for
    a pixel inside one cell). params: (size factor, minimum shrink px).

    The cell grid starts at a random offset per image and axis: with fixed cells the error of a
    non-integer cell width depends on where the cell edges fall on centred objects (a 28x28
    digit pixelated to 26 cells can lose more than at 25). The minimum shrink (= the severity)
    keeps the five severities at five different sizes on small images (8x8: 7, 6, 5, 4, 3 cells).
    """
    factor, min_shrink = params
    b, _, h, w = x.shape
    py = filters.pixelate_matrix(pixelate_side(h, factor, min_shrink), h, filters.uniform((b,), gen))  # (B, H, H)
    px = filters.pixelate_matrix(pixelate_side(w, factor, min_shrink), w, filters.uniform((b,), gen))  # (B, W, W)
    return torch.matmul(torch.matmul(py.unsqueeze(1), x), px.transpose(1, 2).unsqueeze(1))


def jpeg_compression(x: torch.Tensor, params: tuple, gen: torch.Generator) -> torch.Tensor:
    """Baseline JPEG encode + decode at `quality` (libjpeg scale, 1..100). params: (quality,)."""
    (quality,) = params
    return jpeg((x * 255).round_(), int(quality)) / 255
