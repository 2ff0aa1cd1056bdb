"""RandAugment (Cubuk et al. 2020), batched and per sample, plus its timm-like spec strings.

Each of the N layers draws, for every sample independently, one op uniformly from `ops` and a
magnitude (M, or M + mstd * N(0, 1) clipped to [0, 10] when mstd > 0). On the torch backend the
samples that drew the same op are processed together in batched calls; the geometric ops of a
layer share two resamplings (rows shifted: translate_x / _y, shear_x; general: rotate, shear_y).
See `noisystudent.augment.ops` for the ops and the magnitude table.

Backends (`backend=`): "torch" runs the batched torch code below on any device; "native" runs the
pixel work of CPU batches in C (`noisystudent.augment.native`, built on first use), one sample at
a time through all its layers, which at 96x96 is several times faster; "auto" (the default) picks
native for CPU tensors when it could be built, else torch. Both draw the same random numbers and
compute the same parameters in torch, and give the same bytes.

How the torch backend's `RandAugment.apply` is organised (the costs are per op call on small
images and per pixel pass on large ones, so it minimises both):
1. everything that depends only on the draws is worked out first, for all layers at once: the
   signs and cutout centres, every op's parameters (`ops.sample_params`), the one host sync (how
   many samples each (layer, op group) has), the order that sorts each layer by op group, and
   the geometric ops' sampling positions;
2. each layer gathers the batch in its sorted order (one row gather into a reused buffer), so
   each op group is a contiguous slice that its op overwrites in place, in chunks of at most
   `CHUNK_BYTES` (temporaries of large images stay in the CPU cache);
3. a last row gather writes the result, in the input order, to the new output tensor.
All of it runs under torch.inference_mode(), which makes each small op cheaper to dispatch.

Spec strings follow timm: ``rand-n<layers>-m<magnitude>[-mstd<std>]``, e.g. ``rand-n2-m9`` or
``rand-n1-m5-mstd0.5``; sections after ``rand`` may come in any order; n defaults to 2 and m to 10.
"""

from __future__ import annotations

import math
import re
import threading
from typing import Sequence

import torch

from noisystudent.augment import native
from noisystudent.augment import ops as O
from noisystudent.errors import UserError

BACKENDS = ("auto", "torch", "native")  # see the module docstring
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


# Largest slice of the batch (bytes of uint8 images) that one op call processes: keeps the
# temporaries of large images in the CPU cache (measured best: 4-8 images of 96x96x3).
CHUNK_BYTES = 256 * 1024
_scratch = threading.local()  # .buffer: the CPU scratch batch of this thread


def _new_like(images: torch.Tensor) -> torch.Tensor:
    """An uninitialised contiguous uint8 tensor shaped like `images`, on its device."""
    return torch.empty(images.shape, dtype=torch.uint8, device=images.device)


def _scratch_like(images: torch.Tensor) -> torch.Tensor:
    """A contiguous uint8 buffer shaped like `images` (contents undefined). On the CPU one is
    kept per thread and reused from call to call: a fresh batch-sized buffer costs more in page
    faults than the cheap ops do (96x96 images). CUDA's caching allocator makes that moot."""
    if images.device.type != "cpu":
        return _new_like(images)
    buffer = getattr(_scratch, "buffer", None)
    if buffer is None or buffer.shape != images.shape:
        buffer = _scratch.buffer = _new_like(images)
    return buffer


# The geometric groups and their resampling (both take x, col_terms, row_terms, out).
_GEOMETRIC_GROUPS = {"warp": O.resample, "shift": O.shift_rows}


def _geometric_group(name: str) -> str | None:
    """The group of a geometric op ("shift" or "warp"), None for pixel ops."""
    if name not in O.GEOMETRIC_KINDS:
        return None
    return "shift" if name in O.SHIFT_KINDS else "warp"


# Ops that leave images with this many channels unchanged (their groups are skipped).
_NO_OPS = {1: ("identity", "color"), 3: ("identity",)}


class RandAugment:
    """Batched per-sample RandAugment on (B, C, H, W) uint8 images.

    ra = RandAugment(n=2, m=9.0)            # or RandAugment.from_spec("rand-n2-m9")
    out = ra(images, generator=g)           # (B, C, H, W) uint8, same device, a new tensor
    op_idx, mags = ra.sample(B, g, device)  # the draws alone, (n, B) long and (n, B) float32
    out = ra.apply(images, op_idx, mags, g) # ... applied (op randomness, e.g. signs, from g)
    out = ra.apply_given(images, op_idx, mags, sign, centre)  # ... with the op randomness given

    backend: "auto" (native C for CPU tensors when available, else torch), "torch" or "native"
    (CPU only; UserError if it cannot be built). The same draws give the same bytes on every backend.
    """

    def __init__(self, n: int = 2, m: float = 9.0, mstd: float = 0.0, ops: Sequence[str] | None = None,
                 backend: str = "auto"):
        m, mstd = float(m), float(mstd)
        problem = _problem(n, m, mstd)
        if problem:
            raise UserError(f"bad RandAugment settings: {problem}")
        if backend not in BACKENDS:
            raise UserError(f"unknown RandAugment backend {backend!r}: expected one of {', '.join(BACKENDS)}")
        names = tuple(O.OPS if ops is None else ops)
        unknown = [name for name in names if name not in O.OP_FUNCS]
        if unknown or not names:
            raise UserError(f"RandAugment ops must be a non-empty list from {list(O.OPS)}, got {list(names)}")
        self.n, self.m, self.mstd, self.ops, self.backend = n, m, mstd, names, backend
        # Ops run in groups: one per pixel op, and two for the geometric ops, which share one
        # resampling: "shift" (whole rows move: O.shift_rows) and "warp" (the others: O.resample).
        group_of = {name: _geometric_group(name) or name for name in names}
        self._groups: list[str] = list(dict.fromkeys(sorted(group_of.values(), key=lambda g: g in _GEOMETRIC_GROUPS)))
        self._op_group = torch.tensor([self._groups.index(group_of[name]) for name in names])  # (K,) group of each op
        self._op_kind = torch.tensor(
            [O.GEOMETRIC_KINDS.index(name) if name in O.GEOMETRIC_KINDS else -1 for name in names]
        )  # (K,) geometric kind of each op index, -1 for pixel ops
        self._op_kernel = torch.tensor([native.kernel_of(name) for name in names], dtype=torch.int32)  # (K,)
        self._any_geometric = any(name in O.GEOMETRIC_KINDS for name in names)
        if backend == "native":
            self._native_library(torch.device("cpu"))  # fail now, not at the first batch

    @classmethod
    def from_spec(cls, spec: str, ops: Sequence[str] | None = None, backend: str = "auto") -> "RandAugment":
        """Build from a timm-like spec such as ``rand-n2-m9`` or ``rand-n1-m5-mstd0.5``."""
        n, m, mstd = parse_randaugment_spec(spec)
        return cls(n=n, m=m, mstd=mstd, ops=ops, backend=backend)

    def _native_library(self, device: torch.device) -> native.NativeLibrary | None:
        """The native library if this backend runs natively on `device`, else None; UserError when
        backend "native" cannot run there."""
        if self.backend == "torch":
            return None
        if device.type != "cpu":
            if self.backend == "native":
                raise UserError(f"RandAugment backend 'native' runs on CPU tensors only, not on {device.type}: "
                                "use backend 'auto' or 'torch'")
            return None
        lib = native.load()
        if lib is None and self.backend == "native":
            raise UserError(f"RandAugment backend 'native' is unavailable ({native.unavailable_reason()}): "
                            "use backend 'auto' or 'torch'")
        return lib

    def backend_for(self, device: torch.device | str = "cpu") -> str:
        """Which backend runs tensors on `device`: "native" or "torch"."""
        return "torch" if self._native_library(torch.device(device)) is None else "native"

    def __str__(self) -> str:
        spec = f"rand-n{self.n}-m{_format_number(self.m)}"
        return spec + (f"-mstd{_format_number(self.mstd)}" if self.mstd > 0 else "")

    def __repr__(self) -> str:
        ops = "" if self.ops == O.OPS else f", ops={list(self.ops)}"
        backend = "" if self.backend == "auto" else f", backend={self.backend!r}"
        return f"RandAugment(n={self.n}, m={self.m:g}, mstd={self.mstd:g}{ops}{backend})"

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
        """Apply drawn ops layer by layer. images (B, C, H, W) uint8; op_idx, mags (n, B).

        The op randomness is drawn from `generator`: first a sign per layer and sample
        (`O.random_sign((n, B))`), then the cutout centres (`O.random_centre((n, B), H, W)`).
        Returns a new (B, C, H, W) uint8 tensor; see the module docstring for how it is computed.
        """
        O.check_images(images)
        n, batch = op_idx.shape
        _, _, h, w = images.shape
        with torch.inference_mode():
            sign = O.random_sign((n, batch), generator, images.device)  # (n, B)
            centre = O.random_centre((n, batch), h, w, generator, images.device)  # (n, B, 2)
        return self.apply_given(images, op_idx, mags, sign, centre)

    def apply_given(
        self, images: torch.Tensor, op_idx: torch.Tensor, mags: torch.Tensor, sign: torch.Tensor,
        centre: torch.Tensor,
    ) -> torch.Tensor:
        """`apply` with the op randomness given: sign (n, B) +-1.0 (used by the +- ops), centre
        (n, B, 2) int64 cutout centres (row, column). Returns a new (B, C, H, W) uint8 tensor."""
        O.check_images(images)
        n, batch = op_idx.shape
        if batch != images.shape[0] or mags.shape != op_idx.shape:
            raise ValueError(f"op_idx {tuple(op_idx.shape)} / mags {tuple(mags.shape)} do not fit {batch} images")
        if sign.shape != op_idx.shape or centre.shape != (n, batch, 2):
            raise ValueError(f"sign {tuple(sign.shape)} / centre {tuple(centre.shape)} do not fit op_idx "
                             f"{tuple(op_idx.shape)}")
        lib = self._native_library(images.device)
        out = _new_like(images)  # allocated outside inference mode: an ordinary tensor for the caller
        device = images.device
        with torch.inference_mode():  # (cheaper dispatch for the many small ops)
            op_idx, mags, sign, centre = (t.to(device) for t in (op_idx, mags, sign, centre))
            if lib is None:
                self._apply_torch(images, op_idx, mags, sign, centre, out)
            else:
                self._apply_native(lib, images, op_idx, mags, sign, centre, out)
        return out

    def _apply_native(
        self, lib: native.NativeLibrary, images: torch.Tensor, op_idx: torch.Tensor, mags: torch.Tensor,
        sign: torch.Tensor, centre: torch.Tensor, out: torch.Tensor,
    ) -> None:
        """The native backend: the parameters of every (layer, sample) in torch, exactly as
        `_apply_torch` computes them, then one C call does the pixels of the whole batch."""
        _, _, h, w = images.shape
        kind = self._op_kind[op_idx].flatten()  # (n * B,) layer-major, -1 for pixel ops
        params = O.sample_params(mags.flatten(), sign.flatten(), centre.view(-1, 2), kind, h, w)  # (n * B, P)
        col_terms = row_terms = None
        if self._any_geometric:  # every row's terms (those of pixel ops are not read)
            coeffs = O.geometric_coeffs(kind.clamp(min=0), params.select(1, O.P_VALUE), h, w)
            col_terms, row_terms = (t.contiguous() for t in O.affine_terms(coeffs, h, w))
        kernels = self._op_kernel[op_idx]  # (n, B) int32
        lib.randaugment(images.contiguous(), out, kernels, params.contiguous(), col_terms, row_terms)

    def _apply_torch(
        self, images: torch.Tensor, op_idx: torch.Tensor, mags: torch.Tensor, sign: torch.Tensor,
        centre: torch.Tensor, out: torch.Tensor,
    ) -> None:
        """The torch backend, writing the result into `out` ((B, C, H, W) uint8, contiguous)."""
        n, batch = op_idx.shape
        _, channels, h, w = images.shape
        device = images.device
        group = self._op_group.to(device)[op_idx]  # (n, B)
        kind = self._op_kind.to(device)[op_idx]  # (n, B), -1 for pixel ops
        params = O.sample_params(mags.flatten(), sign.flatten(), centre.view(-1, 2), kind.flatten(), h, w)
        counts = self._group_counts(group)  # the one host sync
        runs = [name not in _NO_OPS.get(channels, ()) for name in self._groups]  # groups that change pixels

        plan = []  # (layer, order, position): sort this layer's input by `order`; x[i] is then sample position[i]
        position = torch.arange(batch, device=device)
        for layer in range(n):
            if any(count and run for count, run in zip(counts[layer], runs)):
                order = torch.argsort(group[layer, position], stable=True)
                position = position[order]
                plan.append((layer, order, position))
        if not plan:
            out.copy_(images)
            return
        terms = self._geometric_terms(plan, counts, kind, params, h, w)

        chunk = max(1, CHUNK_BYTES // images[0].numel())  # samples per op call
        # The row gathers write in turn to the output and a scratch buffer, the last to the output.
        scratch = _scratch_like(images)
        x = images
        for step, ((layer, order, position), layer_terms) in enumerate(zip(plan, terms)):
            target = out if (len(plan) - step) % 2 == 0 else scratch
            x = torch.index_select(x, 0, order, out=target)  # (B, C, H, W) sorted by this layer's group
            layer_params = params.index_select(0, position + layer * batch)  # (B, N_PARAMS)
            start = 0
            for name, count, run in zip(self._groups, counts[layer], runs):
                for first in range(0, count if run else 0, chunk):  # the group's slice, chunk by chunk
                    size = min(chunk, count - first)
                    part = x.narrow(0, start + first, size)  # (size, C, H, W), overwritten in place
                    if name in _GEOMETRIC_GROUPS:
                        col_terms, row_terms = (t.narrow(0, first, size) for t in layer_terms[name])
                        _GEOMETRIC_GROUPS[name](part, col_terms, row_terms, out=part)
                    else:
                        O.PIXEL_OPS[name](part, layer_params.narrow(0, start + first, size), out=part)
                start += count
        torch.index_select(x, 0, torch.argsort(position), out=out)  # back to the input order

    def _group_counts(self, group: torch.Tensor) -> list[list[int]]:
        """(n, B) group ids -> [layer][group] sample counts: the one host sync of `apply`."""
        n, n_groups = group.shape[0], len(self._groups)
        layer_offset = torch.arange(n, device=group.device)[:, None] * n_groups
        # scatter_add_, not bincount: CUDA's bincount would add a sync of its own.
        counts = torch.zeros(n * n_groups, dtype=torch.int64, device=group.device)
        counts.scatter_add_(0, (group + layer_offset).flatten(), torch.ones_like(group).flatten())
        return counts.view(n, n_groups).tolist()

    def _geometric_terms(
        self, plan: list, counts: list[list[int]], kind: torch.Tensor, params: torch.Tensor, h: int, w: int
    ) -> list[dict[str, tuple[torch.Tensor, torch.Tensor]]]:
        """Per planned layer, {geometric group: its samples' `O.affine_terms`}, computed in one go."""
        groups = [(g, name) for g, name in enumerate(self._groups) if name in _GEOMETRIC_GROUPS]
        if not groups:
            return [{} for _ in plan]
        batch = kind.shape[1]
        ids, sizes = [], []  # flat (layer, sample) ids of the geometric samples, layer by layer, group by group
        for layer, _, position in plan:
            for g, _ in groups:
                start = sum(counts[layer][:g])
                ids.append(position[start : start + counts[layer][g]] + layer * batch)
                sizes.append(counts[layer][g])
        ids = torch.cat(ids)
        coeffs = O.geometric_coeffs(kind.flatten()[ids], params[ids].select(1, O.P_VALUE), h, w)
        parts = iter(zip(*(t.split(sizes) for t in O.affine_terms(coeffs, h, w))))
        return [{name: next(parts) for _, name in groups} for _ in plan]

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """(B, C, H, W) uint8 -> augmented (B, C, H, W) uint8 (a new tensor on the same device)."""
        O.check_images(images)
        op_idx, mags = self.sample(images.shape[0], generator, images.device)
        return self.apply(images, op_idx, mags, generator)
