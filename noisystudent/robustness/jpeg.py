"""Batched baseline JPEG (encode + decode) in torch: what Pillow's `save(..., "JPEG", quality=q)`
followed by a decode does, for a whole batch on any device.

Steps, as libjpeg with Pillow's defaults:
1. RGB -> YCbCr (JFIF, full range), each plane rounded to whole sample values; grayscale images
   (C = 1) are a single luma plane.
2. Colour only: 4:2:0 subsampling of the chroma planes, averaging 2x2 samples with libjpeg's
   rounding and edge padding.
3. Every plane: pad to a multiple of 8 (edge repeated), 8x8 blocks, orthonormal 2-D DCT-II of
   (sample - 128), divide by the quantisation table, round, multiply back, inverse DCT, + 128,
   round and clip to 0..255.
4. Colour only: upsample chroma 2x with the triangle filter (libjpeg's "fancy" upsampling, which
   is bilinear with half-pixel centres, in integers), YCbCr -> RGB.

Quality mapping (IJG `jpeg_quality_scaling`): scale = 5000 / q for q < 50, else 200 - 2q; each
entry of the standard tables of ITU-T T.81 Annex K becomes clip(floor((T * scale + 50) / 100), 1, 255).
The one difference from libjpeg is the float DCT instead of its integer `islow` DCT, which can
round a coefficient that lies within a few hundredths of a quantisation step of .5 the other way.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# ITU-T T.81 Annex K.1 (luminance) and K.2 (chrominance) quantisation tables, row-major.
LUMA_TABLE = (
    16, 11, 10, 16, 24, 40, 51, 61,
    12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77,
    24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101,
    72, 92, 95, 98, 112, 100, 103, 99,
)  # fmt: skip
CHROMA_TABLE = (
    17, 18, 24, 47, 99, 99, 99, 99,
    18, 21, 26, 66, 99, 99, 99, 99,
    24, 26, 56, 99, 99, 99, 99, 99,
    47, 66, 99, 99, 99, 99, 99, 99,
    99, 99, 99, 99, 99, 99, 99, 99,
    99, 99, 99, 99, 99, 99, 99, 99,
    99, 99, 99, 99, 99, 99, 99, 99,
    99, 99, 99, 99, 99, 99, 99, 99,
)  # fmt: skip


def quant_table(base: tuple[int, ...], quality: int, device: torch.device) -> torch.Tensor:
    """(8, 8) float32 quantisation table for `quality` in 1..100 (IJG scaling, baseline-clipped)."""
    q = min(100, max(1, int(quality)))
    scale = 5000 // q if q < 50 else 200 - 2 * q
    t = torch.tensor(base, dtype=torch.float32, device=device).view(8, 8)
    return torch.floor((t * scale + 50) / 100).clamp_(1, 255)


def dct_matrix(device: torch.device) -> torch.Tensor:
    """(8, 8) orthonormal DCT-II matrix D: coefficients = D @ block @ D.T."""
    k = torch.arange(8, dtype=torch.float64).view(-1, 1)  # built in float64 on the CPU
    n = torch.arange(8, dtype=torch.float64).view(1, -1)
    d = torch.cos((2 * n + 1) * k * math.pi / 16) * math.sqrt(2 / 8)
    d[0] = math.sqrt(1 / 8)
    return d.to(device, torch.float32)


def _pad_to(x: torch.Tensor, multiple: int, multiple_w: int | None = None) -> torch.Tensor:
    """Pad (B, 1, H, W) at the bottom / right to multiples of `multiple` (rows) and `multiple_w`
    (columns, default the same), repeating the edge."""
    h, w = x.shape[-2:]
    ph, pw = -h % multiple, -w % (multiple_w or multiple)
    return F.pad(x, (0, pw, 0, ph), mode="replicate") if ph or pw else x


def code_plane(plane: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Quantise one (B, 1, H, W) plane of 0..255 samples through the 8x8 DCT; H, W multiples of 8."""
    b, _, h, w = plane.shape
    d = dct_matrix(plane.device)
    blocks = (plane - 128).view(b, h // 8, 8, w // 8, 8).permute(0, 1, 3, 2, 4)  # (B, h/8, w/8, 8, 8)
    coef = d @ blocks @ d.t()
    coef = coef / table
    coef = torch.sign(coef) * torch.floor(coef.abs() + 0.5) * table  # libjpeg rounds halves away from 0
    out = d.t() @ coef @ d + 128
    out = out.permute(0, 1, 3, 2, 4).reshape(b, 1, h, w)
    return out.round_().clamp_(0, 255)


def downsample(plane: torch.Tensor) -> torch.Tensor:
    """libjpeg's 2x2 chroma average of (B, 1, H, W) integer samples (H, W even): (sum + bias) >> 2
    with bias 1, 2, 1, 2, ... along each row."""
    sums = F.avg_pool2d(plane, 2) * 4  # (B, 1, H/2, W/2) integer sums
    bias = 1.0 + (torch.arange(sums.shape[-1], device=plane.device) % 2)
    return torch.floor((sums + bias) / 4)


def fancy_upsample(plane: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """libjpeg's h2v2 "fancy" (triangle-filter) upsampling of (B, 1, h, w) to (B, 1, height, width).

    Each output sample is (9 nearest + 3 + 3 + 1 farther) / 16 of the four closest input samples
    (edges repeated), rounded with libjpeg's alternating bias (8 then 7 out of 16).
    """
    h, w = plane.shape[-2:]
    up_rows = torch.cat([plane[..., :1, :], plane[..., :-1, :]], dim=-2)  # row i - 1, clamped
    down_rows = torch.cat([plane[..., 1:, :], plane[..., -1:, :]], dim=-2)  # row i + 1, clamped
    colsum = torch.stack([3 * plane + up_rows, 3 * plane + down_rows], dim=-2).reshape(*plane.shape[:-2], 2 * h, w)
    left = torch.cat([colsum[..., :1], colsum[..., :-1]], dim=-1)
    right = torch.cat([colsum[..., 1:], colsum[..., -1:]], dim=-1)
    even = torch.floor((3 * colsum + left + 8) / 16)
    odd = torch.floor((3 * colsum + right + 7) / 16)
    out = torch.stack([even, odd], dim=-1).reshape(*plane.shape[:-2], 2 * h, 2 * w)
    return out[..., :height, :width]


def jpeg(images: torch.Tensor, quality: int) -> torch.Tensor:
    """Encode and decode float (B, C, H, W) images in 0..255 (C in {1, 3}); returns float 0..255."""
    b, c, h, w = images.shape
    luma_q = quant_table(LUMA_TABLE, quality, images.device)
    if c == 1:
        return code_plane(_pad_to(images.round(), 8), luma_q)[..., :h, :w]
    chroma_q = quant_table(CHROMA_TABLE, quality, images.device)
    r, g, bl = images[:, 0:1], images[:, 1:2], images[:, 2:3]
    y = (0.299 * r + 0.587 * g + 0.114 * bl).round_()
    cb = (-0.168736 * r - 0.331264 * g + 0.5 * bl + 128).round_().clamp_(0, 255)
    cr = (0.5 * r - 0.418688 * g - 0.081312 * bl + 128).round_().clamp_(0, 255)
    y = code_plane(_pad_to(y, 16), luma_q)
    # libjpeg repeats the last image column up to the chroma blocks' width before downsampling,
    # but the last image row only to an even height, then the last chroma row.
    cb = code_plane(_pad_to(downsample(_pad_to(cb, 2, 16)), 8), chroma_q)
    cr = code_plane(_pad_to(downsample(_pad_to(cr, 2, 16)), 8), chroma_q)
    ch, cw = (h + 1) // 2, (w + 1) // 2  # chroma samples that cover the image
    cb = fancy_upsample(cb[..., :ch, :cw], h, w)
    cr = fancy_upsample(cr[..., :ch, :cw], h, w)
    y = y[..., :h, :w]
    cb, cr = cb - 128, cr - 128
    rgb = torch.cat([y + 1.402 * cr, y - 0.344136 * cb - 0.714136 * cr, y + 1.772 * cb], dim=1)
    return rgb.round_().clamp_(0, 255)
