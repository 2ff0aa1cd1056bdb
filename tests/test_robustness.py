"""Tests for noisystudent.robustness: the 15 corruptions and the robustness metrics."""

from __future__ import annotations

import ast
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from noisystudent.errors import UserError
from noisystudent.evaluate import accuracy
from noisystudent.models import create_model
from noisystudent.robustness import (
    CORRUPTIONS,
    DETERMINISTIC,
    SEVERITY_PARAMS,
    corrupt,
    corruption_errors,
    fgsm_accuracy,
    flip_counts,
    flip_rate,
    relative_mce,
    robustness_report,
)
from noisystudent.robustness import filters
from noisystudent.robustness.digital import pixelate_side
from noisystudent.robustness.jpeg import jpeg
from noisystudent.tensors import resize_uint8

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
IMAGENET_C = (
    "gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur",
    "zoom_blur", "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate",
    "jpeg_compression",
)  # fmt: skip
SHAPES = [(1, 28), (3, 28), (1, 8), (3, 8)]  # (channels, side)
DOC = Path(__file__).resolve().parents[1] / "docs" / "ROBUSTNESS.md"
MEAN, STD = torch.tensor([0.5]), torch.tensor([0.25])


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Small tensors: one intra-op thread is faster on a loaded 2-core machine (restored after)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def random_images(b: int, c: int, side: int, seed: int = 0, device: str = "cpu") -> torch.Tensor:
    """(b, c, side, side) i.i.d. uniform uint8 images (not constant)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (b, c, side, side), generator=g, dtype=torch.uint8).to(device)


def smooth_images(b: int, c: int, side: int, seed: int = 0) -> torch.Tensor:
    """(b, c, side, side) uint8 Gaussian-blurred noise: random images with natural-ish statistics."""
    g = torch.Generator().manual_seed(seed)
    x = filters.gaussian_blur(torch.randn(b, c, side, side, generator=g), 1.0)
    return ((x - x.mean()) / x.std() * 60 + 128).round().clamp(0, 255).to(torch.uint8)


@pytest.fixture(scope="module")
def digits() -> torch.Tensor:
    """(32, 1, 8, 8) uint8: scikit-learn's digits, 0..16 scaled to 0..255."""
    from sklearn.datasets import load_digits

    images = load_digits().images[:32]
    return torch.from_numpy(np.round(images * 255 / 16).astype(np.uint8))[:, None]


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB from the mean squared error over the whole batch."""
    mse = (a.double() - b.double()).pow(2).mean().item()
    return float("inf") if mse == 0 else 10 * np.log10(255**2 / mse)


# ------------------------------------------------------------------------------------------------
# The table
# ------------------------------------------------------------------------------------------------


def test_the_fifteen_imagenet_c_corruptions_with_five_severities():
    assert CORRUPTIONS == IMAGENET_C
    assert set(DETERMINISTIC) < set(CORRUPTIONS)
    for name, rows in SEVERITY_PARAMS.items():
        assert len(rows) == 5, name
        assert len({len(row) for row in rows}) == 1, name


def test_docs_table_matches_the_code():
    rows = {}
    for line in DOC.read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 7 and cells[0] in SEVERITY_PARAMS:
            values = [ast.literal_eval(cell) for cell in cells[2:]]
            rows[cells[0]] = tuple(v if isinstance(v, tuple) else (v,) for v in values)
    assert rows.keys() == SEVERITY_PARAMS.keys()
    for name, params in SEVERITY_PARAMS.items():
        assert rows[name] == params, name


def test_pixelate_sizes_fall_strictly_with_severity():
    factors = SEVERITY_PARAMS["pixelate"]
    for side in range(6, 300):
        sides = [pixelate_side(side, f, m) for f, m in factors]
        assert all(a > b >= 1 for a, b in zip(sides, sides[1:])), (side, sides)
    assert [pixelate_side(8, f, m) for f, m in factors] == [7, 6, 5, 4, 3]
    assert [pixelate_side(28, f, m) for f, m in factors] == [26, 25, 23, 21, 18]


# ------------------------------------------------------------------------------------------------
# Corruptions: shape, determinism, change, strength
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", CORRUPTIONS)
def test_corruption_keeps_shape_repeats_and_changes(name, device):
    for c, side in SHAPES:
        x = random_images(8, c, side, seed=c * side, device=device)
        for severity in range(1, 6):
            out = corrupt(x, name, severity, seed=3)
            assert out.shape == x.shape and out.dtype == torch.uint8 and out.device == x.device
            assert torch.equal(out, corrupt(x, name, severity, seed=3)), (name, c, side, severity)
            if severity == 1:
                assert not torch.equal(out, x), f"{name} leaves {c}x{side}x{side} images unchanged"
                other = corrupt(x, name, severity, seed=4)
                assert torch.equal(other, out) == (name in DETERMINISTIC), (name, c, side)
        assert torch.equal(x, random_images(8, c, side, seed=c * side, device=device))  # input untouched


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_corruption_changes_a_real_digit(name, digits):
    for image in (digits[:1], resize_uint8(digits[:1], 28)):
        assert not torch.equal(corrupt(image, name, 1), image), (name, tuple(image.shape))
        assert not torch.equal(corrupt(image.expand(1, 3, -1, -1).contiguous(), name, 1), image.expand(1, 3, -1, -1))


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_psnr_falls_with_severity(name, digits):
    batches = {
        "smooth 28x28 rgb": smooth_images(8, 3, 28, seed=1),
        "smooth 8x8 gray": smooth_images(8, 1, 8, seed=2),
        "smooth 8x8 rgb": smooth_images(8, 3, 8, seed=3),
        "digits 28x28": resize_uint8(digits[:8], 28),
        "digits 8x8": digits[:16],
    }
    if name != "glass_blur":  # a shuffle of i.i.d. pixels saturates after one pass (see docs)
        batches["noise 28x28 gray"] = random_images(8, 1, 28, seed=5)
    for label, x in batches.items():
        values = [psnr(corrupt(x, name, s, seed=7), x) for s in range(1, 6)]
        assert all(a > b for a, b in zip(values, values[1:])), f"{name} on {label}: {np.round(values, 2)}"


@pytest.mark.parametrize("shape", [(2, 3, 13, 9), (1, 1, 5, 7), (2, 1, 40, 36)])
def test_odd_sizes_work(shape):
    x = torch.randint(0, 256, shape, generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    for name in CORRUPTIONS:
        for severity in (1, 5):
            out = corrupt(x, name, severity)
            assert out.shape == x.shape and out.dtype == torch.uint8, (name, shape)


def test_empty_batch():
    x = torch.zeros(0, 3, 8, 8, dtype=torch.uint8)
    assert corrupt(x, "fog", 2).shape == x.shape


@pytest.mark.parametrize("args", [("rain", 1), ("fog", 0), ("fog", 6), ("fog", 2.0), ("fog", True), ("fog", "1")])
def test_bad_name_or_severity(args):
    with pytest.raises(UserError):
        corrupt(random_images(2, 1, 8), *args)


@pytest.mark.parametrize("images", [torch.zeros(2, 1, 8, 8), torch.zeros(2, 2, 8, 8, dtype=torch.uint8),
                                    torch.zeros(1, 8, 8, dtype=torch.uint8)])
def test_bad_images(images):
    with pytest.raises(UserError):
        corrupt(images, "fog", 1)


def test_brightness_and_contrast_on_known_values():
    x = torch.tensor([[[[0, 100], [200, 250]]]], dtype=torch.uint8)
    bright = corrupt(x, "brightness", 1)  # +0.05 = +12.75 gray levels, clipped
    assert bright.flatten().tolist() == [13, 113, 213, 255]
    rgb = torch.tensor([200, 100, 50], dtype=torch.uint8).view(1, 3, 1, 1)
    out = corrupt(rgb, "brightness", 1).flatten().tolist()  # V 200 -> 212.75: RGB scaled by V'/V
    assert out == [213, 106, 53]
    flat = corrupt(x, "contrast", 1)  # (x - mean) * 0.75 + mean, mean 137.5
    assert flat.flatten().tolist() == [round(137.5 - 137.5 * 0.75), round(137.5 - 37.5 * 0.75),
                                       round(137.5 + 62.5 * 0.75), round(137.5 + 112.5 * 0.75)]


@pytest.mark.parametrize("c,side", [(1, 28), (3, 32), (3, 13)])
def test_jpeg_is_close_to_pillow(c, side):
    x = smooth_images(6, c, side, seed=side)
    for quality in (80, 40):
        ours = jpeg(x.float(), quality)
        ref = []
        for image in x:
            array = image.permute(1, 2, 0).numpy()
            buf = io.BytesIO()
            Image.fromarray(array[..., 0] if c == 1 else array).save(buf, "JPEG", quality=quality)
            ref.append(torch.from_numpy(np.array(Image.open(buf))).reshape(side, side, c).permute(2, 0, 1))
        ref = torch.stack(ref).float()
        assert (ours - ref).abs().mean() < 1.0, (c, side, quality)
        assert (ref - x.float()).abs().mean() > 1.0  # and the corruption is real


def test_impulse_noise_hits_a_growing_set():
    x = torch.full((4, 1, 8, 8), 128, dtype=torch.uint8)
    hit = [(corrupt(x, "impulse_noise", s, seed=1) != 128) for s in range(1, 6)]
    assert [int(h[0].sum()) for h in hit] == [1, 2, 3, 4, 5]
    assert all(bool((a <= b).all()) for a, b in zip(hit, hit[1:]))


# ------------------------------------------------------------------------------------------------
# Metrics
# ------------------------------------------------------------------------------------------------


class ConstantModel(torch.nn.Module):
    """Returns the same logits for every image (class `label` wins)."""

    def __init__(self, label: int = 0, classes: int = 10):
        super().__init__()
        self.register_buffer("logits", torch.nn.functional.one_hot(torch.tensor(label), classes).float())
        self.scale = torch.nn.Parameter(torch.ones(()))  # something for autograd to reach

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits.expand(len(x), -1) * self.scale + 0 * x.mean(dim=(1, 2, 3)).unsqueeze(1)


class MeanBrightness(torch.nn.Module):
    """Two classes: 0 if the mean normalised pixel is > 0, else 1."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean(dim=(1, 2, 3))
        return torch.stack([s, -s], dim=1)


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    return create_model("resnet8", 10, 1)


def test_constant_model_never_flips():
    x = random_images(12, 1, 8)
    for kind in ("translate", "noise"):
        assert flip_rate(ConstantModel(), x, mean=MEAN, std=STD, kind=kind, frames=4) == 0.0


def test_flip_rate_of_a_real_model_is_seeded_and_batch_size_free(resnet):
    x = random_images(10, 1, 8, seed=1)
    for kind in ("translate", "noise"):
        a = flip_rate(resnet, x, mean=MEAN, std=STD, kind=kind, frames=5, seed=2, batch_size=3)
        b = flip_rate(resnet, x, mean=MEAN, std=STD, kind=kind, frames=5, seed=2, batch_size=64)
        assert a == b and 0.0 <= a <= 1.0
    assert resnet.training  # mode restored


def test_flip_rate_counts_translation_changes():
    # frame t is rolled by t pixels: a model that looks at one pixel flips whenever it changes
    class FirstPixel(torch.nn.Module):
        def forward(self, x):
            return torch.stack([x[:, 0, 0, 0], -x[:, 0, 0, 0]], dim=1)

    x = torch.zeros(1, 1, 8, 8, dtype=torch.uint8)
    x[..., 0, 0] = 255  # only the top-left pixel is bright: it leaves (0, 0) at frame 1 and stays away
    assert flip_rate(FirstPixel(), x, mean=MEAN, std=STD, frames=5) == pytest.approx(1 / 4)


def test_flip_counts_are_per_image_and_sum_to_the_rate(resnet):
    class FirstPixel(torch.nn.Module):
        def forward(self, x):
            return torch.stack([x[:, 0, 0, 0], -x[:, 0, 0, 0]], dim=1)

    x = torch.zeros(2, 1, 8, 8, dtype=torch.uint8)
    x[0, :, 0, 0] = 255  # image 0 flips once (its bright pixel leaves (0, 0)); image 1 stays dark, never flips
    assert flip_counts(FirstPixel(), x, mean=MEAN, std=STD, frames=5).tolist() == [1, 0]
    y = random_images(10, 1, 8, seed=3)
    for kind in ("translate", "noise"):
        counts = flip_counts(resnet, y, mean=MEAN, std=STD, kind=kind, frames=5, seed=4)
        assert counts.shape == (10,) and counts.min() >= 0 and counts.max() <= 4
        assert flip_rate(resnet, y, mean=MEAN, std=STD, kind=kind, frames=5, seed=4) == int(counts.sum()) / 40


def test_fgsm_epsilon_zero_is_clean_accuracy(resnet):
    x = random_images(16, 1, 8, seed=3)
    y = torch.arange(16) % 10
    acc = fgsm_accuracy(resnet, x, y, mean=MEAN, std=STD, epsilons=(0, 1, 8), batch_size=16)
    assert acc[0] == accuracy(resnet, x, y, mean=MEAN, std=STD, batch_size=16)
    assert set(acc) == {0, 1, 8} and all(0.0 <= v <= 1.0 for v in acc.values())
    assert resnet.training and all(p.grad is None for p in resnet.parameters())


def test_fgsm_flips_a_margin_smaller_than_epsilon():
    x = torch.full((4, 1, 8, 8), 130, dtype=torch.uint8)  # 2 gray levels above the 0/1 boundary (127.5)
    y = torch.zeros(4, dtype=torch.long)
    acc = fgsm_accuracy(MeanBrightness(), x, y, mean=torch.tensor([0.5]), std=torch.tensor([0.5]),
                        epsilons=(0, 1, 2, 4, 8))
    assert acc == {0: 1.0, 1: 1.0, 2: 1.0, 4: 0.0, 8: 0.0}  # 130 - 2 = 128 still > 127.5


def test_corruption_errors_of_constant_models():
    x = random_images(6, 1, 8)
    right = corruption_errors(ConstantModel(0), x, torch.zeros(6, dtype=torch.long), mean=MEAN, std=STD,
                              corruptions=("fog", "pixelate"), severities=(1, 3))
    assert right["by_severity"] == {"fog": {1: 0.0, 3: 0.0}, "pixelate": {1: 0.0, 3: 0.0}}
    assert right["mce"] == 0.0 and right["n"] == 6
    wrong = corruption_errors(ConstantModel(0), x, torch.ones(6, dtype=torch.long), mean=MEAN, std=STD,
                              corruptions=("fog",), severities=(2,))
    assert wrong["by_corruption"] == {"fog": 1.0} and wrong["mce"] == 1.0


def test_corruption_errors_are_seeded_and_batch_size_free(resnet):
    x = random_images(12, 1, 8, seed=4)
    y = torch.arange(12) % 10
    kw = {"mean": MEAN, "std": STD, "corruptions": ("gaussian_noise", "glass_blur"), "seed": 5}
    a = corruption_errors(resnet, x, y, batch_size=5, **kw)
    b = corruption_errors(resnet, x, y, batch_size=512, **kw)
    assert a == b
    assert a["by_corruption"]["glass_blur"] == pytest.approx(sum(a["by_severity"]["glass_blur"].values()) / 5)
    assert a["mce"] == pytest.approx(sum(a["by_corruption"].values()) / 2)


def test_relative_mce():
    errors = {"fog": 0.2, "snow": 0.6}
    assert relative_mce(errors, {"fog": 0.4, "snow": 0.3, "frost": 0.1}) == pytest.approx((0.5 + 2.0) / 2)
    assert relative_mce({"by_corruption": errors, "mce": 0.4}, errors) == pytest.approx(1.0)
    with pytest.raises(UserError):
        relative_mce(errors, {"fog": 0.4})
    with pytest.raises(UserError):
        relative_mce(errors, {"fog": 0.4, "snow": 0.0})


def test_robustness_report_is_json_and_complete(resnet):
    x = random_images(8, 1, 8, seed=6)
    y = torch.arange(8) % 10
    report = robustness_report(resnet, x, y, mean=MEAN, std=STD, seed=1, frames=3, epsilons=(0, 2))
    assert json.loads(json.dumps(report)) == report
    assert report["relative_mce"] is None and report["n"] == 8
    assert set(report["corruption_error"]) == set(CORRUPTIONS)
    assert report["clean_error"] == pytest.approx(1 - report["clean_accuracy"])
    assert report["fgsm_accuracy"]["0"] == report["clean_accuracy"]
    assert set(report["flip_rate"]) == {"translate", "noise"}
    again = robustness_report(resnet, x, y, mean=MEAN, std=STD, seed=1, frames=3, epsilons=(0, 2),
                              corruptions=("fog", "snow"), baseline=report)
    if all(report["corruption_error"][n] > 0 for n in ("fog", "snow")):
        assert again["relative_mce"] == pytest.approx(1.0) and again["relative_mce_skipped"] == []
    perfect_fog = dict(report["corruption_error"], fog=0.0)
    third = robustness_report(resnet, x, y, mean=MEAN, std=STD, seed=1, frames=3, epsilons=(0,),
                              corruptions=("fog",), baseline=perfect_fog)
    assert third["relative_mce"] is None and third["relative_mce_skipped"] == ["fog"]


@pytest.mark.parametrize("call", [
    lambda m, x, y: flip_rate(m, x, mean=MEAN, std=STD, kind="rotate"),
    lambda m, x, y: flip_rate(m, x, mean=MEAN, std=STD, frames=1),
    lambda m, x, y: fgsm_accuracy(m, x, y, mean=MEAN, std=STD, epsilons=(-1,)),
    lambda m, x, y: fgsm_accuracy(m, x, y[:2], mean=MEAN, std=STD),
    lambda m, x, y: corruption_errors(m, x, y, mean=MEAN, std=STD, corruptions=("rain",)),
    lambda m, x, y: corruption_errors(m, x[:0], y[:0], mean=MEAN, std=STD),
])
def test_metric_input_errors(call):
    with pytest.raises(UserError):
        call(ConstantModel(), random_images(4, 1, 8), torch.zeros(4, dtype=torch.long))


def test_report_names_match_docs():
    text = DOC.read_text()
    for key in ("clean_accuracy", "corruption_error_by_severity", "relative_mce", "flip_rate", "fgsm_accuracy"):
        assert re.search(rf"`{key}`", text), key
