"""What a user sees: one clear line for bad input, skips counted, results where they are announced."""

import numpy as np
import pytest
from PIL import Image

from noisystudent.cli import main
from noisystudent.data.sources import load_digits

TINY = ["--set", "teacher.epochs=2", "--set", "student.epochs=1", "--set", "model.names=[resnet8]",
        "--set", "teacher.batch_size=8", "--set", "student.batch_size=8", "--rounds", "1", "-q"]


def one_line_error(capsys, rc):
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert err.startswith("noisystudent: ") and "\n" not in err and "Traceback" not in err
    return err


@pytest.fixture
def folders(tmp_path):
    """labeled/<class>/ (3 classes x 6), unlabeled/ (30 + 1 corrupt), test/<class>/ (3 x 4), from real digits."""
    d = load_digits()
    def save(path, i):
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(d.images[i, 0].numpy()).resize((16, 16)).save(path)
    for c in range(3):
        idx = (d.labels == c).nonzero().squeeze(1).tolist()
        for j in range(6):
            save(tmp_path / "labeled" / f"class {c}" / f"{j}.png", idx[j])
        for j in range(4):
            save(tmp_path / "test" / f"class {c}" / f"{j}.png", idx[10 + j])
        for j in range(10):
            save(tmp_path / "unlabeled" / f"sub{j % 2}" / f"{c}_{j}.png", idx[20 + j])
    (tmp_path / "unlabeled" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return tmp_path


def folder_args(root):
    return ["--labeled", str(root / "labeled"), "--unlabeled", str(root / "unlabeled"), "--test", str(root / "test"),
            "--out-dir", str(root / "runs"), "--set", "data.image_size=16"]


def test_folder_run_skips_and_counts_an_unreadable_image(folders, capsys, caplog):
    rc = main(["run", *folder_args(folders), *TINY])
    out = capsys.readouterr().out
    assert rc == 0
    assert "| round | model |" in out and "results: " in out
    assert "30 images (30 added, 0 updated, 0 removed, 0 unchanged), skipped 1 unreadable" in caplog.text
    assert (folders / "runs" / "folder-run" / "round-1" / "model.safetensors").exists()
    caches = sorted(p.name for p in (folders / "runs" / "cache").iterdir())
    assert [c.split("-")[:2] for c in caches] == [["labeled", "labeled"], ["test", "labeled"], ["unlabeled", "unlabeled"]]
    report = next((folders / "runs" / "cache").glob("unlabeled-*")) / "report.txt"
    assert "skipped broken.png" in report.read_text()
    caplog.clear()  # the same command again: caches are reused, nothing is decoded
    assert main(["run", *folder_args(folders), *TINY]) == 0
    assert "30 images (0 added, 0 updated, 0 removed, 30 unchanged)" in caplog.text


def test_folder_run_without_cache_reads_folders_in_memory(folders, caplog):
    assert main(["run", *folder_args(folders), *TINY, "--set", "data.cache=false", "--name", "nocache"]) == 0
    assert "read 30 images, skipped 1 unreadable" in caplog.text
    assert not (folders / "runs" / "cache").exists()


def test_strict_makes_an_unreadable_image_an_error(folders, capsys):
    err = one_line_error(capsys, main(["run", *folder_args(folders), *TINY, "--strict", "--name", "strict"]))
    assert "broken.png" in err


@pytest.mark.parametrize("args, expected", [
    (["--set", "teacher.epoch=3"], "unknown config key 'teacher.epoch' (did you mean 'epochs'?)"),
    (["--set", "teacher.epochs=many"], "teacher.epochs: expected an integer"),
    (["--set", "model.names=[resnet8, resnet99]"], "unknown model 'resnet99'; available: resnet8"),
    (["-c", "no/such/config.yaml"], "no/such/config.yaml: cannot read config file"),
    (["--device", "tpu"], "device: 'tpu' is not one of cpu, cuda, cuda:N, auto"),
])
def test_bad_config_is_one_line(tmp_path, capsys, args, expected):
    err = one_line_error(capsys, main(["run", "--out-dir", str(tmp_path), *args]))
    assert expected in err


def test_missing_and_malformed_directories_are_one_line(tmp_path, capsys):
    missing = tmp_path / "nope"
    err = one_line_error(capsys, main(["run", "--labeled", str(missing), "--unlabeled", str(missing),
                                       "--out-dir", str(tmp_path / "runs")]))
    assert str(missing) in err
    flat = tmp_path / "flat"
    flat.mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(flat / "a.png")
    err = one_line_error(capsys, main(["run", "--labeled", str(flat), "--unlabeled", str(flat),
                                       "--out-dir", str(tmp_path / "runs")]))
    assert "no class folders found" in err
    empty = tmp_path / "empty"
    (empty / "a").mkdir(parents=True)
    err = one_line_error(capsys, main(["run", "--labeled", str(empty), "--unlabeled", str(flat),
                                       "--out-dir", str(tmp_path / "runs")]))
    assert str(empty) in err


def test_models_config_and_help(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "resnet8" in out and "wrn28_2" in out and "308," in out  # resnet8 parameter count
    assert main(["config", "--set", "teacher.epochs=3", "--rounds", "4"]) == 0
    out = capsys.readouterr().out
    assert "epochs: 3" in out and "rounds: 4" in out
    with pytest.raises(SystemExit) as e:
        main(["run", "--help"])
    assert e.value.code == 0
    assert "Noisy Student" in capsys.readouterr().out


def test_augment_preview_writes_a_png(tmp_path, capsys):
    from PIL import Image

    pytest.importorskip("matplotlib")
    out = tmp_path / "preview.png"
    assert main(["augment-preview", "--rows", "3", "-o", str(out), "--spec", "rand-n1-m5"]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert Image.open(out).size[0] > Image.open(out).size[1] > 0  # 11 magnitude columns, 3 rows
    err = one_line_error(capsys, main(["augment-preview", "-o", str(out), "--set", "noise.randaugment="]))
    assert "RandAugment is off" in err


def test_evaluate_a_checkpoint_with_robustness(tmp_path, capsys):
    import json

    assert main(["run", "--out-dir", str(tmp_path), "--name", "ev", *TINY, "--rounds", "0",
                 "--set", "pipeline.report=false", "--set", "pipeline.robustness=false"]) == 0
    capsys.readouterr()
    ckpt = tmp_path / "ev" / "round-0" / "model.safetensors"
    assert main(["evaluate", str(ckpt), "--robustness", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    recorded = json.loads((tmp_path / "ev" / "round-0" / "eval.json").read_text())["accuracy"]
    assert r["accuracy"] == pytest.approx(recorded)
    assert len(r["robustness"]["corruption_error"]) == 15
    assert r["robustness"]["fgsm_accuracy"]["1"] <= r["robustness"]["clean_accuracy"] + 1e-9
    err = one_line_error(capsys, main(["evaluate", str(tmp_path / "nope.safetensors")]))
    assert "nope" in err


def test_quiet_prints_no_info_lines_but_the_run_log_keeps_them(tmp_path):
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "noisystudent", "run", *TINY, "--set", "pipeline.robustness=false",
                           "--set", "pipeline.report=false", "--out-dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "epoch" not in done.stderr and "round 0" not in done.stderr
    assert "round 0 (resnet8): test accuracy" in (tmp_path / "digits-demo" / "run.log").read_text()
