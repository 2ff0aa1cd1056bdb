"""Tests for noisystudent.augment: the batched ops, RandAugment, spec strings and crop/flip."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image, ImageEnhance, ImageOps

from noisystudent.augment import OPS, RandAugment, parse_randaugment_spec, random_crop_flip
from noisystudent.augment import ops as O
from noisystudent.errors import UserError

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
SIZES = [8, 28, 32]
CHANNELS = [1, 3]
PIXEL_OPS_WITHOUT_STRENGTH = ("identity", "autocontrast", "equalize")

# PIL agreement: mean |ours - PIL| in gray levels (0..255) and the largest single difference.
PIL_MEAN_TOL = 0.01
PIL_MAX_TOL = 1
PIL_ROTATE_MEAN_TOL = 0.05  # arbitrary angles: float32 vs PIL's float64 sampling positions


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Run these small-tensor tests on one intra-op thread (restored afterwards): on a loaded or
    throttled 2-core machine every parallel op can wait milliseconds for the second thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def images(b: int, c: int, size: int, seed: int = 0, device: str = "cpu", low: int = 20, high: int = 231):
    """(b, c, size, size) uint8 random non-constant images with values in [low, high)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(low, high, (b, c, size, size), generator=g, dtype=torch.uint8).to(device)


def gen(seed: int, device: str = "cpu") -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def mags(b: int, value: float, device: str = "cpu") -> torch.Tensor:
    return torch.full((b,), float(value), device=device)


# ------------------------------------------------------------------------------------------------
# Ops: shape / dtype / device, identity at magnitude 0, change at magnitude 10
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("c", CHANNELS)
def test_every_op_keeps_shape_dtype_device(device, size, c):
    x = images(4, c, size, device=device)
    for name in OPS:
        out = O.OP_FUNCS[name](x, torch.tensor([0.0, 3.3, 7.5, 10.0], device=device), gen(1, device))
        assert out.shape == x.shape, name
        assert out.dtype == torch.uint8, name  # so every value is in 0..255
        assert out.device == x.device, name
        assert out.data_ptr() != x.data_ptr(), f"{name} must return a new tensor"


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("c", CHANNELS)
def test_ops_with_a_strength_are_identity_at_magnitude_0(size, c):
    x = images(6, c, size, low=0, high=256)
    for name in OPS:
        if name in PIXEL_OPS_WITHOUT_STRENGTH[1:]:
            continue
        out = O.OP_FUNCS[name](x, mags(6, 0.0), gen(2))
        assert torch.equal(out, x), name


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("c", CHANNELS)
def test_every_op_changes_the_image_at_magnitude_10(size, c):
    x = images(8, c, size)  # values 20..230: autocontrast and equalize have work to do
    for name in OPS:
        out = O.OP_FUNCS[name](x, mags(8, 10.0), gen(3))
        changed = (out != x).flatten(1).any(1)  # (8,) per sample; random signs differ per sample
        # identity by design: color on gray images; equalize below 256 pixels (PIL's step is 0)
        if name == "identity" or (name == "color" and c == 1) or (name == "equalize" and size * size < 256):
            assert not changed.any(), name
        else:
            assert changed.all(), name


def test_magnitude_endpoints():
    x = images(8, 3, 16, low=0, high=256)
    m10 = mags(8, 10.0)
    assert torch.equal(O.solarize(x, m10), 255 - x)  # threshold 0: everything inverted
    assert torch.equal(O.solarize(x, mags(8, 5.0)), torch.where(x >= 128, 255 - x, x))
    assert torch.equal(O.posterize(x, m10), x & 0xF0)  # 4 bits kept
    assert torch.equal(O.posterize(x, mags(8, 5.0)), x & 0xFC)  # 8 - floor(2.0) = 6 bits kept
    # cutout at 10: an 8x8 gray square (0.5 of 16), clipped at the border.
    out = O.cutout(x, m10, gen(0))
    filled = (out != x).any(1).flatten(1).sum(1)  # (8,) changed pixels
    assert (filled <= 64).all() and (filled > 0).all()
    assert (out[out != x] == O.FILL).all()
    # brightness factor is 1 +- 0.9: mean brightness goes to ~0.1x or ~1.9x (clipped)
    ratio = O.brightness(x, m10, gen(0)).float().mean((1, 2, 3)) / x.float().mean((1, 2, 3))
    assert ((ratio - 0.1).abs() < 0.02).logical_or(ratio > 1.3).all()


def test_rotate_direction_and_translate_pixels():
    x = images(2, 3, 8, low=0, high=256)
    # +90 degrees is counter-clockwise, as PIL's Image.rotate and torch.rot90(k=1).
    assert torch.equal(O.rotate_by(x, mags(2, 90.0)), torch.rot90(x, 1, dims=(2, 3)))
    assert torch.equal(O.rotate_by(x, mags(2, -90.0)), torch.rot90(x, -1, dims=(2, 3)))
    assert torch.equal(O.rotate_by(x, mags(2, 180.0)), torch.rot90(x, 2, dims=(2, 3)))
    # translate_x by +0.25 of 8 px: the output samples 2 px to the right; gray comes in.
    kind = torch.full((2,), O.GEOMETRIC_KINDS.index("translate_x"))
    out = O.affine(x, O.geometric_matrix(kind, mags(2, 0.25), 8, 8))
    assert torch.equal(out[..., :6], x[..., 2:])
    assert (out[..., 6:] == O.FILL).all()


# ------------------------------------------------------------------------------------------------
# Agreement with PIL
# ------------------------------------------------------------------------------------------------


def to_pil(img: torch.Tensor) -> Image.Image:
    a = img.permute(1, 2, 0).numpy()
    return Image.fromarray(a[:, :, 0] if a.shape[2] == 1 else a)


def from_pil(im: Image.Image) -> torch.Tensor:
    a = np.asarray(im)
    return torch.from_numpy((a[:, :, None] if a.ndim == 2 else a).copy()).permute(2, 0, 1)


def pil_batch(x: torch.Tensor, fn) -> torch.Tensor:
    return torch.stack([from_pil(fn(to_pil(img), i)) for i, img in enumerate(x)])


def assert_close_to_pil(ours: torch.Tensor, ref: torch.Tensor, mean_tol=PIL_MEAN_TOL, max_tol=PIL_MAX_TOL):
    diff = (ours.int() - ref.int()).abs()
    assert diff.float().mean().item() <= mean_tol, diff.float().mean().item()
    if max_tol is not None:
        assert diff.max().item() <= max_tol


@pytest.mark.parametrize("c", CHANNELS)
def test_pixel_ops_match_pil(c):
    x = images(12, c, 28, seed=5)
    m = mags(12, 7.0)  # solarize threshold 256 - 179.2 -> 77; posterize 8 - 2 = 6 bits
    assert_close_to_pil(O.solarize(x, m), pil_batch(x, lambda im, i: ImageOps.solarize(im, 77)))
    assert_close_to_pil(O.posterize(x, m), pil_batch(x, lambda im, i: ImageOps.posterize(im, 6)))
    assert_close_to_pil(O.autocontrast(x, m), pil_batch(x, lambda im, i: ImageOps.autocontrast(im)))
    assert_close_to_pil(O.equalize(x, m), pil_batch(x, lambda im, i: ImageOps.equalize(im)))


@pytest.mark.parametrize("c", CHANNELS)
def test_enhance_ops_match_pil(c):
    x = images(12, c, 28, seed=6)
    factors = torch.tensor([0.1, 0.37, 0.5, 0.9, 1.0, 1.1, 1.5, 1.9, 0.0, 2.5, 0.73, 1.31])
    cases = [
        (O.adjust_brightness, ImageEnhance.Brightness),
        (O.adjust_contrast, ImageEnhance.Contrast),
        (O.adjust_color, ImageEnhance.Color),
        (O.adjust_sharpness, ImageEnhance.Sharpness),
    ]
    for ours, pil in cases:
        ref = pil_batch(x, lambda im, i: pil(im).enhance(float(factors[i])))
        assert_close_to_pil(ours(x, factors), ref)


@pytest.mark.parametrize("c", CHANNELS)
def test_rotation_matches_pil(c):
    x = images(8, c, 28, seed=7, low=0, high=256)
    fill = O.FILL if c == 1 else (O.FILL,) * 3
    for degrees in (90.0, 180.0, 270.0, -90.0):
        ref = pil_batch(x, lambda im, i: im.rotate(degrees, resample=Image.BILINEAR, fillcolor=fill))
        assert_close_to_pil(O.rotate_by(x, mags(8, degrees)), ref, mean_tol=0.0, max_tol=0)
    ref = pil_batch(x, lambda im, i: im.rotate(23.0, resample=Image.BILINEAR, fillcolor=fill))
    assert_close_to_pil(O.rotate_by(x, mags(8, 23.0)), ref, mean_tol=PIL_ROTATE_MEAN_TOL, max_tol=None)


# ------------------------------------------------------------------------------------------------
# RandAugment
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("c", CHANNELS)
def test_randaugment_shape_dtype_device(device, size, c):
    x = images(16, c, size, device=device)
    ra = RandAugment(n=2, m=9.0, mstd=0.5)
    out = ra(x, generator=gen(0, device))
    assert out.shape == x.shape and out.dtype == torch.uint8 and out.device == x.device
    assert out.data_ptr() != x.data_ptr()
    assert not torch.equal(out, x)


def test_randaugment_draws_on_the_images_device_with_a_cpu_generator_too():
    x = images(4, 3, 8)
    out = RandAugment(2, 9)(x, generator=None)  # global RNG
    assert out.shape == x.shape


def fixed_point_image(c: int, seed: int = 0) -> torch.Tensor:
    """(1, c, 32, 32): each value 0..255 exactly 4 times per channel, so autocontrast (min 0,
    max 255) and equalize (flat histogram) leave it unchanged."""
    g = torch.Generator().manual_seed(seed)
    values = torch.arange(256, dtype=torch.uint8).repeat(4)
    return torch.stack([values[torch.randperm(1024, generator=g)].view(32, 32) for _ in range(c)])[None]


@pytest.mark.parametrize("c", CHANNELS)
def test_randaugment_at_m0_changes_nothing(c):
    x = fixed_point_image(c).repeat(32, 1, 1, 1)
    assert torch.equal(O.autocontrast(x, mags(32, 0)), x) and torch.equal(O.equalize(x, mags(32, 0)), x)
    ra = RandAugment(n=3, m=0.0, mstd=0.0)  # all ops
    op_idx, _ = ra.sample(32, gen(0))
    assert len(op_idx.unique()) == len(OPS)  # every op was drawn at least once
    assert torch.equal(ra.apply(x, op_idx, torch.zeros(op_idx.shape), gen(0)), x)
    assert torch.equal(ra(x, generator=gen(1)), x)
    # On arbitrary images, every op that has a strength is a no-op at M = 0.
    with_strength = [name for name in OPS if name not in PIXEL_OPS_WITHOUT_STRENGTH[1:]]
    for size in SIZES:
        y = images(32, c, size, low=0, high=256)
        assert torch.equal(RandAugment(n=2, m=0.0, ops=with_strength)(y, generator=gen(2)), y)


def test_samples_of_one_batch_get_different_ops():
    ra = RandAugment(n=2, m=9.0)
    op_idx, mag = ra.sample(64, gen(0))
    assert op_idx.shape == (2, 64) and op_idx.dtype == torch.long
    assert mag.shape == (2, 64) and (mag == 9.0).all()
    assert len(op_idx[0].unique()) > 1 and len(op_idx[1].unique()) > 1
    assert ((op_idx >= 0) & (op_idx < len(OPS))).all()
    # roughly uniform over the ops
    counts = torch.bincount(ra.sample(15000, gen(1))[0].flatten(), minlength=len(OPS))
    expected = 30000 / len(OPS)
    assert ((counts - expected).abs() < 0.15 * expected).all(), counts


def test_grouped_apply_equals_per_sample_application():
    names = ["identity", "autocontrast", "equalize", "solarize", "posterize", "rotate", "shear_x", "translate_y"]
    ra = RandAugment(n=1, m=7.0, mstd=2.0, ops=names)
    x = images(48, 3, 12, seed=3)
    op_idx, mag = ra.sample(48, gen(0))
    out = ra.apply(x, op_idx, mag, gen(1))
    for i in range(48):
        name, m = names[op_idx[0, i]], mag[0, i : i + 1]
        xi = x[i : i + 1]
        if name in O.GEOMETRIC_KINDS:  # the sign is random: accept either
            kind = torch.tensor([O.GEOMETRIC_KINDS.index(name)])
            full = O.GEOMETRIC_MAX[kind] * m / O.MAG_MAX
            options = [O.affine(xi, O.geometric_matrix(kind, s * full, 12, 12)) for s in (1.0, -1.0)]
            assert any(torch.equal(out[i : i + 1], o) for o in options), (i, name)
        else:
            assert torch.equal(out[i : i + 1], O.OP_FUNCS[name](xi, m)), (i, name)


def test_layers_compose_in_order():
    names = ["autocontrast", "solarize", "posterize"]
    ra = RandAugment(n=2, m=10.0, ops=names)
    x = images(3, 1, 8)
    op_idx = torch.tensor([[1, 2, 0], [2, 1, 1]])  # per sample: (solarize, posterize), ...
    mag = torch.full((2, 3), 10.0)
    out = ra.apply(x, op_idx, mag)
    for i in range(3):
        y = x[i : i + 1]
        for layer in range(2):
            y = O.OP_FUNCS[names[op_idx[layer, i]]](y, mag[layer, i : i + 1])
        assert torch.equal(out[i : i + 1], y)


def test_mstd_draws_clipped_magnitudes():
    _, mag = RandAugment(n=2, m=9.0, mstd=2.0).sample(1000, gen(0))
    assert mag.min() >= 0 and mag.max() <= 10
    assert (mag == 10.0).any() and mag.std() > 1.0
    assert abs(mag.mean().item() - 8.7) < 0.5  # 9 with the upper tail clipped at 10


def test_seeded_generator_repeats_and_seeds_differ():
    x = images(32, 3, 16)
    ra = RandAugment(n=2, m=9.0, mstd=0.5)
    a, b = ra(x, generator=gen(123)), ra(x, generator=gen(123))
    assert torch.equal(a, b)
    assert not torch.equal(a, ra(x, generator=gen(124)))


# ------------------------------------------------------------------------------------------------
# Spec strings
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "canonical", "parsed"),
    [
        ("rand-n2-m9", "rand-n2-m9", (2, 9.0, 0.0)),
        ("rand-n1-m5-mstd0.5", "rand-n1-m5-mstd0.5", (1, 5.0, 0.5)),
        ("rand-m9-n3", "rand-n3-m9", (3, 9.0, 0.0)),
        ("rand-n2-m9.5-mstd0", "rand-n2-m9.5", (2, 9.5, 0.0)),
        ("rand-m7", "rand-n2-m7", (2, 7.0, 0.0)),
    ],
)
def test_spec_round_trip(spec, canonical, parsed):
    assert parse_randaugment_spec(spec) == parsed
    ra = RandAugment.from_spec(spec)
    assert (ra.n, ra.m, ra.mstd) == parsed
    assert str(ra) == canonical
    assert str(RandAugment.from_spec(str(ra))) == canonical
    assert str(RandAugment(*parsed)) == canonical


@pytest.mark.parametrize(
    "spec",
    ["", "rand", "rnd-n2-m9", "rand-n2-m11", "rand-n2-m9-x3", "rand-nfoo-m9", "rand-n1.5-m9", "rand-n2-n3-m9",
     "rand-n2-m9-mstd-1", "rand-n-1-m9", "rand-n2-mnan", "augmix-m5"],
)
def test_bad_specs_raise_user_error(spec):
    if spec == "rand":  # bare "rand" is valid in timm: n = 2, m = 10
        assert str(RandAugment.from_spec(spec)) == "rand-n2-m10"
        return
    with pytest.raises(UserError) as info:
        RandAugment.from_spec(spec)
    assert repr(spec) in str(info.value) and "rand-n2-m9" in str(info.value)


def test_bad_constructor_arguments_raise_user_error():
    for kwargs in ({"m": 11.0}, {"m": -1.0}, {"n": -1}, {"mstd": -0.5}, {"ops": ["rotate", "nope"]}, {"ops": []}):
        with pytest.raises(UserError):
            RandAugment(**kwargs)


# ------------------------------------------------------------------------------------------------
# random_crop_flip
# ------------------------------------------------------------------------------------------------


def all_crops(x: torch.Tensor, pad: int, mode: str) -> torch.Tensor:
    """(K, B, C, H, W): every translation by (dy, dx) in [-pad, pad]^2, unflipped and flipped."""
    h, w = x.shape[-2:]
    padded = F.pad(x.float(), (pad,) * 4, mode="constant" if mode == "zeros" else "replicate")
    crops = [padded[..., pad + dy : pad + dy + h, pad + dx : pad + dx + w] for dy in range(-pad, pad + 1)
             for dx in range(-pad, pad + 1)]
    crops = crops + [c.flip(-1) for c in crops]
    return torch.stack(crops).to(torch.uint8)


@pytest.mark.parametrize("device", DEVICES)
def test_crop_flip_identity_and_shape(device):
    for c, size in [(1, 8), (3, 28), (3, 32)]:
        x = images(10, c, size, device=device, low=0, high=256)
        out = random_crop_flip(x, pad=0, flip=False, generator=gen(0, device))
        assert torch.equal(out, x) and out.data_ptr() != x.data_ptr()
        out = random_crop_flip(x, pad=4, flip=True, generator=gen(0, device))
        assert out.shape == x.shape and out.dtype == torch.uint8 and out.device == x.device
        assert not torch.equal(out, x)


@pytest.mark.parametrize("mode", ["zeros", "edge"])
def test_crop_flip_outputs_are_translations_and_flips(mode):
    x = images(600, 1, 8, seed=4, low=1, high=256)  # no zeros, so zero fill is recognisable
    out = random_crop_flip(x, pad=2, flip=True, generator=gen(1), mode=mode)
    candidates = all_crops(x, 2, mode)  # (50, 600, 1, 8, 8)
    match = (candidates == out[None]).flatten(2).all(-1)  # (50, 600)
    assert match.any(0).all()  # each output is one of the crops
    assert match.any(1).all()  # every shift and flip happens
    if mode == "zeros":
        assert (out == 0).any()


def test_crop_flip_repeats_with_a_seed_and_flips_about_half():
    x = images(2000, 3, 8, low=0, high=256)
    a = random_crop_flip(x, pad=2, generator=gen(5))
    assert torch.equal(a, random_crop_flip(x, pad=2, generator=gen(5)))
    assert not torch.equal(a, random_crop_flip(x, pad=2, generator=gen(6)))
    flipped = random_crop_flip(x, pad=0, flip=True, generator=gen(7))
    is_flipped = (flipped == x.flip(-1)).flatten(1).all(1)
    is_same = (flipped == x).flatten(1).all(1)
    assert (is_flipped ^ is_same).all()
    assert 0.45 < is_flipped.float().mean().item() < 0.55
