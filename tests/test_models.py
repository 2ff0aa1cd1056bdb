"""Tests for noisystudent.models: every registered model, stochastic depth, dropout, registry."""

import math

import pytest
import torch
from torch import nn

from noisystudent.errors import UserError
from noisystudent.models import (
    DropPath,
    count_params,
    create_model,
    drop_path,
    drop_path_rates,
    list_models,
    register_model,
)

NUM_CLASSES = 10
ALL_MODELS = list_models()


@pytest.fixture(autouse=True)
def _seed():
    """Each test starts from the same global RNG state and leaves the caller's state untouched."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        yield


# ---------------------------------------------------------------- every registered model


@pytest.mark.parametrize("name", ALL_MODELS)
@pytest.mark.parametrize("shape", [(2, 1, 8, 8), (2, 3, 28, 28)])
def test_forward_backward(name, shape):
    model = create_model(name, NUM_CLASSES, in_chans=shape[1], drop_rate=0.2, drop_path_rate=0.2)
    assert model.num_classes == NUM_CLASSES
    logits = model(torch.randn(shape))  # train mode: dropout and drop path active
    assert logits.shape == (shape[0], NUM_CLASSES)
    assert torch.isfinite(logits).all()
    logits.logsumexp(dim=1).sum().backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname
    # the classifier always receives a non-zero gradient
    assert model.fc.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("name", ALL_MODELS)
def test_forward_features_and_eval_determinism(name):
    model = create_model(name, NUM_CLASSES, in_chans=1, drop_rate=0.5, drop_path_rate=0.3).eval()
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        feats = model.forward_features(x)
        assert feats.shape == (3, model.num_features)
        assert model.fc.in_features == model.num_features
        out1, out2 = model(x), model(x)
    assert torch.equal(out1, out2)
    torch.testing.assert_close(out1, model.fc(feats))  # eval: dropout is identity


@pytest.mark.parametrize("name", ALL_MODELS)
def test_channels_last(name):
    model = create_model(name, NUM_CLASSES, in_chans=3, drop_rate=0.2, drop_path_rate=0.5).eval()
    x = torch.randn(2, 3, 28, 28)
    with torch.no_grad():
        ref = model(x)
        model = model.to(memory_format=torch.channels_last)
        x_cl = x.to(memory_format=torch.channels_last)
        torch.testing.assert_close(model(x_cl), ref, rtol=1e-4, atol=1e-4)

    features = []
    model.blocks[-1].register_forward_hook(lambda mod, inp, out: features.append(out))
    x_cl.requires_grad_()
    model.train()(x_cl).sum().backward()
    assert features[0].is_contiguous(memory_format=torch.channels_last)  # layout survives the blocks
    assert torch.isfinite(x_cl.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("name", ALL_MODELS)
def test_blocks_start_as_identity(name):
    """Zero-init of each branch's last layer: identity-shortcut blocks map x >= 0 to x at init."""
    model = create_model(name, NUM_CLASSES).eval()
    identity_blocks = [b for b in model.blocks if b.shortcut is None]
    assert identity_blocks
    for block in model.blocks:
        assert isinstance(block.drop_path, DropPath)
    for block in identity_blocks:
        channels = block.conv1.in_channels
        x = torch.rand(2, channels, 8, 8)
        with torch.no_grad():
            torch.testing.assert_close(block(x), x)


@pytest.mark.parametrize("name", ALL_MODELS)
def test_drop_path_rates_in_model(name):
    rate = 0.2
    model = create_model(name, NUM_CLASSES, drop_path_rate=rate)
    stored = [block.drop_path.p for block in model.blocks]
    n = len(stored)
    assert stored == pytest.approx([rate * i / n for i in range(1, n + 1)])
    assert stored[-1] == pytest.approx(rate)
    assert all(b > a for a, b in zip(stored, stored[1:]))


@pytest.mark.parametrize("name", ALL_MODELS)
def test_dropout_before_classifier(name):
    model = create_model(name, NUM_CLASSES, in_chans=1, drop_rate=0.5)
    assert isinstance(model.head_drop, nn.Dropout) and model.head_drop.p == 0.5
    # the dropout module runs on the pooled features and feeds the classifier directly
    order, seen = [], {}

    def record(child_name):
        def hook(module, inputs, output):
            order.append(child_name)
            seen[child_name] = (inputs[0], output)

        return hook

    for child_name, child in model.named_children():
        child.register_forward_hook(record(child_name))
    x = torch.randn(4, 1, 28, 28)
    model(x)
    assert order[-2:] == ["head_drop", "fc"]
    assert torch.equal(seen["head_drop"][1], seen["fc"][0])
    assert seen["head_drop"][0].shape == (4, model.num_features)

    # train: two forwards differ (BN in train mode is deterministic, so dropout is the cause)
    assert not torch.equal(model(x), model(x))
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))


@pytest.mark.parametrize("name", ALL_MODELS)
def test_no_noise_model_is_deterministic_in_train_mode(name):
    """With drop_rate = drop_path_rate = 0 the only randomness left is none at all."""
    model = create_model(name, NUM_CLASSES, in_chans=1)
    x = torch.randn(4, 1, 8, 8)
    assert torch.equal(model(x), model(x))


# ---------------------------------------------------------------- sizes


def _params(name):
    return count_params(create_model(name, NUM_CLASSES, in_chans=1))


def test_param_counts_increase_within_family():
    resnets = [_params(f"resnet{d}") for d in (8, 14, 20, 26, 32)]
    assert all(b > a for a, b in zip(resnets, resnets[1:])), resnets
    assert _params("wrn16_2") < _params("wrn28_2")
    assert _params("wrn16_2") < _params("wrn16_4")


def test_wrn28_2_matches_fixmatch_size():
    # FixMatch's WRN-28-2 for CIFAR-10 has 1,467,610 parameters.
    assert count_params(create_model("wrn28_2", 10, in_chans=3)) == 1_467_610


def test_count_params():
    assert count_params(nn.Linear(3, 4)) == 3 * 4 + 4


# ---------------------------------------------------------------- drop path


def test_drop_path_identity_cases():
    x = torch.randn(8, 3, 4, 4)
    assert drop_path(x, 0.5, training=False) is x
    assert drop_path(x, 0.0, training=True) is x
    module = DropPath(0.5).eval()
    assert module(x) is x
    assert "p=0.5" in repr(module)


def test_drop_path_statistics():
    p, n = 0.2, 40_000
    x = torch.ones(n, 3, 2, 2)
    y = DropPath(p).train()(x)
    per_sample = y.flatten(1)
    dropped = (per_sample == 0).all(dim=1)
    kept = ~dropped
    # whole samples are either all zero or all exactly 1 / (1 - p)
    assert torch.equal(per_sample[kept], torch.full_like(per_sample[kept], 1.0 / (1.0 - p)))
    # #dropped ~ Binomial(n, p): std of the fraction is sqrt(p (1 - p) / n) = 0.002; allow 5 std
    std = math.sqrt(p * (1 - p) / n)
    assert abs(dropped.float().mean().item() - p) < 5 * std
    # mean = kept fraction / (1 - p) has std = std / (1 - p); expectation preserved within 5 std
    assert abs(y.mean().item() - 1.0) < 5 * std / (1 - p)


def test_drop_path_gradient_flows_through_kept_samples():
    x = torch.ones(1000, 2, requires_grad=True)
    y = drop_path(x, 0.5, training=True)
    y.sum().backward()
    torch.testing.assert_close(x.grad, y.detach())  # d(x * mask)/dx = mask


def test_drop_path_rejects_bad_probability():
    with pytest.raises(ValueError):
        DropPath(1.0)
    with pytest.raises(ValueError):
        drop_path(torch.ones(2), -0.1, training=True)


def test_drop_path_rates():
    rates = drop_path_rates(0.2, 5)
    assert rates == pytest.approx([0.04, 0.08, 0.12, 0.16, 0.2])
    assert 1 - rates[-1] == pytest.approx(0.8)  # the paper's final-block survival probability
    assert drop_path_rates(0.0, 3) == [0.0, 0.0, 0.0]
    assert drop_path_rates(0.2, 0) == []


# ---------------------------------------------------------------- registry


def test_list_models():
    names = list_models()
    expected = {"resnet8", "resnet14", "resnet20", "resnet26", "resnet32", "wrn16_2", "wrn16_4", "wrn28_2",
                "resnet20_w16", "resnet32_w16", "resnet44_w16", "resnet56_w16",
                "resnet20_s2", "resnet32_s2", "resnet32_w16_s2"}
    assert expected <= set(names)
    assert names.index("resnet8") < names.index("resnet14") < names.index("resnet32")


@pytest.mark.parametrize("name, full", [("resnet32_w16_s2", "resnet32_w16"), ("resnet20_s2", "resnet20"),
                                        ("resnet32_s2", "resnet32")])
def test_stride2_stem_halves_resolution_and_keeps_the_blocks(name, full):
    s2, ref = create_model(name, 10, 1).eval(), create_model(full, 10, 1).eval()
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        assert s2.stem(x).shape[-2:] == (14, 14)
        assert ref.stem(x).shape[-2:] == (28, 28)
        assert s2.stem(x).shape[1] == ref.stem(x).shape[1]  # the first stage's width
    # the same blocks and classifier; only the stem differs
    assert count_params(s2.blocks) == count_params(ref.blocks)
    assert count_params(s2.fc) == count_params(ref.fc)
    assert count_params(s2.stem) > count_params(ref.stem)


def test_build_resnet_rejects_other_stem_strides():
    from noisystudent.models.resnet import NARROW_WIDTHS, build_resnet

    with pytest.raises(ValueError, match="stem_stride"):
        build_resnet(20, NARROW_WIDTHS, 10, 1, stem_stride=4)


@pytest.mark.parametrize("depth, millions", [(20, 0.27), (32, 0.46), (44, 0.66), (56, 0.85)])
def test_narrow_resnets_match_he_et_al(depth, millions):
    # He et al. 2016, Table 6 (CIFAR-10): ResNet-20/32/44/56 with widths 16/32/64 have 0.27/0.46/0.66/0.85M
    # parameters; their shortcuts are parameter-free, ours 1x1 conv + BN (2,688 more), hence 2%
    narrow = create_model(f"resnet{depth}_w16", 10, 3)
    assert count_params(narrow) == pytest.approx(millions * 1e6, rel=0.02)
    assert [m.out_channels for m in narrow.modules() if isinstance(m, nn.Conv2d)][-1] == 64


def test_unknown_model_raises_user_error():
    with pytest.raises(UserError) as info:
        create_model("resnet9000", NUM_CLASSES)
    message = str(info.value)
    assert "unknown model 'resnet9000'" in message
    assert all(name in message for name in list_models())


@pytest.mark.parametrize(
    "kwargs", [{"num_classes": 0}, {"in_chans": 0}, {"drop_rate": 1.0}, {"drop_path_rate": -0.1}]
)
def test_create_model_rejects_bad_arguments(kwargs):
    args = {"num_classes": NUM_CLASSES, **kwargs}
    with pytest.raises(UserError):
        create_model("resnet8", **args)


def test_register_model_passes_arguments():
    calls = []

    def _test_only_model(num_classes, in_chans, drop_rate, drop_path_rate):
        calls.append((num_classes, in_chans, drop_rate, drop_path_rate))
        return nn.Linear(in_chans, num_classes)

    from noisystudent.models import registry

    assert register_model(_test_only_model) is _test_only_model
    try:
        assert "_test_only_model" in list_models()
        model = create_model("_test_only_model", 7, in_chans=2, drop_rate=0.1, drop_path_rate=0.3)
        assert isinstance(model, nn.Linear)
        assert calls == [(7, 2, 0.1, 0.3)]
        assert register_model(_test_only_model) is _test_only_model  # re-registering the same fn is fine
    finally:
        registry._MODELS.pop("_test_only_model")
    assert "_test_only_model" not in list_models()
