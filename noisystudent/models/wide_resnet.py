"""Pre-activation WideResNet (Zagoruyko & Komodakis 2016): WRN-depth-k, depth = 6n + 4.

Stem: 3x3 conv to 16 channels (no BN/ReLU: every block pre-activates its input). Stages of n
pre-activation blocks with widths 16k/32k/64k; stages 2 and 3 start with stride 2. Final
BN-ReLU before pooling. Registered: wrn16_2, wrn16_4, wrn28_2 (FixMatch's CIFAR model).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .layers import DropPath, ResidualClassifier, conv1x1, conv3x3, make_blocks
from .registry import register_model

STEM_WIDTH = 16


class PreActBlock(nn.Module):
    """out = drop_path(conv2(relu(bn2(conv1(relu(bn1(x))))))) + shortcut.

    The shortcut is x itself, or a 1x1 conv of the pre-activated relu(bn1(x)) when the shape
    changes (as in the original WRN code).
    """

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1, drop_path_rate: float = 0.0) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_chs)
        self.act1 = nn.ReLU(inplace=True)
        self.conv1 = conv3x3(in_chs, out_chs, stride)
        self.bn2 = nn.BatchNorm2d(out_chs)
        self.act2 = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(out_chs, out_chs)
        self.drop_path = DropPath(drop_path_rate)
        self.shortcut = None
        if stride != 1 or in_chs != out_chs:
            self.shortcut = conv1x1(in_chs, out_chs, stride)

    def zero_init_last(self) -> None:
        """Zero the branch's last conv so the block starts as identity.

        The pre-activation branch ends in a conv, not a BN; zeroing bn2's scale instead would
        leave relu(0) = 0 in front of conv2 and the branch would never receive a gradient.
        """
        nn.init.zeros_(self.conv2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, in_chs, H, W) -> (B, out_chs, H / stride, W / stride)
        pre = self.act1(self.bn1(x))
        shortcut = x if self.shortcut is None else self.shortcut(pre)
        out = self.conv1(pre)
        out = self.conv2(self.act2(self.bn2(out)))
        return self.drop_path(out) + shortcut


def build_wide_resnet(
    depth: int,
    widths: Sequence[int],
    num_classes: int,
    in_chans: int = 3,
    drop_rate: float = 0.0,
    drop_path_rate: float = 0.0,
) -> ResidualClassifier:
    """WRN-`depth` (depth = 6n + 4, n blocks per stage) with stage widths `widths` (16k, 32k, 64k)."""
    if depth < 10 or (depth - 4) % 6:
        raise ValueError(f"WideResNet depth must be 6n + 4 with n >= 1, got {depth}")
    stem = conv3x3(in_chans, STEM_WIDTH)
    blocks = make_blocks(PreActBlock, STEM_WIDTH, widths, (depth - 4) // 6, drop_path_rate)
    final = nn.Sequential(nn.BatchNorm2d(widths[-1]), nn.ReLU(inplace=True))
    return ResidualClassifier(stem, blocks, final, widths[-1], num_classes, drop_rate)


@register_model
def wrn16_2(num_classes: int, in_chans: int = 3, drop_rate: float = 0.0, drop_path_rate: float = 0.0) -> nn.Module:
    return build_wide_resnet(16, (32, 64, 128), num_classes, in_chans, drop_rate, drop_path_rate)


@register_model
def wrn16_4(num_classes: int, in_chans: int = 3, drop_rate: float = 0.0, drop_path_rate: float = 0.0) -> nn.Module:
    return build_wide_resnet(16, (64, 128, 256), num_classes, in_chans, drop_rate, drop_path_rate)


@register_model
def wrn28_2(num_classes: int, in_chans: int = 3, drop_rate: float = 0.0, drop_path_rate: float = 0.0) -> nn.Module:
    return build_wide_resnet(28, (32, 64, 128), num_classes, in_chans, drop_rate, drop_path_rate)
