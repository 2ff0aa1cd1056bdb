"""The whole pipeline on tiny digits settings: seconds, not minutes."""

import json

import pytest
import torch

from noisystudent import Config, load_model, run
from noisystudent.errors import UserError
from noisystudent.evaluate import accuracy

TINY = ["teacher.epochs=3", "student.epochs=1", "model.names=[resnet8]", "data.max_unlabeled=150",
        "data.labeled_per_class=5", "teacher.batch_size=25", "student.batch_size=16", "pipeline.rounds=2",
        "teacher.eval_every=0", "student.eval_every=0", "pipeline.report=false", "pipeline.robustness=false"]


def tiny(tmp_path, *extra):
    return Config().with_overrides(TINY + [f"out_dir={tmp_path}", *extra])


def test_two_round_pipeline_writes_the_run_directory(tmp_path):
    cfg = tiny(tmp_path)
    result = run(cfg, progress=False)
    rd = tmp_path / cfg.name
    assert [r["round"] for r in result.rows] == [0, 1, 2]
    assert result.rows[0]["pseudo_labels_kept"] is None
    for r in result.rows:
        assert 0.0 <= r["test_accuracy"] <= 1.0 and r["params"] > 0
    for r in result.rows[1:]:
        assert r["pseudo_labels_kept"] > 0
        assert 0.0 <= r["pseudo_label_accuracy"] <= 1.0
        assert sum(r["per_class_after_balance"]) == r["pseudo_labels_kept"]
    for k in range(3):
        assert (rd / f"round-{k}" / "model.safetensors").exists()
        assert not (rd / f"round-{k}" / "train_state.safetensors").exists()
    for k in (1, 2):
        sel = json.loads((rd / f"round-{k}" / "selection.json").read_text())
        assert sel["total"] == 150
    assert Config.from_yaml(rd / "config.yaml") == cfg
    summary = json.loads((rd / "summary.json").read_text())
    assert summary["rounds"] == result.rows
    assert "| round | model |" in (rd / "summary.md").read_text()
    lines = [json.loads(l) for l in (rd / "metrics.jsonl").read_text().splitlines()]
    assert lines[0]["stage"] == "run" and lines[0]["device"] == "cpu"
    assert sum(1 for l in lines if l["stage"] == "round-0" and "epoch" in l) == 3
    assert any(l["stage"] == "round-1/select" for l in lines)
    # a checkpoint rebuilds its model alone and gives the recorded accuracy
    model, meta = load_model(rd / "round-2" / "model.safetensors")
    assert meta["model"]["drop_path_rate"] == pytest.approx(0.2) and meta["model"]["drop_rate"] == pytest.approx(0.5)
    from noisystudent.data.build import build_datasets
    test = build_datasets(cfg.data).test
    acc = accuracy(model, test.images, test.labels, mean=torch.tensor(meta["input"]["mean"]),
                   std=torch.tensor(meta["input"]["std"]))
    assert acc == pytest.approx(result.rows[2]["test_accuracy"])


def test_rerun_skips_completed_stages_and_adding_rounds_continues(tmp_path):
    cfg = tiny(tmp_path, "pipeline.rounds=1")
    first = run(cfg, progress=False)
    metrics = tmp_path / cfg.name / "metrics.jsonl"
    n_lines = len(metrics.read_text().splitlines())
    again = run(cfg, progress=False)
    assert again.rows == first.rows
    added = [json.loads(line)["stage"] for line in metrics.read_text().splitlines()[n_lines:]]
    assert added == ["run"]  # the sitting's start; nothing was trained or evaluated again
    more = run(cfg.with_overrides(["pipeline.rounds=2"]), progress=False)
    assert more.rows[:2] == first.rows and len(more.rows) == 3


def test_changed_config_is_refused_and_force_starts_over(tmp_path):
    cfg = tiny(tmp_path, "pipeline.rounds=0")
    run(cfg, progress=False)
    changed = cfg.with_overrides(["teacher.lr=0.01", "pseudo.mode=hard"])
    with pytest.raises(UserError, match=r"different config \(changed: pseudo.mode, teacher.lr\); use --force"):
        run(changed, progress=False)
    result = run(changed, progress=False, force=True)
    assert len(result.rows) == 1
    assert Config.from_yaml(tmp_path / cfg.name / "config.yaml") == changed


def test_consistency_variant_and_noised_teacher(tmp_path):
    cfg = tiny(tmp_path, "pipeline.rounds=1", "pipeline.variant=consistency", "pseudo.temperature=2.0",
               "student.ema=0.9", "noise.noise_teacher=true")
    result = run(cfg, progress=False)
    assert len(result.rows) == 2 and 0.0 <= result.rows[1]["test_accuracy"] <= 1.0
    _, meta = load_model(tmp_path / cfg.name / "round-0" / "model.safetensors")
    assert meta["model"]["drop_rate"] == pytest.approx(0.5)  # the teacher was noised too


@pytest.mark.parametrize("noise_teacher", [False, True])
def test_pixel_noise_and_mixup_reach_the_noised_trainings_only(tmp_path, monkeypatch, noise_teacher):
    import noisystudent.pipeline as pipeline

    seen = {}

    def spy(model, *, augmentation, tag, **kw):
        seen[tag] = augmentation
        return train(model, augmentation=augmentation, tag=tag, **kw)

    train = pipeline.train
    monkeypatch.setattr(pipeline, "train", spy)
    cfg = tiny(tmp_path, "pipeline.rounds=1", "teacher.epochs=1", "student.epochs=1", "noise.pixel_noise=0.05",
               "noise.mixup=0.4", f"noise.noise_teacher={str(noise_teacher).lower()}")
    run(cfg, progress=False)
    assert seen["round-1"].pixel_noise == 0.05 and seen["round-1"].mixup == 0.4
    assert seen["round-0"].pixel_noise == (0.05 if noise_teacher else 0.0)
    assert seen["round-0"].mixup == (0.4 if noise_teacher else 0.0)
    black = torch.zeros((8, 1, 8, 8), dtype=torch.uint8)
    assert (seen["round-1"](black, torch.Generator().manual_seed(0)) > 0).any()  # the noise is applied
    assert noise_teacher or not seen["round-0"](black, torch.Generator().manual_seed(0)).any()


def test_smaller_student_warns(tmp_path, caplog):
    cfg = tiny(tmp_path, "pipeline.rounds=1", "model.names=[resnet14, resnet8]", "teacher.epochs=1")
    run(cfg, progress=False)
    assert "smaller than its teacher" in caplog.text


def test_curriculum_keeps_fewer_distinct_images_in_early_rounds_at_the_same_count(tmp_path, caplog):
    caplog.set_level("INFO")
    cfg = tiny(tmp_path, "pseudo.curriculum=[0.5,1.0]")
    result = run(cfg, progress=False)
    sel = [json.loads((tmp_path / cfg.name / f"round-{k}" / "selection.json").read_text()) for k in (1, 2)]
    assert sel[0]["curriculum_fraction"] == 0.5 and "curriculum_fraction" not in sel[1]
    # ceil(0.5 * n) of each class's n: at most half of what passed, plus one per class
    assert sel[0]["unique_selected"] <= 0.5 * sel[0]["passed_threshold"] + 10
    assert sel[1]["unique_selected"] > sel[0]["unique_selected"]
    # balancing repeats the kept half up to the target: every round trains the same number of rows
    assert [r["pseudo_labels_kept"] for r in result.rows[1:]] == [s["selected"] for s in sel]
    assert set(sel[0]["per_class_after"]) <= {0, sel[0]["target_per_class"]}
    assert "round-1: " in caplog.text and "each class's most confident 50%" in caplog.text


def test_no_pseudo_label_passing_the_threshold_warns(tmp_path, caplog):
    cfg = tiny(tmp_path, "pipeline.rounds=1", "teacher.epochs=1", "pseudo.threshold=0.9999")
    result = run(cfg, progress=False)
    assert result.rows[1]["pseudo_labels_kept"] == 0
    assert "no pseudo-label passed the threshold 1.00; the student trains on the labeled images only" in caplog.text


def test_every_inference_stage_uses_the_configured_batch_and_changing_it_still_resumes(tmp_path, monkeypatch):
    import noisystudent.inference as inference

    sizes = []

    def spy(batch, mean, std):
        sizes.append(len(batch))
        return to_model_input(batch, mean, std)

    to_model_input = inference.to_model_input
    monkeypatch.setattr(inference, "to_model_input", spy)
    cfg = tiny(tmp_path, "pipeline.rounds=1", "pseudo.batch_size=7", "student.eval_every=1",
               "pipeline.robustness=true", "pipeline.robustness_images=20")
    run(cfg, progress=False)
    # per-pass test accuracy, pseudo-labels (150 images), final evaluation, robustness: all in batches of 7
    assert len(sizes) > 500 and max(sizes) == 7  # robustness alone: 2 models x 75 corruptions x 3 batches
    sizes.clear()
    result = run(cfg.with_overrides(["pseudo.batch_size=64"]), progress=False)  # not "a different config"
    assert len(result.rows) == 2 and sizes == []  # everything was on disk


def test_robustness_per_round_is_normalised_by_the_teacher(tmp_path):
    cfg = tiny(tmp_path, "pipeline.rounds=1", "pipeline.robustness=true", "pipeline.robustness_images=200")
    result = run(cfg, progress=False)
    r0, r1 = result.rows
    assert r0["relative_mce"] == 1.0 and 0.0 <= r0["mce"] <= 1.0
    rob1 = json.loads((tmp_path / cfg.name / "round-1" / "robustness.json").read_text())
    rob0 = json.loads((tmp_path / cfg.name / "round-0" / "robustness.json").read_text())
    assert rob0["n"] == rob1["n"] == 200  # a seeded subset of the 539 test images
    expected = sum(rob1["corruption_error"][c] / rob0["corruption_error"][c] for c in rob0["corruption_error"]
                   if c not in rob1.get("relative_mce_skipped", [])) / (len(rob0["corruption_error"]) -
                                                                       len(rob1.get("relative_mce_skipped", [])))
    assert r1["relative_mce"] == pytest.approx(expected)
    assert set(r1["flip_rate"]) == {"translate", "noise"} and set(r1["fgsm_accuracy"]) == {"1", "2", "4", "8"}
    assert "rel. mCE" in result.table()


def test_warm_start_student_starts_from_its_teacher_weights(tmp_path, caplog):
    # lr 1e-9: the student's weights stay where they started, so they show where that was
    still = ["pipeline.rounds=1", "student.lr=1e-9", "student.warmup_epochs=0"]
    warm = tiny(tmp_path, *still, "model.warm_start=true")
    run(warm, progress=False)
    assert "round 1: student resnet8 starts from its teacher's weights" in caplog.text
    teacher, _ = load_model(tmp_path / warm.name / "round-0" / "model.safetensors")
    student, meta = load_model(tmp_path / warm.name / "round-1" / "model.safetensors")
    assert meta["model"]["drop_rate"] == pytest.approx(0.5)  # still a noised student
    t, s = dict(teacher.named_parameters()), dict(student.named_parameters())
    assert t.keys() == s.keys()
    assert all(torch.allclose(t[n], s[n], atol=1e-6) for n in t)
    cold = tiny(tmp_path, *still, "name=cold")
    run(cold, progress=False)
    fresh, _ = load_model(tmp_path / "cold" / "round-1" / "model.safetensors")
    f = dict(fresh.named_parameters())
    assert not all(torch.allclose(t[n], f[n], atol=1e-3) for n in t)
    # a larger student cannot take its teacher's weights: it starts fresh, and says so
    larger = tiny(tmp_path, "pipeline.rounds=1", "model.warm_start=true", "model.names=[resnet8, resnet14]",
                  "name=larger")
    run(larger, progress=False)
    assert "round 1: student resnet14 is not its teacher's architecture (resnet8): it starts from a fresh" in caplog.text
