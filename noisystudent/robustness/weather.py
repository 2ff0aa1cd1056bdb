"""Weather corruptions: snow, frost and fog, all generated procedurally (no image files).

Each function maps float32 images x: (B, C, H, W) in [0, 1] and one row of the severity table
(`SEVERITY_PARAMS` in `corruptions.py`) to float32 images of the same shape, not yet clipped.
Lengths in the table are pixels at 32x32 and are multiplied by `length_scale(H, W)`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from noisystudent.robustness import filters

# ITU-R 601 luma weights (OpenCV's RGB2GRAY), used by snow.
LUMA = (0.299, 0.587, 0.114)
# Colour of frost at full intensity (R, G, B): white with a slight blue cast.
FROST_TINT = (0.86, 0.93, 1.0)


def luminance(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, 1, H, W): the channel itself for C = 1, ITU-R 601 luma for C = 3."""
    if x.shape[1] == 1:
        return x
    return LUMA[0] * x[:, 0:1] + LUMA[1] * x[:, 1:2] + LUMA[2] * x[:, 2:3]


# ----------------------------------------------------------------------------------------------
# Fog: diamond-square plasma fractal
# ----------------------------------------------------------------------------------------------


def plasma_fractal(b: int, mapsize: int, decay: float, gen: torch.Generator) -> torch.Tensor:
    """(b, mapsize, mapsize) diamond-square fractals in [0, 1], Hendrycks' `plasma_fractal` batched.

    mapsize is a power of two; the map wraps around (toroidal). The random perturbation starts at
    +-100^2 and shrinks by `decay`^2 per halving of the step, so a smaller decay is rougher.
    """
    m = torch.zeros(b, mapsize, mapsize, device=gen.device)
    step, wibble = mapsize, 100.0

    def wibbled_mean(total: torch.Tensor) -> torch.Tensor:
        return total / 4 + wibble * filters.uniform(tuple(total.shape), gen, -wibble, wibble)

    while step >= 2:
        half = step // 2
        corners = m[:, 0::step, 0::step]  # (b, n, n)
        square = corners + corners.roll(-1, dims=1)
        square = square + square.roll(-1, dims=2)
        m[:, half::step, half::step] = wibbled_mean(square)
        centres = m[:, half::step, half::step]
        corners = m[:, 0::step, 0::step]
        left = centres + centres.roll(1, dims=1) + corners + corners.roll(-1, dims=2)
        m[:, 0::step, half::step] = wibbled_mean(left)
        top = centres + centres.roll(1, dims=2) + corners + corners.roll(-1, dims=1)
        m[:, half::step, 0::step] = wibbled_mean(top)
        step //= 2
        wibble /= decay
    m = m - m.amin(dim=(1, 2), keepdim=True)
    return m / m.amax(dim=(1, 2), keepdim=True).clamp_min(1e-12)


def fog(x: torch.Tensor, params: tuple, gen: torch.Generator) -> torch.Tensor:
    """Add a plasma fractal (the same for all channels), then rescale so the image maximum stays.

    params: (fog amount in [0, 1] units, fractal decay). The fractal map is the smallest power of
    two >= max(H, W), cropped, so the fog's largest features span the image at every size.
    """
    amount, decay = params
    b, _, h, w = x.shape
    mapsize = max(2, 1 << (max(h, w) - 1).bit_length())
    plasma = plasma_fractal(b, mapsize, decay, gen)[:, None, :h, :w]  # (B, 1, H, W)
    vmax = x.amax(dim=(1, 2, 3), keepdim=True)
    return (x + amount * plasma) * vmax / (vmax + amount)


# ----------------------------------------------------------------------------------------------
# Frost: six-armed ice crystals over a patchy haze
# ----------------------------------------------------------------------------------------------

# Crystal layers: (seeds per pixel at 32x32, arm length sigma px at 32x32): big sparse crystals
# and small dense ones, each crystal at its own random orientation.
FROST_LAYERS = ((0.006, 3.0), (0.03, 1.2))
FROST_HAZE_CELL = 8.0  # px at 32x32: size of the haze's blotches


def value_noise(b: int, h: int, w: int, cell: float, gen: torch.Generator) -> torch.Tensor:
    """(b, 1, h, w) smooth noise in [0, 1]: uniform values on a grid `cell` pixels apart, bilinear
    in between."""
    gh = int(math.ceil(h / cell)) + 1
    gw = int(math.ceil(w / cell)) + 1
    grid = filters.uniform((b, 1, gh, gw), gen)
    size = (int(round((gh - 1) * cell)) + 1, int(round((gw - 1) * cell)) + 1)
    up = F.interpolate(grid, size=size, mode="bilinear", align_corners=True)
    return up[..., :h, :w]


def ice_crystals(seeds: torch.Tensor, sigma: float, gen: torch.Generator) -> torch.Tensor:
    """Grow six arms, 60 degrees apart at a random orientation, from every nonzero pixel of seeds
    (B, 1, H, W): the pixel i px along an arm (rounded to whole pixels) gets seed *
    exp(-i^2 / 2 sigma^2), until that falls below 1%; where arms overlap the brightest wins.

    Seeds are sparse, so the arms are scattered from the K seeds (K * 6 * taps writes) instead of
    gathered at every pixel.
    """
    b, _, h, w = seeds.shape
    n = int(sigma * math.sqrt(2 * math.log(100.0))) + 1
    where = seeds.view(b, h * w).nonzero()  # (K, 2): image, flat position
    img, pos = where[:, 0], where[:, 1]
    value = seeds.view(b, h * w)[img, pos]  # (K,)
    angle = filters.uniform((len(img), 1), gen, 0.0, 60.0)  # (K, 1) degrees
    arms = torch.arange(6, device=seeds.device).view(1, 6, 1) * 60.0 + angle.view(-1, 1, 1)  # (K, 6, 1)
    taps = torch.arange(n + 1, device=seeds.device, dtype=torch.float32).view(1, 1, -1)  # (1, 1, n+1)
    rad = arms * (math.pi / 180.0)
    ys = (pos // w).view(-1, 1, 1) + torch.round(taps * torch.sin(rad)).long()  # (K, 6, n+1)
    xs = (pos % w).view(-1, 1, 1) + torch.round(taps * torch.cos(rad)).long()
    weight = torch.exp(-(taps**2) / (2.0 * sigma * sigma))  # (1, 1, n+1)
    values = (value.view(-1, 1, 1) * weight).expand_as(ys)
    inside = (ys >= 0) & (ys < h) & (xs >= 0) & (xs < w)
    flat = (img.view(-1, 1, 1) * (h * w) + ys * w + xs)[inside]
    out = torch.zeros(b * h * w, device=seeds.device)
    out.scatter_reduce_(0, flat, values[inside], reduce="amax")
    return out.view(b, 1, h, w)


def frost_texture(b: int, h: int, w: int, scale: float, gen: torch.Generator) -> torch.Tensor:
    """(b, 1, h, w) ice texture in [0, 1]: star-shaped crystals (random seeds of brightness
    0.4..1, `FROST_LAYERS`) brightened where a patchy haze is dense, over 0.25 x that haze."""
    crystals = torch.zeros(b, 1, h, w, device=gen.device)
    for density, sigma in FROST_LAYERS:
        seeds = (filters.uniform((b, 1, h, w), gen) < density / scale**2).float()
        seeds = seeds * filters.uniform((b, 1, h, w), gen, 0.4, 1.0)
        crystals = torch.maximum(crystals, ice_crystals(seeds, sigma * scale, gen))
    haze = value_noise(b, h, w, FROST_HAZE_CELL * scale, gen)
    return (0.25 * haze + crystals * (0.5 + haze)).clamp_(0, 1)


def frost(x: torch.Tensor, params: tuple, gen: torch.Generator) -> torch.Tensor:
    """a * image + b * frost texture (tinted light blue for colour images). params: (a, b)."""
    keep, add = params
    b, c, h, w = x.shape
    texture = frost_texture(b, h, w, filters.length_scale(h, w), gen)  # (B, 1, H, W)
    tint = torch.tensor(FROST_TINT, device=x.device)
    if c == 1:
        tint = (tint * torch.tensor(LUMA, device=x.device)).sum().view(1)
    return keep * x + add * texture * tint.view(1, c, 1, 1)


# ----------------------------------------------------------------------------------------------
# Snow: thresholded, zoomed Gaussian noise streaked by motion blur
# ----------------------------------------------------------------------------------------------


def snow(x: torch.Tensor, params: tuple, gen: torch.Generator) -> torch.Tensor:
    """Hendrycks' snow, batched. params: (mean, std, zoom, threshold, blur radius px, blur sigma px,
    image weight).

    Flakes: N(mean, std) per pixel, zoomed about the centre by `zoom` (flake size), values below
    `threshold` removed, streaked by a motion blur at an angle in [-135, -45) degrees (falling).
    The image is first brightened where dark (weight * x + (1 - weight) * max(x, 1.5 luma + 0.5)),
    then the flake layer and its 180-degree rotation are added.
    """
    mean, std, zoom_factor, threshold, radius, sigma, weight = params
    b, _, h, w = x.shape
    s = filters.length_scale(h, w)
    layer = mean + std * filters.normal((b, 1, h, w), gen)
    layer = filters.zoom(layer, zoom_factor)  # a factor: flakes stay a few pixels at every size
    layer = torch.where(layer < threshold, torch.zeros_like(layer), layer).clamp_(0, 1)
    angle = filters.uniform((b,), gen, -135.0, -45.0)
    layer = filters.motion_blur(layer, radius * s, sigma * s, angle)  # (B, 1, H, W)
    x = weight * x + (1 - weight) * torch.maximum(x, luminance(x) * 1.5 + 0.5)
    return x + layer + layer.flip(-2, -1)
