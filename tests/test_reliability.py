"""Safe loading, failed writes, and bounded fuzzing of every reader and the config parser."""

import errno
import gzip
import os
import pickle
import struct

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from noisystudent.checkpoint import atomic_write_bytes
from noisystudent.config import Config
from noisystudent.data.cifar import load_cifar, read_batch
from noisystudent.data.sources import load_idx, load_unlabeled_folder
from noisystudent.errors import UserError

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


# ---- CIFAR: a restricted unpickler ------------------------------------------------------------------
def write_cifar10(d, n=6):
    rng = np.random.default_rng(0)
    d.mkdir(parents=True, exist_ok=True)
    with open(d / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [b"cat", b"dog", b"ship"]}, f, protocol=2)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batches[name] = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"labels": list(rng.integers(0, 3, n))}
        with open(d / name, "wb") as f:
            pickle.dump(batches[name], f, protocol=2)
    return batches


def test_cifar_batches_round_trip(tmp_path):
    batches = write_cifar10(tmp_path)
    train = load_cifar(tmp_path, "train")
    assert train.images.shape == (30, 3, 32, 32) and train.classes == ["cat", "dog", "ship"]
    assert np.array_equal(train.images[:6].numpy().reshape(6, -1), batches["data_batch_1"][b"data"])
    assert load_cifar(tmp_path, "test").labels.tolist() == [int(x) for x in batches["test_batch"][b"labels"]]


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_cifar_pickle_with_code_is_refused_and_not_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({b"data": _Evil()}, protocol=2))
    with pytest.raises(UserError, match=r"refused global (posix|os|nt)\.system.*refusing to load it"):
        read_batch(path)
    assert not (tmp_path / "pwned").exists()


# ---- writes that fail ------------------------------------------------------------------------------
def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "model.safetensors"
    atomic_write_bytes(target, b"old contents")

    def disk_full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(UserError, match=r"model.safetensors: cannot write \(No space left on device\); the previous version is kept"):
        atomic_write_bytes(target, b"new contents that never land")
    assert target.read_bytes() == b"old contents"
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]


# ---- fuzzing: nothing but our own clear errors -------------------------------------------------------
def _idx_dir(tmp, images: bytes, labels: bytes, gz: bool):
    for name, data in (("train-images-idx3-ubyte", images), ("train-labels-idx1-ubyte", labels)):
        if gz:
            (tmp / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (tmp / name).write_bytes(data)


@FUZZ
@given(n=st.integers(0, 4), h=st.integers(0, 5), w=st.integers(0, 5), magic=st.sampled_from([0x803, 0x801, 0x0, 0x80B]),
       extra=st.binary(max_size=20), cut=st.integers(0, 8), labels=st.lists(st.integers(0, 255), max_size=5),
       gz=st.booleans(), junk=st.binary(max_size=40), use_junk=st.booleans())
def test_fuzz_idx_reader(tmp_path_factory, n, h, w, magic, extra, cut, labels, gz, junk, use_junk):
    tmp = tmp_path_factory.mktemp("idx")
    images = struct.pack(">IIII", magic, n, h, w) + bytes(n * h * w) + extra
    images = images[:len(images) - cut] if cut else images
    lab = struct.pack(">II", 0x801, len(labels)) + bytes(labels)
    _idx_dir(tmp, junk if use_junk else images, lab, gz)
    try:
        s = load_idx(tmp, "train")
    except UserError as e:
        assert "\n" not in str(e)
        return
    assert s.images.shape == (n, 1, h, w) and len(s.labels) == n


@FUZZ
@given(files=st.lists(st.binary(max_size=300), min_size=1, max_size=4))
def test_fuzz_unlabeled_folder_with_garbage_images(tmp_path_factory, files):
    tmp = tmp_path_factory.mktemp("folder")
    for i, data in enumerate(files):
        (tmp / f"{i}.png").write_bytes(b"\x89PNG\r\n\x1a\n" + data if i % 2 else data)
    try:
        s, report = load_unlabeled_folder(tmp, channels=1, size=(8, 8))
    except UserError as e:  # every file unreadable -> no images
        assert "\n" not in str(e)
        return
    assert report.read + len(report.skipped) == len(files) and s.images.shape[1:] == (1, 8, 8)


_scalars = st.one_of(st.none(), st.booleans(), st.integers(-5, 10**6), st.floats(allow_nan=True),
                     st.text(max_size=8), st.lists(st.text(max_size=5), max_size=3))
_keys = st.sampled_from(["name", "seed", "device", "data", "teacher", "epochs", "source", "lr", "noise",
                         "pseudo", "threshold", "mode", "names", "model", "bogus", "rounds", "pipeline"])


@FUZZ
@given(doc=st.recursive(st.dictionaries(_keys, _scalars, max_size=4),
                        lambda inner: st.dictionaries(_keys, st.one_of(_scalars, inner), max_size=4), max_leaves=12))
def test_fuzz_config_parser(tmp_path_factory, doc):
    path = tmp_path_factory.mktemp("cfg") / "c.yaml"
    path.write_text(yaml.safe_dump(doc))
    try:
        cfg = Config.from_yaml(path)
    except UserError as e:
        assert "\n" not in str(e)
        return
    cfg.validate()


@FUZZ
@given(obj=st.recursive(st.one_of(st.none(), st.integers(), st.binary(max_size=10), st.text(max_size=5)),
                        lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                st.dictionaries(st.sampled_from([b"data", b"labels", b"x"]), inner,
                                                                max_size=3)), max_leaves=8),
       raw=st.binary(max_size=64), use_raw=st.booleans())
def test_fuzz_cifar_reader(tmp_path_factory, obj, raw, use_raw):
    tmp = tmp_path_factory.mktemp("cifar")
    (tmp / "batches.meta").write_bytes(pickle.dumps({b"label_names": [b"a", b"b"]}, protocol=2))
    data = raw if use_raw else pickle.dumps(obj, protocol=2)
    for name in [f"data_batch_{i}" for i in range(1, 6)]:
        (tmp / name).write_bytes(data)
    with pytest.raises(UserError) as e:
        load_cifar(tmp, "train")
    assert "\n" not in str(e.value)


def test_a_huge_image_below_the_bomb_limit_is_read_and_resized(tmp_path):
    from PIL import Image

    (tmp_path / "u").mkdir()
    Image.new("L", (6000, 5000), color=77).save(tmp_path / "u" / "huge.png")  # 30 Mpixel, compresses small
    s, report = load_unlabeled_folder(tmp_path / "u", channels=1, size=(28, 28))
    assert report.read == 1 and not report.skipped
    assert s.images.shape == (1, 1, 28, 28) and int(s.images.min()) == int(s.images.max()) == 77
