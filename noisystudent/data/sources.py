"""Data sources: readers that turn bundled arrays, IDX files and image folders into `ImageSet`s.

* `load_digits()`: scikit-learn's bundled 8x8 digits (no download).
* `load_idx(directory, split)`: MNIST / Fashion-MNIST IDX files, raw or gzipped.
* `load_image_folder(directory, ...)`: labeled images in DIR/<class>/... folders.
* `load_unlabeled_folder(directory, ...)`: every image under DIR, recursively.
* `load_npz(path)`: arrays `images` (+ optional `labels`, `classes`) from a NumPy .npz (no pickles).

Folder readers never stop on a bad file unless `strict=True`: unreadable files are skipped and
listed, with a reason, in the returned `ReadReport`. Decoding rules (colour modes, transparency on
black, resizing) are described in `noisystudent.data.decode`.
"""

from __future__ import annotations

import gzip
import unicodedata
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from noisystudent.data.decode import (
    IMAGE_EXTENSIONS,
    Unreadable,
    check_shape_args,
    decode_image,
    is_image_name,
    list_image_files,
    read_image,
)
from noisystudent.data.imageset import ImageSet
from noisystudent.errors import UserError
from noisystudent.progress import progress_bar

__all__ = [
    "FASHION_MNIST_CLASSES",
    "MNIST_CLASSES",
    "ReadReport",
    "decode_image",
    "load_digits",
    "load_idx",
    "load_image_folder",
    "load_npz",
    "load_unlabeled_folder",
]

MNIST_CLASSES = [str(d) for d in range(10)]
FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip

IDX_IMAGES_MAGIC = 0x00000803  # unsigned bytes, 3 dims (N, H, W)
IDX_LABELS_MAGIC = 0x00000801  # unsigned bytes, 1 dim (N,)
_IDX_PREFIX = {"train": "train", "test": "t10k"}


@dataclass
class ReadReport:
    """What a folder reader did: images read, files skipped (relative path, reason), warnings."""

    read: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line, e.g. "read 1,203 images, skipped 2 unreadable (see report)"."""
        text = f"read {self.read:,} image{'' if self.read == 1 else 's'}"
        if self.skipped:
            text += f", skipped {len(self.skipped):,} unreadable (see report)"
        if self.warnings:
            text += f", {len(self.warnings)} warning{'' if len(self.warnings) == 1 else 's'}"
        return text

    def details(self) -> str:
        """Multi-line text for a report file: the summary, then every warning and skipped file."""
        lines = [self.summary()]
        lines += [f"warning: {note}" for note in self.warnings]
        lines += [f"skipped {path}: {reason}" for path, reason in self.skipped]
        return "\n".join(lines)


# --------------------------------------------------------------------------- bundled digits


def load_digits() -> ImageSet:
    """scikit-learn's 1,797 8x8 digits as (1797, 1, 8, 8) uint8, 0..16 scaled to 0..255."""
    from sklearn.datasets import load_digits as sklearn_digits  # slow import, only when used

    bunch = sklearn_digits()
    pixels = np.round(bunch.images * 255.0 / 16.0)  # (1797, 8, 8) float, 0..255
    images = torch.from_numpy(pixels.astype(np.uint8)[:, None, :, :].copy())  # (N, 1, 8, 8)
    labels = torch.from_numpy(bunch.target.astype(np.int64))  # (N,)
    return ImageSet(images, labels, list(MNIST_CLASSES), [""] * len(labels))


# --------------------------------------------------------------------------- IDX (MNIST format)


def load_idx(directory: str | Path, split: str = "train", classes: list[str] | None = None) -> ImageSet:
    """Read an MNIST-format split: `{train,t10k}-images-idx3-ubyte[.gz]` + the matching labels.

    `classes` defaults to FASHION_MNIST_CLASSES when the folder name contains "fashion", else
    MNIST_CLASSES. Returns images (N, 1, H, W) uint8 and labels (N,) int64.
    """
    if split not in _IDX_PREFIX:
        raise UserError(f"split must be 'train' or 'test', got {split!r}")
    root = _existing_folder(directory, "a folder with MNIST-format IDX files")
    if classes is None:
        classes = FASHION_MNIST_CLASSES if "fashion" in root.resolve().name.lower() else MNIST_CLASSES
    prefix = _IDX_PREFIX[split]
    images_path = _find_idx_file(root, prefix, "images", 3)
    labels_path = _find_idx_file(root, prefix, "labels", 1)
    images = _read_idx(images_path, IDX_IMAGES_MAGIC, "images")  # (N, H, W) uint8
    labels = _read_idx(labels_path, IDX_LABELS_MAGIC, "labels")  # (N,) uint8
    if len(images) != len(labels):
        raise UserError(
            f"{labels_path}: has {len(labels):,} labels but {images_path.name} has {len(images):,} images "
            "(expected the same count)"
        )
    _check_label_range(labels_path, labels, len(classes))
    return ImageSet(
        images=torch.from_numpy(images[:, None, :, :].copy()),  # (N, 1, H, W)
        labels=torch.from_numpy(labels.astype(np.int64)),
        classes=list(classes),
        sources=[""] * len(labels),
    )


def _find_idx_file(root: Path, prefix: str, kind: str, ndim: int) -> Path:
    """The first existing variant of e.g. train-images-idx3-ubyte (also .gz and the '.idx3' spelling)."""
    stems = [f"{prefix}-{kind}-idx{ndim}-ubyte", f"{prefix}-{kind}.idx{ndim}-ubyte"]
    names = [stem + suffix for stem in stems for suffix in ("", ".gz")]
    for name in names:
        if (root / name).is_file():
            return root / name
    raise UserError(f"{root}: no {kind} file found for this split (looked for {', '.join(names)})")


def _read_idx(path: Path, magic: int, kind: str) -> np.ndarray:
    """Parse one IDX file of unsigned bytes; validates magic, header and data length."""
    raw = _read_maybe_gzip(path)
    if len(raw) < 4:
        raise UserError(f"{path}: too short for an IDX header (expected at least 4 bytes, got {len(raw)})")
    found = int.from_bytes(raw[:4], "big")
    if found != magic:
        raise UserError(f"{path}: wrong magic number 0x{found:08X} (expected 0x{magic:08X} for an IDX {kind} file)")
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise UserError(f"{path}: truncated IDX header (expected {header} bytes, got {len(raw)})")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(dims, dtype=np.int64))
    actual = len(raw) - header
    if actual != expected:
        problem = "truncated data" if actual < expected else "unexpected extra bytes"
        raise UserError(f"{path}: {problem} (header says {dims} = {expected:,} bytes, file has {actual:,})")
    return np.frombuffer(raw, dtype=np.uint8, count=expected, offset=header).reshape(dims)


def _read_maybe_gzip(path: Path) -> bytes:
    """File contents, gunzipped when the file starts with the gzip signature (whatever its name)."""
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise UserError(f"{path}: cannot read file ({err.strerror or err})") from None
    if raw[:2] != b"\x1f\x8b":
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as err:
        raise UserError(f"{path}: corrupt or truncated gzip data ({err})") from None


def _check_label_range(path: Path, labels: np.ndarray, n_classes: int) -> None:
    """Every label must index into the class list."""
    bad = np.flatnonzero(labels >= n_classes)
    if len(bad):
        i = int(bad[0])
        raise UserError(
            f"{path}: label {int(labels[i])} at index {i} is out of range "
            f"(expected 0..{n_classes - 1} for {n_classes} classes)"
        )


# --------------------------------------------------------------------------- .npz arrays


def load_npz(path: str | Path) -> ImageSet:
    """Images from a NumPy .npz: `images` (or `x`) as uint8 (N, H, W), (N, H, W, C) or (N, C, H, W) with
    C in 1 or 3; optional `labels` (or `y`) as N integers and `classes` as N names' strings.

    Object arrays are refused (reading them would unpickle data from the file).
    """
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except FileNotFoundError:
        raise UserError(f"{path}: file not found (expected a .npz with an 'images' array)") from None
    except ValueError as err:
        raise UserError(f"{path}: cannot read without unpickling ({err}); store plain arrays") from None
    except (OSError, EOFError, zlib.error) as err:
        raise UserError(f"{path}: not a readable .npz file ({err})") from None
    key = "images" if "images" in arrays else "x" if "x" in arrays else None
    if key is None:
        raise UserError(f"{path}: no 'images' (or 'x') array; found {', '.join(arrays) or 'nothing'}")
    x = arrays[key]
    if x.dtype != np.uint8:
        raise UserError(f"{path}: '{key}' must be uint8 (0..255), got {x.dtype}")
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4 and x.shape[1] not in (1, 3) and x.shape[3] in (1, 3):
        x = x.transpose(0, 3, 1, 2)  # channels last -> first
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise UserError(f"{path}: '{key}' must be (N, H, W), (N, H, W, C) or (N, C, H, W) with C 1 or 3, "
                        f"got {x.shape}")
    labels = None
    lkey = "labels" if "labels" in arrays else "y" if "y" in arrays else None
    classes: list[str] = [str(c) for c in arrays["classes"].tolist()] if "classes" in arrays else []
    if lkey is not None:
        y = arrays[lkey]
        if y.shape != (len(x),) or y.dtype.kind not in "iu":
            raise UserError(f"{path}: '{lkey}' must be {len(x):,} integers, got {y.dtype} {y.shape}")
        if len(y) and y.min() < 0:
            raise UserError(f"{path}: '{lkey}' holds a negative label ({int(y.min())})")
        if not classes:
            classes = [str(c) for c in range(int(y.max()) + 1 if len(y) else 0)]
        _check_label_range(path, y, len(classes))
        labels = torch.from_numpy(y.astype(np.int64))
    return ImageSet(torch.from_numpy(np.ascontiguousarray(x)), labels, classes, [""] * len(x))


# --------------------------------------------------------------------------- image folders


@dataclass
class LabeledListing:
    """The image files of a folder of class folders, before decoding."""

    root: Path
    classes: list[str]                 # the class names labels index into
    folders: list[tuple[str, str]]     # (NFC class name, folder name on disk), sorted
    paths: list[str]                   # "<folder>/<relative path>", class folder by class folder
    labels: list[int]                  # index into `classes`, one per path
    warnings: list[str]


def list_labeled_files(directory: str | Path, classes: list[str] | None = None) -> LabeledListing:
    """List `directory/<class>/...` (recursive inside each class folder; hidden folders ignored).

    Class names are the sorted (Unicode NFC) folder names. When `classes` is given, labels index
    into it and a folder not in it is an error.
    """
    root = _existing_folder(directory, f"a folder of class folders ({directory}/<class>/*.png)")
    folders = sorted((_nfc(p.name), p.name) for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise UserError(f"{directory}: no class folders found (expected {directory}/<class>/*.png)")
    class_list = _class_list(directory, [name for name, _ in folders], classes)
    index_of = {name: i for i, name in enumerate(class_list)}
    warnings = _stray_images_note(root)
    paths: list[str] = []
    labels: list[int] = []
    for name, folder in folders:
        found, notes = list_image_files(root / folder)
        warnings += notes
        paths += [f"{folder}/{rel}" for rel in found]
        labels += [index_of[name]] * len(found)
    return LabeledListing(root, class_list, folders, paths, labels, warnings)


def load_image_folder(
    directory: str | Path,
    channels: int,
    size: tuple[int, int],
    strict: bool = False,
    classes: list[str] | None = None,
    progress: bool = False,
) -> tuple[ImageSet, ReadReport]:
    """Read labeled images from `directory/<class>/...` (recursive inside each class folder).

    Class names are the sorted (Unicode NFC) folder names; hidden folders are ignored. When
    `classes` is given (e.g. the labeled set's classes when reading a test folder), labels index
    into it and a folder not in it is an error. Images are (N, channels, H, W) uint8 with
    (H, W) = size; sources are paths relative to `directory` ("<class>/<file>").
    """
    size = check_shape_args(channels, size)
    listing = list_labeled_files(directory, classes)
    root, paths, labels, class_list = listing.root, listing.paths, listing.labels, listing.classes
    report = ReadReport(warnings=list(listing.warnings))
    pixels, kept = _decode_all(root, paths, channels, size, strict, report, progress)
    label_array = np.asarray(labels, dtype=np.int64)[kept]  # (N,)
    report.warnings += empty_class_notes(listing, label_array)
    require_images(directory, len(paths), report)
    imageset = ImageSet(
        images=torch.from_numpy(pixels),
        labels=torch.from_numpy(label_array),
        classes=class_list,
        sources=[paths[i] for i in kept],
    )
    return imageset, report


def load_unlabeled_folder(
    directory: str | Path, channels: int, size: tuple[int, int], strict: bool = False, progress: bool = False
) -> tuple[ImageSet, ReadReport]:
    """Read every image under `directory`, recursively, sorted by relative path; no labels.

    Folder links are followed only when they do not loop back or repeat a folder (see
    `decode.list_image_files`). Sources are POSIX paths relative to `directory`.
    """
    size = check_shape_args(channels, size)
    root = _existing_folder(directory, "a folder of images")
    paths, notes = list_image_files(root)
    report = ReadReport(warnings=notes)
    pixels, kept = _decode_all(root, paths, channels, size, strict, report, progress)
    require_images(directory, len(paths), report)
    imageset = ImageSet(torch.from_numpy(pixels), None, [], [paths[i] for i in kept])
    return imageset, report


def _existing_folder(directory: str | Path, expected: str) -> Path:
    """`directory` as a Path, or a UserError when it is missing or not a folder."""
    root = Path(directory)
    if not root.exists():
        raise UserError(f"{directory}: folder not found (expected {expected})")
    if not root.is_dir():
        raise UserError(f"{directory}: not a folder (expected {expected})")
    return root


def _nfc(name: str) -> str:
    """Unicode NFC form, so that e.g. macOS (NFD) and Linux spellings of a class name compare equal."""
    return unicodedata.normalize("NFC", name)


def _class_list(directory: str | Path, names: list[str], classes: list[str] | None) -> list[str]:
    """The class names labels index into: `names` itself, or the given `classes` after checking."""
    if len(set(names)) != len(names):
        raise UserError(f"{directory}: two class folders have the same name after Unicode normalisation")
    if classes is None:
        return names
    known = {_nfc(c) for c in classes}
    for name in names:
        if name not in known:
            preview = ", ".join(list(classes)[:10]) + (", ..." if len(classes) > 10 else "")
            raise UserError(
                f"{directory}: class folder '{name}' is not one of the {len(classes)} labeled classes ({preview})"
            )
    return [_nfc(c) for c in classes]


def _stray_images_note(root: Path) -> list[str]:
    """Warn about image files lying directly in the root, outside every class folder."""
    stray = [p for p in root.iterdir() if p.is_file() and is_image_name(p.name) and not p.name.startswith(".")]
    if not stray:
        return []
    return [f"ignored {len(stray):,} image files directly in {root} (labeled images must be inside class folders)"]


def empty_class_notes(listing: LabeledListing, kept: np.ndarray) -> list[str]:
    """A warning for each class folder that produced no images (`kept`: labels of the images read)."""
    n = len(listing.classes)
    listed_counts = np.bincount(np.asarray(listing.labels, dtype=np.int64), minlength=n)
    kept_counts = np.bincount(np.asarray(kept, dtype=np.int64), minlength=n)
    index_of = {name: i for i, name in enumerate(listing.classes)}
    notes = []
    for name, folder in listing.folders:
        i = index_of[name]
        if listed_counts[i] == 0:
            notes.append(f"class folder '{folder}' is empty (no image files)")
        elif kept_counts[i] == 0:
            notes.append(f"class folder '{folder}': all {listed_counts[i]:,} image files were unreadable")
    return notes


def require_images(directory: str | Path, n_files: int, report: ReadReport) -> None:
    """Zero images in total is an error even when skipping is allowed."""
    if report.read:
        return
    if n_files == 0:
        raise UserError(f"{directory}: no image files found (expected extensions {' '.join(IMAGE_EXTENSIONS)})")
    path, reason = report.skipped[0]
    raise UserError(f"{directory}: none of the {n_files:,} image files could be read (first: {path}: {reason})")


def _decode_all(
    root: Path, paths: list[str], channels: int, size: tuple[int, int], strict: bool, report: ReadReport,
    progress: bool = False,
) -> tuple[np.ndarray, list[int]]:
    """Decode `paths` (relative to `root`) into one array; returns (pixels (K, C, H, W), kept indices).

    Unreadable files are appended to `report.skipped`, or raise UserError when `strict`.
    """
    height, width = size
    pixels = np.empty((len(paths), channels, height, width), dtype=np.uint8)  # (N, C, H, W), filled up to K
    kept: list[int] = []
    bar = progress_bar(total=len(paths), desc=f"decode {root.name}", unit="img", enable=progress)
    for i, rel in enumerate(paths):
        bar.update(1)
        try:
            pixels[len(kept)] = read_image(root / rel, channels, size)
        except Unreadable as err:
            if strict:
                raise UserError(
                    f"cannot read image {root / rel}: {err.reason} (strict mode stops at the first bad file)"
                ) from None
            report.skipped.append((rel, err.reason))
            continue
        kept.append(i)
    bar.close()
    report.read = len(kept)
    return pixels[: len(kept)], kept
