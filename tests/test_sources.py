"""Tests for noisystudent.data.sources / decode: digits, IDX files and image folders."""

from __future__ import annotations

import gzip
import io
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, features

from noisystudent.data.decode import BOMB_REASON
from noisystudent.data.sources import (
    FASHION_MNIST_CLASSES,
    MNIST_CLASSES,
    ReadReport,
    decode_image,
    load_digits,
    load_idx,
    load_image_folder,
    load_unlabeled_folder,
)
from noisystudent.errors import UserError

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


# --------------------------------------------------------------------------- helpers


def save(path: Path, img: Image.Image, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, **kwargs)
    return path


def noise(height: int, width: int, seed: int = 0) -> Image.Image:
    """A random RGB image (compresses badly, so truncating its file really cuts pixel data)."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def encoded(img: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, fmt)
    return buffer.getvalue()


def write_idx(path: Path, magic: int, array: np.ndarray, gz: bool = False) -> Path:
    """Write an IDX file: big-endian magic, big-endian uint32 dims, then the uint8 data."""
    data = magic.to_bytes(4, "big") + np.asarray(array.shape, dtype=">u4").tobytes() + array.astype(np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def write_mnist(directory: Path, prefix: str, images: np.ndarray, labels: np.ndarray, gz: bool) -> None:
    suffix = ".gz" if gz else ""
    write_idx(directory / f"{prefix}-images-idx3-ubyte{suffix}", 0x803, images, gz)
    write_idx(directory / f"{prefix}-labels-idx1-ubyte{suffix}", 0x801, labels, gz)


def tiny_mnist(n: int = 6, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 5, 4), dtype=np.uint8), rng.integers(0, 10, n).astype(np.uint8)


# --------------------------------------------------------------------------- digits


def test_load_digits():
    ds = load_digits()
    assert ds.images.shape == (1797, 1, 8, 8)
    assert ds.images.dtype == torch.uint8
    assert int(ds.images.min()) == 0 and int(ds.images.max()) == 255
    assert ds.labels.dtype == torch.int64
    assert sorted(ds.labels.unique().tolist()) == list(range(10))
    assert ds.classes == [str(d) for d in range(10)]
    # value v (0..16) becomes round(v * 255 / 16): only those 17 levels occur
    levels = {round(v * 255 / 16) for v in range(17)}
    assert set(ds.images.unique().tolist()) <= levels


# --------------------------------------------------------------------------- IDX


@pytest.mark.parametrize("gz", [False, True])
def test_idx_roundtrip(tmp_path, gz):
    train_x, train_y = tiny_mnist(6, seed=1)
    test_x, test_y = tiny_mnist(3, seed=2)
    write_mnist(tmp_path, "train", train_x, train_y, gz)
    write_mnist(tmp_path, "t10k", test_x, test_y, gz)

    train = load_idx(tmp_path, "train")
    assert train.images.shape == (6, 1, 5, 4) and train.images.dtype == torch.uint8
    assert np.array_equal(train.images[:, 0].numpy(), train_x)
    assert train.labels.dtype == torch.int64 and train.labels.tolist() == train_y.tolist()
    assert train.classes == MNIST_CLASSES

    test = load_idx(tmp_path, split="test")
    assert np.array_equal(test.images[:, 0].numpy(), test_x)
    assert test.labels.tolist() == test_y.tolist()


def test_idx_fashion_classes_from_folder_name(tmp_path):
    folder = tmp_path / "my-Fashion-data"
    write_mnist(folder, "train", *tiny_mnist(), gz=True)
    assert load_idx(folder).classes == FASHION_MNIST_CLASSES
    assert load_idx(folder, classes=list("abcdefghij")).classes == list("abcdefghij")


def test_idx_wrong_magic_names_file(tmp_path):
    images, labels = tiny_mnist()
    write_idx(tmp_path / "train-images-idx3-ubyte", 0x801, images.reshape(-1))  # a labels header
    write_idx(tmp_path / "train-labels-idx1-ubyte", 0x801, labels)
    with pytest.raises(UserError, match=r"train-images-idx3-ubyte: wrong magic number 0x00000801 \(expected 0x00000803"):
        load_idx(tmp_path)


def test_idx_truncated_data(tmp_path):
    write_mnist(tmp_path, "train", *tiny_mnist(), gz=False)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-7])
    with pytest.raises(UserError, match="train-images-idx3-ubyte: truncated data"):
        load_idx(tmp_path)


def test_idx_truncated_gzip(tmp_path):
    write_mnist(tmp_path, "train", *tiny_mnist(), gz=True)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-12])
    with pytest.raises(UserError, match="train-images-idx3-ubyte.gz: corrupt or truncated gzip"):
        load_idx(tmp_path)


def test_idx_label_out_of_range(tmp_path):
    images, labels = tiny_mnist()
    labels[3] = 10
    write_mnist(tmp_path, "train", images, labels, gz=False)
    with pytest.raises(UserError, match=r"train-labels-idx1-ubyte: label 10 at index 3 is out of range \(expected 0..9"):
        load_idx(tmp_path)
    write_mnist(tmp_path, "train", images, np.minimum(labels, 5), gz=False)
    with pytest.raises(UserError, match=r"expected 0..2 for 3 classes"):
        load_idx(tmp_path, classes=["a", "b", "c"])


def test_idx_count_mismatch(tmp_path):
    images, labels = tiny_mnist(6)
    write_mnist(tmp_path, "train", images, labels[:5], gz=False)
    with pytest.raises(UserError, match="has 5 labels but train-images-idx3-ubyte has 6 images"):
        load_idx(tmp_path)


def test_idx_missing_files(tmp_path):
    with pytest.raises(UserError, match=r"looked for t10k-images-idx3-ubyte, t10k-images-idx3-ubyte.gz"):
        load_idx(tmp_path, "test")
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", 0x803, tiny_mnist()[0], gz=True)
    with pytest.raises(UserError, match=r"no labels file .*t10k-labels-idx1-ubyte\.gz"):
        load_idx(tmp_path, "test")
    with pytest.raises(UserError, match="folder not found"):
        load_idx(tmp_path / "nope")
    with pytest.raises(UserError, match="split must be 'train' or 'test'"):
        load_idx(tmp_path, "val")


@pytest.mark.skipif(not FASHION_DIR.is_dir(), reason="Fashion-MNIST not installed")
def test_real_fashion_mnist_train():
    ds = load_idx(FASHION_DIR, "train")
    assert ds.images.shape == (60_000, 1, 28, 28)
    assert ds.classes == FASHION_MNIST_CLASSES and len(ds.classes) == 10
    assert sorted(ds.labels.unique().tolist()) == list(range(10))


# --------------------------------------------------------------------------- image folders


def make_mixed_folder(root: Path) -> int:
    """One image of every colour mode, in mixed sizes and formats; returns how many were written."""
    cls = root / "a cat"  # space in the class name
    sixteen = Image.fromarray((np.arange(20 * 14).reshape(20, 14) * 200).astype(np.uint16))
    assert sixteen.mode == "I;16"
    palette = Image.new("P", (16, 9))
    palette.putpalette([0, 0, 0, 255, 0, 0] * 128)
    paths = [
        save(cls / "gray.png", Image.new("L", (10, 12), 77)),
        save(cls / "rgb.jpg", noise(30, 20)),
        save(cls / "rgba.png", Image.new("RGBA", (8, 8), (10, 200, 30, 128))),
        save(cls / "palette.gif", palette),
        save(cls / "palette_trns.png", palette, transparency=0),
        save(cls / "sub" / "deep" / "sixteen.png", sixteen),  # nested inside the class folder
        save(root / "ñandú" / "cmyk.jpg", Image.new("CMYK", (33, 17), (0, 255, 255, 0))),
        save(root / "ñandú" / "la.png", Image.new("LA", (5, 7), (200, 255))),
        save(root / "ñandú" / "bilevel.bmp", Image.new("1", (9, 9), 1)),
        save(root / "ñandú" / "rgb.TIFF", Image.new("RGB", (12, 10), (1, 2, 3))),
    ]
    if features.check("webp"):
        paths.append(save(root / "ñandú" / "x.webp", noise(14, 14)))
    return len(paths)


@pytest.mark.parametrize("channels", [1, 3])
def test_folder_reads_every_mode(tmp_path, channels):
    n = make_mixed_folder(tmp_path)
    ds, report = load_image_folder(tmp_path, channels=channels, size=(12, 10))
    assert ds.images.shape == (n, channels, 12, 10) and ds.images.dtype == torch.uint8
    assert ds.images.is_contiguous()
    assert report.read == n and report.skipped == [] and report.warnings == []
    assert ds.classes == ["a cat", "ñandú"]
    assert ds.labels.tolist() == [0] * 6 + [1] * (n - 6)
    assert ds.sources[:3] == ["a cat/gray.png", "a cat/palette.gif", "a cat/palette_trns.png"]
    assert "a cat/sub/deep/sixteen.png" in ds.sources


def read_one(tmp_path: Path, img: Image.Image, channels: int, name: str = "x.png", **kwargs) -> np.ndarray:
    """Save `img` alone in a class folder and read it back as (C, 12, 10)."""
    save(tmp_path / "c" / name, img, **kwargs)
    ds, report = load_image_folder(tmp_path, channels=channels, size=(12, 10))
    assert report.read == 1
    return ds.images[0].numpy()


def test_pixels_gray(tmp_path):
    one = read_one(tmp_path, Image.new("L", (10, 12), 77), channels=1)
    assert (one == 77).all()
    assert (decode_image(tmp_path / "c" / "x.png", 3, (12, 10)) == 77).all()


def test_pixels_rgb_solid_color(tmp_path):
    img = Image.new("RGB", (31, 5), (200, 10, 10))  # other size: resizing keeps a solid colour
    three = read_one(tmp_path, img, channels=3)
    assert three.shape == (3, 12, 10)
    assert three[:, 0, 0].tolist() == [200, 10, 10] and (three == three[:, :1, :1]).all()
    gray = decode_image(tmp_path / "c" / "x.png", 1, (12, 10))
    expected = img.convert("L").getpixel((0, 0))  # PIL's luma: 67
    assert gray.shape == (1, 12, 10) and (gray == expected).all()


def test_pixels_transparency_composited_on_black(tmp_path):
    img = Image.new("RGBA", (10, 12), (255, 255, 255, 128))
    img.paste((255, 0, 0, 0), (0, 0, 5, 12))  # left half: fully transparent red
    three = read_one(tmp_path, img, channels=3)
    assert (three[:, :, :4] == 0).all()  # transparent -> black
    assert np.abs(three[:, :, 6:].astype(int) - 128).max() <= 1  # half-transparent white -> mid gray


def test_pixels_palette_transparency_and_sixteen_bit(tmp_path):
    palette = Image.new("P", (10, 12), 1)
    palette.putpalette([9, 9, 9, 250, 250, 250] + [0] * 762)
    palette.paste(0, (0, 0, 10, 6))
    one = read_one(tmp_path, palette, channels=1, transparency=0)
    assert (one[0, :6] == 0).all() and (one[0, 6:] == 250).all()
    save(tmp_path / "c" / "y.png", Image.fromarray(np.full((12, 10), 0xABCD, dtype=np.uint16)))
    assert (decode_image(tmp_path / "c" / "y.png", 1, (12, 10)) == 0xAB).all()


def test_empty_class_folder_is_a_warning(tmp_path):
    save(tmp_path / "b" / "x.png", Image.new("L", (4, 4)))
    (tmp_path / "a").mkdir()
    ds, report = load_image_folder(tmp_path, channels=1, size=(4, 4))
    assert ds.classes == ["a", "b"] and ds.labels.tolist() == [1]
    assert any("'a'" in w and "empty" in w for w in report.warnings)
    assert report.summary() == "read 1 image, 1 warning"


def test_no_class_folders(tmp_path):
    save(tmp_path / "x.png", Image.new("L", (4, 4)))
    with pytest.raises(UserError) as err:
        load_image_folder(tmp_path, channels=1, size=(4, 4))
    assert str(err.value) == f"{tmp_path}: no class folders found (expected {tmp_path}/<class>/*.png)"


def test_missing_folder(tmp_path):
    with pytest.raises(UserError, match="nowhere: folder not found"):
        load_image_folder(tmp_path / "nowhere", channels=1, size=(4, 4))
    with pytest.raises(UserError, match="nowhere: folder not found"):
        load_unlabeled_folder(tmp_path / "nowhere", 1, (4, 4))


def test_zero_images_is_an_error(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "notes.txt").write_text("hi")
    with pytest.raises(UserError, match="no image files found"):
        load_image_folder(tmp_path, channels=1, size=(4, 4))
    (tmp_path / "a" / "bad.png").write_bytes(b"")
    with pytest.raises(UserError, match=r"none of the 1 image files could be read \(first: a/bad.png: empty file"):
        load_image_folder(tmp_path, channels=1, size=(4, 4))


def make_bad_files(root: Path) -> None:
    cls = root / "c"
    save(cls / "good.png", Image.new("RGB", (6, 6), (1, 2, 3)))
    (cls / "a_empty.png").write_bytes(b"")
    png, jpg = encoded(noise(64, 64), "PNG"), encoded(noise(64, 64), "JPEG")
    (cls / "b_trunc.png").write_bytes(png[: len(png) // 2])
    (cls / "c_trunc.jpg").write_bytes(jpg[: len(jpg) // 2])
    (cls / "x.png").write_text("this is not an image\n")


def test_unreadable_files_are_skipped_with_reasons(tmp_path):
    make_bad_files(tmp_path)
    ds, report = load_image_folder(tmp_path, channels=3, size=(6, 6))
    assert len(ds) == 1 and ds.sources == ["c/good.png"] and report.read == 1
    reasons = dict(report.skipped)
    assert list(reasons) == ["c/a_empty.png", "c/b_trunc.png", "c/c_trunc.jpg", "c/x.png"]
    assert reasons["c/a_empty.png"] == "empty file (0 bytes)"
    assert reasons["c/b_trunc.png"] == "truncated image data"
    assert reasons["c/c_trunc.jpg"] == "truncated image data"
    assert "not a recognisable image" in reasons["c/x.png"]
    assert all("\n" not in r for r in reasons.values())
    assert report.summary() == "read 1 image, skipped 4 unreadable (see report)"


def test_strict_names_first_bad_file(tmp_path):
    make_bad_files(tmp_path)
    with pytest.raises(UserError, match=r"cannot read image .*c/a_empty.png: empty file \(0 bytes\)"):
        load_image_folder(tmp_path, channels=3, size=(6, 6), strict=True)
    with pytest.raises(UserError, match=r"c/x.png: not a recognisable image"):
        decode_image(tmp_path / "c" / "x.png", 1, (6, 6))


def test_decompression_bomb_is_skipped(tmp_path, monkeypatch):
    save(tmp_path / "c" / "small.png", Image.new("L", (10, 10)))
    save(tmp_path / "c" / "warn.png", Image.new("L", (40, 40)))  # 1,600 px: above the limit
    save(tmp_path / "c" / "error.png", Image.new("L", (50, 50)))  # 2,500 px: above twice the limit
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000)
    ds, report = load_image_folder(tmp_path, channels=1, size=(10, 10))
    assert ds.sources == ["c/small.png"]
    assert report.skipped == [("c/error.png", BOMB_REASON), ("c/warn.png", BOMB_REASON)]
    assert BOMB_REASON == "image too large (decompression-bomb limit)"


def test_test_folder_uses_labeled_classes(tmp_path):
    save(tmp_path / "test" / "dog" / "1.png", Image.new("L", (4, 4)))
    ds, _ = load_image_folder(tmp_path / "test", channels=1, size=(4, 4), classes=["cat", "dog", "eel"])
    assert ds.classes == ["cat", "dog", "eel"] and ds.labels.tolist() == [1]
    save(tmp_path / "test" / "zebra" / "1.png", Image.new("L", (4, 4)))
    with pytest.raises(UserError, match=r"class folder 'zebra' is not one of the 3 labeled classes \(cat, dog, eel\)"):
        load_image_folder(tmp_path / "test", channels=1, size=(4, 4), classes=["cat", "dog", "eel"])


def test_many_non_image_files_warn(tmp_path):
    save(tmp_path / "c" / "x.png", Image.new("L", (4, 4)))
    for i in range(12):
        (tmp_path / "c" / f"n{i}.txt").write_text("x")
    (tmp_path / "c" / ".hidden.png").write_bytes(b"junk")  # hidden files are ignored, not skipped
    _, report = load_image_folder(tmp_path, channels=1, size=(4, 4))
    assert report.read == 1 and report.skipped == []
    assert any("ignored 12 non-image files" in w for w in report.warnings)


def test_bad_arguments(tmp_path):
    save(tmp_path / "c" / "x.png", Image.new("L", (4, 4)))
    with pytest.raises(UserError, match="channels must be 1"):
        load_image_folder(tmp_path, channels=2, size=(4, 4))
    with pytest.raises(UserError, match="size must be"):
        load_unlabeled_folder(tmp_path, 1, (0, 4))


# --------------------------------------------------------------------------- unlabeled folders


def test_unlabeled_recursive_sorted_relative(tmp_path):
    for rel in ["b.png", "a/z.png", "a/b/c.jpg", "A.PNG", "notes.txt"]:
        path = tmp_path / rel
        if rel.endswith(".txt"):
            path.write_text("x")
        else:
            save(path, noise(7, 9))
    ds, report = load_unlabeled_folder(tmp_path, 3, (5, 5))
    assert ds.sources == ["A.PNG", "a/b/c.jpg", "a/z.png", "b.png"]
    assert ds.labels is None and ds.classes == []
    assert ds.images.shape == (4, 3, 5, 5) and report.read == 4


def test_unlabeled_symlink_loop(tmp_path):
    save(tmp_path / "sub" / "x.png", Image.new("L", (4, 4)))
    save(tmp_path / "y.png", Image.new("L", (4, 4)))
    try:
        os.symlink(tmp_path, tmp_path / "sub" / "loop")
    except (OSError, NotImplementedError):
        pytest.skip("symlinks not supported here")
    ds, report = load_unlabeled_folder(tmp_path, 1, (4, 4))
    assert ds.sources == ["sub/x.png", "y.png"]
    assert any("did not follow folder link sub/loop" in w for w in report.warnings)


def test_unlabeled_follows_outside_folder_link(tmp_path):
    outside, root = tmp_path / "outside", tmp_path / "root"
    save(outside / "o.png", Image.new("L", (4, 4)))
    save(root / "r.png", Image.new("L", (4, 4)))
    try:
        os.symlink(outside, root / "linked")
    except (OSError, NotImplementedError):
        pytest.skip("symlinks not supported here")
    ds, _ = load_unlabeled_folder(root, 1, (4, 4))
    assert ds.sources == ["linked/o.png", "r.png"]


def test_read_report_summary():
    report = ReadReport(read=1203, skipped=[("a.png", "empty file (0 bytes)"), ("b.png", "truncated image data")])
    assert report.summary() == "read 1,203 images, skipped 2 unreadable (see report)"
    assert "skipped b.png: truncated image data" in report.details()
    assert ReadReport(read=5).summary() == "read 5 images"
