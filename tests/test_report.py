"""The HTML report of a run, the augmentation preview and the TensorBoard conversion."""

import html
import json
import logging
import re
import shutil
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from noisystudent import Config, run
from noisystudent.augment import RandAugment
from noisystudent.cli import main
from noisystudent.report import SECTION_IDS, augment_preview, build_report
from noisystudent.report.plots import augment_grid, have_matplotlib
from noisystudent.report.run_files import record_round
from noisystudent.tensorboard import write_scalars

TINY = ["teacher.epochs=3", "student.epochs=1", "model.names=[resnet8]", "data.max_unlabeled=150",
        "data.labeled_per_class=5", "teacher.batch_size=25", "student.batch_size=16", "pipeline.rounds=1",
        "teacher.eval_every=1", "student.eval_every=1"]
PLOT_SECTIONS = [s for s in SECTION_IDS if s != "robustness"]
PNG_URI = 'src="data:image/png;base64,'

needs_matplotlib = pytest.mark.skipif(not have_matplotlib(), reason="matplotlib is not installed (noisystudent[plots])")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A finished two-model run (teacher + one student) in seconds, with the pipeline's robustness.json."""
    out = tmp_path_factory.mktemp("runs")
    cfg = Config().with_overrides(TINY + [f"out_dir={out}", "name=tiny", "pipeline.report=false"])
    run(cfg, progress=False)
    return out / "tiny"


def sections(page: str) -> dict[str, str]:
    """Each section's HTML by its h2 id."""
    parts = re.split(r'<h2 id="([\w-]+)">', page)
    return {parts[i]: parts[i + 1] for i in range(1, len(parts), 2)}


@needs_matplotlib
def test_report_has_every_section_with_an_embedded_plot(run_dir):
    path = build_report(run_dir, tensorboard=False)
    assert path == run_dir / "report.html"
    page = path.read_text()
    found = sections(page)
    assert list(found) == list(SECTION_IDS)  # the robustness section too, since round-1 has robustness.json
    for sid, body in found.items():
        assert html.escape(SECTION_IDS[sid]) in body, sid
        assert PNG_URI in body, f"section {sid} has no embedded plot"
    assert page.count(PNG_URI) == len(list((run_dir / "plots").glob("*.png")))
    assert "<table>" in found["accuracy"] and "resnet8" in found["accuracy"]
    rob = json.loads((run_dir / "round-1" / "robustness.json").read_text())
    assert "gaussian_noise" in found["robustness"] and "relative mCE" in found["robustness"]
    assert f"{100 * rob['corruption_error']['gaussian_noise']:.2f}%" in found["robustness"]
    assert "http://" not in page and "https://" not in page  # self-contained
    with Image.open(run_dir / "plots" / "augmentation_preview.png") as im:
        assert im.width > im.height > 100


def test_without_matplotlib_the_report_keeps_its_tables(run_dir, tmp_path, monkeypatch, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("plots", "report.html", "tensorboard"))
    for f in copy.glob("round-*/robustness.json"):
        f.unlink()
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert main(["report", str(copy), "--no-tensorboard"]) == 0
    assert capsys.readouterr().out.strip() == str(copy / "report.html")
    page = (copy / "report.html").read_text()
    assert page.count("matplotlib is not installed") == 1
    assert PNG_URI not in page and not (copy / "plots").exists()
    found = sections(page)
    assert list(found) == PLOT_SECTIONS  # no robustness.json: no robustness section
    for sid in ("accuracy", "training-curves", "per-class-accuracy", "confusion-matrix", "class-balance"):
        assert "<table>" in found[sid], sid


def test_report_of_a_folder_that_is_not_a_run_is_one_line(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"noisystudent: {tmp_path}: not a run directory (no config.yaml)"


def test_augment_grid_keeps_the_op_draw_and_changes_only_the_magnitude():
    images = torch.randint(0, 256, (3, 1, 12, 12), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    grid, ops = augment_grid(images, RandAugment(n=1, m=9, ops=["rotate"]), range(11))
    assert ops == ["rotate"] * 3 and len(grid) == 3 and len(grid[0]) == 11
    for r in range(3):
        assert np.array_equal(grid[r][0], images[r].numpy())  # M = 0: unchanged
        assert not np.array_equal(grid[r][10], images[r].numpy())
    again, _ = augment_grid(images, RandAugment(n=1, m=9, ops=["rotate"]), range(11))
    assert all(np.array_equal(a, b) for ra, rb in zip(grid, again) for a, b in zip(ra, rb))  # seeded


@needs_matplotlib
def test_augment_preview_writes_a_png(tmp_path):
    images = torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8)
    path = augment_preview(images, "rand-n2-m5", tmp_path / "sub" / "preview.png", magnitudes=[0, 5, 10])
    with Image.open(path) as im:
        assert im.format == "PNG" and im.width > im.height


@pytest.mark.parametrize("stage, expected", [
    ("round-0", (0, None)), ("round-12", (12, None)), ("round-3/evaluate", (3, "evaluate")),
    ("round-1/select", (1, "select")), ("run", None), ("round-x", None), ("round-1/", None), ("", None)])
def test_record_round_parses_the_stage(stage, expected):
    assert record_round({"stage": stage}) == expected


def test_tensorboard_absent_returns_false_with_one_log_line(run_dir, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    caplog.set_level(logging.INFO, logger="noisystudent")
    assert write_scalars(run_dir) is False
    lines = [r.getMessage() for r in caplog.records if "tensorboard" in r.getMessage().lower()]
    assert len(lines) == 1 and "pip install 'noisystudent[tensorboard]'" in lines[0]


def test_tensorboard_event_files(run_dir):
    pytest.importorskip("tensorboard", reason="tensorboard is not installed (noisystudent[tensorboard])")
    assert write_scalars(run_dir) is True
    for name in ("round-0", "round-1", "pipeline"):
        assert list((run_dir / "tensorboard" / name).glob("events.out.tfevents.*")), name
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tensorboard" / "round-0")).Reload()
    assert [e.step for e in acc.Scalars("train/loss")] == [1, 2, 3]
