"""Model registry: model names -> builder functions, and `create_model`.

A builder is registered with `@register_model` under its function name and is called as
fn(num_classes, in_chans, drop_rate, drop_path_rate).
"""

from __future__ import annotations

import re
from typing import Callable, TypeVar

from torch import nn

from noisystudent.errors import UserError

ModelFn = Callable[..., nn.Module]
F = TypeVar("F", bound=ModelFn)

_MODELS: dict[str, ModelFn] = {}


def register_model(fn: F) -> F:
    """Decorator: make `fn` available to `create_model` under `fn.__name__`."""
    name = fn.__name__
    if name in _MODELS and _MODELS[name] is not fn:
        raise ValueError(f"model {name!r} is already registered")
    _MODELS[name] = fn
    return fn


def _natural_key(name: str) -> list[int | str]:
    """Sort key comparing digit runs as numbers: resnet8 < resnet14 < wrn16_2 < wrn28_2."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def list_models() -> list[str]:
    """Names of all registered models, sorted naturally (resnet8 before resnet14)."""
    return sorted(_MODELS, key=_natural_key)


def create_model(
    name: str, num_classes: int, in_chans: int = 3, drop_rate: float = 0.0, drop_path_rate: float = 0.0
) -> nn.Module:
    """Build model `name` with a `num_classes`-way classifier for `in_chans`-channel images.

    drop_rate: dropout before the classifier; drop_path_rate: stochastic-depth drop probability
    of the last residual block (earlier blocks drop linearly less). Both must be in [0, 1).
    Raises UserError for an unknown name or an out-of-range argument.
    """
    fn = _MODELS.get(name)
    if fn is None:
        raise UserError(f"unknown model {name!r}; available: {', '.join(list_models())}")
    if num_classes < 1:
        raise UserError(f"num_classes must be >= 1, got {num_classes}")
    if in_chans < 1:
        raise UserError(f"in_chans must be >= 1, got {in_chans}")
    for key, value in (("drop_rate", drop_rate), ("drop_path_rate", drop_path_rate)):
        if not 0.0 <= value < 1.0:
            raise UserError(f"{key} must be in [0, 1), got {value}")
    return fn(num_classes=num_classes, in_chans=in_chans, drop_rate=drop_rate, drop_path_rate=drop_path_rate)


def count_params(model: nn.Module) -> int:
    """Total number of parameter elements (trainable or not) in `model`."""
    return sum(p.numel() for p in model.parameters())
