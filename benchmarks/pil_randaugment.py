"""Per-image PIL RandAugment: the reference `noisystudent.augment` is checked and timed against.

Used by `benchmarks/augment.py` (speed and op-by-op agreement) and `tests/test_augment.py`
(agreement). It is written the way timm and the TF RandAugment of Noisy Student write it: one PIL
image at a time, PIL's ImageOps / ImageEnhance / Image.transform, a random op per image, a random
sign for the signed ops. The magnitude -> parameter mapping is the table in
`noisystudent/augment/ops.py` (only its constants are imported from there):

    level = mag / 10                      (mag in 0..10)
    rotate       degrees   = +-30 * level               Image.rotate, about the centre
    shear_x/_y   factor    = +-0.3 * level              Image.transform AFFINE, about the centre
    translate_x/_y  frac   = +-0.45 * level             Image.transform AFFINE, frac * W (or H) pixels
    solarize     threshold = 256 - int(256 * level)     ImageOps.solarize
    posterize    bits      = 8 - int(4 * level)         ImageOps.posterize
    color, contrast, brightness, sharpness
                 factor    = 1 +- 0.9 * level           ImageEnhance.*(img).enhance(factor)
    cutout       side      = int(0.5 * level * H) x int(0.5 * level * W), FILL gray,
                 centred on a uniformly random pixel, clipped at the border
    autocontrast, equalize: ImageOps, no strength;  identity: unchanged.

Geometric ops resample with NEAREST (PIL's default, and what the TF RandAugment uses) and fill
uncovered pixels with FILL gray.

    aug = PilRandAugment(n=2, m=9)
    out = aug(array, rng)   # (H, W, C) uint8 numpy -> (H, W, C) uint8 numpy, rng: random.Random
"""

from __future__ import annotations

import random
from typing import Callable, Sequence

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

from noisystudent.augment import ops as O

NEAREST = Image.Resampling.NEAREST


# ----------------------------------------------------------------------------------------------
# Ops with explicit parameters (the deterministic part of each op)
# ----------------------------------------------------------------------------------------------


def _fill(img: Image.Image) -> int | tuple[int, ...]:
    """FILL gray in the image's mode ("L" -> int, "RGB" -> 3-tuple)."""
    return O.FILL if img.mode == "L" else (O.FILL,) * len(img.getbands())


def rotate(img: Image.Image, degrees: float) -> Image.Image:
    """Counter-clockwise rotation about the centre, NEAREST, FILL outside."""
    return img.rotate(degrees, resample=NEAREST, fillcolor=_fill(img))


def affine(img: Image.Image, coeffs: Sequence[float]) -> Image.Image:
    """Image.transform(AFFINE, coeffs): output pixel centre (x, y) samples the input at
    (a x + b y + c, d x + e y + f) for coeffs (a, b, c, d, e, f), NEAREST, FILL outside."""
    return img.transform(img.size, Image.Transform.AFFINE, tuple(coeffs), NEAREST, fillcolor=_fill(img))


def shear_x(img: Image.Image, factor: float) -> Image.Image:
    """x_in = x_out + factor * (y_out - H / 2): a horizontal shear about the centre row."""
    return affine(img, (1.0, factor, -factor * img.height / 2, 0.0, 1.0, 0.0))


def shear_y(img: Image.Image, factor: float) -> Image.Image:
    """y_in = y_out + factor * (x_out - W / 2): a vertical shear about the centre column."""
    return affine(img, (1.0, 0.0, 0.0, factor, 1.0, -factor * img.width / 2))


def translate_x(img: Image.Image, frac: float) -> Image.Image:
    """x_in = x_out + frac * W: the content moves left by frac * W pixels when frac > 0."""
    return affine(img, (1.0, 0.0, frac * img.width, 0.0, 1.0, 0.0))


def translate_y(img: Image.Image, frac: float) -> Image.Image:
    """y_in = y_out + frac * H: the content moves up by frac * H pixels when frac > 0."""
    return affine(img, (1.0, 0.0, 0.0, 0.0, 1.0, frac * img.height))


def cutout(img: Image.Image, side_h: int, side_w: int, cy: int, cx: int) -> Image.Image:
    """FILL-gray side_h x side_w rectangle whose centre is pixel (cy, cx), clipped at the border."""
    out = img.copy()
    y0, x0 = cy - side_h // 2, cx - side_w // 2
    box = (max(x0, 0), max(y0, 0), min(x0 + side_w, img.width), min(y0 + side_h, img.height))
    if side_h > 0 and side_w > 0 and box[0] < box[2] and box[1] < box[3]:
        out.paste(_fill(img), box)
    return out


def enhance(kind: type) -> Callable[[Image.Image, float], Image.Image]:
    """ImageEnhance.<kind>(img).enhance(factor) as a function of (img, factor)."""
    return lambda img, factor: kind(img).enhance(factor)


# name -> op(img, *params)
PIL_OPS: dict[str, Callable[..., Image.Image]] = {
    "identity": lambda img: img,  # PIL images are never changed in place here
    "autocontrast": ImageOps.autocontrast,
    "equalize": ImageOps.equalize,
    "rotate": rotate,
    "solarize": ImageOps.solarize,
    "color": enhance(ImageEnhance.Color),
    "posterize": ImageOps.posterize,
    "contrast": enhance(ImageEnhance.Contrast),
    "brightness": enhance(ImageEnhance.Brightness),
    "sharpness": enhance(ImageEnhance.Sharpness),
    "shear_x": shear_x,
    "shear_y": shear_y,
    "translate_x": translate_x,
    "translate_y": translate_y,
    "cutout": cutout,
}

# ----------------------------------------------------------------------------------------------
# Magnitude -> parameters (the table in the module docstring)
# ----------------------------------------------------------------------------------------------

SIGNED_MAX = {  # full-strength value of the signed ops, in their units
    "rotate": O.MAX_ROTATE_DEG,
    "shear_x": O.MAX_SHEAR,
    "shear_y": O.MAX_SHEAR,
    "translate_x": O.MAX_TRANSLATE_FRAC,
    "translate_y": O.MAX_TRANSLATE_FRAC,
}
ENHANCE_OPS = ("color", "contrast", "brightness", "sharpness")
SIGNED_OPS = (*SIGNED_MAX, *ENHANCE_OPS)  # ops with a random sign


def op_params(name: str, mag: float, sign: float, size: tuple[int, int], centre: tuple[int, int]) -> tuple:
    """Parameters of op `name` at magnitude `mag` (0..10) with `sign` (+-1), for an image of
    `size` (H, W) pixels; `centre` (cy, cx) is cutout's random pixel (ignored by the others)."""
    level = mag / O.MAG_MAX
    if name in SIGNED_MAX:
        return (sign * SIGNED_MAX[name] * level,)
    if name in ENHANCE_OPS:
        return (1.0 + sign * O.MAX_ENHANCE_DELTA * level,)
    if name == "solarize":
        return (int(O.SOLARIZE_THRESHOLD_MAG0) - int(O.SOLARIZE_THRESHOLD_MAG0 * level),)
    if name == "posterize":
        return (8 - int(O.MAX_POSTERIZE_DROP_BITS * level),)
    if name == "cutout":
        h, w = size
        return (int(O.MAX_CUTOUT_FRAC * level * h), int(O.MAX_CUTOUT_FRAC * level * w), *centre)
    return ()  # identity, autocontrast, equalize


def apply_op(img: Image.Image, name: str, mag: float, sign: float = 1.0, centre: tuple[int, int] = (0, 0)):
    """Op `name` at magnitude `mag` with a given sign (and cutout centre) on one PIL image."""
    return PIL_OPS[name](img, *op_params(name, mag, sign, (img.height, img.width), centre))


# ----------------------------------------------------------------------------------------------
# numpy <-> PIL, and RandAugment
# ----------------------------------------------------------------------------------------------


def to_pil(array: np.ndarray) -> Image.Image:
    """(H, W, C) uint8, C in {1, 3} -> PIL "L" or "RGB"."""
    return Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array)


def from_pil(img: Image.Image) -> np.ndarray:
    """PIL "L" or "RGB" -> (H, W, C) uint8."""
    a = np.asarray(img)
    return a[:, :, None] if a.ndim == 2 else a


class PilRandAugment:
    """RandAugment on one (H, W, C) uint8 numpy image at a time, through PIL."""

    def __init__(self, n: int = 2, m: float = 9.0, ops: Sequence[str] = O.OPS):
        self.n, self.m, self.ops = n, float(m), tuple(ops)

    def augment_pil(self, img: Image.Image, rng: random.Random) -> Image.Image:
        """n ops, each drawn uniformly; a random sign for the +- ops, a random centre for cutout
        (drawn only where needed, as timm does)."""
        for _ in range(self.n):
            name = rng.choice(self.ops)
            sign = rng.choice((-1.0, 1.0)) if name in SIGNED_OPS else 1.0
            centre = (rng.randrange(img.height), rng.randrange(img.width)) if name == "cutout" else (0, 0)
            img = apply_op(img, name, self.m, sign, centre)
        return img

    def __call__(self, array: np.ndarray, rng: random.Random) -> np.ndarray:
        return from_pil(self.augment_pil(to_pil(array), rng))
