"""CIFAR-10 / CIFAR-100 "python version" batches, read without trusting the pickle.

The batches are Python pickles. `pickle.load` would run whatever a file names, so a
`RestrictedUnpickler` resolves only the few globals an honest batch uses (numpy's array
reconstruction and scalars, `numpy.ndarray`, `numpy.dtype`, and `_codecs.encode` for Python 2 byte strings);
any other global makes the file an error. Containers, bytes, strings and numbers need no globals.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from noisystudent.data.imageset import ImageSet
from noisystudent.errors import UserError

ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),   # numpy numbers (e.g. labels saved as np.int64)
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}
TRAIN_FILES = {"cifar10": [f"data_batch_{i}" for i in range(1, 6)], "cifar100": ["train"]}
TEST_FILES = {"cifar10": ["test_batch"], "cifar100": ["test"]}
META_FILES = {"cifar10": ("batches.meta", b"label_names"), "cifar100": ("meta", b"fine_label_names")}
LABEL_KEYS = {"cifar10": b"labels", "cifar100": b"fine_labels"}


class RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refused global {module}.{name}")


def read_batch(path: str | Path) -> dict[bytes, Any]:
    """One pickled batch as a dict with bytes keys; anything but plain data -> UserError."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"{path}: CIFAR batch file not found") from None
    try:
        obj = RestrictedUnpickler(io.BytesIO(data), encoding="bytes").load()
    except pickle.UnpicklingError as e:
        reason = " ".join(str(e).split())  # pickle's messages may span lines
        raise UserError(f"{path}: not a plain CIFAR batch ({reason}); refusing to load it") from None
    except Exception as e:  # truncated or garbled pickles raise many types
        raise UserError(f"{path}: not a readable CIFAR batch ({type(e).__name__})") from None
    if not isinstance(obj, dict):
        raise UserError(f"{path}: not a CIFAR batch (expected a dict, found {type(obj).__name__})")
    return {k.encode() if isinstance(k, str) else k: v for k, v in obj.items()}


def load_cifar(directory: str | Path, split: str = "train") -> ImageSet:
    """CIFAR-10 (data_batch_1..5, test_batch) or CIFAR-100 (train, test) from `directory`: (N, 3, 32, 32) uint8."""
    directory = Path(directory)
    kind = "cifar10" if (directory / "batches.meta").exists() else "cifar100" if (directory / "meta").exists() else None
    if kind is None:
        raise UserError(f"{directory}: no CIFAR python batches found (expected batches.meta or meta)")
    meta_name, names_key = META_FILES[kind]
    classes = [c.decode() if isinstance(c, bytes) else str(c) for c in read_batch(directory / meta_name).get(names_key, [])]
    images, labels = [], []
    for name in (TRAIN_FILES if split == "train" else TEST_FILES)[kind]:
        path = directory / name
        batch = read_batch(path)
        data, lab = batch.get(b"data"), batch.get(LABEL_KEYS[kind])
        if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
            raise UserError(f"{path}: 'data' must be a uint8 array of shape (N, 3072)")
        if lab is None or len(lab) != len(data):
            raise UserError(f"{path}: expected {len(data)} labels under {LABEL_KEYS[kind].decode()!r}")
        lab = np.asarray(lab, dtype=np.int64)
        if len(lab) and (lab.min() < 0 or lab.max() >= len(classes)):
            raise UserError(f"{path}: label {int(lab.max())} out of range for {len(classes)} classes")
        images.append(data.reshape(-1, 3, 32, 32))
        labels.append(lab)
    return ImageSet(torch.from_numpy(np.concatenate(images)), torch.from_numpy(np.concatenate(labels)), classes,
                    [""] * sum(len(x) for x in images))
