"""Batched RandAugment image ops on uint8 tensors.

Every op in `OP_FUNCS` has the signature ``op(x, mag, generator) -> out`` with
x: (b, C, H, W) uint8, C in {1, 3}, on any device; mag: (b,) float in [0, MAG_MAX], one strength
per sample; generator: a torch.Generator (on x.device, or on the CPU) or None for the global RNG.
The result is a new (b, C, H, W) uint8 tensor on x.device. No op loops over samples in Python.

Magnitude scale (as timm's ``_LEVEL_DENOM = 10``): mag = 10 is the strongest setting below,
mag = 0 leaves the image unchanged bit for bit for every op that has a strength; strengths are
linear in mag in between. Ops marked +- pick a random sign per sample, so strength is symmetric.

====================  ====================================  =================  ==============
op                    strength at mag = 10 (the maximum)    at mag = 0         units
====================  ====================================  =================  ==============
identity              (no strength)                         unchanged          -
autocontrast          (no strength: per-channel min..max    -                  -
                      -> 0..255, as PIL ImageOps)
equalize              (no strength: per-channel histogram   -                  -
                      equalization, as PIL ImageOps)
rotate +-             30 degrees (counter-clockwise if +)   0 degrees          degrees
shear_x, shear_y +-   0.3 (x_in = x_out + 0.3 * y_out)      0                  shear factor
translate_x/_y +-     0.45 of the image width / height      0                  fraction of size
solarize              threshold 0 (invert every pixel)      threshold 256      pixel value
posterize             keep 4 bits                           keep 8 bits        bits
color +-              saturation factor 1 +- 0.9            factor 1.0         blend factor
contrast +-           contrast factor 1 +- 0.9              factor 1.0         blend factor
brightness +-         brightness factor 1 +- 0.9            factor 1.0         blend factor
sharpness +-          sharpness factor 1 +- 0.9             factor 1.0         blend factor
cutout                gray square, side 0.5 of H and of W   side 0             fraction of size
====================  ====================================  =================  ==============

autocontrast and equalize have no strength, so they act at mag = 0 too (as in timm). Like PIL,
equalize leaves a channel unchanged when (pixels - count of its top value) < 255, so it never
changes images of fewer than 256 pixels (e.g. 8x8).

Integer parameters are truncated as timm does: posterize keeps ``8 - floor(0.4 * mag)`` bits, the
solarize threshold is ``256 - 25.6 * mag`` (pixels >= threshold are inverted), the cutout side is
``floor(0.05 * mag * size)`` pixels.

The math follows PIL (Pillow) closely, so that a PIL reference agrees pixel for pixel or nearly:
- enhance ops are ``Image.blend(degenerate, image, factor)``, i.e. ``trunc(clip(d + f * (x - d)))``
  in float32, with degenerate = grayscale (color), the rounded mean of the grayscale image
  (contrast), black (brightness), or the 3x3 SMOOTH filter [[1,1,1],[1,5,1],[1,1,1]] / 13 with the
  border pixels left unchanged (sharpness); grayscale is PIL's ITU-R 601-2 ``L`` conversion;
- geometric ops map each output pixel centre through an affine matrix about the image centre and
  sample bilinearly (edge pixels repeated within half a pixel of the border, values truncated like
  PIL's BILINEAR); output pixels whose source lies outside the image get `FILL` (gray).
All geometric ops of one batch go through a single `affine` call (`geometric`).
"""

from __future__ import annotations

import math
from typing import Callable

import torch

MAG_MAX = 10.0  # magnitude at full strength (timm's _LEVEL_DENOM)
FILL = 128  # gray pixel value written where geometric ops and cutout leave no image

MAX_ROTATE_DEG = 30.0  # degrees
MAX_SHEAR = 0.3  # shear factor (pixels of x shift per pixel of y, or vice versa)
MAX_TRANSLATE_FRAC = 0.45  # fraction of the image width (translate_x) or height (translate_y)
MAX_POSTERIZE_DROP_BITS = 4  # bits dropped at MAG_MAX: 8 -> 4 bits kept
SOLARIZE_THRESHOLD_MAG0 = 256.0  # pixel value; threshold at mag 0 (nothing inverted); 0 at MAG_MAX
MAX_ENHANCE_DELTA = 0.9  # blend factor = 1 +- MAX_ENHANCE_DELTA at MAG_MAX
MAX_CUTOUT_FRAC = 0.5  # cutout side as a fraction of H (rows) and W (columns)

# Bilinear values are truncated like PIL; this slack (in pixel-value units) keeps float32 rounding
# of the sampling positions from turning an exact value v into v - 1.
_TRUNC_SLACK = 1e-3
# |cos|, |sin| below this are taken as 0 so that rotations by multiples of 90 degrees are exact.
_SNAP_TO_ZERO = 1e-6

# PIL's RGB -> L weights (ITU-R 601-2, 16-bit fixed point): L = (19595 R + 38470 G + 7471 B + 2^15) >> 16
_L_WEIGHTS = (19595, 38470, 7471)

OpFn = Callable[[torch.Tensor, torch.Tensor, "torch.Generator | None"], torch.Tensor]


# ----------------------------------------------------------------------------------------------
# Random draws: always from `generator`; drawn on the generator's device, then moved to `device`.
# ----------------------------------------------------------------------------------------------


def _rng_device(generator: torch.Generator | None, device: torch.device) -> torch.device:
    return generator.device if generator is not None else torch.device(device)


def normal(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """Standard normal float32 of `shape` on `device`."""
    return torch.randn(shape, generator=generator, device=_rng_device(generator, device)).to(device)


def randint(
    low: int, high: int, shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device
) -> torch.Tensor:
    """Uniform integers in [low, high) (int64) of `shape` on `device`."""
    gen_device = _rng_device(generator, device)
    return torch.randint(low, high, shape, generator=generator, device=gen_device).to(device)


def random_sign(b: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """(b,) float32 of -1.0 / +1.0, each with probability 1/2."""
    return randint(0, 2, (b,), generator, device).float() * 2.0 - 1.0


# ----------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------


def _per_sample(v: torch.Tensor) -> torch.Tensor:
    """(b,) -> (b, 1, 1, 1), to broadcast over (b, C, H, W)."""
    return v.view(-1, 1, 1, 1)


def check_images(x: torch.Tensor) -> None:
    """Raise ValueError unless x is (B, C, H, W) uint8 with C in {1, 3}."""
    if x.dtype != torch.uint8 or x.dim() != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"expected (B, C, H, W) uint8 images with C in {{1, 3}}, got {tuple(x.shape)} {x.dtype}")


def _grayscale(x: torch.Tensor) -> torch.Tensor:
    """(b, C, H, W) uint8 -> (b, 1, H, W) int32, PIL's "L" conversion (identity for C = 1)."""
    xi = x.to(torch.int32)
    if x.shape[1] == 1:
        return xi
    r, g, b = xi[:, 0:1], xi[:, 1:2], xi[:, 2:3]
    wr, wg, wb = _L_WEIGHTS
    return (r * wr + g * wg + b * wb + (1 << 15)) >> 16


def _blend(degenerate: torch.Tensor, x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """PIL's Image.blend(degenerate, x, factor), per sample.

    degenerate: float32 broadcastable to x; x: (b, C, H, W) uint8; factor: (b,) float32.
    Returns (b, C, H, W) uint8 = trunc(clip(d + f * (x - d), 0, 255)), computed in float32 as PIL does.
    """
    xf = x.float()
    out = degenerate + _per_sample(factor.float()) * (xf - degenerate)
    return out.clamp_(0.0, 255.0).floor_().to(torch.uint8)


def _enhance_factor(mag: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """(b,) blend factor 1 +- MAX_ENHANCE_DELTA * mag / MAG_MAX with a random sign per sample."""
    sign = random_sign(mag.shape[0], generator, mag.device)
    return 1.0 + sign * (mag.float() * MAX_ENHANCE_DELTA / MAG_MAX)


def apply_lut(x: torch.Tensor, lut: torch.Tensor) -> torch.Tensor:
    """Per-image, per-channel lookup table.

    x: (b, C, H, W) uint8; lut: (b, C, 256) integer, values in 0..255. Returns (b, C, H, W) uint8.
    """
    b, c, h, w = x.shape
    index = x.reshape(b * c, h * w).long()  # (b*C, H*W)
    out = torch.gather(lut.reshape(b * c, 256).long(), 1, index)
    return out.to(torch.uint8).view(b, c, h, w)


def histogram(x: torch.Tensor) -> torch.Tensor:
    """(b, C, H, W) uint8 -> (b, C, 256) int64 per-image, per-channel histogram."""
    b, c, h, w = x.shape
    index = x.reshape(b * c, h * w).long()
    counts = torch.zeros(b * c, 256, dtype=torch.int64, device=x.device)
    counts.scatter_add_(1, index, torch.ones_like(index))
    return counts.view(b, c, 256)


# ----------------------------------------------------------------------------------------------
# Pixel ops
# ----------------------------------------------------------------------------------------------


def identity(x: torch.Tensor, mag: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Returns a copy of x."""
    return x.clone()


def autocontrast(x: torch.Tensor, mag: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """PIL ImageOps.autocontrast (cutoff 0): map each channel's min..max to 0..255; mag unused.

    A channel with min == max is left unchanged. The map is PIL's ``int(v * scale + offset)``
    with scale = 255 / (hi - lo), offset = -lo * scale, computed in float64 as Python does.
    """
    lo = x.amin(dim=(2, 3)).double()  # (b, C)
    hi = x.amax(dim=(2, 3)).double()
    flat = hi <= lo
    # tensor / tensor: `255.0 / tensor` may use a reciprocal and differ from Python's 255.0 / d by 1 ulp
    scale = torch.full_like(hi, 255.0) / torch.where(flat, torch.ones_like(hi), hi - lo)
    offset = -lo * scale
    values = torch.arange(256, device=x.device, dtype=torch.float64)  # (256,)
    lut = torch.trunc(values * scale[..., None] + offset[..., None]).clamp_(0, 255)  # (b, C, 256)
    lut = torch.where(flat[..., None], values, lut)
    return apply_lut(x, lut)


def equalize(x: torch.Tensor, mag: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """PIL ImageOps.equalize, per image and channel; mag unused.

    With h the channel histogram and `last` the count of its highest occupied bin:
    step = (sum(h) - last) // 255; value v maps to (step // 2 + sum(h[:v])) // step (at most 255).
    Channels with one occupied bin or step == 0 are left unchanged.
    """
    h = histogram(x)  # (b, C, 256) int64
    occupied = h > 0
    n_occupied = occupied.sum(-1)  # (b, C)
    bins = torch.arange(256, device=x.device)
    last_bin = torch.where(occupied, bins, torch.full_like(bins, -1)).amax(-1).clamp(min=0)  # (b, C)
    last = h.gather(-1, last_bin[..., None]).squeeze(-1)
    step = (h.sum(-1) - last) // 255  # (b, C)
    keep = (n_occupied <= 1) | (step == 0)
    safe_step = step.clamp(min=1)[..., None]
    below = torch.cumsum(h, -1) - h  # (b, C, 256): pixels with a smaller value
    lut = ((safe_step // 2 + below) // safe_step).clamp_(max=255)
    lut = torch.where(keep[..., None], bins.expand_as(lut), lut)
    return apply_lut(x, lut)


def solarize(x: torch.Tensor, mag: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """PIL ImageOps.solarize: invert pixels >= threshold = 256 - 25.6 * mag (256 at mag 0, 0 at 10)."""
    threshold = SOLARIZE_THRESHOLD_MAG0 - mag.float() * SOLARIZE_THRESHOLD_MAG0 / MAG_MAX  # (b,)
    threshold = torch.ceil(threshold).to(torch.int16)  # pixel >= t  <=>  pixel >= ceil(t)
    return torch.where(x.to(torch.int16) >= _per_sample(threshold), 255 - x, x)


def posterize(x: torch.Tensor, mag: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """PIL ImageOps.posterize: keep the top 8 - floor(0.4 * mag) bits (8 at mag 0, 4 at mag 10)."""
    drop = torch.floor(mag.float() * MAX_POSTERIZE_DROP_BITS / MAG_MAX).clamp_(0, 8)  # (b,) bits dropped
    drop = drop.to(torch.int32)
    mask = (256 - 2**drop).to(torch.uint8)  # (b,) e.g. 0b11110000 for drop = 4
    return x & _per_sample(mask)


def adjust_color(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """PIL ImageEnhance.Color(x).enhance(factor) per sample; factor (b,). Identity for 1 channel."""
    if x.shape[1] == 1:
        return x.clone()
    return _blend(_grayscale(x).float(), x, factor)


def adjust_contrast(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """PIL ImageEnhance.Contrast: blend with the rounded mean of the grayscale image; factor (b,)."""
    gray = _grayscale(x)  # (b, 1, H, W) int32
    n = gray.shape[-1] * gray.shape[-2]
    total = gray.sum(dim=(1, 2, 3), dtype=torch.int64)  # (b,)
    mean = (2 * total + n) // (2 * n)  # int(total / n + 0.5), exact
    return _blend(_per_sample(mean.float()), x, factor)


def adjust_brightness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """PIL ImageEnhance.Brightness: blend with black; factor (b,)."""
    return _blend(torch.zeros((), device=x.device), x, factor)


def adjust_sharpness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """PIL ImageEnhance.Sharpness: blend with the SMOOTH-filtered image; factor (b,).

    SMOOTH is [[1,1,1],[1,5,1],[1,1,1]] / 13 rounded half up (PIL's float sum rounds the same);
    border pixels keep their value.
    """
    h, w = x.shape[2], x.shape[3]
    xf = x.float()  # (b, C, H, W)
    smooth = xf.clone()  # border pixels stay the original
    if h >= 3 and w >= 3:
        rows = xf[:, :, :-2] + xf[:, :, 1:-1] + xf[:, :, 2:]  # (b, C, H-2, W) vertical 3-sums
        box = rows[..., :-2] + rows[..., 1:-1] + rows[..., 2:]  # (b, C, H-2, W-2) 3x3 sums
        total = box + 4.0 * xf[:, :, 1:-1, 1:-1]  # kernel [[1,1,1],[1,5,1],[1,1,1]], exact integers
        smooth[:, :, 1:-1, 1:-1] = torch.floor((total + 6.0) / 13.0)
    return _blend(smooth, x, factor)


def color(x: torch.Tensor, mag: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Saturation, factor 1 +- 0.9 * mag / 10 (`adjust_color`); identity for 1 channel."""
    return adjust_color(x, _enhance_factor(mag, generator))


def contrast(x: torch.Tensor, mag: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Contrast, factor 1 +- 0.9 * mag / 10 (`adjust_contrast`)."""
    return adjust_contrast(x, _enhance_factor(mag, generator))


def brightness(x: torch.Tensor, mag: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Brightness, factor 1 +- 0.9 * mag / 10 (`adjust_brightness`)."""
    return adjust_brightness(x, _enhance_factor(mag, generator))


def sharpness(x: torch.Tensor, mag: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Sharpness, factor 1 +- 0.9 * mag / 10 (`adjust_sharpness`)."""
    return adjust_sharpness(x, _enhance_factor(mag, generator))


def cutout(x: torch.Tensor, mag: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Fill a FILL-gray rectangle of floor(0.05 * mag * H) x floor(0.05 * mag * W) pixels.

    Its centre is a uniformly random pixel; the rectangle is clipped at the image border
    (as in the TF RandAugment used by Noisy Student).
    """
    b, _, h, w = x.shape
    device = x.device
    cy = randint(0, h, (b,), generator, device)  # (b,) centre row
    cx = randint(0, w, (b,), generator, device)  # (b,) centre column
    frac = mag.float() * MAX_CUTOUT_FRAC / MAG_MAX  # (b,)
    side_h = torch.floor(frac * h).long()
    side_w = torch.floor(frac * w).long()
    y0, x0 = cy - side_h // 2, cx - side_w // 2
    rows = torch.arange(h, device=device)
    cols = torch.arange(w, device=device)
    in_rows = (rows >= y0[:, None]) & (rows < (y0 + side_h)[:, None])  # (b, H)
    in_cols = (cols >= x0[:, None]) & (cols < (x0 + side_w)[:, None])  # (b, W)
    inside = in_rows[:, None, :, None] & in_cols[:, None, None, :]  # (b, 1, H, W)
    return torch.where(inside, torch.full((), FILL, dtype=torch.uint8, device=device), x)


# ----------------------------------------------------------------------------------------------
# Geometric ops: one affine resampling for any mix of rotate / shear / translate.
# ----------------------------------------------------------------------------------------------

GEOMETRIC_KINDS = ("rotate", "shear_x", "shear_y", "translate_x", "translate_y")
# Full-strength value of each kind, in its units (degrees, shear factor, fraction of size).
GEOMETRIC_MAX = (MAX_ROTATE_DEG, MAX_SHEAR, MAX_SHEAR, MAX_TRANSLATE_FRAC, MAX_TRANSLATE_FRAC)


def geometric_matrix(kind: torch.Tensor, value: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Per-sample output -> input affine matrices [A | t] in pixels about the image centre.

    kind: (b,) long index into GEOMETRIC_KINDS; value: (b,) float, signed, in the kind's units
    (degrees counter-clockwise; shear factor; fraction of W or H). Returns (b, 2, 3) float32.
    The output pixel centre p (pixels from the image centre, x right, y down) samples the input
    at A p + t: rotate A = [[cos, -sin], [sin, cos]]; shear_x A = [[1, v], [0, 1]];
    shear_y A = [[1, 0], [v, 1]]; translate_x t = (v * W, 0); translate_y t = (0, v * H). These are
    PIL's conventions (Image.rotate, and the Image.transform matrices timm uses, about the centre).
    """
    value = value.float()
    zero = torch.zeros_like(value)

    def only(k: str) -> torch.Tensor:
        return torch.where(kind == GEOMETRIC_KINDS.index(k), value, zero)

    angle = only("rotate") * (math.pi / 180.0)
    cos, sin = torch.cos(angle), torch.sin(angle)
    # Like PIL (which rounds to 15 decimals), make multiples of 90 degrees exact.
    cos = torch.where(cos.abs() < _SNAP_TO_ZERO, zero, cos)
    sin = torch.where(sin.abs() < _SNAP_TO_ZERO, zero, sin)
    row_x = torch.stack([cos, only("shear_x") - sin, only("translate_x") * width], -1)  # (b, 3)
    row_y = torch.stack([only("shear_y") + sin, cos, only("translate_y") * height], -1)
    return torch.stack([row_x, row_y], -2)  # (b, 2, 3)


def affine(x: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """Bilinear affine resampling like PIL's ``Image.transform(AFFINE, BILINEAR, fillcolor=FILL)``.

    x: (b, C, H, W) uint8; matrix: (b, 2, 3) from `geometric_matrix` (output -> input, pixels,
    about the centre). Each output pixel centre is mapped into the input; if it lands outside the
    image the pixel is FILL, else it is interpolated from its 4 neighbours (indices clamped to the
    image, so the edge repeats within half a pixel of the border) and truncated like PIL.
    Returns (b, C, H, W) uint8.
    """
    b, c, h, w = x.shape
    device = x.device
    m = matrix.float().view(b, 2, 3, 1, 1)
    px = (torch.arange(w, device=device) + (0.5 - w / 2)).view(1, 1, w)  # (1, 1, W) exact
    py = (torch.arange(h, device=device) + (0.5 - h / 2)).view(1, h, 1)  # (1, H, 1)
    # Source position in pixel-index coordinates (pixel i has its centre at i), (b, H, W).
    u = m[:, 0, 0] * px + m[:, 0, 1] * py + (m[:, 0, 2] + (w / 2 - 0.5))
    v = m[:, 1, 0] * px + m[:, 1, 1] * py + (m[:, 1, 2] + (h / 2 - 0.5))
    inside = (u >= -0.5) & (u < w - 0.5) & (v >= -0.5) & (v < h - 0.5)  # (b, H, W)
    u0, v0 = torch.floor(u), torch.floor(v)
    fu, fv = (u - u0).unsqueeze(1), (v - v0).unsqueeze(1)  # (b, 1, H, W) weights of the +1 taps
    x0 = u0.long().clamp_(0, w - 1)
    x1 = (u0.long() + 1).clamp_(0, w - 1)
    y0 = v0.long().clamp_(0, h - 1) * w
    y1 = (v0.long() + 1).clamp_(0, h - 1) * w
    flat = x.reshape(b, c, h * w).float()  # (b, C, H*W)

    def tap(row: torch.Tensor, col: torch.Tensor) -> torch.Tensor:
        index = (row + col).view(b, 1, h * w).expand(b, c, h * w)
        return torch.gather(flat, 2, index).view(b, c, h, w)

    top, top_right = tap(y0, x0), tap(y0, x1)
    bottom, bottom_right = tap(y1, x0), tap(y1, x1)
    top = top + (top_right - top) * fu  # PIL's order: along x, then along y
    bottom = bottom + (bottom_right - bottom) * fu
    values = top + (bottom - top) * fv  # (b, C, H, W) float32
    values = values.add_(_TRUNC_SLACK).floor_().clamp_(0, 255).to(torch.uint8)
    return torch.where(inside.unsqueeze(1), values, torch.full((), FILL, dtype=torch.uint8, device=device))


def geometric(
    x: torch.Tensor, kind: torch.Tensor, mag: torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Any mix of rotate / shear / translate in one resampling; a random sign per sample.

    x: (b, C, H, W) uint8; kind: (b,) long index into GEOMETRIC_KINDS; mag: (b,) in [0, MAG_MAX].
    """
    sign = random_sign(x.shape[0], generator, x.device)
    full = torch.tensor(GEOMETRIC_MAX, device=x.device)[kind]  # (b,) full-strength value
    value = sign * mag.float() * full / MAG_MAX
    return affine(x, geometric_matrix(kind, value, x.shape[2], x.shape[3]))


def rotate_by(x: torch.Tensor, degrees: torch.Tensor) -> torch.Tensor:
    """Rotate each image counter-clockwise by `degrees` (b,) about its centre (PIL Image.rotate)."""
    kind = torch.full((x.shape[0],), GEOMETRIC_KINDS.index("rotate"), device=x.device)
    return affine(x, geometric_matrix(kind, degrees, x.shape[2], x.shape[3]))


def _geometric_op(name: str) -> OpFn:
    index = GEOMETRIC_KINDS.index(name)

    def op(x: torch.Tensor, mag: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        kind = torch.full((x.shape[0],), index, device=x.device)
        return geometric(x, kind, mag, generator)

    op.__name__ = op.__qualname__ = name
    op.__doc__ = f"{name}: one of the geometric ops, see `geometric` (max {GEOMETRIC_MAX[index]:g})."
    return op


rotate = _geometric_op("rotate")
shear_x = _geometric_op("shear_x")
shear_y = _geometric_op("shear_y")
translate_x = _geometric_op("translate_x")
translate_y = _geometric_op("translate_y")

# Name -> op, in the order RandAugment draws from.
OP_FUNCS: dict[str, OpFn] = {
    "identity": identity,
    "autocontrast": autocontrast,
    "equalize": equalize,
    "rotate": rotate,
    "solarize": solarize,
    "color": color,
    "posterize": posterize,
    "contrast": contrast,
    "brightness": brightness,
    "sharpness": sharpness,
    "shear_x": shear_x,
    "shear_y": shear_y,
    "translate_x": translate_x,
    "translate_y": translate_y,
    "cutout": cutout,
}
OPS: tuple[str, ...] = tuple(OP_FUNCS)
