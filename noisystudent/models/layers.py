"""Pieces shared by every model family: stochastic depth, stage layout, the classifier trunk.

A family (see `resnet.py`, `wide_resnet.py`) only defines its residual block and its stem/final
layers; `make_blocks` lays the blocks out in stages with linearly rising stochastic-depth rates
and `ResidualClassifier` adds global average pooling, dropout and the linear classifier.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn

# block_fn(in_chs, out_chs, stride, drop_path_rate) -> residual block
BlockFn = Callable[[int, int, int, float], nn.Module]


def _check_prob(p: float, name: str) -> None:
    if not 0.0 <= p < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {p}")


def drop_path(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Stochastic depth on a residual branch: drop whole samples.

    Each sample of `x` (B, ...) is kept with probability 1 - p and then scaled by 1 / (1 - p), so
    the expectation is unchanged; dropped samples become zero. Identity when p == 0 or when not
    training. The mask is drawn from torch's global RNG on x's device.
    """
    _check_prob(p, "drop path probability")
    if p == 0.0 or not training:
        return x
    keep = 1.0 - p
    mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1))  # (B, 1, ..., 1)
    mask.bernoulli_(keep).div_(keep)  # entries are 0 or 1 / keep
    return x * mask


class DropPath(nn.Module):
    """`drop_path` as a module; active only in training mode."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        _check_prob(p, "drop path probability")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return drop_path(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p:g}"


def drop_path_rates(rate: float, n_blocks: int) -> list[float]:
    """Per-block drop probabilities rising linearly to `rate` (Huang et al. 2016).

    Block i of n (1-based) drops with probability rate * i / n: the last block drops `rate`
    (survival 1 - rate, 0.8 in Noisy Student) and the first drops rate / n.
    """
    _check_prob(rate, "drop_path_rate")
    return [rate * i / n_blocks for i in range(1, n_blocks + 1)]


def conv3x3(in_chs: int, out_chs: int, stride: int = 1) -> nn.Conv2d:
    """3x3 convolution, 'same' padding, no bias (always followed or preceded by BN)."""
    return nn.Conv2d(in_chs, out_chs, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(in_chs: int, out_chs: int, stride: int = 1) -> nn.Conv2d:
    """1x1 convolution without bias, used for projection shortcuts."""
    return nn.Conv2d(in_chs, out_chs, kernel_size=1, stride=stride, bias=False)


def make_blocks(
    block_fn: BlockFn, in_chs: int, widths: Sequence[int], blocks_per_stage: int, drop_path_rate: float
) -> list[nn.Module]:
    """Residual blocks for len(widths) stages of `blocks_per_stage` blocks each.

    The first block of every stage but the first halves the resolution (stride 2) and changes
    the width; block k of all n blocks gets drop path rate drop_path_rates(drop_path_rate, n)[k].
    """
    if blocks_per_stage < 1:
        raise ValueError(f"blocks_per_stage must be >= 1, got {blocks_per_stage}")
    rates = drop_path_rates(drop_path_rate, len(widths) * blocks_per_stage)
    blocks: list[nn.Module] = []
    for stage, width in enumerate(widths):
        for i in range(blocks_per_stage):
            stride = 2 if stage > 0 and i == 0 else 1
            blocks.append(block_fn(in_chs, width, stride, rates[len(blocks)]))
            in_chs = width
    return blocks


class ResidualClassifier(nn.Module):
    """stem -> residual blocks -> final -> global average pool -> dropout -> linear.

    `blocks` is one flat nn.Sequential over all stages; each block owns a `drop_path` (DropPath)
    and a `shortcut` (None for identity). Every block should define `zero_init_last()`, which
    makes its residual branch output zero at initialisation so the block starts as identity.
    """

    def __init__(
        self,
        stem: nn.Module,
        blocks: list[nn.Module],
        final: nn.Module,
        num_features: int,
        num_classes: int,
        drop_rate: float = 0.0,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.num_features = num_features
        self.stem = stem
        self.blocks = nn.Sequential(*blocks)
        self.final = final
        self.head_drop = nn.Dropout(drop_rate)  # the paper's model noise on the student
        self.fc = nn.Linear(num_features, num_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Kaiming-normal convs, BN weight 1 / bias 0, zero-init last layer of each branch.

        The linear classifier keeps PyTorch's default initialisation.
        """
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for block in self.blocks:
            block.zero_init_last()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_chans, H, W) -> pooled features (B, num_features)."""
        x = self.stem(x)  # (B, widths[0] or stem width, H, W)
        x = self.blocks(x)  # (B, num_features, ~H/4, ~W/4)
        x = self.final(x)
        return x.mean(dim=(2, 3))  # (B, num_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_chans, H, W) -> logits (B, num_classes)."""
        return self.fc(self.head_drop(self.forward_features(x)))
