"""A uint8 image cache: decode every image once, then stream batches from one file.

A cache is a folder:

    images.u8     (N, C, H, W) uint8 in C order, no header: `DiskImages` reads it a batch at a time,
                  `numpy.memmap(path, np.uint8, "r", shape=(N, C, H, W))` maps it
    index.jsonl   one JSON object per image, in row order:
                  path      relative to the source folder ("<class>/<file>" for labeled folders),
                            or "<split>[<i>]" for array sources
                  width, height   original size in pixels
                  bytes, mtime_ns file size and modification time (how a changed file is found)
                  hash      blake2b-128 of the file's bytes (of the image's pixels for arrays)
                  label     class name, or null for unlabeled images
    cache.json    format, count, shape [C, H, W], classes, labeled, source, updated
    report.txt    what the last `prepare` did, and every file it could not read, with the reason

Writing order makes a crash harmless: pixels first, then index.jsonl and cache.json are replaced
atomically. A half-written tail of images.u8 lies beyond `count` and is overwritten next time.

Updating a folder cache decodes only files it has not seen (new path, or a different size or
modification time). When files are only added, their rows are appended; when files changed or
disappeared, the unchanged rows are copied (not decoded) into a new file, which replaces the old.
Decoding runs in `workers` processes; unreadable files are reported and skipped (or, with
`strict`, stop the run).
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import torch

from noisystudent.checkpoint import atomic_write_bytes
from noisystudent.data.decode import Unreadable, check_shape_args, list_image_files, read_image_and_size
from noisystudent.data.disk import DiskImages
from noisystudent.data.imageset import ImageSet
from noisystudent.distributed import usable_cores
from noisystudent.errors import UserError
from noisystudent.progress import progress_bar

FORMAT = 1
IMAGES, INDEX, META, REPORT = "images.u8", "index.jsonl", "cache.json", "report.txt"
CHUNK = 256         # files per decoding task
COPY_BLOCK = 8192   # rows per block when copying unchanged rows into a rebuilt file


def is_cache(path: str | Path) -> bool:
    return (Path(path) / META).is_file()


# ---------------------------------------------------------------------------------------------- reading
class ImageCache:
    """An existing cache folder (see the module docstring)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        try:
            meta = json.loads((self.root / META).read_text())
        except FileNotFoundError:
            raise UserError(f"{self.root}: not an image cache (no {META}); make one with `noisystudent prepare`") from None
        except (OSError, ValueError) as err:
            raise UserError(f"{self.root / META}: unreadable ({err}); prepare the cache again") from None
        if meta.get("format") != FORMAT:
            raise UserError(f"{self.root}: cache format {meta.get('format')!r}, this version reads {FORMAT}; "
                            "prepare it again")
        self.meta: dict[str, Any] = meta
        self.count: int = int(meta["count"])
        self.shape: tuple[int, int, int] = tuple(meta["shape"])  # type: ignore[assignment]
        self.classes: list[str] = list(meta["classes"])
        self.labeled: bool = bool(meta["labeled"])
        self._entries: list[dict[str, Any]] | None = None

    @property
    def images(self) -> DiskImages:
        return DiskImages(self.root / IMAGES, self.count, self.shape)

    def entries(self) -> list[dict[str, Any]]:
        if self._entries is None:
            with open(self.root / INDEX, encoding="utf-8") as f:
                self._entries = [json.loads(line) for line in islice(f, self.count)]
            if len(self._entries) != self.count:
                raise UserError(f"{self.root / INDEX}: {len(self._entries):,} entries for {self.count:,} images; "
                                "prepare the cache again")
        return self._entries

    def labels(self, classes: list[str] | None = None) -> torch.Tensor | None:
        """(N,) int64 indices into `classes` (default: the cache's own), or None for an unlabeled cache."""
        if not self.labeled:
            return None
        classes = self.classes if classes is None else classes
        index_of = {c: i for i, c in enumerate(classes)}
        names = [e["label"] for e in self.entries()]
        unknown = sorted(set(names) - set(index_of))
        if unknown:
            raise UserError(f"{self.root}: class {unknown[0]!r} is not one of the {len(classes)} labeled classes")
        return torch.tensor([index_of[n] for n in names], dtype=torch.long)

    def imageset(self, classes: list[str] | None = None, in_memory: bool = False) -> ImageSet:
        """The cached images (on disk, or loaded with `in_memory`) with labels, and with source paths
        when labeled or in memory (an unlabeled set streamed from disk skips reading its index)."""
        images: torch.Tensor | DiskImages = self.images
        if in_memory:
            images = images.load()
        sources = [e["path"] for e in self.entries()] if self.labeled or in_memory else []
        return ImageSet(images, self.labels(classes), list(self.classes if classes is None else classes), sources)


# --------------------------------------------------------------------------------------------- preparing
@dataclass
class PrepareReport:
    """What one `prepare` did."""

    cache: str
    total: int = 0                                    # images in the cache afterwards
    added: int = 0                                    # decoded because new
    updated: int = 0                                  # decoded because the file changed
    removed: int = 0                                  # dropped because the file is gone
    unchanged: int = 0                                # kept without decoding
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    warnings: list[str] = field(default_factory=list)
    workers: int = 1
    seconds: float = 0.0

    @property
    def decoded(self) -> int:
        return self.added + self.updated

    def summary(self) -> str:
        text = (f"{self.cache}: {self.total:,} images ({self.added:,} added, {self.updated:,} updated, "
                f"{self.removed:,} removed, {self.unchanged:,} unchanged)")
        if self.skipped:
            text += f", skipped {len(self.skipped):,} unreadable (see {REPORT})"
        if self.decoded >= 1000 and self.seconds > 0:
            text += f"; decoded {self.decoded / self.seconds:,.0f} images/s with {self.workers} process(es)"
        return text

    def details(self) -> str:
        lines = [self.summary()]
        lines += [f"warning: {w}" for w in self.warnings]
        lines += [f"skipped {p}: {r}" for p, r in self.skipped]
        return "\n".join(lines) + "\n"


def prepare_folder(src: str | Path, out: str | Path, *, channels: int, size: tuple[int, int], labeled: bool,
                   workers: int = 0, strict: bool = False, progress: bool = False) -> tuple[ImageCache, PrepareReport]:
    """Build or update the cache `out` from the image folder `src` (class folders when `labeled`)."""
    from noisystudent.data.sources import list_labeled_files, require_images

    size = check_shape_args(channels, size)
    src, out = Path(src), Path(out)
    t0 = time.perf_counter()
    shape = (channels, *size)
    if labeled:
        listing = list_labeled_files(src)
        paths, labels, warnings = listing.paths, [listing.classes[i] for i in listing.labels], listing.warnings
        classes = listing.classes
    else:
        if not src.is_dir():
            raise UserError(f"{src}: folder not found (expected a folder of images)")
        paths, warnings = list_image_files(src)
        labels, classes = [None] * len(paths), []
    old = _existing(out, shape, labeled, src)
    old_entries = old.entries() if old is not None else []
    stats = [_stat(src / p) for p in paths]
    known = {e["path"]: i for i, e in enumerate(old_entries)}
    keep_rows, todo = [], []
    for p, lab, st in zip(paths, labels, stats):
        i = known.get(p)
        if i is not None and st is not None and old_entries[i]["bytes"] == st[0] \
                and old_entries[i]["mtime_ns"] == st[1] and old_entries[i]["label"] == lab:
            keep_rows.append(i)
        else:
            todo.append((p, lab))
    listed = set(paths)
    report = PrepareReport(str(out), warnings=list(warnings))
    report.removed = sum(1 for e in old_entries if e["path"] not in listed)
    report.unchanged = len(keep_rows)
    if old is not None and not todo and not report.removed:  # up to date: nothing is written
        if labeled:
            report.warnings += _empty_class_notes(listing, old_entries)
        report.total, report.seconds = old.count, time.perf_counter() - t0
        return old, report
    append = old is not None and keep_rows == list(range(len(old_entries)))  # nothing changed or removed
    out.mkdir(parents=True, exist_ok=True)
    target = out / IMAGES if append or old is None else out / (IMAGES + ".new")
    entries = [old_entries[i] for i in keep_rows] if old is not None else []
    with _Writer(target, start_row=len(entries) if append else 0, row_bytes=int(np.prod(shape))) as writer:
        if old is not None and not append:
            _copy_rows(old.images, keep_rows, writer)
        n_workers = min(workers or usable_cores(), max(1, -(-len(todo) // CHUNK)))
        report.workers = n_workers
        tasks = [(str(src), todo[i:i + CHUNK], channels, size) for i in range(0, len(todo), CHUNK)]
        bar = progress_bar(total=len(todo), desc=f"prepare {src.name}", unit="img", enable=progress and bool(todo))
        for pixels, metas, skipped in _ordered_map(_decode_chunk, tasks, n_workers):
            if skipped and strict:
                path, reason = skipped[0]
                raise UserError(f"cannot read image {src / path}: {reason} (strict mode stops at the first bad file)")
            writer.write(pixels)
            entries += metas
            report.skipped += skipped
            bar.update(len(metas) + len(skipped))
        bar.close()
    report.added = sum(1 for e in entries[len(keep_rows):] if e["path"] not in known)
    report.updated = len(entries) - len(keep_rows) - report.added
    if labeled:
        report.warnings += _empty_class_notes(listing, entries)
    if not entries:
        from noisystudent.data.sources import ReadReport

        require_images(src, len(paths), ReadReport(read=0, skipped=report.skipped))
    if target != out / IMAGES:
        os.replace(target, out / IMAGES)
    report.total = len(entries)
    report.seconds = time.perf_counter() - t0
    _commit(out, entries, shape, classes, labeled, {"kind": "folder", "path": str(src.resolve())}, report)
    return ImageCache(out), report


def _empty_class_notes(listing: Any, entries: list[dict[str, Any]]) -> list[str]:
    from noisystudent.data.sources import empty_class_notes

    return empty_class_notes(listing, np.asarray([listing.classes.index(e["label"]) for e in entries], dtype=np.int64))


def prepare_arrays(images: ImageSet, out: str | Path, *, source: dict[str, Any], split: str = "train",
                   size: tuple[int, int] | None = None, progress: bool = False) -> tuple[ImageCache, PrepareReport]:
    """Build the cache `out` from in-memory images (IDX, CIFAR, .npz). Unchanged data is not rewritten."""
    from noisystudent.tensors import resize_uint8

    c, h, w = images.shape
    if size is not None and tuple(size) != (h, w):
        if size[0] != size[1]:
            raise UserError(f"size: arrays are resized to squares only, got {size}")
        h = w = int(size[0])
    digest = _array_digest(images)
    old = _existing(Path(out), (c, h, w), images.labels is not None, None)
    if old is not None and old.meta.get("source", {}).get("digest") == digest:
        return old, PrepareReport(str(out), total=old.count, unchanged=old.count)

    def blocks() -> Iterator[tuple[np.ndarray, list[str | None]]]:
        for start in range(0, len(images), COPY_BLOCK):
            block = images.images[start:start + COPY_BLOCK]
            block = resize_uint8(block, h) if (h, w) != tuple(block.shape[-2:]) else block
            labels = [None] * len(block) if images.labels is None else \
                [images.classes[int(y)] for y in images.labels[start:start + len(block)]]
            yield block.contiguous().numpy(), labels

    return write_array_cache(out, blocks(), shape=(c, h, w), classes=list(images.classes),
                             labeled=images.labels is not None, source={**source, "split": split, "digest": digest},
                             name=split, original=images.shape[1:], progress=progress, total=len(images))


def write_array_cache(out: str | Path, blocks: Iterable[tuple[np.ndarray, list[str | None]]], *,
                      shape: tuple[int, int, int], classes: list[str], labeled: bool, source: dict[str, Any],
                      name: str = "array", original: tuple[int, int] | None = None, progress: bool = False,
                      total: int | None = None) -> tuple[ImageCache, PrepareReport]:
    """Write a cache from blocks of (pixels (B, C, H, W) uint8, class name or None per image), holding
    one block in memory at a time; rows are indexed as "<name>[i]". Replaces any cache at `out`."""
    out = Path(out)
    t0 = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    h, w = original or shape[1:]
    entries: list[dict[str, Any]] = []
    bar = progress_bar(total=total, desc=f"prepare {out.name}", unit="img", enable=progress)
    target = out / (IMAGES + ".new")  # the old cache stays valid until the new one is complete
    with _Writer(target, start_row=0, row_bytes=int(np.prod(shape))) as writer:
        for pixels, labels in blocks:
            if pixels.shape[1:] != tuple(shape) or pixels.dtype != np.uint8:
                raise ValueError(f"block of {pixels.dtype} {pixels.shape[1:]}, expected uint8 {tuple(shape)}")
            writer.write(pixels)
            flat = pixels.reshape(len(pixels), -1)
            for j, label in enumerate(labels):
                entries.append({"path": f"{name}[{len(entries)}]", "width": w, "height": h, "bytes": 0,
                                "mtime_ns": 0, "hash": hashlib.blake2b(flat[j].tobytes(), digest_size=16).hexdigest(),
                                "label": label})
            bar.update(len(pixels))
    bar.close()
    os.replace(target, out / IMAGES)
    report = PrepareReport(str(out), total=len(entries), added=len(entries), seconds=time.perf_counter() - t0)
    _commit(out, entries, shape, classes, labeled, source, report)
    return ImageCache(out), report


def _existing(out: Path, shape: tuple[int, ...], labeled: bool, src: Path | None) -> ImageCache | None:
    """The cache already at `out`, checked against what is being prepared; None when there is none."""
    if not is_cache(out):
        if out.exists() and any(out.iterdir()):
            raise UserError(f"{out}: exists and is not an image cache; choose an empty or new folder")
        return None
    old = ImageCache(out)
    if tuple(old.shape) != tuple(shape):
        raise UserError(f"{out}: this cache holds {'x'.join(map(str, old.shape))} images, not "
                        f"{'x'.join(map(str, shape))} (channels x height x width); use another output folder")
    if old.labeled != labeled:
        raise UserError(f"{out}: this cache holds {'labeled' if old.labeled else 'unlabeled'} images; "
                        "use another output folder")
    if src is not None and old.meta.get("source", {}).get("path") not in (None, str(src.resolve())):
        raise UserError(f"{out}: this cache was made from {old.meta['source']['path']}, not {src.resolve()}; "
                        "use another output folder")
    return old


def _commit(out: Path, entries: list[dict[str, Any]], shape: tuple[int, ...], classes: list[str], labeled: bool,
            source: dict[str, Any], report: PrepareReport) -> None:
    """Replace index.jsonl, report.txt and then cache.json (the count) atomically."""
    index = "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in entries)
    atomic_write_bytes(out / INDEX, index.encode("utf-8"))
    atomic_write_bytes(out / REPORT, report.details().encode("utf-8"))
    meta = {"format": FORMAT, "count": len(entries), "shape": list(shape), "classes": classes, "labeled": labeled,
            "source": source, "skipped": len(report.skipped), "updated": time.strftime("%Y-%m-%dT%H:%M:%S")}
    atomic_write_bytes(out / META, json.dumps(meta, indent=1, ensure_ascii=False).encode("utf-8"))


def _stat(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def _array_digest(images: ImageSet) -> str:
    h = hashlib.blake2b(digest_size=16)
    for start in range(0, len(images), COPY_BLOCK):
        h.update(images.images[start:start + COPY_BLOCK].contiguous().numpy().tobytes())
    if images.labels is not None:
        h.update(images.labels.numpy().tobytes())
        h.update(json.dumps(images.classes).encode())
    return h.hexdigest()


class _Writer:
    """Writes rows of pixels into a raw file from row `start_row` on; fsyncs on close."""

    def __init__(self, path: Path, start_row: int, row_bytes: int):
        self.path, self.row_bytes = path, row_bytes
        mode = "r+b" if start_row > 0 else "wb"
        self.f = open(path, mode)
        self.f.seek(start_row * row_bytes)

    def write(self, pixels: np.ndarray) -> None:
        if len(pixels):
            self.f.write(np.ascontiguousarray(pixels).reshape(-1).data)

    def __enter__(self) -> "_Writer":
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            self.f.truncate()  # drop a stale tail from an interrupted earlier prepare
            self.f.flush()
            os.fsync(self.f.fileno())
        self.f.close()
        if exc[0] is not None and self.path.name.endswith(".new"):
            self.path.unlink(missing_ok=True)


def _copy_rows(images: DiskImages, rows: list[int], writer: _Writer) -> None:
    index = torch.tensor(rows, dtype=torch.long)
    for start in range(0, len(index), COPY_BLOCK):
        writer.write(images[index[start:start + COPY_BLOCK]].numpy())


def _decode_chunk(task: tuple[str, list[tuple[str, str | None]], int, tuple[int, int]]
                  ) -> tuple[np.ndarray, list[dict[str, Any]], list[tuple[str, str]]]:
    """Decode some files of one folder: (pixels (K, C, H, W), index entries, skipped (path, reason))."""
    root, items, channels, size = task
    pixels = np.empty((len(items), channels, *size), dtype=np.uint8)
    metas: list[dict[str, Any]] = []
    skipped: list[tuple[str, str]] = []
    for rel, label in items:
        path = Path(root) / rel
        try:
            pixels[len(metas)], (width, height) = read_image_and_size(path, channels, size)
            data = path.read_bytes()
            st = path.stat()
        except Unreadable as err:
            skipped.append((rel, err.reason))
            continue
        except OSError as err:  # the file vanished or changed between decoding and hashing
            skipped.append((rel, f"cannot read file ({err.strerror or err})"))
            continue
        metas.append({"path": rel, "width": width, "height": height, "bytes": st.st_size,
                      "mtime_ns": st.st_mtime_ns, "hash": hashlib.blake2b(data, digest_size=16).hexdigest(),
                      "label": label})
    return pixels[:len(metas)], metas, skipped


def _ordered_map(fn: Callable[[Any], Any], tasks: Iterable[Any], workers: int) -> Iterator[Any]:
    """`map(fn, tasks)` in `workers` processes, results in order, at most 4 tasks per worker in flight."""
    if workers <= 1:
        yield from map(fn, tasks)
        return
    from concurrent.futures import ProcessPoolExecutor

    # fork: the workers only run PIL and NumPy; no re-import of the package per worker
    ctx = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else None)
    it = iter(tasks)
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        pending = deque(pool.submit(fn, t) for t in islice(it, 4 * workers))
        try:
            while pending:
                result = pending.popleft().result()
                nxt = next(it, None)
                if nxt is not None:
                    pending.append(pool.submit(fn, nxt))
                yield result
        finally:
            for f in pending:
                f.cancel()


# ----------------------------------------------------------------------------------------- any source
def prepare(src: str | Path, out: str | Path, *, labels: str = "auto", channels: int | None = None,
            size: int | None = None, split: str = "train", workers: int = 0, strict: bool = False,
            progress: bool = False) -> tuple[ImageCache, PrepareReport, str]:
    """Build or update the cache `out` from `src`: an image folder (class folders when `labels` is
    "folders"; every image, unlabeled, when "none"; "auto" decides by the folder's layout), a folder
    of MNIST-format IDX files or CIFAR python batches (`split` train or test), or a .npz file.

    Folders default to 1 channel and 32x32 pixels; arrays keep their own unless told otherwise.
    Returns (cache, report, what the source was taken for).
    """
    from noisystudent.data.cifar import load_cifar
    from noisystudent.data.sources import load_idx, load_npz

    src_path = Path(src)
    if labels not in ("auto", "folders", "none"):
        raise UserError(f"labels must be auto, folders or none, got {labels!r}")
    if not src_path.exists():
        raise UserError(f"{src}: not found (expected an image folder, IDX or CIFAR folder, or a .npz file)")
    if is_cache(src_path):
        raise UserError(f"{src}: is already a cache; pass it to `run` as it is")
    if src_path.resolve() == Path(out).resolve():
        raise UserError(f"{out}: the cache cannot be written into its own source folder")
    arrays, kind = None, ""
    if src_path.is_file():
        if src_path.suffix.lower() != ".npz":
            raise UserError(f"{src}: a file source must be a .npz (images, labels) file")
        arrays, kind = load_npz(src_path), ".npz arrays"
    elif any(src_path.glob("train-images*")) or any(src_path.glob("t10k-images*")):
        arrays, kind = load_idx(src_path, split), f"IDX files ({split})"
    elif (src_path / "batches.meta").is_file() or (src_path / "meta").is_file():
        arrays, kind = load_cifar(src_path, split), f"CIFAR batches ({split})"
    if arrays is not None:
        if channels is not None and channels != arrays.shape[0]:
            raise UserError(f"{src}: images have {arrays.shape[0]} channel(s), not {channels}")
        if labels == "none":
            arrays = ImageSet(arrays.images, None, [], arrays.sources)
        cache, report = prepare_arrays(arrays, out, source={"kind": kind, "path": str(src_path.resolve())},
                                       split=split, size=None if size is None else (size, size), progress=progress)
        return cache, report, kind
    labeled = labels == "folders" or (labels == "auto" and _looks_labeled(src_path))
    side = size or 32
    cache, report = prepare_folder(src_path, out, channels=channels or 1, size=(side, side), labeled=labeled,
                                   workers=workers, strict=strict, progress=progress)
    return cache, report, "labeled image folder (one folder per class)" if labeled else "unlabeled image folder"


def _looks_labeled(root: Path) -> bool:
    """Class folders and no image files at the top level."""
    from noisystudent.data.decode import is_image_name

    entries = [p for p in root.iterdir() if not p.name.startswith(".")]
    return any(p.is_dir() for p in entries) and not any(p.is_file() and is_image_name(p.name) for p in entries)
