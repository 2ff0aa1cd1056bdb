"""From a `DataConfig` to the three sets the pipeline uses: labeled, unlabeled and test."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch

from noisystudent.config import DataConfig
from noisystudent.data.cache import ImageCache, is_cache, prepare_folder
from noisystudent.data.cifar import load_cifar
from noisystudent.data.imageset import ImageSet
from noisystudent.data.sources import load_digits, load_idx, load_image_folder, load_unlabeled_folder
from noisystudent.data.splits import split_per_class, stratified_fraction
from noisystudent.errors import UserError
from noisystudent.tensors import resize_uint8

log = logging.getLogger(__name__)

FOLDER_DEFAULT_SIZE = 32  # pixels, when data.image_size is 0 for image folders


@dataclass
class Datasets:
    labeled: ImageSet
    unlabeled: ImageSet      # labels kept when known (only to report pseudo-label accuracy)
    test: ImageSet | None
    classes: list[str]
    notes: list[str] = field(default_factory=list)  # one line per reader report

    def describe(self) -> str:
        test = f", {len(self.test):,} test" if self.test is not None else ", no test set"
        c, h, w = self.labeled.shape
        return (f"{len(self.labeled):,} labeled, {len(self.unlabeled):,} unlabeled{test}; "
                f"{len(self.classes)} classes; images {c}x{h}x{w}")


# sources whose files hold a labeled training set and a test set: (directory, "train" | "test") -> ImageSet;
# the labeled images are drawn from the training set (`_split_labeled`)
SPLIT_LOADERS = {"idx": load_idx, "cifar": load_cifar}


def build_datasets(cfg: DataConfig, progress: bool = False, cache_root: str | Path | None = None,
                   prepare: bool = True) -> Datasets:
    """The labeled, unlabeled and test sets `cfg` describes.

    Folder inputs are decoded into (or read from) uint8 caches under `cache_root` when it is given
    (`Config.cache_root()`): labeled and test images are then loaded into memory and the unlabeled
    images stay on disk, read a batch at a time. A folder that already is a cache (made by
    `noisystudent prepare`) is used as it is, with or without `cache_root`. `prepare=False` only
    opens the caches under `cache_root` (the processes other than rank 0 of a distributed run, after
    rank 0 has prepared them), so that no two processes write one cache.
    """
    if cfg.source == "digits":
        full = load_digits()
        test_idx, rest_idx = stratified_fraction(full.labels, cfg.test_fraction, cfg.split_seed)
        ds = _split_labeled(full.subset(rest_idx), full.subset(test_idx), cfg)
    elif cfg.source in SPLIT_LOADERS:
        load = SPLIT_LOADERS[cfg.source]
        ds = _split_labeled(load(cfg.dir, "train"), load(cfg.dir, "test"), cfg)
    else:
        ds = _from_folders(cfg, progress, None if cache_root is None else Path(cache_root), prepare)
    if cfg.validation:
        ds = _hold_out_validation(ds, cfg)
    if cfg.max_unlabeled and len(ds.unlabeled) > cfg.max_unlabeled:
        keep = torch.randperm(len(ds.unlabeled), generator=torch.Generator().manual_seed(cfg.split_seed))
        ds.unlabeled = ds.unlabeled.subset(keep[:cfg.max_unlabeled].sort().values)
    if cfg.image_size:
        for name in ("labeled", "unlabeled", "test"):
            s = getattr(ds, name)
            if s is not None and tuple(s.images.shape[-2:]) != (cfg.image_size, cfg.image_size):
                s.images = resize_uint8(s.in_memory().images, cfg.image_size)
    if len(ds.unlabeled) == 0:
        raise UserError("data: the unlabeled set is empty; Noisy Student needs unlabeled images")
    return ds


def _hold_out_validation(ds: Datasets, cfg: DataConfig) -> Datasets:
    """`cfg.validation` seeded images of the unlabeled pool become the evaluation set (labels known);
    the test set is set aside, so that nothing chosen on this run has seen it."""
    n = len(ds.unlabeled)
    if ds.unlabeled.labels is None or cfg.validation >= n:
        raise UserError(f"data.validation: {cfg.validation:,} images cannot be held out of an unlabeled pool of "
                        f"{n:,} {'unlabeled ' if ds.unlabeled.labels is None else ''}images")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.split_seed + 7919))
    val, rest = order[:cfg.validation].sort().values, order[cfg.validation:].sort().values
    ds.notes.append(f"validation: {cfg.validation:,} images held out of the unlabeled pool replace the test set")
    return Datasets(ds.labeled, ds.unlabeled.subset(rest), ds.unlabeled.subset(val), ds.classes, ds.notes)


def _split_labeled(train: ImageSet, test: ImageSet, cfg: DataConfig) -> Datasets:
    """Labeled = `labeled_per_class` per class of `train` (seeded); the rest is the unlabeled pool."""
    lab_idx, unl_idx = split_per_class(train.labels, cfg.labeled_per_class, cfg.split_seed)
    if cfg.channels != train.images.shape[1]:
        raise UserError(f"data.channels: {cfg.source} images have {train.images.shape[1]} channel(s), "
                        f"not {cfg.channels}")
    return Datasets(train.subset(lab_idx), train.subset(unl_idx), test, list(train.classes))


def _from_folders(cfg: DataConfig, progress: bool, cache_root: Path | None, prepare: bool) -> Datasets:
    size = cfg.image_size or FOLDER_DEFAULT_SIZE
    read = dict(cfg=cfg, size=size, cache_root=cache_root, progress=progress, prepare=prepare)
    labeled, note_l, warn_l = _folder_set(cfg.labeled, labeled=True, in_memory=True, **read)
    unlabeled, note_u, warn_u = _folder_set(cfg.unlabeled, labeled=False, in_memory=False, **read)
    notes, warnings = [f"labeled {cfg.labeled}: {note_l}", f"unlabeled {cfg.unlabeled}: {note_u}"], warn_l + warn_u
    test = None
    if cfg.test:
        test, note_t, warn_t = _folder_set(cfg.test, labeled=True, in_memory=True, classes=labeled.classes, **read)
        notes.append(f"test {cfg.test}: {note_t}")
        warnings += warn_t
    for w in warnings:
        log.warning(w)
    return Datasets(labeled, unlabeled, test, list(labeled.classes), notes)


def _folder_set(path: str, *, cfg: DataConfig, size: int, labeled: bool, in_memory: bool, cache_root: Path | None,
                progress: bool, prepare: bool = True, classes: list[str] | None = None
                ) -> tuple[ImageSet, str, list[str]]:
    """One folder input as an ImageSet: from a prepared cache, through an automatic cache, or decoded
    in memory. Returns (images, one-line note, warnings)."""
    if is_cache(path):
        cache = ImageCache(path)
        want = (cfg.channels, size, size) if cfg.image_size else (cfg.channels, *cache.shape[1:])
        if tuple(cache.shape) != want or cache.labeled != labeled:
            kind = "labeled" if labeled else "unlabeled"
            raise UserError(f"{path}: cache of {'labeled' if cache.labeled else 'unlabeled'} "
                            f"{'x'.join(map(str, cache.shape))} images, but {kind} {'x'.join(map(str, want))} "
                            "images are wanted (data.channels, data.image_size)")
        return cache.imageset(classes, in_memory), f"cache of {cache.count:,} images", []
    if cache_root is None:
        if labeled:
            images, rep = load_image_folder(path, channels=cfg.channels, size=(size, size), strict=cfg.strict,
                                            classes=classes, progress=progress)
        else:
            images, rep = load_unlabeled_folder(path, channels=cfg.channels, size=(size, size), strict=cfg.strict,
                                                progress=progress)
        return images, rep.summary(), rep.warnings
    out = cache_root / _cache_name(path, cfg.channels, size, labeled)
    if not prepare:
        cache = ImageCache(out)
        return cache.imageset(classes, in_memory), f"cache of {cache.count:,} images", []
    cache, rep = prepare_folder(path, out, channels=cfg.channels, size=(size, size), labeled=labeled,
                                workers=cfg.workers, strict=cfg.strict, progress=progress)
    if classes is not None:
        _check_classes(path, cache.classes, classes)
    return cache.imageset(classes, in_memory), rep.summary(), rep.warnings


def _cache_name(path: str, channels: int, size: int, labeled: bool) -> str:
    """<folder name>-<hash of its absolute path and the image format>: one cache per input and format."""
    full = str(Path(path).resolve())
    key = hashlib.sha256(f"{full}|{channels}|{size}|{labeled}".encode()).hexdigest()[:12]
    return f"{Path(full).name or 'root'}-{'labeled' if labeled else 'unlabeled'}-{channels}x{size}-{key}"


def _check_classes(path: str, found: list[str], classes: list[str]) -> None:
    for name in found:
        if name not in classes:
            preview = ", ".join(classes[:10]) + (", ..." if len(classes) > 10 else "")
            raise UserError(f"{path}: class folder '{name}' is not one of the {len(classes)} labeled classes ({preview})")
