"""Batched RandAugment image ops on uint8 tensors.

Every op in `OP_FUNCS` has the signature ``op(x, mag, generator) -> out`` with
x: (b, C, H, W) uint8, C in {1, 3}, on any device; mag: (b,) float in [0, MAG_MAX], one strength
per sample; generator: a torch.Generator (on x.device, or on the CPU) or None for the global RNG.
The result is a new (b, C, H, W) uint8 tensor on x.device. No op loops over samples in Python.
Each draws its random parts (a sign per sample for the +- ops, a centre pixel for cutout) and
calls `apply_op(x, name, mag, sign, centre)`, the same op with those parts given. That turns them
into one row of `sample_params` per sample (every op's parameters) and runs `PIXEL_OPS[name]` or
the geometric resampling; RandAugment does the same steps for a whole batch at once.

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
solarize threshold is ``256 - floor(25.6 * mag)`` (pixels >= threshold are inverted), the cutout
side is ``floor(0.05 * mag * size)`` pixels. Parameters are computed in float64 in the order the
PIL reference (benchmarks/pil_randaugment.py) computes them, so both draw the same integers.

The math follows PIL (Pillow), so that the PIL reference (benchmarks/pil_randaugment.py) agrees
pixel for pixel (tests/test_augment.py, benchmarks/augment.py):
- enhance ops are ``Image.blend(degenerate, image, factor)``, i.e. ``trunc(clip(d + f * (x - d)))``
  in float32 with f rounded to float32 as PIL does, with degenerate = grayscale (color), the
  rounded mean of the grayscale image (contrast), black (brightness), or the 3x3 SMOOTH filter
  [[1,1,1],[1,5,1],[1,1,1]] / 13 with the border pixels left unchanged (sharpness); grayscale is
  PIL's ITU-R 601-2 ``L`` conversion;
- autocontrast and equalize build PIL's per-channel 256-entry tables (float64, as PIL's Python);
- geometric ops resample with NEAREST, PIL's default for ``Image.rotate`` / ``Image.transform``
  and the interpolation of the TF RandAugment used by Noisy Student (timm picks bilinear or
  bicubic; nearest keeps every pixel an input value, costs one index gather, and is exact): the
  per-sample PIL coefficients are computed in float64 as PIL computes them, then every output
  pixel takes the input pixel PIL's C code picks (its 16.16 fixed-point walk, or for pure
  translations its float64 walk); pixels that map outside the image get `FILL` (gray). So they
  equal PIL's NEAREST result bit for bit, unless a sampling position lands within ~1e-12 pixel
  of a pixel edge (PIL accumulates the walk, we multiply) or cos / sin differ from libm's.
All geometric ops of one batch share one resampling (`geometric`; RandAugment uses `resample`
and, for translations and shear_x, the cheaper row copies of `shift_rows`).

Speed (CPU, one thread; see benchmarks/augment.py): no op converts to float more than it must.
Pixels stay uint8 or int16 where the math allows (posterize is one AND; solarize an int16 XOR
mask; sharpness sums its 3x3 window in int16); lookup tables are applied with one index_select
on an int32 index (pixel value + 256 * channel number), which also feeds the bincount
histogram; geometric ops gather from an int64 index built from separable 1-D fixed-point terms;
every op can write into its input (``out=``), which RandAugment uses to avoid copies. The work
runs under torch.inference_mode() (cheaper dispatch of the many small ops) and lands in an output
tensor allocated outside it, so callers get an ordinary tensor.
"""

from __future__ import annotations

import functools
import math
from typing import Callable

import torch
import torch.nn.functional as F

MAG_MAX = 10.0  # magnitude at full strength (timm's _LEVEL_DENOM)
FILL = 128  # gray pixel value written where geometric ops and cutout leave no image
LEVELS = 256  # grey levels of a uint8 channel: lookup tables have this many entries

MAX_ROTATE_DEG = 30.0  # degrees
MAX_SHEAR = 0.3  # shear factor (pixels of x shift per pixel of y, or vice versa)
MAX_TRANSLATE_FRAC = 0.45  # fraction of the image width (translate_x) or height (translate_y)
MAX_POSTERIZE_DROP_BITS = 4  # bits dropped at MAG_MAX: 8 -> 4 bits kept
SOLARIZE_THRESHOLD_MAG0 = 256  # pixel value; threshold at mag 0 (nothing inverted); 0 at MAG_MAX
MAX_ENHANCE_DELTA = 0.9  # blend factor = 1 +- MAX_ENHANCE_DELTA at MAG_MAX
MAX_CUTOUT_FRAC = 0.5  # cutout side as a fraction of H (rows) and W (columns)

# PIL's RGB -> L weights (ITU-R 601-2, 16-bit fixed point): L = (19595 R + 38470 G + 7471 B + 2^15) >> 16
_L_WEIGHTS = (19595, 38470, 7471)
_L_SHIFT = 16  # bits
# PIL's nearest affine walk uses 16.16 fixed point: one pixel is 2^16 units.
_FIX_SHIFT = 16  # bits
_FIX_ONE = 1 << _FIX_SHIFT
_ROTATE_DECIMALS = 15  # PIL rounds cos / sin to 15 decimals (so multiples of 90 degrees are exact)

OpFn = Callable[[torch.Tensor, torch.Tensor, "torch.Generator | None"], torch.Tensor]


# ----------------------------------------------------------------------------------------------
# Random draws: always from `generator`; drawn on the generator's device, then moved to `device`.
# ----------------------------------------------------------------------------------------------


def _rng_device(generator: torch.Generator | None, device: torch.device) -> torch.device:
    return generator.device if generator is not None else torch.device(device)


def normal(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """Standard normal float32 of `shape` on `device`."""
    return torch.randn(shape, generator=generator, device=_rng_device(generator, device)).to(device)


def uniform(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """Uniform float32 in [0, 1) of `shape` on `device`."""
    return torch.rand(shape, generator=generator, device=_rng_device(generator, device)).to(device)


def randint(
    low: int, high: int, shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device
) -> torch.Tensor:
    """Uniform integers in [low, high) (int64) of `shape` on `device`."""
    gen_device = _rng_device(generator, device)
    return torch.randint(low, high, shape, generator=generator, device=gen_device).to(device)


def random_sign(shape: int | tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """float32 of -1.0 / +1.0, each with probability 1/2; shape (b,) for an int b."""
    shape = (shape,) if isinstance(shape, int) else shape
    return randint(0, 2, shape, generator, device).float() * 2.0 - 1.0


def random_centre(
    shape: tuple[int, ...], height: int, width: int, generator: torch.Generator | None, device: torch.device
) -> torch.Tensor:
    """(*shape, 2) int64 uniformly random pixels (row in [0, height), column in [0, width))."""
    rows = randint(0, height, shape, generator, device)
    cols = randint(0, width, shape, generator, device)
    return torch.stack([rows, cols], -1)


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


@functools.lru_cache(maxsize=64)
def _arange(n: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Cached (n,) arange; callers must not write into it."""
    return torch.arange(n, dtype=dtype, device=device)


@functools.lru_cache(maxsize=16)
def _constant(values: tuple, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Cached small constant tensor; callers must not write into it."""
    return torch.tensor(values, dtype=dtype, device=device)


# ----------------------------------------------------------------------------------------------
# Per-sample parameters: every op's magnitude -> parameter mapping, for a whole batch at once
# ----------------------------------------------------------------------------------------------

# Columns of the (b, N_PARAMS) float64 table that `sample_params` returns.
P_FACTOR = 0  # enhance blend factor 1 + sign * 0.9 * level, rounded to float32 like PIL's
P_THRESHOLD = 1  # solarize: pixels >= this are inverted (256 - floor(256 * level))
P_MASK = 2  # posterize: bit mask keeping 8 - floor(4 * level) bits, e.g. 0b11110000
P_ROW0, P_COL0, P_ROW1, P_COL1 = 3, 4, 5, 6  # cutout rectangle: rows [ROW0, ROW1), columns [COL0, COL1)
P_VALUE = 7  # geometric ops: signed strength in the kind's units, sign * full * level
N_PARAMS = 8

GEOMETRIC_KINDS = ("rotate", "shear_x", "shear_y", "translate_x", "translate_y")
# Full-strength value of each kind, in its units (degrees, shear factor, fraction of size).
GEOMETRIC_MAX = (MAX_ROTATE_DEG, MAX_SHEAR, MAX_SHEAR, MAX_TRANSLATE_FRAC, MAX_TRANSLATE_FRAC)
_ROTATE = GEOMETRIC_KINDS.index("rotate")
# Kinds whose every output row is a shifted input row (`shift_rows`); the others need `resample`.
SHIFT_KINDS = ("shear_x", "translate_x", "translate_y")


def sample_params(
    mag: torch.Tensor, sign: torch.Tensor, centre: torch.Tensor, kind: torch.Tensor, height: int, width: int
) -> torch.Tensor:
    """Every op's parameters for each sample: (b, N_PARAMS) float64, columns P_*.

    mag (b,) in [0, 10]; sign (b,) +-1.0 (used by the +- ops); centre (b, 2) int64 cutout centre
    (row, column); kind (b,) index into GEOMETRIC_KINDS (anything for pixel ops). With level =
    mag / 10, each parameter is level times a constant, rounded once (as the PIL reference's
    float64 arithmetic), then truncated as timm does: threshold 256 - floor(256 level), posterize
    bits 8 - floor(4 level), cutout sides floor(0.5 level H) x floor(0.5 level W).
    """
    level = mag.double()[:, None] / MAG_MAX  # (b, 1)
    full = _constant(GEOMETRIC_MAX, torch.float64, level.device)[kind.clamp(0, len(GEOMETRIC_KINDS) - 1)]
    unsigned = _constant((SOLARIZE_THRESHOLD_MAG0, MAX_POSTERIZE_DROP_BITS, MAX_CUTOUT_FRAC * height,
                          MAX_CUTOUT_FRAC * width, MAX_ENHANCE_DELTA), torch.float64, level.device)
    strength = torch.cat([unsigned.expand(level.shape[0], -1), full[:, None]], -1)  # (b, 6) at level 1
    strength[:, 4:] *= sign.double()[:, None]  # the +- ops: enhance factor - 1, geometric value
    scaled = level * strength  # (b, 6)
    steps = torch.floor(scaled[:, :4])  # (b, 4): inverted levels, dropped bits, cutout rows, columns
    corner = centre.double() - torch.floor(steps[:, 2:] / 2)  # (b, 2) cutout's first row, column
    return torch.cat([
        (1.0 + scaled[:, 4:5]).float().double(),  # P_FACTOR
        SOLARIZE_THRESHOLD_MAG0 - steps[:, 0:1],  # P_THRESHOLD
        256.0 - torch.exp2(steps[:, 1:2].clamp(0, 8)),  # P_MASK (clamped for magnitudes outside 0..10)
        corner,  # P_ROW0, P_COL0
        corner + steps[:, 2:],  # P_ROW1, P_COL1
        scaled[:, 5:6],  # P_VALUE
    ], -1)


def geometric_value(kind: torch.Tensor, mag: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
    """(b,) float64 signed value sign * full * mag / 10 in the units of each sample's kind (P_VALUE)."""
    full = _constant(GEOMETRIC_MAX, torch.float64, mag.device)[kind]
    return (sign.double() * full) * (mag.double() / MAG_MAX)


# ----------------------------------------------------------------------------------------------
# Building blocks
# ----------------------------------------------------------------------------------------------


def _into(values: torch.Tensor, out: torch.Tensor | None) -> torch.Tensor:
    """Pixel values (in 0..255, any dtype) as uint8: written into `out` if given, else a new tensor."""
    return values.to(torch.uint8) if out is None else out.copy_(values)


def grayscale(xf: torch.Tensor) -> torch.Tensor:
    """(b, C, H, W) float32 pixel values -> (b, 1, H, W) float32: PIL's "L" conversion (xf if C = 1).

    (19595 R + 38470 G + 7471 B + 2^15) >> 16 is exact in float32: every intermediate is an
    integer below 2^24, and the shift is a multiplication by 2^-16 and a floor.
    """
    if xf.shape[1] == 1:
        return xf
    wr, wg, wb = _L_WEIGHTS
    gray = xf[:, 0:1] * wr
    gray.add_(xf[:, 1:2], alpha=wg).add_(xf[:, 2:3], alpha=wb).add_(1 << (_L_SHIFT - 1))
    return gray.mul_(1.0 / (1 << _L_SHIFT)).floor_()


def blend_(
    degenerate: torch.Tensor, xf: torch.Tensor, factor: torch.Tensor, out: torch.Tensor | None = None
) -> torch.Tensor:
    """PIL's Image.blend(degenerate, x, factor), per sample, using xf as scratch space.

    degenerate: float32 (integer values) broadcastable to xf; xf: (b, ...) float32 pixel values
    (overwritten); factor: (b,); out: optional uint8 destination shaped like xf. Returns uint8
    trunc(clip(d + f * (x - d), 0, 255)) computed in float32 in PIL's order (f * (x - d) rounded,
    then + d rounded). (float32 -> int16 -> uint8 is faster on the CPU than float32 -> uint8.)
    """
    f = factor.float().view(-1, *([1] * (xf.dim() - 1)))
    blended = xf.sub_(degenerate).mul_(f).add_(degenerate).clamp_(0.0, 255.0)
    return _into(blended.to(torch.int16), out)


@functools.lru_cache(maxsize=64)
def _table_offsets(images: int, channels: int, device: torch.device) -> torch.Tensor:
    """(images, channels, 1, 1) int32: 256 * the channel's number in the batch (cached, read-only)."""
    return torch.arange(images * channels, dtype=torch.int32, device=device).view(images, channels, 1, 1) * LEVELS


def channel_index(x: torch.Tensor) -> torch.Tensor:
    """(b, C, H, W) uint8 -> (b * C * H * W,) int32 index value + 256 * (channel number in the batch):
    the position of each pixel's value in b * C stacked 256-entry tables."""
    b, c = x.shape[:2]
    return x.to(torch.int32).add_(_table_offsets(b, c, x.device)).view(-1)  # (faster than a promoting add)


def apply_lut(
    x: torch.Tensor, lut: torch.Tensor, index: torch.Tensor | None = None, out: torch.Tensor | None = None
) -> torch.Tensor:
    """Per-image, per-channel lookup table.

    x: (b, C, H, W) uint8; lut: (b, C, 256), values in 0..255 (float values are truncated);
    index: `channel_index(x)` if already computed; out: optional (b, C, H, W) uint8 destination.
    Returns (b, C, H, W) uint8 lut[x].
    """
    index = channel_index(x) if index is None else index
    table = lut.to(torch.uint8).view(-1)
    if out is None:
        return table.index_select(0, index).view(x.shape)
    torch.index_select(table, 0, index, out=out.view(-1))
    return out


def histogram(x: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
    """(b, C, H, W) uint8 -> (b, C, 256) int64 per-image, per-channel histogram; index as `apply_lut`."""
    b, c = x.shape[:2]
    index = channel_index(x) if index is None else index
    if x.device.type == "cpu":  # bincount is the fastest on the CPU, but syncs with the host on CUDA
        counts = torch.bincount(index, minlength=b * c * LEVELS)
    else:
        counts = torch.zeros(b * c * LEVELS, dtype=torch.int64, device=x.device)
        counts.scatter_add_(0, index.long(), torch.ones((), dtype=torch.int64, device=x.device).expand_as(index))
    return counts.view(b, c, LEVELS)


# ----------------------------------------------------------------------------------------------
# Pixel ops: op(x, params, out=None) with x (b, C, H, W) uint8, params (b, N_PARAMS) from
# `sample_params`; the result goes into `out` ((b, C, H, W) uint8, may be x itself) or a new tensor.
# ----------------------------------------------------------------------------------------------


def _identity(x: torch.Tensor, params: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """x, copied."""
    return x.clone() if out is None else out.copy_(x)


def autocontrast_lut(x: torch.Tensor) -> torch.Tensor:
    """(b, C, H, W) uint8 -> (b, C, 256) float64 table of PIL ImageOps.autocontrast (cutoff 0).

    Each channel's min..max maps to 0..255 by PIL's ``int(v * scale + offset)``, scale =
    255 / (hi - lo), offset = -lo * scale, in float64 as Python computes it (the int() happens
    when the table is applied); a channel with min == max is left unchanged.
    """
    lo = x.amin(dim=(2, 3)).double()  # (b, C)
    hi = x.amax(dim=(2, 3)).double()
    flat = (hi <= lo)[..., None]
    # tensor / tensor: `255.0 / tensor` multiplies by a reciprocal, 1 ulp off Python's 255.0 / d
    scale = _constant((255.0,), torch.float64, x.device) / (hi - lo)  # inf where flat, not used
    levels = _arange(LEVELS, torch.float64, x.device)
    lut = (levels * scale[..., None] + (-lo * scale)[..., None]).clamp_(0, 255)  # (b, C, 256)
    return torch.where(flat, levels, lut)


def equalize_lut(x: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
    """(b, C, H, W) uint8 -> (b, C, 256) float64 table of PIL ImageOps.equalize; index as `apply_lut`.

    With h the channel histogram, below(v) = sum(h[:v]) and `top` its highest occupied value:
    step = below(top) // 255 (PIL's (sum(h) - h[top]) // 255); value v maps to
    (step // 2 + below(v)) // step, at most 255. Channels with step == 0 (one value, or fewer than
    255 pixels below the top value) are left unchanged. Integer divisions are done as float64
    floor(a / b), exact for a < 2^53 and much faster than int64 division.
    """
    h = histogram(x, index).double()  # (b, C, 256)
    below = torch.cumsum(h, -1).sub_(h)  # pixels < v
    step = torch.where(h > 0, below, 0.0).amax(-1, keepdim=True).div_(255).floor_()  # (b, C, 1)
    keep = step == 0
    step.clamp_(min=1)
    lut = below.add_(torch.floor(step / 2)).div_(step).floor_().clamp_(max=255)
    return torch.where(keep, _arange(LEVELS, torch.float64, x.device), lut)


def _autocontrast(x: torch.Tensor, params: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """PIL ImageOps.autocontrast (`autocontrast_lut`)."""
    return apply_lut(x, autocontrast_lut(x), out=out)


def _equalize(x: torch.Tensor, params: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """PIL ImageOps.equalize (`equalize_lut`)."""
    index = channel_index(x)
    return apply_lut(x, equalize_lut(x, index), index, out)


def _solarize(x: torch.Tensor, params: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """PIL ImageOps.solarize: pixels >= threshold t become 255 - pixel.

    In int16: (t - 1 - x) >> 8 is -1 (all bits set) where x >= t and 0 elsewhere, so XOR-ing it
    into x inverts exactly those pixels (the low byte of ~x is 255 - x).
    """
    t_minus_1 = _per_sample(params.select(1, P_THRESHOLD).to(torch.int16) - 1)
    x16 = x.to(torch.int16)
    invert = torch.sub(t_minus_1, x16).bitwise_right_shift_(8)
    return _into(invert.bitwise_xor_(x16), out)


def _posterize(x: torch.Tensor, params: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """PIL ImageOps.posterize: keep the top 8 - floor(4 * level) bits."""
    return torch.bitwise_and(x, _per_sample(params.select(1, P_MASK).to(torch.uint8)), out=out)


def adjust_color(x: torch.Tensor, factor: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """PIL ImageEnhance.Color(x).enhance(factor) per sample; factor (b,). Identity for 1 channel."""
    if x.shape[1] == 1:
        return _identity(x, factor, out)
    xf = x.float()
    return blend_(grayscale(xf), xf, factor, out)


def adjust_contrast(x: torch.Tensor, factor: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """PIL ImageEnhance.Contrast: blend with the rounded mean of the grayscale image; factor (b,)."""
    n = x.shape[-1] * x.shape[-2]
    xf = x.float()
    # The grey-level sum is exact in float32 while it stays below 2^24, else summed in float64.
    exact = torch.float32 if n * 255 < 2**24 else torch.float64
    total = grayscale(xf).sum(dim=(1, 2, 3), dtype=exact).double()  # (b,)
    mean = torch.floor((total + n / 2) / n)  # int(total / n + 0.5), exact in float64
    return blend_(_per_sample(mean.float()), xf, factor, out)


def adjust_brightness(x: torch.Tensor, factor: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """PIL ImageEnhance.Brightness: blend with black, trunc(clip(f * x)); factor (b,)."""
    scaled = x.float().mul_(_per_sample(factor.float())).clamp_(0.0, 255.0)
    return _into(scaled.to(torch.int16), out)


def adjust_sharpness(x: torch.Tensor, factor: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """PIL ImageEnhance.Sharpness: blend with the SMOOTH-filtered image; factor (b,).

    SMOOTH is [[1,1,1],[1,5,1],[1,1,1]] / 13 rounded half up (PIL's float sum rounds the same),
    summed in int16 (at most 13 * 255 + 6); border pixels keep their value.
    """
    h, w = x.shape[2], x.shape[3]
    x16 = x.to(torch.int16)  # (read before `out`, which may be x, is written)
    out = _identity(x, factor, out)  # the border
    if h < 3 or w < 3:
        return out
    rows = x16[:, :, :-2] + x16[:, :, 1:-1]  # (b, C, H-2, W) vertical 3-sums
    rows += x16[:, :, 2:]
    box = rows[..., :-2] + rows[..., 1:-1]  # (b, C, H-2, W-2) 3x3 sums
    box += rows[..., 2:]
    inner = x16[:, :, 1:-1, 1:-1]
    total = box.add_(inner, alpha=4).add_(6)  # + 4 x: kernel [[1,1,1],[1,5,1],[1,1,1]]; + 6: round
    smooth = total.float().div_(13.0).floor_()  # exact: total / 13 is an integer or >= 1/13 below one
    blend_(smooth, inner.float(), factor, out[:, :, 1:-1, 1:-1])
    return out


def _enhance_op(adjust: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    def op(x: torch.Tensor, params: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        return adjust(x, params.select(1, P_FACTOR), out)

    op.__doc__ = f"`{adjust.__name__}` with the factor from the params."
    return op


def _cutout(x: torch.Tensor, params: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """Fill the rectangle of rows [P_ROW0, P_ROW1) x columns [P_COL0, P_COL1) with FILL gray.

    Side floor(0.05 * mag * H) x floor(0.05 * mag * W), centred on a random pixel, clipped at the
    image border (as in the TF RandAugment used by Noisy Student).
    """
    _, _, h, w = x.shape
    position = _arange(max(h, w), torch.float64, x.device)
    first, end = params.narrow(1, P_ROW0, 2)[..., None], params.narrow(1, P_ROW1, 2)[..., None]  # (b, 2, 1)
    covered = (position >= first) & (position < end)  # (b, 2, max(H, W)): rows, columns inside
    inside = (covered[:, None, 0, :h, None] & covered[:, None, 1, None, :w]).to(torch.uint8)  # (b, 1, H, W)
    # x - (x - FILL) * inside: FILL inside, x elsewhere, in wrapping uint8 arithmetic (on the CPU
    # three plain passes are ~20x faster than torch.where / masked_fill with a broadcast mask)
    return torch.sub(x, (x - FILL).mul_(inside), out=out)


# ----------------------------------------------------------------------------------------------
# Geometric ops: one nearest-neighbour affine resampling for any mix of rotate / shear / translate.
# ----------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=64)
def _affine_slopes(height: int, width: int, device: torch.device) -> torch.Tensor:
    """(K, 6) float64: PIL coefficients per unit value of each kind (all zero for rotate)."""
    per_kind = {  # kind -> {coefficient index: slope}
        "shear_x": {1: 1.0, 2: -height / 2},
        "shear_y": {3: 1.0, 5: -width / 2},
        "translate_x": {2: float(width)},
        "translate_y": {5: float(height)},
    }
    slopes = [[per_kind.get(kind, {}).get(i, 0.0) for i in range(6)] for kind in GEOMETRIC_KINDS]
    return torch.tensor(slopes, dtype=torch.float64, device=device)


def geometric_coeffs(kind: torch.Tensor, value: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Per-sample PIL affine coefficients (a, b, c, d, e, f), (b, 6) float64.

    The output pixel centre (x, y) (pixels from the top-left corner) samples the input at
    (a x + b y + c, d x + e y + f). kind: (b,) long index into GEOMETRIC_KINDS; value: (b,) signed,
    in the kind's units. As the PIL reference: rotate is ``Image.rotate(value)`` (counter-clockwise,
    about the centre, cos / sin rounded to 15 decimals); shear_x is (1, v, -v H / 2, 0, 1, 0),
    shear_y (1, 0, 0, v, 1, -v W / 2) (shears about the centre); translate_x (1, 0, v W, 0, 1, 0),
    translate_y (1, 0, 0, 0, 1, v H).
    """
    v = value.double()
    # Image.rotate: angle % 360, in radians, negated; matrix [[cos, sin], [-sin, cos]] about
    # (W / 2, H / 2). Other kinds get angle 0, i.e. exactly the identity (1, 0, 0, 0, 1, 0).
    is_rotation = _constant(tuple(float(k == "rotate") for k in GEOMETRIC_KINDS), torch.float64, v.device)[kind]
    angle = (v * is_rotation).remainder_(360.0).mul_(-math.pi / 180.0)
    cos = torch.round(torch.cos(angle), decimals=_ROTATE_DECIMALS)
    sin = torch.round(torch.sin(angle), decimals=_ROTATE_DECIMALS)
    matrix = torch.stack([cos, sin, -sin, cos], -1).view(-1, 2, 2)
    cx, cy = width / 2, height / 2
    centre = _constant((cx, cy), torch.float64, v.device)
    offset = (matrix[..., 0] * -cx + matrix[..., 1] * -cy) + centre  # (b, 2), in PIL's order
    rotation = torch.cat([matrix, offset[..., None]], -1).view(-1, 6)
    # + the other kinds' coefficients, v times a slope (all-zero for rotate): exact, as 0 + v s = v s
    return torch.addcmul(rotation, v[:, None], _affine_slopes(height, width, v.device)[kind])


def affine_terms(coeffs: torch.Tensor, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Where PIL's NEAREST affine transform samples, as separable fixed-point terms.

    coeffs: (b, 6) PIL coefficients. Returns col_terms (b, 2, W) and row_terms (b, 2, H) int32 such
    that output pixel (y, x) takes its source column from ``(col_terms[:, 0, x] + row_terms[:, 0, y])
    >> 16`` and its source row from ``[:, 1]`` likewise, both counted in the image padded by one
    pixel on every side (so 0 and W + 1 / H + 1 are the border).

    As PIL's ImagingTransformAffine: PIL walks in 16.16 fixed point, FIX(v) = floor(v * 2^16 + 0.5):
    column = (FIX(c + a / 2 + b / 2) + x FIX(a) + y FIX(b)) >> 16, row likewise with d, e, f. When
    b == d == 0 (no rotation or shear) it walks in float64 instead: column = floor(c + a / 2 + a x),
    row = floor(f + e / 2 + e y) (or -1, outside, when negative); with a, e = +-1, as in all our ops
    (translations, rotations by 0 or 180 degrees), that is the fixed-point walk started from
    floor(c + a / 2) + 1/2. Assumes source coordinates below 2^15 pixels, as PIL's fixed point does.
    """
    m = coeffs.double().view(-1, 2, 3)  # rows (a, b, c) and (d, e, f)
    col_slope, row_slope, offset = m.unbind(-1)  # (b, 2): per output column, per output row, constant
    origin = (offset + col_slope * 0.5) + row_slope * 0.5  # (b, 2) where the walk starts (column, row)
    fixed = torch.floor(torch.stack([origin, col_slope, row_slope], -1) * _FIX_ONE + 0.5)  # (b, 2, 3)
    is_scale = (coeffs[:, 1:4:2] == 0).all(-1, keepdim=True)  # (b, 1): b == d == 0
    start = torch.where(is_scale, torch.floor(origin) * _FIX_ONE + _FIX_ONE // 2, fixed[..., 0])
    start += _FIX_ONE  # + 1 pixel: the padding
    cols = _arange(width, torch.float64, m.device)
    rows = _arange(height, torch.float64, m.device)
    col_terms = torch.addcmul(start[..., None], fixed[..., 1:2], cols)  # (b, 2, W), exact integers
    row_terms = fixed[..., 2:3] * rows  # (b, 2, H)
    return col_terms.to(torch.int32), row_terms.to(torch.int32)


def resample(
    x: torch.Tensor, col_terms: torch.Tensor, row_terms: torch.Tensor, out: torch.Tensor | None = None
) -> torch.Tensor:
    """Nearest-neighbour resampling of x (b, C, H, W) uint8 at the positions of `affine_terms`;
    sources off the image take FILL. Returns (b, C, H, W) uint8, in `out` if given (may be x)."""
    b, c, h, w = x.shape
    src = col_terms[:, :, None, :] + row_terms[:, :, :, None]  # (b, 2, H, W) fixed point
    src >>= _FIX_SHIFT  # (column, row) in the padded image
    src[:, 0].clamp_(0, w + 1)  # off the image -> the FILL border
    src[:, 1].clamp_(0, h + 1)
    index = torch.add(src[:, 0], src[:, 1], alpha=w + 2).view(b, 1, h * w).long()  # (b, 1, H*W)
    padded = F.pad(x, (1, 1, 1, 1), value=FILL).view(b, c, (h + 2) * (w + 2))
    index = index.expand(b, c, h * w)
    if out is None:
        return torch.gather(padded, 2, index).view(b, c, h, w)
    torch.gather(padded, 2, index, out=out.view(b, c, h * w))
    return out


def shift_rows(
    x: torch.Tensor, col_terms: torch.Tensor, row_terms: torch.Tensor, out: torch.Tensor | None = None
) -> torch.Tensor:
    """`resample` for transforms that move whole rows: every output row is a horizontally shifted
    input row (or FILL). Valid when a == e == 1 and d == 0 (translate_x, translate_y, shear_x:
    SHIFT_KINDS), where column = (start + y FIX(b)) >> 16 + x and row = start' >> 16 + y exactly.

    Each output row is then one contiguous window of the input padded with W FILL columns on both
    sides and a FILL row above and below, copied by a row gather (~10x cheaper than the pixel
    gather of `resample` for 96x96 images). x: (b, C, H, W) uint8; terms from `affine_terms`.
    """
    b, c, h, w = x.shape
    first = (col_terms[:, :, :1] + row_terms) >> _FIX_SHIFT  # (b, 2, H): source (column, row) of x = 0
    padded_w = 3 * w
    padded = F.pad(x, (w, w, 1, 1), value=FILL)  # (b, C, H + 2, 3W)
    row = first[:, 1].clamp(0, h + 1)  # (b, H) off the image -> a FILL row
    col = (first[:, 0] + (w - 1)).clamp_(0, 2 * w)  # (b, H) window start; off the image -> FILL columns
    plane = _arange(b * c, torch.int64, x.device).view(b, c, 1) * ((h + 2) * padded_w)  # (b, C, 1)
    starts = (plane + (row * padded_w + col)[:, None, :]).view(-1)  # (b * C * H,)
    flat = padded.view(-1)
    windows = flat.as_strided((flat.numel() - w + 1, w), (1, 1))  # every W-pixel run of the buffer
    if out is None:
        return windows.index_select(0, starts).view(b, c, h, w)
    torch.index_select(windows, 0, starts, out=out.view(b * c * h, w))
    return out


def affine(x: torch.Tensor, coeffs: torch.Tensor) -> torch.Tensor:
    """``Image.transform(AFFINE, coeffs, NEAREST, fillcolor=FILL)`` per sample, bit for bit.

    x: (b, C, H, W) uint8; coeffs: (b, 6) PIL coefficients (`geometric_coeffs`). Returns
    (b, C, H, W) uint8.
    """
    return resample(x, *affine_terms(coeffs, x.shape[2], x.shape[3]))


def geometric(x: torch.Tensor, kind: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """Any mix of rotate / shear / translate in one resampling.

    x: (b, C, H, W) uint8; kind: (b,) long index into GEOMETRIC_KINDS; value: (b,) signed strength
    in the kind's units (`geometric_value`).
    """
    return affine(x, geometric_coeffs(kind, value, x.shape[2], x.shape[3]))


def rotate_by(x: torch.Tensor, degrees: torch.Tensor) -> torch.Tensor:
    """Rotate each image counter-clockwise by `degrees` (b,) about its centre (PIL Image.rotate)."""
    kind = torch.full((x.shape[0],), _ROTATE, device=x.device)
    return geometric(x, kind, degrees)


# ----------------------------------------------------------------------------------------------
# The op table
# ----------------------------------------------------------------------------------------------

ParamOp = Callable[..., torch.Tensor]  # op(x, params, out=None), see the pixel ops' section

# Name -> op(x, params, out=None) of every pixel op; the geometric ops go through `geometric`.
PIXEL_OPS: dict[str, ParamOp] = {
    "identity": _identity,
    "autocontrast": _autocontrast,
    "equalize": _equalize,
    "solarize": _solarize,
    "color": _enhance_op(adjust_color),
    "posterize": _posterize,
    "contrast": _enhance_op(adjust_contrast),
    "brightness": _enhance_op(adjust_brightness),
    "sharpness": _enhance_op(adjust_sharpness),
    "cutout": _cutout,
}
SIGNED_OPS = frozenset(GEOMETRIC_KINDS) | {"color", "contrast", "brightness", "sharpness"}


def apply_op(
    x: torch.Tensor, name: str, mag: torch.Tensor, sign: torch.Tensor, centre: torch.Tensor
) -> torch.Tensor:
    """Op `name` with its random parts given: sign (b,) +-1.0 (used by the +- ops), centre (b, 2)
    int64 (row, column) of the cutout rectangle. x: (b, C, H, W) uint8, mag: (b,)."""
    x = x.contiguous()  # the ops view pixels as flat rows
    b, _, h, w = x.shape
    out = torch.empty(x.shape, dtype=torch.uint8, device=x.device)  # an ordinary tensor for the caller
    with torch.inference_mode():  # (cheaper dispatch for the many small ops)
        kind = torch.full((b,), GEOMETRIC_KINDS.index(name) if name in GEOMETRIC_KINDS else 0, device=x.device)
        params = sample_params(mag.to(x.device), sign.to(x.device), centre.to(x.device), kind, h, w)
        if name in GEOMETRIC_KINDS:
            coeffs = geometric_coeffs(kind, params.select(1, P_VALUE), h, w)
            resample(x, *affine_terms(coeffs, h, w), out=out)
        else:
            PIXEL_OPS[name](x, params, out=out)
    return out


def _random_op(name: str) -> OpFn:
    """op(x, mag, generator): `apply_op` with the sign / centre drawn from `generator`."""

    def op(x: torch.Tensor, mag: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        b, _, h, w = x.shape
        sign = random_sign(b, generator, x.device) if name in SIGNED_OPS else torch.ones(b, device=x.device)
        if name == "cutout":
            centre = random_centre((b,), h, w, generator, x.device)
        else:
            centre = torch.zeros(b, 2, dtype=torch.long, device=x.device)
        return apply_op(x, name, mag, sign, centre)

    op.__name__ = op.__qualname__ = name
    op.__doc__ = f"RandAugment op {name!r}: see `apply_op` and the module's table."
    return op


# Name -> op(x, mag, generator), in the order RandAugment draws from.
OP_FUNCS: dict[str, OpFn] = {
    name: _random_op(name)
    for name in ("identity", "autocontrast", "equalize", "rotate", "solarize", "color", "posterize", "contrast",
                 "brightness", "sharpness", "shear_x", "shear_y", "translate_x", "translate_y", "cutout")
}
OPS: tuple[str, ...] = tuple(OP_FUNCS)
# ... and as module attributes: ops.rotate(x, mag, generator), ...
(identity, autocontrast, equalize, rotate, solarize, color, posterize, contrast, brightness, sharpness, shear_x,
 shear_y, translate_x, translate_y, cutout) = (OP_FUNCS[name] for name in OPS)
