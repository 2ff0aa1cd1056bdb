"""From a `DataConfig` to the three sets the pipeline uses: labeled, unlabeled and test."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch

from noisystudent.config import DataConfig
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


def build_datasets(cfg: DataConfig, progress: bool = False) -> Datasets:
    if cfg.source == "digits":
        full = load_digits()
        test_idx, rest_idx = stratified_fraction(full.labels, cfg.test_fraction, cfg.split_seed)
        ds = _split_labeled(full.subset(rest_idx), full.subset(test_idx), cfg)
    elif cfg.source == "idx":
        ds = _split_labeled(load_idx(cfg.dir, "train"), load_idx(cfg.dir, "test"), cfg)
    elif cfg.source == "cifar":
        ds = _split_labeled(load_cifar(cfg.dir, "train"), load_cifar(cfg.dir, "test"), cfg)
    else:
        ds = _from_folders(cfg, progress)
    if cfg.max_unlabeled and len(ds.unlabeled) > cfg.max_unlabeled:
        keep = torch.randperm(len(ds.unlabeled), generator=torch.Generator().manual_seed(cfg.split_seed))
        ds.unlabeled = ds.unlabeled.subset(keep[:cfg.max_unlabeled].sort().values)
    if cfg.image_size:
        for name in ("labeled", "unlabeled", "test"):
            s = getattr(ds, name)
            if s is not None:
                s.images = resize_uint8(s.images, cfg.image_size)
    if len(ds.unlabeled) == 0:
        raise UserError("data: the unlabeled set is empty; Noisy Student needs unlabeled images")
    return ds


def _split_labeled(train: ImageSet, test: ImageSet, cfg: DataConfig) -> Datasets:
    """Labeled = `labeled_per_class` per class of `train` (seeded); the rest is the unlabeled pool."""
    lab_idx, unl_idx = split_per_class(train.labels, cfg.labeled_per_class, cfg.split_seed)
    if cfg.channels != train.images.shape[1]:
        raise UserError(f"data.channels: {cfg.source} images have {train.images.shape[1]} channel(s), "
                        f"not {cfg.channels}")
    return Datasets(train.subset(lab_idx), train.subset(unl_idx), test, list(train.classes))


def _from_folders(cfg: DataConfig, progress: bool) -> Datasets:
    size = cfg.image_size or FOLDER_DEFAULT_SIZE
    labeled, rep_l = load_image_folder(cfg.labeled, channels=cfg.channels, size=(size, size), strict=cfg.strict,
                                       progress=progress)
    unlabeled, rep_u = load_unlabeled_folder(cfg.unlabeled, channels=cfg.channels, size=(size, size),
                                             strict=cfg.strict, progress=progress)
    notes = [f"labeled {cfg.labeled}: {rep_l.summary()}", f"unlabeled {cfg.unlabeled}: {rep_u.summary()}"]
    test = None
    if cfg.test:
        test, rep_t = load_image_folder(cfg.test, channels=cfg.channels, size=(size, size),
                                        strict=cfg.strict, classes=labeled.classes, progress=progress)
        notes.append(f"test {cfg.test}: {rep_t.summary()}")
    for rep in (rep_l, rep_u) + ((rep_t,) if cfg.test else ()):
        for w in rep.warnings:
            log.warning(w)
    return Datasets(labeled, unlabeled, test, list(labeled.classes), notes)
