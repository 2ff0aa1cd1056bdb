"""Tests for noisystudent.data.splits: counts, disjointness, coverage and seeding."""

from __future__ import annotations

import pytest
import torch

from noisystudent.data.splits import split_fraction, split_per_class, stratified_fraction
from noisystudent.errors import UserError


def labels_with_counts(counts: list[int], seed: int = 0) -> torch.Tensor:
    """Shuffled (N,) int64 labels with counts[c] members of class c."""
    labels = torch.cat([torch.full((n,), c, dtype=torch.int64) for c, n in enumerate(counts)])
    return labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))]


def assert_partition(first: torch.Tensor, rest: torch.Tensor, n: int) -> None:
    for part in (first, rest):
        assert part.dtype == torch.int64 and part.dim() == 1
        assert torch.equal(part, part.sort().values)
    both = torch.cat([first, rest])
    assert len(both) == n and torch.equal(both.sort().values, torch.arange(n))  # disjoint + covering


def test_split_per_class_counts_and_partition():
    labels = labels_with_counts([10, 7, 25, 4])
    chosen, rest = split_per_class(labels, 3, seed=0)
    assert_partition(chosen, rest, len(labels))
    assert torch.bincount(labels[chosen]).tolist() == [3, 3, 3, 3]
    assert torch.bincount(labels[rest]).tolist() == [7, 4, 22, 1]


def test_split_per_class_seeding():
    labels = labels_with_counts([50, 50, 50])
    a, _ = split_per_class(labels, 5, seed=1)
    b, _ = split_per_class(labels, 5, seed=1)
    c, _ = split_per_class(labels, 5, seed=2)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_split_per_class_too_few_images():
    labels = labels_with_counts([10, 3, 10])
    with pytest.raises(UserError, match=r"class 1 has 3 images, but n_per_class=3 needs at least 4"):
        split_per_class(labels, 3, seed=0)
    with pytest.raises(UserError, match=r"class 'bee' \(index 1\) has 3 images"):
        split_per_class(labels, 3, seed=0, class_names=["ant", "bee", "cow"])
    with pytest.raises(UserError, match=r"class 'dog' \(index 3\) has 0 images"):
        split_per_class(labels, 2, seed=0, class_names=["ant", "bee", "cow", "dog"])
    with pytest.raises(UserError, match="n_per_class must be a positive integer"):
        split_per_class(labels, 0, seed=0)


def test_split_fraction():
    first, rest = split_fraction(103, 0.3, seed=4)
    assert len(first) == round(103 * 0.3)
    assert_partition(first, rest, 103)
    assert torch.equal(first, split_fraction(103, 0.3, seed=4)[0])
    assert not torch.equal(first, split_fraction(103, 0.3, seed=5)[0])
    assert len(split_fraction(10, 0.0, seed=0)[0]) == 0
    assert len(split_fraction(10, 1.0, seed=0)[1]) == 0
    with pytest.raises(UserError, match="fraction must be between 0 and 1"):
        split_fraction(10, 1.5, seed=0)


def test_stratified_fraction():
    counts = [40, 20, 60, 11]
    labels = labels_with_counts(counts, seed=3)
    first, rest = stratified_fraction(labels, 0.25, seed=0)
    assert_partition(first, rest, len(labels))
    assert torch.bincount(labels[first]).tolist() == [round(n * 0.25) for n in counts]
    again, _ = stratified_fraction(labels, 0.25, seed=0)
    other, _ = stratified_fraction(labels, 0.25, seed=1)
    assert torch.equal(first, again) and not torch.equal(first, other)


def test_digits_sized_split_is_fast_and_exact():
    labels = labels_with_counts([180] * 10)
    chosen, rest = split_per_class(labels, 10, seed=0)
    assert len(chosen) == 100 and len(rest) == 1700
    assert torch.bincount(labels[chosen]).tolist() == [10] * 10


def test_validation_is_held_out_of_the_unlabeled_pool_and_replaces_the_test_set():
    from noisystudent.config import Config
    from noisystudent.data.build import build_datasets
    from noisystudent.errors import UserError

    plain = build_datasets(Config().data)
    cfg = Config().with_overrides(["data.validation=200"])
    ds = build_datasets(cfg.data)
    assert len(ds.test) == 200 and len(ds.unlabeled) == len(plain.unlabeled) - 200
    assert torch.equal(ds.labeled.images, plain.labeled.images)
    # the validation images are pool images (with their true labels), disjoint from what stays unlabeled
    pool = {bytes(x.numpy()) : int(y) for x, y in zip(plain.unlabeled.images, plain.unlabeled.labels)}
    val = [bytes(x.numpy()) for x in ds.test.images]
    assert all(pool[v] == int(y) for v, y in zip(val, ds.test.labels))
    assert not set(val) & {bytes(x.numpy()) for x in ds.unlabeled.images}
    assert not set(val) & {bytes(x.numpy()) for x in plain.test.images}
    assert torch.equal(build_datasets(cfg.data).test.images, ds.test.images)  # seeded
    with pytest.raises(UserError, match="cannot be held out"):
        build_datasets(Config().with_overrides(["data.validation=100000"]).data)
