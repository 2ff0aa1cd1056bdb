"""Tests for noisystudent.augment: the batched ops, RandAugment, spec strings, crop/flip and pixel noise.

The per-image PIL RandAugment in benchmarks/pil_randaugment.py (shared with benchmarks/augment.py)
is the reference: every op must give PIL's result pixel for pixel (the four ImageEnhance ops, which
PIL computes in float32, within PIL_MAX_TOL).
"""

from __future__ import annotations

import importlib.util
import logging
import random
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from noisystudent.augment import OPS, RandAugment, gaussian_pixel_noise, mixup, parse_randaugment_spec, random_crop_flip
from noisystudent.augment import native
from noisystudent.augment import ops as O
from noisystudent.augment import randaugment as R
from noisystudent.errors import UserError

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
SIZES = [8, 28, 32]
CHANNELS = [1, 3]
PIXEL_OPS_WITHOUT_STRENGTH = ("identity", "autocontrast", "equalize")
ENHANCE_OPS = ("color", "contrast", "brightness", "sharpness")

# PIL agreement of the ImageEnhance ops (float32 blends: an FMA on either side may move a value
# across an integer): mean |ours - PIL| in gray levels (0..255) and the largest single difference.
# Every other op must match exactly; on x86-64 the enhance ops match exactly too.
PIL_MEAN_TOL = 0.01
PIL_MAX_TOL = 1


def _load_pil_reference():
    """benchmarks/pil_randaugment.py, the PIL reference shared with the benchmark."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "pil_randaugment.py"
    spec = importlib.util.spec_from_file_location("pil_randaugment", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


pil = _load_pil_reference()


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Run these small-tensor tests on one intra-op thread (restored afterwards): on a loaded or
    throttled 2-core machine every parallel op can wait milliseconds for the second thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def images(b: int, c: int, size: int | tuple[int, int], seed: int = 0, device: str = "cpu", low: int = 20,
           high: int = 231):
    """(b, c, H, W) uint8 random non-constant images with values in [low, high); size is H = W or (H, W)."""
    h, w = (size, size) if isinstance(size, int) else size
    g = torch.Generator().manual_seed(seed)
    return torch.randint(low, high, (b, c, h, w), generator=g, dtype=torch.uint8).to(device)


def gen(seed: int, device: str = "cpu") -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def mags(b: int, value: float, device: str = "cpu") -> torch.Tensor:
    return torch.full((b,), float(value), device=device)


def alternating_signs(b: int) -> torch.Tensor:
    return torch.tensor([1.0, -1.0]).repeat((b + 1) // 2)[:b]


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
    op = O.OP_FUNCS
    assert torch.equal(op["solarize"](x, m10), 255 - x)  # threshold 0: everything inverted
    assert torch.equal(op["solarize"](x, mags(8, 5.0)), torch.where(x >= 128, 255 - x, x))
    assert torch.equal(op["posterize"](x, m10), x & 0xF0)  # 4 bits kept
    assert torch.equal(op["posterize"](x, mags(8, 5.0)), x & 0xFC)  # 8 - floor(2.0) = 6 bits kept
    # cutout at 10: an 8x8 gray square (0.5 of 16), clipped at the border.
    out = op["cutout"](x, m10, gen(0))
    filled = (out != x).any(1).flatten(1).sum(1)  # (8,) changed pixels
    assert (filled <= 64).all() and (filled > 0).all()
    assert (out[out != x] == O.FILL).all()
    # the signed strengths of the geometric kinds: rotate 30 degrees, translate_x 0.45 of the width
    kind = torch.tensor([O.GEOMETRIC_KINDS.index("rotate"), O.GEOMETRIC_KINDS.index("translate_x")])
    assert O.geometric_value(kind, mags(2, 10.0), torch.tensor([1.0, -1.0])).tolist() == [30.0, -0.45]
    # brightness factor is 1 +- 0.9: mean brightness goes to ~0.1x or ~1.9x (clipped)
    ratio = op["brightness"](x, m10, gen(0)).float().mean((1, 2, 3)) / x.float().mean((1, 2, 3))
    assert ((ratio - 0.1).abs() < 0.02).logical_or(ratio > 1.3).all()


def test_rotate_direction_and_translate_pixels():
    x = images(2, 3, 8, low=0, high=256)
    # +90 degrees is counter-clockwise, as PIL's Image.rotate and torch.rot90(k=1).
    assert torch.equal(O.rotate_by(x, mags(2, 90.0)), torch.rot90(x, 1, dims=(2, 3)))
    assert torch.equal(O.rotate_by(x, mags(2, -90.0)), torch.rot90(x, -1, dims=(2, 3)))
    assert torch.equal(O.rotate_by(x, mags(2, 180.0)), torch.rot90(x, 2, dims=(2, 3)))
    # translate_x by +0.25 of 8 px: the output samples 2 px to the right; gray comes in.
    kind = torch.full((2,), O.GEOMETRIC_KINDS.index("translate_x"))
    out = O.geometric(x, kind, mags(2, 0.25))
    assert torch.equal(out[..., :6], x[..., 2:])
    assert (out[..., 6:] == O.FILL).all()
    # shear_x about the centre row: that row stays, the others shift sideways.
    kind = torch.full((2,), O.GEOMETRIC_KINDS.index("shear_x"))
    out = O.geometric(x, kind, mags(2, 0.25))
    assert torch.equal(out[:, :, 4], x[:, :, 4]) and not torch.equal(out, x)


def test_every_geometric_value_and_magnitude_0_keep_the_image_exactly():
    x = images(5, 3, (9, 14), low=0, high=256)
    kind = torch.arange(5)
    for value in (0.0, -0.0):
        assert torch.equal(O.geometric(x, kind, mags(5, value)), x)
    assert torch.equal(O.rotate_by(x, mags(5, 360.0)), x)


@pytest.mark.parametrize("device", DEVICES)
def test_in_place_output_equals_a_new_tensor(device):
    """Every op may write into its input (RandAugment does): same result as into a new tensor."""
    for shape in ((6, 1, 28, 28), (6, 3, 13, 10), (6, 3, 2, 2)):
        x = images(shape[0], shape[1], shape[2:], seed=3, device=device, low=0, high=256)
        b, _, h, w = x.shape
        params = O.sample_params(torch.rand(b, device=device) * 10, alternating_signs(b).to(device),
                                 torch.randint(0, h, (b, 2), device=device), torch.arange(b, device=device) % 5, h, w)
        for name, op in O.PIXEL_OPS.items():
            y = x.clone()
            assert op(y, params, out=y).data_ptr() == y.data_ptr()
            assert torch.equal(y, op(x, params)), name
        coeffs = O.geometric_coeffs(torch.arange(b, device=device) % 5, params[:, O.P_VALUE], h, w)
        terms = O.affine_terms(coeffs, h, w)
        y = x.clone()
        O.resample(y, *terms, out=y)
        assert torch.equal(y, O.resample(x, *terms))


@pytest.mark.parametrize("device", DEVICES)
def test_row_shifts_equal_the_general_resampling(device):
    """shift_rows (translations, shear_x) == resample, also beyond RandAugment's strengths."""
    for h, w, c in ((28, 28, 1), (31, 24, 3), (5, 3, 3), (1, 1, 1)):
        x = images(60, c, (h, w), seed=h, device=device, low=0, high=256)
        kind = torch.tensor([O.GEOMETRIC_KINDS.index(k) for k in O.SHIFT_KINDS], device=device).repeat(20)
        value = (torch.rand(60, dtype=torch.float64, generator=gen(h)) - 0.5).to(device) * 3
        terms = O.affine_terms(O.geometric_coeffs(kind, value, h, w), h, w)
        expected = O.resample(x, *terms)
        assert torch.equal(O.shift_rows(x, *terms), expected)
        y = x.clone()
        O.shift_rows(y, *terms, out=y)
        assert torch.equal(y, expected)


# ------------------------------------------------------------------------------------------------
# Agreement with the PIL reference
# ------------------------------------------------------------------------------------------------


def to_numpy(x: torch.Tensor) -> np.ndarray:
    """(B, C, H, W) uint8 -> (B, H, W, C) uint8 numpy."""
    return x.permute(0, 2, 3, 1).cpu().numpy()


def pil_op(x: torch.Tensor, name: str, mag: torch.Tensor, sign: torch.Tensor, centre: torch.Tensor) -> np.ndarray:
    """The PIL reference op on each image: (B, H, W, C) uint8."""
    return np.stack([
        pil.from_pil(pil.apply_op(pil.to_pil(a), name, float(mag[i]), float(sign[i]), tuple(centre[i].tolist())))
        for i, a in enumerate(to_numpy(x))
    ])


def assert_matches_pil(ours: torch.Tensor, ref: np.ndarray, name: str) -> None:
    diff = np.abs(to_numpy(ours).astype(np.int16) - ref.astype(np.int16))
    if name in ENHANCE_OPS:
        assert diff.mean() <= PIL_MEAN_TOL and diff.max() <= PIL_MAX_TOL, (name, diff.mean(), diff.max())
    else:
        assert diff.max() == 0, (name, diff.mean(), diff.max(), int((diff > 0).sum()))


@pytest.mark.parametrize("c", CHANNELS)
@pytest.mark.parametrize("size", [8, 28, (31, 24), 32])
def test_every_op_matches_pil(size, c):
    """Each op at M = 0, 3, 6, 9, 10 and at random magnitudes, both signs, random cutout centres."""
    x = images(24, c, size, seed=5, low=0, high=256)
    b, _, h, w = x.shape
    sign = alternating_signs(b)
    centre = O.random_centre((b,), h, w, gen(6), torch.device("cpu"))
    random_mags = torch.rand(b, generator=gen(7)) * O.MAG_MAX
    for name in OPS:
        for mag in [mags(b, m) for m in (0.0, 3.0, 6.0, 9.0, 10.0)] + [random_mags]:
            assert_matches_pil(O.apply_op(x, name, mag, sign, centre), pil_op(x, name, mag, sign, centre), name)


@pytest.mark.parametrize("c", CHANNELS)
@pytest.mark.parametrize("size", [7, 28, (20, 33)])
def test_rotation_matches_pil_at_any_angle(size, c):
    """Image.rotate(NEAREST) bit for bit, including its transposes for multiples of 90 degrees."""
    x = images(16, c, size, seed=7, low=0, high=256)
    degrees = torch.tensor([0.0, 90.0, 180.0, 270.0, -90.0, 360.0, 45.0, -45.0, 23.0, -7.5, 123.4, 400.0,
                            29.99, -30.0, 1e-3, 315.0], dtype=torch.float64)
    ref = np.stack([pil.from_pil(pil.rotate(pil.to_pil(a), float(d))) for a, d in zip(to_numpy(x), degrees)])
    assert np.array_equal(to_numpy(O.rotate_by(x, degrees)), ref)


@pytest.mark.parametrize("c", CHANNELS)
def test_histogram_ops_match_pil_on_edge_cases(c):
    """equalize / autocontrast on flat, two-valued, saturated and small images, and flat channels."""
    size = 20
    cases = torch.stack([
        torch.full((c, size, size), 77),
        torch.full((c, size, size), 0),
        torch.full((c, size, size), 255),
        (torch.arange(size * size).view(1, size, size) % 2 * 200 + 10).expand(c, -1, -1),  # two values
        (torch.arange(size * size).view(1, size, size) % 256).expand(c, -1, -1),  # every value, some twice
        torch.randint(0, 256, (c, size, size), generator=gen(1)),
        torch.randint(100, 103, (c, size, size), generator=gen(2)),  # three values
        torch.cat([torch.full((1, size, size), 9), torch.randint(0, 256, (c - 1, size, size), generator=gen(3))])
        if c > 1 else torch.full((1, size, size), 9),  # a flat channel next to busy ones
    ]).to(torch.uint8)
    small = images(4, c, 8, low=0, high=256)  # 64 pixels: equalize leaves it (step 0)
    for x in (cases, small):
        b = x.shape[0]
        zeros, ones = torch.zeros(b, 2, dtype=torch.long), torch.ones(b)
        for name in ("equalize", "autocontrast"):
            assert_matches_pil(O.apply_op(x, name, mags(b, 0), ones, zeros), pil_op(x, name, mags(b, 0), ones, zeros),
                               name)


def test_pil_reference_randaugment_runs():
    aug = pil.PilRandAugment(n=2, m=9)
    rng = random.Random(0)
    for shape in ((28, 28, 1), (32, 32, 3)):
        a = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
        out = aug(a, rng)
        assert out.shape == a.shape and out.dtype == np.uint8


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
    for name in ("autocontrast", "equalize"):
        assert torch.equal(O.OP_FUNCS[name](x, mags(32, 0)), x)
    ra = RandAugment(n=3, m=0.0, mstd=0.0)  # all ops
    op_idx, _ = ra.sample(32, gen(0))
    assert len(op_idx.unique()) == len(OPS)  # every op was drawn at least once
    assert torch.equal(ra.apply(x, op_idx, torch.zeros(op_idx.shape), gen(0)), x)
    assert torch.equal(ra(x, generator=gen(1)), x)
    # On arbitrary images, every op that has a strength is a no-op at M = 0.
    with_strength = [name for name in OPS if name not in PIXEL_OPS_WITHOUT_STRENGTH[1:]]
    for size in SIZES + [(13, 22)]:
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


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(("c", "size"), [(3, 12), (1, (9, 16))])
def test_apply_equals_the_ops_one_sample_at_a_time(device, c, size, monkeypatch):
    """apply() sorts, groups and chunks the batch; the result must be each sample's own ops, in
    layer order, with the signs and cutout centres apply draws from the generator (first a sign
    per layer and sample, then the centres)."""
    monkeypatch.setattr(R, "CHUNK_BYTES", 3 * c * 16 * 16)  # a few images per op call: exercise chunking
    ra = RandAugment(n=2, m=7.0, mstd=2.0)
    x = images(96, c, size, seed=3, device=device, low=0, high=256)
    b, _, h, w = x.shape
    op_idx, mag = ra.sample(b, gen(0, device), device)
    out = ra.apply(x, op_idx, mag, gen(1, device))
    g = gen(1, device)
    sign = O.random_sign((2, b), g, x.device)
    centre = O.random_centre((2, b), h, w, g, x.device)
    for i in range(b):
        y = x[i : i + 1]
        for layer in range(2):
            pick = (layer, slice(i, i + 1))
            y = O.apply_op(y, ra.ops[op_idx[layer, i]], mag[pick], sign[pick], centre[pick])
        assert torch.equal(out[i : i + 1], y), (i, [ra.ops[k] for k in op_idx[:, i]])


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


def test_consecutive_calls_return_independent_tensors():
    """The reused scratch buffer must never leak into (or alias) a returned batch."""
    ra = RandAugment(n=3, m=9.0)
    x, y = images(40, 3, 16, seed=1), images(40, 3, 16, seed=2)
    first = ra(x, generator=gen(1))
    kept = first.clone()
    second = ra(y, generator=gen(2))
    ra(images(8, 3, 16, seed=3), generator=gen(3))  # another shape: a new scratch buffer
    assert torch.equal(first, kept) and first.data_ptr() != second.data_ptr()
    assert torch.equal(first, ra(x, generator=gen(1)))


def test_non_contiguous_images_give_the_same_result():
    ra = RandAugment(n=2, m=9.0)
    x = images(24, 3, 20, seed=4, low=0, high=256)
    expected = ra(x, generator=gen(5))
    assert torch.equal(ra(x.to(memory_format=torch.channels_last), generator=gen(5)), expected)
    wide = torch.cat([x, x], dim=3)[..., ::2]  # strided view of x's pixels
    assert torch.equal(ra(wide, generator=gen(5)), ra(wide.contiguous(), generator=gen(5)))
    for name in OPS:
        op = O.OP_FUNCS[name]
        assert torch.equal(op(x.to(memory_format=torch.channels_last), mags(24, 7), gen(6)), op(x, mags(24, 7), gen(6)))


def test_results_are_ordinary_tensors_that_autograd_and_in_place_ops_accept():
    """The work runs in inference mode; what is returned must not be an inference tensor."""
    x = images(6, 3, 12)
    outs = [RandAugment(2, 9)(x, generator=gen(0)), random_crop_flip(x, 2, generator=gen(0)),
            O.OP_FUNCS["rotate"](x, mags(6, 9), gen(0)), O.OP_FUNCS["equalize"](x, mags(6, 9), gen(0))]
    weight = torch.ones(1, 3, 3, 3, requires_grad=True)
    for out in outs:
        assert not out.is_inference()
        out.add_(1)  # in place, outside inference mode
        F.conv2d(out.float(), weight).sum().backward()  # conv saves its input for backward


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
# The native backend (noisystudent/augment/native.c): the same bytes as the torch backend
# ------------------------------------------------------------------------------------------------

NATIVE_SHAPES = [(1, 8), (3, 8), (1, 28), (3, 32), (3, 96), (3, (13, 22)), (1, (31, 24)), (3, (2, 2)), (3, (1, 5))]


@pytest.fixture(scope="module")
def native_lib():
    if not native.available():
        pytest.skip(f"native RandAugment backend unavailable: {native.unavailable_reason()}")
    return native.load()


def both_backends(ra_args: dict, x: torch.Tensor, op_idx: torch.Tensor, mag: torch.Tensor, seed: int):
    """`RandAugment(**ra_args).apply(x, op_idx, mag, gen(seed))` on the torch and on the native backend."""
    return tuple(RandAugment(**ra_args, backend=backend).apply(x, op_idx, mag, gen(seed))
                 for backend in ("torch", "native"))


@pytest.mark.parametrize(("c", "size"), NATIVE_SHAPES)
def test_native_equals_torch_for_every_op(native_lib, c, size):
    """Each op alone at M = 0, 3, 6.5, 9, 10 and at random magnitudes, both signs, random centres."""
    x = images(24, c, size, seed=11, low=0, high=256)
    x[:2] = 0  # flat images: autocontrast / equalize leave them, contrast blends with their mean
    x[2:4] = 255
    b = x.shape[0]
    op_idx = torch.zeros(1, b, dtype=torch.long)
    random_mags = torch.rand(1, b, generator=gen(12)) * O.MAG_MAX
    for name in OPS:
        for mag in [torch.full((1, b), m) for m in (0.0, 3.0, 6.5, 9.0, 10.0)] + [random_mags]:
            ours, reference = both_backends({"n": 1, "ops": [name]}, x, op_idx, mag, seed=13)
            assert torch.equal(ours, reference), (name, mag[0, 0].item(), (ours != reference).sum().item())


@pytest.mark.parametrize(("c", "size"), NATIVE_SHAPES)
@pytest.mark.parametrize(("n", "m", "mstd"), [(2, 9.0, 0.0), (3, 7.0, 2.0), (1, 10.0, 0.0), (0, 9.0, 0.0)])
def test_native_randaugment_equals_torch_with_the_same_seed(native_lib, c, size, n, m, mstd):
    x = images(48, c, size, seed=14, low=0, high=256)
    for seed in (0, 1):
        ours = RandAugment(n, m, mstd, backend="native")(x, generator=gen(seed))
        assert torch.equal(ours, RandAugment(n, m, mstd, backend="torch")(x, generator=gen(seed)))
    # the default backend is the native one on CPU tensors, and also draws the same
    assert RandAugment(n, m, mstd).backend_for("cpu") == "native"
    assert torch.equal(RandAugment(n, m, mstd)(x, generator=gen(2)),
                       RandAugment(n, m, mstd, backend="torch")(x, generator=gen(2)))


def test_native_equals_torch_beyond_the_magnitude_range_and_on_strided_input(native_lib):
    """apply() takes any magnitudes: factors past 0..2, solarize thresholds below 0, cutouts larger than
    the image; and non-contiguous or channels-last images."""
    x = images(64, 3, (17, 21), seed=15, low=0, high=256)
    op_idx, _ = RandAugment(2, 9).sample(64, gen(16))
    mag = torch.rand(2, 64, generator=gen(17)) * 40 - 15  # -15 .. 25
    ours, reference = both_backends({"n": 2}, x, op_idx, mag, seed=18)
    assert torch.equal(ours, reference)
    for strided in (x.to(memory_format=torch.channels_last), torch.cat([x, x], dim=3)[..., ::2]):
        ours, reference = both_backends({"n": 2}, strided, op_idx, mag, seed=18)
        assert torch.equal(ours, reference) and ours.is_contiguous()


def test_native_ops_match_pil(native_lib):
    """The native kernels against the PIL reference directly, with given signs and centres."""
    for c, size in ((1, 28), (3, (31, 24)), (3, 96)):
        x = images(12, c, size, seed=19, low=0, high=256)
        b, _, h, w = x.shape
        sign = alternating_signs(b)
        centre = O.random_centre((b,), h, w, gen(20), torch.device("cpu"))
        op_idx = torch.zeros(1, b, dtype=torch.long)
        for name in OPS:
            ra = RandAugment(1, ops=[name], backend="native")
            for m in (3.0, 9.0):
                ours = ra.apply_given(x, op_idx, torch.full((1, b), m), sign[None], centre[None])
                assert_matches_pil(ours, pil_op(x, name, mags(b, m), sign, centre), name)


def test_native_scalar_build_equals_torch(native_lib, tmp_path, monkeypatch):
    """The portable scalar kernels (-DNS_NO_SIMD, what platforms without SSE2 run) give the same bytes."""
    scalar = native.load(cache_dir=tmp_path, extra_flags=("-DNS_NO_SIMD",))
    assert scalar is not None and scalar.simd == "scalar", native.unavailable_reason(cache_dir=tmp_path)
    monkeypatch.setattr(native, "load", lambda *args, **kwargs: scalar)
    for c, size in ((3, 96), (3, (13, 22)), (1, 28)):
        x = images(64, c, size, seed=21, low=0, high=256)
        for seed in (0, 1):
            ours = RandAugment(2, 9, mstd=1.0, backend="native")(x, generator=gen(seed))
            assert torch.equal(ours, RandAugment(2, 9, mstd=1.0, backend="torch")(x, generator=gen(seed)))


def test_native_build_is_cached_and_leaves_no_partial_files(native_lib, tmp_path):
    lib = native.load(cache_dir=tmp_path)
    assert lib is not None and lib.path.is_relative_to(tmp_path)
    assert lib.path.name == native.LIBRARY_NAME and lib.path.parent.parent == tmp_path
    built = lib.path.stat().st_mtime_ns
    assert native.load(cache_dir=tmp_path) is lib  # cached in the process
    native.clear_cache()
    try:
        again = native.load(cache_dir=tmp_path)  # found on disk: not compiled again
        assert again.path == lib.path and again.path.stat().st_mtime_ns == built
    finally:
        native.clear_cache()
    assert [p.name for p in lib.path.parent.iterdir()] == [native.LIBRARY_NAME]


def test_concurrent_processes_build_one_library(native_lib, tmp_path):
    """Processes building into the same empty cache at once (torchrun ranks) all load a whole library."""
    code = ("import sys; from noisystudent.augment import native; "
            "lib = native.load(cache_dir=sys.argv[1]); print(lib is not None and lib.path)")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
             for _ in range(3)]
    outputs = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert all(p.returncode == 0 for p in procs) and len(set(outputs)) == 1 and outputs[0] != "False", outputs
    assert [p.name for p in Path(outputs[0]).parent.iterdir()] == [native.LIBRARY_NAME]


@pytest.fixture
def forget_native():
    """Clear the native module's cache before and after (the test changes what loading finds)."""
    native.clear_cache()
    yield
    native.clear_cache()


def test_missing_compiler_falls_back_to_torch(forget_native, monkeypatch, tmp_path, caplog):
    monkeypatch.setattr(native, "COMPILERS", ("no-such-c-compiler-anywhere",))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))  # no library built before
    x = images(32, 3, 20, seed=22, low=0, high=256)
    with caplog.at_level(logging.INFO, logger="noisystudent.augment.native"):
        out = RandAugment(2, 9)(x, generator=gen(3))  # auto: torch, no exception
    assert torch.equal(out, RandAugment(2, 9, backend="torch")(x, generator=gen(3)))
    assert not native.available() and "no-such-c-compiler-anywhere" in native.unavailable_reason()
    assert RandAugment(2, 9).backend_for("cpu") == "torch"
    assert sum("unavailable" in r.getMessage() for r in caplog.records) == 1  # said once
    with pytest.raises(UserError, match="unavailable"):
        RandAugment(2, 9, backend="native")
    assert not any(tmp_path.iterdir())


def test_failing_compile_is_reported_not_raised(forget_native, tmp_path):
    """A compiler that exists but fails (here `false`): load() returns None with the reason, no partial file."""
    if shutil.which("false") is None:
        pytest.skip("no `false` command")
    assert native.load(cache_dir=tmp_path, compilers=("false",)) is None
    assert "failed" in native.unavailable_reason(cache_dir=tmp_path, compilers=("false",))
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]


def test_backend_argument(native_lib):
    assert RandAugment.from_spec("rand-n2-m9", backend="torch").backend == "torch"
    assert repr(RandAugment(backend="native")) == "RandAugment(n=2, m=9, mstd=0, backend='native')"
    assert RandAugment(backend="torch").backend_for("cpu") == "torch"
    assert RandAugment().backend_for("cuda") == "torch"  # CUDA tensors always run the torch code
    with pytest.raises(UserError, match="CPU tensors only"):
        RandAugment(backend="native").backend_for("cuda")
    with pytest.raises(UserError, match="unknown RandAugment backend"):
        RandAugment(backend="c")


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


@pytest.mark.parametrize("mode", ["zeros", "edge"])
def test_crop_flip_is_the_drawn_shift_and_flip_of_each_sample(mode):
    """Each output is its own sample padded, cropped at the drawn (dy, dx) and mirrored when drawn
    (draws: the (B, 2) shifts, then the (B,) flips), for odd sizes and channels-last input too."""
    pad = 3
    x = images(40, 3, (9, 14), seed=8, low=1, high=256).to(memory_format=torch.channels_last)
    out = random_crop_flip(x, pad=pad, flip=True, generator=gen(4), mode=mode)
    g = gen(4)
    shift = O.randint(-pad, pad + 1, (40, 2), g, torch.device("cpu"))
    mirrored = O.randint(0, 2, (40,), g, torch.device("cpu"))
    padded = F.pad(x.float(), (pad,) * 4, mode="constant" if mode == "zeros" else "replicate").to(torch.uint8)
    for i, ((dy, dx), m) in enumerate(zip(shift.tolist(), mirrored.tolist())):
        crop = padded[i, :, pad + dy : pad + dy + 9, :]
        cols = torch.arange(14).flip(0) if m else torch.arange(14)
        assert torch.equal(out[i], crop[:, :, pad + dx + cols]), i


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


# ------------------------------------------------------------------------------------------------
# gaussian_pixel_noise
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
def test_pixel_noise_shape_dtype_device_and_off_at_zero(device):
    x = images(6, 3, 8, device=device, low=0, high=256)
    out = gaussian_pixel_noise(x, 0.0, generator=gen(0, device))
    assert torch.equal(out, x) and out.data_ptr() != x.data_ptr()
    out = gaussian_pixel_noise(x, 0.1, generator=gen(0, device))
    assert out.shape == x.shape and out.dtype == torch.uint8 and out.device == x.device
    assert not torch.equal(out, x)
    assert gaussian_pixel_noise(x[:0], 0.1, generator=gen(0, device)).shape == (0, 3, 8, 8)


def test_pixel_noise_std_is_drawn_per_image_up_to_the_maximum():
    """On mid-gray images (no clipping) each image's noise has its own std, spread evenly over
    [0, max_std * 255] gray levels, with mean 0 (rounding adds at most 1/12 of a level squared)."""
    x = torch.full((400, 1, 32, 32), 128, dtype=torch.uint8)
    out = gaussian_pixel_noise(x, 0.08, generator=gen(3))  # std up to 20.4 gray levels
    noise = (out.float() - 128).flatten(1)
    stds = noise.std(1)
    assert abs(noise.mean().item()) < 0.1
    assert stds.max().item() < 20.4 * 1.1 and stds.min().item() < 1.5
    quartiles = torch.quantile(stds, torch.tensor([0.25, 0.5, 0.75]))
    assert torch.allclose(quartiles, torch.tensor([5.1, 10.2, 15.3]), atol=1.2)  # uniform in [0, 20.4]


def test_pixel_noise_clips_at_the_pixel_range_and_repeats_with_a_seed():
    black = torch.zeros((50, 1, 16, 16), dtype=torch.uint8)
    white = torch.full((50, 1, 16, 16), 255, dtype=torch.uint8)
    a = gaussian_pixel_noise(black, 0.1, generator=gen(5))
    assert (a > 0).any() and torch.equal(a, gaussian_pixel_noise(black, 0.1, generator=gen(5)))
    assert not torch.equal(a, gaussian_pixel_noise(black, 0.1, generator=gen(6)))
    # clipped at 0: the black background only brightens, so its mean rises (the robustness suite's noise too)
    assert a.float().mean().item() > 1.0
    assert (gaussian_pixel_noise(white, 0.1, generator=gen(5)) < 255).any()


def test_pixel_noise_rejects_a_std_outside_the_pixel_range():
    x = images(2, 1, 8, low=0, high=256)
    for bad in (-0.01, 1.5):
        with pytest.raises(ValueError, match="max_std must be in"):
            gaussian_pixel_noise(x, bad)


@pytest.mark.parametrize("device", DEVICES)
def test_mixup_mixes_inputs_and_targets_with_the_same_weights_and_partners(device):
    """Row i's input and target are both one-hot at i: after mixup they must still be equal, row by row,
    each with weight >= 0.5 on its own index and the rest on one partner."""
    b = 64
    eye = torch.eye(b, device=device)
    x, t = mixup(eye.view(b, 1, 1, b), eye, 1.0, np.random.default_rng(0))
    assert x.shape == (b, 1, 1, b) and t.shape == (b, b) and x.device == eye.device
    assert torch.equal(x.view(b, b), t)
    assert torch.allclose(t.sum(1), torch.ones(b, device=device))
    own = t.diagonal()
    assert (own >= 0.5).all() and (own <= 1).all() and (own < 1).any()
    assert ((t > 0).sum(1) <= 2).all()
    x2, t2 = mixup(eye.view(b, 1, 1, b), eye, 1.0, np.random.default_rng(0))
    assert torch.equal(x, x2) and torch.equal(t, t2)  # the numpy generator alone decides


def test_mixup_weights_follow_the_beta_parameter():
    """alpha 1: a row's own weight max(l, 1 - l) is uniform on [0.5, 1] (mean 0.75); a small alpha
    keeps most rows almost unmixed."""
    b = 4000
    eye = torch.eye(b)
    own = {a: mixup(torch.zeros(b, 1), eye, a, np.random.default_rng(1))[1].diagonal() for a in (1.0, 0.05)}
    # a row paired with itself keeps weight 1: about one row in b
    assert abs(own[1.0].mean().item() - 0.75) < 0.01
    assert (own[0.05] > 0.95).float().mean() > 0.7


def test_mixup_rejects_bad_arguments_and_leaves_a_single_row():
    with pytest.raises(ValueError, match="positive"):
        mixup(torch.zeros(4, 1), torch.zeros(4, 2), 0.0, np.random.default_rng(0))
    with pytest.raises(ValueError, match="targets"):
        mixup(torch.zeros(4, 1), torch.zeros(3, 2), 1.0, np.random.default_rng(0))
    x, t = torch.ones(1, 3), torch.tensor([[0.0, 1.0]])
    assert mixup(x, t, 1.0, np.random.default_rng(0)) == (x, t)
