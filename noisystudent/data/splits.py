"""Seeded index splits: a labeled subset per class, random and stratified fractions.

Every function returns (first, rest): two sorted int64 index tensors that are disjoint and together
cover all indices. Randomness comes only from a `torch.Generator` seeded with `seed`, so the same
seed and inputs always give the same split (on any machine) and different seeds give different ones.
"""

from __future__ import annotations

import torch

from noisystudent.errors import UserError


def split_per_class(
    labels: torch.Tensor, n_per_class: int, seed: int, class_names: list[str] | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Choose exactly `n_per_class` indices of every class; returns (chosen, rest).

    labels: (N,) int64 class indices. Each class needs at least n_per_class + 1 images so that
    something of it is left over. With `class_names`, errors name the class and classes with no
    images at all are caught too; otherwise only classes present in `labels` are considered.
    """
    labels = _as_labels(labels)
    if isinstance(n_per_class, bool) or not isinstance(n_per_class, int) or n_per_class < 1:
        raise UserError(f"n_per_class must be a positive integer, got {n_per_class!r}")
    n_classes = len(class_names) if class_names is not None else 0
    if class_names is not None and len(labels) and int(labels.max()) >= n_classes:
        raise ValueError(f"label {int(labels.max())} is out of range for {n_classes} class names")
    counts = torch.bincount(labels, minlength=n_classes)  # (n_classes,)
    present = range(len(counts)) if class_names is not None else torch.unique(labels).tolist()
    for c in present:
        if counts[c] < n_per_class + 1:
            name = f"'{class_names[c]}' (index {c})" if class_names is not None and c < len(class_names) else str(c)
            raise UserError(
                f"class {name} has {int(counts[c])} images, but n_per_class={n_per_class} needs at least "
                f"{n_per_class + 1} (the chosen ones plus one left over)"
            )
    generator = _generator(seed)
    members = _members_by_class(labels, counts)
    chosen = [_pick(members[c], n_per_class, generator) for c in present]
    return _complement(torch.cat(chosen), len(labels))


def split_fraction(n: int, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random split of range(n): round(n * fraction) indices in first, the others in rest."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise UserError(f"n must be a non-negative integer, got {n!r}")
    _check_fraction(fraction)
    first = _pick(torch.arange(n), round(n * fraction), _generator(seed))
    return _complement(first, n)


def stratified_fraction(labels: torch.Tensor, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class random split: round(count_c * fraction) indices of each class c in first.

    labels: (N,) int64. The total in first may differ from round(N * fraction) by rounding.
    """
    labels = _as_labels(labels)
    _check_fraction(fraction)
    generator = _generator(seed)
    first = []
    for members in _members_by_class(labels, torch.bincount(labels)):
        if len(members):
            first.append(_pick(members, round(len(members) * fraction), generator))
    chosen = torch.cat(first) if first else torch.empty(0, dtype=torch.int64)
    return _complement(chosen, len(labels))


def _as_labels(labels: torch.Tensor) -> torch.Tensor:
    """labels as a (N,) int64 tensor of non-negative class indices."""
    labels = torch.as_tensor(labels)
    if labels.dim() != 1 or labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise ValueError(f"labels must be a (N,) integer tensor, got {tuple(labels.shape)} {labels.dtype}")
    labels = labels.to(torch.int64)
    if len(labels) and int(labels.min()) < 0:
        raise ValueError("labels must be non-negative class indices")
    return labels


def _members_by_class(labels: torch.Tensor, counts: torch.Tensor) -> list[torch.Tensor]:
    """Indices of each class c = 0..len(counts)-1, ascending within the class (one stable sort)."""
    order = torch.argsort(labels, stable=True)  # (N,) grouped by class, ascending inside a group
    return list(torch.split(order, counts.tolist()))


def _check_fraction(fraction: float) -> None:
    if not 0.0 <= float(fraction) <= 1.0:
        raise UserError(f"fraction must be between 0 and 1, got {fraction!r}")


def _generator(seed: int) -> torch.Generator:
    """A CPU generator seeded with `seed` (the only source of randomness here)."""
    return torch.Generator().manual_seed(int(seed))


def _pick(indices: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """k of `indices` (1-D) chosen uniformly at random without replacement."""
    order = torch.randperm(len(indices), generator=generator)[:k]
    return indices[order]


def _complement(first: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(sorted first, sorted indices of range(n) not in first), both int64."""
    mask = torch.zeros(n, dtype=torch.bool)
    mask[first] = True
    return torch.nonzero(mask).flatten(), torch.nonzero(~mask).flatten()
