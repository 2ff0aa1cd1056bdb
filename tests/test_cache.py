"""The uint8 image cache (`noisystudent prepare`), DiskImages reads, and streaming from disk."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from noisystudent.cli import main
from noisystudent.config import Config
from noisystudent.data.cache import IMAGES, ImageCache, prepare, prepare_arrays, prepare_folder
from noisystudent.data.disk import DiskImages
from noisystudent.data.imageset import ImageSet, take_rows
from noisystudent.data.sources import load_digits, load_image_folder, load_npz, load_unlabeled_folder
from noisystudent.errors import UserError
from noisystudent.models import create_model
from noisystudent.pipeline import run
from noisystudent.pseudo_label import predict

SIZE = (12, 12)


def _write(path: Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


@pytest.fixture
def digit_folders(tmp_path):
    """labeled/<class>/ (3 x 8), unlabeled/ (60 in two sub-folders + 1 corrupt), test/<class>/ (3 x 5)."""
    d = load_digits()
    for c in range(3):
        idx = (d.labels == c).nonzero().squeeze(1).tolist()
        for j in range(8):
            _write(tmp_path / "labeled" / f"c{c}" / f"{j}.png", d.images[idx[j], 0].numpy())
        for j in range(5):
            _write(tmp_path / "test" / f"c{c}" / f"{j}.png", d.images[idx[10 + j], 0].numpy())
        for j in range(20):
            _write(tmp_path / "unlabeled" / f"part{j % 2}" / f"{c}_{j:02d}.png", d.images[idx[20 + j], 0].numpy())
    (tmp_path / "unlabeled" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    return tmp_path


# ------------------------------------------------------------------------------------ round trips
def test_unlabeled_folder_cache_equals_the_decoded_folder(digit_folders, tmp_path):
    cache, report = prepare_folder(digit_folders / "unlabeled", tmp_path / "c", channels=1, size=SIZE,
                                   labeled=False, workers=1)
    ref, ref_report = load_unlabeled_folder(digit_folders / "unlabeled", 1, SIZE)
    got = cache.imageset(in_memory=True)
    assert torch.equal(got.images, ref.images) and got.sources == ref.sources and got.labels is None
    assert report.total == 60 and report.added == 60
    assert report.skipped == ref_report.skipped == [("corrupt.png", ref_report.skipped[0][1])]
    assert "corrupt.png" in (tmp_path / "c" / "report.txt").read_text()
    entry = cache.entries()[0]
    assert (entry["width"], entry["height"]) == (8, 8) and len(entry["hash"]) == 32
    # the images file is a plain array: numpy.memmap reads the same pixels
    mm = np.memmap(tmp_path / "c" / IMAGES, np.uint8, "r", shape=(60, 1, *SIZE))
    assert np.array_equal(mm, ref.images.numpy())


def test_labeled_folder_cache_labels_match_the_class_folders(digit_folders, tmp_path):
    cache, _ = prepare_folder(digit_folders / "labeled", tmp_path / "c", channels=1, size=SIZE, labeled=True)
    ref, _ = load_image_folder(digit_folders / "labeled", 1, SIZE)
    got = cache.imageset(in_memory=True)
    assert cache.classes == ref.classes == ["c0", "c1", "c2"]
    assert torch.equal(got.labels, ref.labels) and torch.equal(got.images, ref.images)
    assert all(s.split("/")[0] == cache.classes[int(y)] for s, y in zip(got.sources, got.labels))


def test_parallel_decoding_writes_the_same_cache(digit_folders, tmp_path, monkeypatch):
    monkeypatch.setattr("noisystudent.data.cache.CHUNK", 7)  # 9 tasks, so two processes share them
    one, _ = prepare_folder(digit_folders / "unlabeled", tmp_path / "one", channels=3, size=SIZE, labeled=False,
                            workers=1)
    two, report = prepare_folder(digit_folders / "unlabeled", tmp_path / "two", channels=3, size=SIZE,
                                 labeled=False, workers=2)
    assert (tmp_path / "one" / IMAGES).read_bytes() == (tmp_path / "two" / IMAGES).read_bytes()
    assert one.entries() == two.entries() and report.workers == 2
    assert report.skipped == [("corrupt.png", report.skipped[0][1])]


def test_array_sources_round_trip_and_are_not_rewritten(tmp_path):
    d = load_digits()
    np.savez(tmp_path / "d.npz", images=d.images[:, 0].numpy(), labels=d.labels.numpy())
    cache, report, kind = prepare(tmp_path / "d.npz", tmp_path / "c")
    got = cache.imageset(in_memory=True)
    assert kind == ".npz arrays" and torch.equal(got.images, d.images) and torch.equal(got.labels, d.labels)
    mtime = (tmp_path / "c" / IMAGES).stat().st_mtime_ns
    _, again, _ = prepare(tmp_path / "d.npz", tmp_path / "c")
    assert again.unchanged == len(d) and again.added == 0
    assert (tmp_path / "c" / IMAGES).stat().st_mtime_ns == mtime


def test_npz_reader_accepts_channels_last_and_refuses_pickles(tmp_path):
    x = np.random.default_rng(0).integers(0, 256, (5, 6, 7, 3), dtype=np.uint8)
    np.savez(tmp_path / "rgb.npz", x=x)
    s = load_npz(tmp_path / "rgb.npz")
    assert s.images.shape == (5, 3, 6, 7) and torch.equal(s.images[2, 1], torch.from_numpy(x[2, :, :, 1]))
    np.savez(tmp_path / "obj.npz", images=np.array([object()] * 3, dtype=object))
    with pytest.raises(UserError, match="unpickling"):
        load_npz(tmp_path / "obj.npz")
    np.savez(tmp_path / "f.npz", images=x.astype(np.float32))
    with pytest.raises(UserError, match="uint8"):
        load_npz(tmp_path / "f.npz")


# ------------------------------------------------------------------------------------- updates
def test_added_changed_and_removed_files_update_the_cache(digit_folders, tmp_path):
    src = digit_folders / "unlabeled"
    prepare_folder(src, tmp_path / "c", channels=1, size=SIZE, labeled=False)
    rng = np.random.default_rng(1)
    _write(src / "part0" / "new_a.png", rng.integers(0, 256, (9, 9), dtype=np.uint8))
    _write(src / "zz_new.png", rng.integers(0, 256, (9, 9), dtype=np.uint8))
    cache, report = prepare_folder(src, tmp_path / "c", channels=1, size=SIZE, labeled=False)
    assert (report.added, report.updated, report.removed, report.unchanged) == (2, 0, 0, 60)
    assert [e["path"] for e in cache.entries()[-2:]] == ["part0/new_a.png", "zz_new.png"]  # appended

    (src / "part1" / "0_01.png").unlink()
    _write(src / "part0" / "0_00.png", rng.integers(0, 256, (9, 9), dtype=np.uint8))
    os.utime(src / "part0" / "0_00.png", ns=(1, 1))  # a different modification time, whatever the clock
    cache, report = prepare_folder(src, tmp_path / "c", channels=1, size=SIZE, labeled=False)
    assert (report.added, report.updated, report.removed, report.unchanged) == (0, 1, 1, 60)
    # whatever the row order, the cache holds exactly the folder's current images
    ref, _ = load_unlabeled_folder(src, 1, SIZE)
    got = cache.imageset(in_memory=True)
    order = [got.sources.index(p) for p in ref.sources]
    assert sorted(got.sources) == ref.sources and torch.equal(got.images[order], ref.images)
    assert not (tmp_path / "c" / (IMAGES + ".new")).exists()


def test_a_stale_tail_from_an_interrupted_prepare_is_ignored_then_dropped(digit_folders, tmp_path):
    src = digit_folders / "unlabeled"
    prepare_folder(src, tmp_path / "c", channels=1, size=SIZE, labeled=False)
    size = (tmp_path / "c" / IMAGES).stat().st_size
    with open(tmp_path / "c" / IMAGES, "ab") as f:  # bytes of images that never reached the index
        f.write(b"\xff" * 1000)
    assert ImageCache(tmp_path / "c").imageset(in_memory=True).images.shape[0] == 60
    prepare_folder(src, tmp_path / "c", channels=1, size=SIZE, labeled=False)
    assert (tmp_path / "c" / IMAGES).stat().st_size == size


def test_strict_stops_and_mismatched_caches_are_refused(digit_folders, tmp_path):
    with pytest.raises(UserError, match="corrupt.png"):
        prepare_folder(digit_folders / "unlabeled", tmp_path / "s", channels=1, size=SIZE, labeled=False, strict=True)
    prepare_folder(digit_folders / "unlabeled", tmp_path / "c", channels=1, size=SIZE, labeled=False)
    with pytest.raises(UserError, match="holds 1x12x12 images, not 3x12x12"):
        prepare_folder(digit_folders / "unlabeled", tmp_path / "c", channels=3, size=SIZE, labeled=False)
    with pytest.raises(UserError, match="unlabeled images"):
        prepare_folder(digit_folders / "labeled", tmp_path / "c", channels=1, size=SIZE, labeled=True)
    with pytest.raises(UserError, match="not an image cache"):
        prepare_folder(digit_folders / "unlabeled", digit_folders / "labeled", channels=1, size=SIZE, labeled=False)


# --------------------------------------------------------------------------------- DiskImages
def test_disk_images_reads_like_a_tensor(tmp_path):
    data = torch.randint(0, 256, (50, 2, 3, 4), dtype=torch.uint8)
    (tmp_path / "a.u8").write_bytes(data.numpy().tobytes())
    disk = DiskImages(tmp_path / "a.u8", 50, (2, 3, 4))
    assert disk.shape == data.shape and len(disk) == 50 and disk.dtype == torch.uint8 and disk.dim() == 4
    assert torch.equal(disk[7:19], data[7:19]) and torch.equal(disk[45:99], data[45:])
    rows = torch.tensor([9, 3, 3, 4, 5, 49, 0, 8, -1])  # unsorted, repeated, runs, negative
    assert torch.equal(disk[rows], data[rows]) and torch.equal(disk[3], data[3])
    view = disk.subset(torch.tensor([40, 2, 2, 17]))
    assert torch.equal(view.load(), data[[40, 2, 2, 17]]) and torch.equal(view[1:3], data[[2, 2]])
    assert torch.equal(view.subset(torch.tensor([3, 0]))[torch.tensor([1, 0])], data[[40, 17]])
    assert torch.equal(pickle.loads(pickle.dumps(view)).load(), view.load())
    with pytest.raises(IndexError):
        disk[torch.tensor([50])]
    with pytest.raises(ValueError, match="fewer than"):
        DiskImages(tmp_path / "a.u8", 51, (2, 3, 4))


def test_imageset_subset_and_take_rows_stay_lazy_on_disk(tmp_path):
    data = torch.randint(0, 256, (20, 1, 4, 4), dtype=torch.uint8)
    (tmp_path / "a.u8").write_bytes(data.numpy().tobytes())
    s = ImageSet(DiskImages(tmp_path / "a.u8", 20, (1, 4, 4)), None, [])
    rows = torch.tensor([5, 1, 1])
    assert isinstance(s.subset(rows).images, DiskImages) and isinstance(take_rows(s.images, rows), DiskImages)
    assert torch.equal(s.subset(rows).in_memory().images, data[rows])
    assert torch.equal(take_rows(data, rows), data[rows])


# --------------------------------------------------------------------- streaming and top-k storage
def test_pseudo_labels_streamed_from_disk_equal_in_memory_and_topk_matches_dense(tmp_path):
    d = load_digits()
    _, _ = prepare_arrays(d, tmp_path / "c", source={"kind": "test"})
    disk = ImageCache(tmp_path / "c").images
    torch.manual_seed(0)
    model = create_model("resnet8", 10, 1).eval()
    mean, std = torch.tensor([80.0]), torch.tensor([90.0])
    dense = predict(model, d.images, mean=mean, std=std, batch_size=256, progress=False)
    streamed = predict(model, disk, mean=mean, std=std, batch_size=256, progress=False)
    for name in ("hard", "confidence", "topk_index", "topk_prob"):
        assert torch.equal(getattr(dense, name), getattr(streamed, name)), name
    top3 = predict(model, disk, mean=mean, std=std, topk=3, batch_size=256, progress=False)
    assert top3.topk_index.shape == (len(d), 3)
    assert torch.equal(top3.hard, dense.hard) and torch.equal(top3.confidence, dense.confidence)
    assert torch.equal(top3.topk_index, dense.topk_index[:, :3])
    assert torch.allclose(top3.topk_prob, dense.topk_prob[:, :3])


def test_a_cached_folder_run_trains_exactly_like_an_in_memory_one(digit_folders, tmp_path):
    def cfg(name, *extra):
        return Config().with_overrides([
            "data.source=folder", f"data.labeled={digit_folders / 'labeled'}",
            f"data.unlabeled={digit_folders / 'unlabeled'}", f"data.test={digit_folders / 'test'}",
            "data.image_size=12", "teacher.epochs=2", "student.epochs=2", "model.names=[resnet8]",
            "teacher.batch_size=8", "student.batch_size=8", "pipeline.rounds=1", "pipeline.robustness=false",
            "pipeline.report=false", f"out_dir={tmp_path / 'runs'}", f"name={name}", *extra])
    cached = run(cfg("cached"), progress=False)
    memory = run(cfg("memory", "data.cache=false"), progress=False)
    a = (tmp_path / "runs" / "cached" / "round-1" / "model.safetensors").read_bytes()
    b = (tmp_path / "runs" / "memory" / "round-1" / "model.safetensors").read_bytes()
    assert a == b and cached.final_accuracy == memory.final_accuracy
    # a prepared cache passed as the unlabeled folder is used as it is
    prepare(digit_folders / "unlabeled", tmp_path / "prepared", size=12)
    reused = run(cfg("reused", f"data.unlabeled={tmp_path / 'prepared'}"), progress=False)
    assert (tmp_path / "runs" / "reused" / "round-1" / "model.safetensors").read_bytes() == a
    assert reused.final_accuracy == cached.final_accuracy


def test_prepare_command_line(digit_folders, tmp_path, capsys):
    assert main(["prepare", str(digit_folders / "labeled"), str(tmp_path / "c"), "--size", "12", "-q"]) == 0
    out = capsys.readouterr().out
    assert "labeled image folder" in out and "24 images (24 added" in out and "3 classes" in out
    assert main(["prepare", str(digit_folders / "labeled"), str(tmp_path / "c"), "--size", "16", "-q"]) == 2
    assert "holds 1x12x12 images" in capsys.readouterr().err
    assert main(["prepare", str(tmp_path / "missing"), str(tmp_path / "d"), "-q"]) == 2
    assert "not found" in capsys.readouterr().err
