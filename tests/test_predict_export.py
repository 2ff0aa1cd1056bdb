"""Predicting image files with a checkpoint, and exporting it to TorchScript / ONNX."""

import json
import shutil
import sys

import pytest
import torch
from PIL import Image

from noisystudent import Config, UserError, load_model, predict, run
from noisystudent.cli import main
from noisystudent.data.build import build_datasets
from noisystudent.evaluate import predict_labels
from noisystudent.export import check_export, export, run_exported

TINY = ["teacher.epochs=3", "model.names=[resnet8]", "data.labeled_per_class=5", "teacher.batch_size=25",
        "pipeline.rounds=0", "teacher.eval_every=0", "data.max_unlabeled=50"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(checkpoint in a run directory, the run's test images (uint8), their labels) from a teacher-only run."""
    out = tmp_path_factory.mktemp("runs")
    cfg = Config().with_overrides(TINY + [f"out_dir={out}", "name=tiny"])
    run(cfg, progress=False)
    test = build_datasets(cfg.data).test
    return out / "tiny" / "round-0" / "model.safetensors", test.images[:40], test.labels[:40]


def python_predictions(checkpoint, images):
    model, meta = load_model(checkpoint)
    return predict_labels(model, images, mean=torch.tensor(meta["input"]["mean"]),
                          std=torch.tensor(meta["input"]["std"]))


def test_predict_on_png_files_gives_the_models_classes(trained, tmp_path):
    ckpt, images, _ = trained
    folder = tmp_path / "pngs"
    for i, image in enumerate(images):
        sub = folder / ("a" if i % 2 else "b")
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image[0].numpy(), mode="L").save(sub / f"{i:03d}.png")
    (folder / "b" / "broken.png").write_bytes(b"not an image")
    results = predict(ckpt, [folder / "b" / "000.png", folder], topk=3)
    assert results[0]["path"] == str(folder / "b" / "000.png")
    broken = [r for r in results if "error" in r]
    assert len(broken) == 1 and broken[0]["path"].endswith("broken.png") and "cannot read image" in broken[0]["error"]
    good = {r["path"]: r for r in results[1:] if "error" not in r}
    assert len(good) == len(images)
    expected = python_predictions(ckpt, images)
    _, meta = load_model(ckpt)
    for i, label in enumerate(expected.tolist()):
        top = good[str(folder / ("a" if i % 2 else "b") / f"{i:03d}.png")]["top"]
        assert len(top) == 3 and top[0][0] == meta["classes"][label]
        probs = [p for _, p in top]
        assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6


def test_predict_cli_text_and_json(trained, tmp_path, capsys):
    ckpt, images, _ = trained
    Image.fromarray(images[0, 0].numpy()).save(tmp_path / "one.png")
    assert main(["predict", str(ckpt), str(tmp_path / "one.png"), "--topk", "2"]) == 0
    text = capsys.readouterr().out.splitlines()
    assert text[0] == str(tmp_path / "one.png") and len(text) == 3 and text[1].strip().endswith("%")
    assert main(["predict", str(ckpt), str(tmp_path / "one.png"), str(tmp_path / "missing.png"), "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert len(data[0]["top"]) == 5 and "file not found" in data[1]["error"]


def test_predict_rejects_an_empty_folder(trained, tmp_path):
    with pytest.raises(UserError, match="no images to predict"):
        predict(trained[0], [tmp_path])


def test_torchscript_export_agrees_with_pytorch(trained, tmp_path):
    ckpt, images, _ = trained
    out = export(ckpt, tmp_path / "model.pt", format="torchscript")
    assert check_export(out, ckpt, images) == 1.0
    logits = run_exported(out, images[:5].float() / 255)  # another batch size than the trace's
    assert logits.shape == (5, 10)
    side = json.loads((tmp_path / "model.pt.json").read_text())
    assert side["classes"] == [str(c) for c in range(10)] and side["input"]["shape"] == ["batch", 1, 8, 8]


def test_onnx_export_agrees_with_pytorch(trained, tmp_path):
    pytest.importorskip("onnx", reason="onnx is not installed (noisystudent[onnx])")
    pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (noisystudent[onnx])")
    ckpt, images, _ = trained
    out = export(ckpt, tmp_path / "model.onnx", format="onnx")
    assert check_export(out, ckpt, images) == 1.0
    assert run_exported(out, images[:1].float() / 255).shape == (1, 10)  # dynamic batch axis
    model, meta = load_model(ckpt)
    x = images[:7]
    with torch.no_grad():
        reference = model((x.float() / 255 - torch.tensor(meta["input"]["mean"]).view(1, -1, 1, 1))
                          / torch.tensor(meta["input"]["std"]).view(1, -1, 1, 1))
    assert torch.allclose(run_exported(out, x.float() / 255), reference, atol=1e-4)


def test_onnx_export_without_onnx_names_the_extra(trained, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(UserError, match=r"pip install 'noisystudent\[onnx\]'"):
        export(trained[0], tmp_path / "m.onnx", format="onnx")


def test_export_cli_checks_on_the_runs_test_images_or_random_inputs(trained, tmp_path, capsys):
    ckpt, _, _ = trained
    assert main(["export", str(ckpt), "--format", "torchscript", "-o", str(tmp_path / "m.pt")]) == 0
    out = capsys.readouterr().out
    assert f"wrote {tmp_path / 'm.pt'}" in out
    assert "top-1 agreement with PyTorch on 64 test images of the run: 100.00%" in out
    alone = tmp_path / "alone"
    alone.mkdir()
    for suffix in (".safetensors", ".json"):
        shutil.copy(ckpt.with_suffix(suffix), alone / f"model{suffix}")
    assert main(["export", str(alone / "model.safetensors"), "--format", "torchscript"]) == 0
    out = capsys.readouterr().out
    assert (alone / "model.pt").exists() and "on 16 random inputs" in out and "100.00%" in out
