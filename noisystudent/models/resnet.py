"""CIFAR-style ResNet (He et al. 2016): basic blocks, 3 stages, depth 6n + 2.

Stem: 3x3 conv (stride 1) - BN - ReLU. Stages of n blocks with `widths` channels; stages 2
and 3 start with stride 2. Downsampling shortcuts are 1x1 conv + BN. Registered with base
width 32 (stages 32/64/128): resnet8, resnet14, resnet20, resnet26, resnet32; and with He et al.'s
CIFAR widths 16/32/64, a quarter of the cost per block: resnet20_w16, resnet32_w16, resnet44_w16,
resnet56_w16 (deeper and narrower: more passes in the same time, see docs/RESULTS.md).

The `_s2` models halve the resolution in the stem, before the first stage: a 3x3 conv to half the
first stage's width at full resolution, then a 3x3 conv with stride 2 to its width. The stages then
run at 14, 7 and 4 pixels on 28x28 images, about a quarter of the cost per block; on Fashion-MNIST
a training pass of resnet32_w16_s2 takes about 0.3 of resnet32_w16's time on a 2-core CPU and, given
the same minutes, its extra passes reach a higher accuracy (docs/RESULTS.md "Stride-2 stems").
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .layers import DropPath, ResidualClassifier, conv1x1, conv3x3, make_blocks
from .registry import register_model

WIDTHS = (32, 64, 128)
NARROW_WIDTHS = (16, 32, 64)


class BasicBlock(nn.Module):
    """out = relu(drop_path(bn2(conv2(relu(bn1(conv1(x)))))) + shortcut(x))."""

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1, drop_path_rate: float = 0.0) -> None:
        super().__init__()
        self.conv1 = conv3x3(in_chs, out_chs, stride)
        self.bn1 = nn.BatchNorm2d(out_chs)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(out_chs, out_chs)
        self.bn2 = nn.BatchNorm2d(out_chs)
        self.drop_path = DropPath(drop_path_rate)
        self.act2 = nn.ReLU(inplace=True)
        self.shortcut = None
        if stride != 1 or in_chs != out_chs:
            self.shortcut = nn.Sequential(conv1x1(in_chs, out_chs, stride), nn.BatchNorm2d(out_chs))

    def zero_init_last(self) -> None:
        """Zero the branch's last BN scale so the block starts as identity (Goyal et al. 2017)."""
        nn.init.zeros_(self.bn2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, in_chs, H, W) -> (B, out_chs, H / stride, W / stride)
        shortcut = x if self.shortcut is None else self.shortcut(x)
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.act2(self.drop_path(out) + shortcut)


def build_resnet(
    depth: int,
    widths: Sequence[int],
    num_classes: int,
    in_chans: int = 3,
    drop_rate: float = 0.0,
    drop_path_rate: float = 0.0,
    stem_stride: int = 1,
) -> ResidualClassifier:
    """ResNet-`depth` (depth = 6n + 2, n basic blocks per stage) with stage widths `widths`.

    stem_stride 1: one 3x3 conv to widths[0]; 2: a 3x3 conv to widths[0] // 2, then a 3x3 conv with
    stride 2 to widths[0] (every stage at half the resolution).
    """
    if depth < 8 or (depth - 2) % 6:
        raise ValueError(f"ResNet depth must be 6n + 2 with n >= 1, got {depth}")
    w0 = widths[0]
    if stem_stride == 1:
        stem = nn.Sequential(conv3x3(in_chans, w0), nn.BatchNorm2d(w0), nn.ReLU(inplace=True))
    elif stem_stride == 2:
        stem = nn.Sequential(conv3x3(in_chans, w0 // 2), nn.BatchNorm2d(w0 // 2), nn.ReLU(inplace=True),
                             conv3x3(w0 // 2, w0, stride=2), nn.BatchNorm2d(w0), nn.ReLU(inplace=True))
    else:
        raise ValueError(f"stem_stride must be 1 or 2, got {stem_stride}")
    blocks = make_blocks(BasicBlock, w0, widths, (depth - 2) // 6, drop_path_rate)
    return ResidualClassifier(stem, blocks, nn.Identity(), widths[-1], num_classes, drop_rate)


@register_model
def resnet8(num_classes: int, in_chans: int = 3, drop_rate: float = 0.0, drop_path_rate: float = 0.0) -> nn.Module:
    return build_resnet(8, WIDTHS, num_classes, in_chans, drop_rate, drop_path_rate)


@register_model
def resnet14(num_classes: int, in_chans: int = 3, drop_rate: float = 0.0, drop_path_rate: float = 0.0) -> nn.Module:
    return build_resnet(14, WIDTHS, num_classes, in_chans, drop_rate, drop_path_rate)


@register_model
def resnet20(num_classes: int, in_chans: int = 3, drop_rate: float = 0.0, drop_path_rate: float = 0.0) -> nn.Module:
    return build_resnet(20, WIDTHS, num_classes, in_chans, drop_rate, drop_path_rate)


@register_model
def resnet26(num_classes: int, in_chans: int = 3, drop_rate: float = 0.0, drop_path_rate: float = 0.0) -> nn.Module:
    return build_resnet(26, WIDTHS, num_classes, in_chans, drop_rate, drop_path_rate)


@register_model
def resnet32(num_classes: int, in_chans: int = 3, drop_rate: float = 0.0, drop_path_rate: float = 0.0) -> nn.Module:
    return build_resnet(32, WIDTHS, num_classes, in_chans, drop_rate, drop_path_rate)


@register_model
def resnet20_w16(num_classes: int, in_chans: int = 3, drop_rate: float = 0.0, drop_path_rate: float = 0.0) -> nn.Module:
    return build_resnet(20, NARROW_WIDTHS, num_classes, in_chans, drop_rate, drop_path_rate)


@register_model
def resnet32_w16(num_classes: int, in_chans: int = 3, drop_rate: float = 0.0, drop_path_rate: float = 0.0) -> nn.Module:
    return build_resnet(32, NARROW_WIDTHS, num_classes, in_chans, drop_rate, drop_path_rate)


@register_model
def resnet44_w16(num_classes: int, in_chans: int = 3, drop_rate: float = 0.0, drop_path_rate: float = 0.0) -> nn.Module:
    return build_resnet(44, NARROW_WIDTHS, num_classes, in_chans, drop_rate, drop_path_rate)


@register_model
def resnet56_w16(num_classes: int, in_chans: int = 3, drop_rate: float = 0.0, drop_path_rate: float = 0.0) -> nn.Module:
    return build_resnet(56, NARROW_WIDTHS, num_classes, in_chans, drop_rate, drop_path_rate)


@register_model
def resnet20_s2(num_classes: int, in_chans: int = 3, drop_rate: float = 0.0, drop_path_rate: float = 0.0) -> nn.Module:
    return build_resnet(20, WIDTHS, num_classes, in_chans, drop_rate, drop_path_rate, stem_stride=2)


@register_model
def resnet32_s2(num_classes: int, in_chans: int = 3, drop_rate: float = 0.0, drop_path_rate: float = 0.0) -> nn.Module:
    return build_resnet(32, WIDTHS, num_classes, in_chans, drop_rate, drop_path_rate, stem_stride=2)


@register_model
def resnet32_w16_s2(
    num_classes: int, in_chans: int = 3, drop_rate: float = 0.0, drop_path_rate: float = 0.0
) -> nn.Module:
    return build_resnet(32, NARROW_WIDTHS, num_classes, in_chans, drop_rate, drop_path_rate, stem_stride=2)
