"""RandAugment (Cubuk et al. 2020), batched and per sample, plus its timm-like spec strings.

Each of the N layers draws, for every sample independently, one op uniformly from `ops` and a
magnitude (M, or M + mstd * N(0, 1) clipped to [0, 10] when mstd > 0). The samples that drew the
same op are processed together in one batched call; all geometric ops of a layer (rotate, shear,
translate) share one affine resampling. See `noisystudent.augment.ops` for the ops and the
magnitude table.

Spec strings follow timm: ``rand-n<layers>-m<magnitude>[-mstd<std>]``, e.g. ``rand-n2-m9`` or
``rand-n1-m5-mstd0.5``; sections after ``rand`` may come in any order; n defaults to 2 and m to 10.
"""

from __future__ import annotations

import math
import re
from typing import Sequence

import torch

from noisystudent.augment import ops as O
from noisystudent.errors import UserError

SPEC_FORM = "'rand-n<layers>-m<magnitude 0..10>[-mstd<std>]', e.g. 'rand-n2-m9'"
DEFAULT_LAYERS = 2  # timm's default number of layers when a spec gives no n
_SECTION = re.compile(r"^(mstd|n|m)(.+)$")


def _format_number(v: float) -> str:
    """9.0 -> '9', 0.5 -> '0.5' (repr keeps every digit, so parsing it back is exact)."""
    return str(int(v)) if float(v).is_integer() else repr(float(v))


def parse_randaugment_spec(spec: str) -> tuple[int, float, float]:
    """Parse ``rand-n2-m9[-mstd0.5]`` into (n, m, mstd); raise UserError for anything else."""

    def bad(reason: str) -> UserError:
        return UserError(f"bad RandAugment spec {spec!r} ({reason}): expected {SPEC_FORM}")

    if not isinstance(spec, str):
        raise bad("not a string")
    sections = spec.strip().split("-")
    if sections[0] != "rand":
        raise bad("it must start with 'rand'")
    values: dict[str, str] = {}
    for section in sections[1:]:
        match = _SECTION.match(section)
        if match is None:
            raise bad(f"unknown section {section!r}")
        key, value = match.groups()
        if key in values:
            raise bad(f"{key} given twice")
        values[key] = value
    try:
        n = int(values.get("n", DEFAULT_LAYERS))
        m = float(values.get("m", O.MAG_MAX))
        mstd = float(values.get("mstd", 0.0))
    except ValueError:
        raise bad("a value is not a number") from None
    problem = _problem(n, m, mstd)
    if problem:
        raise bad(problem)
    return n, m, mstd


def _problem(n: int, m: float, mstd: float) -> str | None:
    """What is wrong with these RandAugment settings, or None."""
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        return f"the number of layers n must be an integer >= 0, got {n!r}"
    if not (math.isfinite(m) and 0.0 <= m <= O.MAG_MAX):
        return f"the magnitude m must be in [0, {O.MAG_MAX:g}], got {m!r}"
    if not (math.isfinite(mstd) and mstd >= 0.0):
        return f"the magnitude std mstd must be finite and >= 0, got {mstd!r}"
    return None


class RandAugment:
    """Batched per-sample RandAugment on (B, C, H, W) uint8 images.

    ra = RandAugment(n=2, m=9.0)            # or RandAugment.from_spec("rand-n2-m9")
    out = ra(images, generator=g)           # (B, C, H, W) uint8, same device, a new tensor
    op_idx, mags = ra.sample(B, g, device)  # the draws alone, (n, B) long and (n, B) float32
    out = ra.apply(images, op_idx, mags, g) # ... applied (op randomness, e.g. signs, from g)
    """

    def __init__(self, n: int = 2, m: float = 9.0, mstd: float = 0.0, ops: Sequence[str] | None = None):
        m, mstd = float(m), float(mstd)
        problem = _problem(n, m, mstd)
        if problem:
            raise UserError(f"bad RandAugment settings: {problem}")
        names = tuple(O.OPS if ops is None else ops)
        unknown = [name for name in names if name not in O.OP_FUNCS]
        if unknown or not names:
            raise UserError(f"RandAugment ops must be a non-empty list from {list(O.OPS)}, got {list(names)}")
        self.n, self.m, self.mstd, self.ops = n, m, mstd, names
        # Ops run in groups: one group per pixel op name, one shared group for all geometric ops.
        geometric = [name for name in names if name in O.GEOMETRIC_KINDS]
        pixel = [name for name in dict.fromkeys(names) if name not in O.GEOMETRIC_KINDS]
        self._groups: list[str] = pixel + (["geometric"] if geometric else [])
        self._op_group = torch.tensor(
            [self._groups.index("geometric" if name in O.GEOMETRIC_KINDS else name) for name in names]
        )  # (K,) group of each op index
        self._op_kind = torch.tensor(
            [O.GEOMETRIC_KINDS.index(name) if name in O.GEOMETRIC_KINDS else -1 for name in names]
        )  # (K,) geometric kind of each op index, -1 for pixel ops

    @classmethod
    def from_spec(cls, spec: str, ops: Sequence[str] | None = None) -> "RandAugment":
        """Build from a timm-like spec such as ``rand-n2-m9`` or ``rand-n1-m5-mstd0.5``."""
        n, m, mstd = parse_randaugment_spec(spec)
        return cls(n=n, m=m, mstd=mstd, ops=ops)

    def __str__(self) -> str:
        spec = f"rand-n{self.n}-m{_format_number(self.m)}"
        return spec + (f"-mstd{_format_number(self.mstd)}" if self.mstd > 0 else "")

    def __repr__(self) -> str:
        ops = "" if self.ops == O.OPS else f", ops={list(self.ops)}"
        return f"RandAugment(n={self.n}, m={self.m:g}, mstd={self.mstd:g}{ops})"

    def sample(
        self, batch_size: int, generator: torch.Generator | None = None, device: torch.device | str = "cpu"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw ops and magnitudes: (n, B) long indices into `self.ops`, (n, B) float32 in [0, 10]."""
        device = torch.device(device)
        shape = (self.n, batch_size)
        op_idx = O.randint(0, len(self.ops), shape, generator, device)
        mags = torch.full(shape, self.m, device=device)
        if self.mstd > 0:
            mags = (mags + self.mstd * O.normal(shape, generator, device)).clamp_(0.0, O.MAG_MAX)
        return op_idx, mags

    def apply(
        self,
        images: torch.Tensor,
        op_idx: torch.Tensor,
        mags: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Apply drawn ops layer by layer. images (B, C, H, W) uint8; op_idx, mags (n, B)."""
        O.check_images(images)
        n, batch = op_idx.shape
        if batch != images.shape[0] or mags.shape != op_idx.shape:
            raise ValueError(f"op_idx {tuple(op_idx.shape)} / mags {tuple(mags.shape)} do not fit {batch} images")
        device = images.device
        op_idx, mags = op_idx.to(device), mags.to(device)
        group = self._op_group.to(device)[op_idx]  # (n, B)
        kind = self._op_kind.to(device)[op_idx]  # (n, B)
        n_groups = len(self._groups)
        layer_offset = torch.arange(n, device=device)[:, None] * n_groups
        # The one host sync: how many samples each (layer, group) has, to split the batch.
        counts = torch.bincount((group + layer_offset).flatten(), minlength=n * n_groups)
        counts = counts.view(n, n_groups).tolist()  # [layer][group] sample counts
        x = images.clone()  # (B, C, H, W) uint8
        for layer in range(n):
            order = torch.argsort(group[layer], stable=True)  # samples sorted by group
            for name, sel in zip(self._groups, torch.split(order, counts[layer])):
                if sel.numel() == 0 or name == "identity":
                    continue
                if name == "geometric":
                    x[sel] = O.geometric(x[sel], kind[layer, sel], mags[layer, sel], generator)
                else:
                    x[sel] = O.OP_FUNCS[name](x[sel], mags[layer, sel], generator)
        return x

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """(B, C, H, W) uint8 -> augmented (B, C, H, W) uint8 (a new tensor on the same device)."""
        O.check_images(images)
        op_idx, mags = self.sample(images.shape[0], generator, images.device)
        return self.apply(images, op_idx, mags, generator)
