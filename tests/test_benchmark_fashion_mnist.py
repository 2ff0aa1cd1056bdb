"""benchmarks/fashion_mnist.py's elapsed-time column: a resumed run counts only its working time."""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from datetime import date
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _benchmark_fixture(filename: str):
    """A module-scoped fixture importing benchmarks/<filename> (with benchmarks/ on the path for its own
    imports) while the tests use it."""
    @pytest.fixture(scope="module")
    def fixture():
        sys.path.insert(0, str(BENCH))
        try:
            spec = importlib.util.spec_from_file_location(f"{Path(filename).stem}_bench", BENCH / filename)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            yield module
        finally:
            sys.path.remove(str(BENCH))
    return fixture


bench = _benchmark_fixture("fashion_mnist.py")
tune = _benchmark_fixture("fashion_mnist_tune.py")
sharpness = _benchmark_fixture("teacher_sharpness.py")
flips = _benchmark_fixture("flip_diagnosis.py")


def _log_line(t: float, message: str) -> str:
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) + f",{round(1000 * (t % 1)):03d}"
    return f"{stamp} INFO noisystudent.pipeline: {message}"


def test_elapsed_leaves_out_the_pause_between_sittings(bench, tmp_path):
    t0 = 1_700_000_000.0
    log = tmp_path / "run.log"
    log.write_text("\n".join([
        _log_line(t0, "run runs/x: device cpu (2 CPU threads, 1 process), config hash abc"),
        _log_line(t0 + 10, "round 0 (resnet8): test accuracy 80.00%"),
        _log_line(t0 + 5000, "run runs/x: device cpu (2 CPU threads, 1 process), config hash abc"),
    ]) + "\n")
    records = [
        {"time": t0 + 5, "stage": "round-0", "epoch": 1, "seconds": 5.0},
        {"time": t0 + 10, "stage": "round-0/evaluate", "test_accuracy": 0.8},
        {"time": t0 + 100, "stage": "round-1", "epoch": 1, "seconds": 80.0},
        # interrupted in epoch 2; resumed at t0 + 5000 from the end of epoch 1
        {"time": t0 + 5040, "stage": "round-1", "epoch": 2, "seconds": 40.0},
        {"time": t0 + 5050, "stage": "round-1/evaluate", "test_accuracy": 0.85},
    ]
    starts = bench._run_starts(records, log)
    assert starts == pytest.approx([t0, t0 + 5000])
    evaluated = {k: v[0] for k, v in bench._round_elapsed(records, starts).items()}
    assert evaluated == pytest.approx({0: 10.0, 1: 100.0 + 50.0})
    # without the log, the first record is the start and the pause counts
    assert bench._round_elapsed(records)[1][0] == pytest.approx(5045.0)


def test_run_starts_come_from_run_records_and_old_log_lines_once(bench, tmp_path):
    t0 = 1_700_000_000.0
    log = tmp_path / "run.log"
    log.write_text("\n".join([  # a sitting from before the "run" records, then one with both
        _log_line(t0, "run runs/x: device cpu (2 CPU threads, 1 process), config hash abc"),
        _log_line(t0 + 5000, "run runs/x: device cpu (2 CPU threads, 1 process), config hash abc"),
    ]) + "\n")
    records = [{"time": t0 + 5000.2, "stage": "run", "device": "cpu"},
               {"time": t0 + 9000, "stage": "run", "device": "cpu"}]  # its run.log was deleted
    assert bench._run_starts(records, log) == pytest.approx([t0, t0 + 5000.2, t0 + 9000])
    assert bench._run_starts(records) == pytest.approx([t0 + 5000.2, t0 + 9000])


def _row(acc: float, rel: float | None = None) -> dict:
    robust = {"relative_mce": rel, "flip_rate": {"translate": 0.04, "noise": 0.02} if rel else None}
    return {"acc": acc, "row": robust}


def test_ablation_table_pairs_each_row_with_round_one_of_its_seed(bench):
    per_seed = [{"ns-1": _row(0.85, 0.62), "no-noise": _row(0.84, 0.93), "hard-labels": _row(0.86)},
                {"ns-1": _row(0.83, 0.66), "no-noise": _row(0.83, 0.95), "hard-labels": _row(0.84)}]
    lines = bench.ablation_table(["no-noise", "hard-labels"], per_seed, seeds=[1, 2]).splitlines()
    assert [line.split(" | ")[0] for line in lines[2:]] == ["| ns-1", "| no-noise", "| hard-labels"]
    assert lines[2].split(" | ")[2:4] == ["-", "-"]  # ns-1 against itself: no difference
    no_noise = lines[3].split(" | ")
    assert no_noise[2] == "-0.50 +- 0.71"      # differences -1.0 and 0.0 points, paired by seed
    assert no_noise[3] == "seed 1 -1.00, seed 2 +0.00"
    assert no_noise[4:7] == ["-", "-", "-"]    # these rows recorded no pseudo-labels
    assert no_noise[7] == "0.940 +- 0.014"     # relative mCE, measured on this row
    assert lines[4].split(" | ")[2] == "1.00 +- 0.00" and lines[4].split(" | ")[7] == "-"
    selected = {"ns-1": _row(0.85), "no-balance": _row(0.86)}  # balancing changes the classes, not the total
    selected["ns-1"]["row"].update(pseudo_labels_kept=100, pseudo_label_accuracy_selected=0.9,
                                   per_class_after_balance=[50, 50])
    selected["no-balance"]["row"].update(pseudo_labels_kept=99, pseudo_label_accuracy_selected=0.8,
                                         per_class_after_balance=[30, 69])
    cells = [line.split(" | ")[4:7] for line in bench.ablation_table(["no-balance"], [selected]).splitlines()[2:]]
    assert cells == [["100", "90.00", "50-50"], ["99", "80.00", "30-69"]]
    one_seed = bench.ablation_table(["hard-labels"], [{}, per_seed[1]]).splitlines()  # seed 0 lacks both
    assert one_seed[3].split(" | ")[2:4] == ["1.00", "seed 1 +1.00"]
    assert bench.ablation_table(["no-noise"], [{"ns-1": _row(0.85, 0.6)}]) == ""  # no ablation ran


def test_gain_line_pairs_the_last_round_and_each_round_with_the_teacher_of_its_seed(bench):
    per_seed = [{"teacher": _row(0.80), "ns-1": _row(0.84), "ns-2": _row(0.85)},
                {"teacher": _row(0.82), "ns-1": _row(0.83), "ns-2": _row(0.87)},
                {"teacher": _row(0.81)}]  # a seed with the teacher alone is left out
    line = bench.gain_line(per_seed)
    assert line == ("ns-2 minus the teacher, paired by seed: 5.00 +- 0.00 points (per seed +5.00, +5.00); "
                    "mean gain of each round over the one before: ns-1 +2.50 (2 seeds), ns-2 +2.50 (2 seeds).")
    assert bench.gain_line([{"teacher": _row(0.8)}]) == ""  # no round after the teacher


def test_oracle_line_pairs_the_last_main_round_with_the_oracle_of_its_seed(bench):
    per_seed = [{"teacher": _row(0.80), "ns-1": _row(0.84), "ns-2": _row(0.85), "oracle": _row(0.90)},
                {"teacher": _row(0.82), "ns-1": _row(0.83), "ns-2": _row(0.86), "oracle": _row(0.92)}]
    line = bench.oracle_line(per_seed)
    assert line.startswith("Oracle minus ns-2, paired by seed: 5.50 +- 0.71 points (per seed +5.00, +6.00)")
    assert "ns-2 closes 45 +- 7% of the teacher-to-oracle gap" in line   # 5/10 and 4/10
    assert bench.oracle_line([{"teacher": _row(0.8), "ns-1": _row(0.84)}]) == ""  # no oracle ran
    below = [{"teacher": _row(0.84), "ns-1": _row(0.85), "oracle": _row(0.83)},
             {"teacher": _row(0.82), "ns-1": _row(0.84), "oracle": _row(0.85)}]
    line = bench.oracle_line(below)
    assert "closes" not in line and line.endswith("the oracle is below the teacher on 1 of 2 seeds.")


# ---- records: rows kept across sittings (benchmarks/records.py) ------------------------------------------
TINY = ["teacher.epochs=3", "student.epochs=1", "model.names=[resnet8]", "data.max_unlabeled=150",
        "data.labeled_per_class=5", "teacher.batch_size=25", "student.batch_size=16", "pipeline.rounds=1",
        "teacher.eval_every=0", "student.eval_every=0", "pipeline.report=false", "pipeline.robustness=false"]


@pytest.fixture
def tiny_base():
    from noisystudent import Config

    return Config().with_overrides(TINY)


def test_records_key_follows_the_settings_that_change_results(bench, tiny_base):
    from records import records_key

    key = records_key(tiny_base)
    assert records_key(tiny_base.with_overrides(["out_dir=/elsewhere", "name=other", "data.dir=/mnt/x"])) == key
    assert records_key(tiny_base.with_overrides(["student.lr=0.2"])) != key
    assert records_key(tiny_base.with_overrides(["pseudo.batch_size=7"])) == key  # inference batching


def test_the_shipped_config_has_its_records(bench):
    # a change to the config's defaults that forks the records key would leave docs/RESULTS.md
    # describing records that the benchmark no longer finds
    from records import records_key

    from noisystudent.config import Config

    cfg = Config.from_yaml(BENCH.parent / "configs" / "fashion_mnist.yaml")
    assert (BENCH / "records" / "fashion_mnist" / records_key(cfg) / "config.yaml").exists()


def test_recorded_rows_are_not_rerun_and_ablations_reuse_the_recorded_teacher(bench, tiny_base, tmp_path,
                                                                              monkeypatch):
    from records import Records

    records = Records(tmp_path / "records", tiny_base)
    first = bench.row_runs(["teacher", "ns-1"], 0, tiny_base, tmp_path / "sitting-1", records)
    assert set(first) == {"teacher", "ns-1"} and all(0 <= r["acc"] <= 1 for r in first.values())
    assert first["ns-1"]["measured"]["date"] == str(date.today())
    teacher_bytes = (tmp_path / "sitting-1" / "seed0-main" / "round-0" / "model.safetensors").read_bytes()
    assert records.has_teacher(0)

    # a later sitting on a machine without the run directories: only the missing row is measured,
    # from the recorded teacher, which is not retrained
    calls = []
    real_run = bench.run
    monkeypatch.setattr(bench, "run", lambda cfg, **kw: calls.append((cfg.name, cfg.pipeline.rounds))
                        or real_run(cfg, **kw))
    second = bench.row_runs(["teacher", "ns-1", "no-noise"], 0, tiny_base, tmp_path / "sitting-2", records)
    assert calls == [("seed0-main", 0), ("seed0-no-noise", 1)]
    main2 = tmp_path / "sitting-2" / "seed0-main"
    assert not (main2 / "round-1").exists()  # ns-1 came from the records
    assert (main2 / "round-0" / "model.safetensors").read_bytes() == teacher_bytes
    assert (tmp_path / "sitting-2" / "seed0-no-noise" / "round-0" / "model.safetensors").read_bytes() == teacher_bytes
    assert second["teacher"] == first["teacher"] and second["ns-1"] == first["ns-1"]
    assert set(records.load(0)) == {"teacher", "ns-1", "no-noise"}

    # nothing left to measure: no run at all
    calls.clear()
    third = bench.row_runs(["teacher", "ns-1", "no-noise"], 0, tiny_base, tmp_path / "sitting-3", records)
    assert calls == [] and third == second


def test_a_restored_teacher_keeps_its_time_in_the_elapsed_column(bench, tiny_base, tmp_path):
    from records import Records

    records = Records(tmp_path / "records", tiny_base)
    first = bench.row_runs(["teacher"], 0, tiny_base, tmp_path / "a", records)
    # round 1 measured elsewhere: its elapsed time includes the teacher's working time from the record
    second = bench.row_runs(["teacher", "ns-1"], 0, tiny_base, tmp_path / "b", records)
    assert second["teacher"] == first["teacher"]
    metrics = [json.loads(line) for line in (tmp_path / "b" / "seed0-main" / "metrics.jsonl").read_text().splitlines()]
    start_b = [r["time"] for r in metrics if r["stage"] == "run"][-1]
    evaluated = [r["time"] for r in metrics if r["stage"] == "round-1/evaluate"][-1]
    teacher_part = first["teacher"]["elapsed"]  # round 0's sitting, from its start to its evaluation
    assert teacher_part > 0
    assert second["ns-1"]["elapsed"] == pytest.approx(teacher_part + evaluated - start_b, abs=0.01)
    kept = (records.dir / "seed0-teacher" / "metrics.jsonl").read_text().splitlines()
    assert all("round-1" not in line for line in kept)  # the kept metrics end with round 0


def test_sittings_group_rows_by_where_they_were_measured(bench):
    from records import sittings

    a = {"date": "2026-12-01", "machine": "machine: x86_64 CPU", "command": "python fashion_mnist.py --seeds 0"}
    b = {"date": "2026-12-02", "machine": "machine: x86_64 CPU", "command": "python fashion_mnist.py --rows oracle"}
    lines = sittings({0: {"teacher": {"measured": a}, "ns-1": {"measured": a}, "oracle": {"measured": b}},
                      1: {"oracle": {"measured": b}}})
    assert lines == ["2026-12-01, `python fashion_mnist.py --seeds 0` (x86_64 CPU): seed 0: teacher, ns-1",
                     "2026-12-02, `python fashion_mnist.py --rows oracle` (x86_64 CPU): seed 0: oracle; seed 1: oracle"]


def test_elapsed_to_the_end_of_a_round_includes_its_robustness(bench):
    t0 = 1_700_000_000.0
    records = [
        {"time": t0, "stage": "run"},
        {"time": t0 + 5, "stage": "round-0", "epoch": 1, "seconds": 5.0},
        {"time": t0 + 10, "stage": "round-0/evaluate", "test_accuracy": 0.8},
        {"time": t0 + 30, "stage": "round-0/robustness", "mce": 0.4},
        {"time": t0 + 100, "stage": "round-1", "epoch": 1, "seconds": 60.0},
        {"time": t0 + 110, "stage": "round-1/evaluate", "test_accuracy": 0.85},
        {"time": t0 + 150, "stage": "round-1/robustness", "mce": 0.3},
    ]
    starts = bench._run_starts(records)
    got = bench._round_elapsed(records, starts)
    assert {k: v[0] for k, v in got.items()} == pytest.approx({0: 10.0, 1: 110.0})  # at evaluation
    assert {k: v[1] for k, v in got.items()} == pytest.approx({0: 30.0, 1: 150.0})  # at the round's end


def test_rounds_table_gives_the_whole_pipeline_time_where_it_was_recorded(bench):
    def main_rows(end):
        row = {"model": "m", "pseudo_labels_kept": None, "per_class_after_balance": None,
               "pseudo_label_accuracy_selected": None, "mce": None, "relative_mce": None, "flip_rate": None}
        return {name: {"acc": 0.8, "row": row, "seconds": 300.0 + 60.0 * k, "elapsed": 600.0 * k + 60.0,
                       "elapsed_end": end and 600.0 * k + 90.0}
                for k, name in enumerate(bench.MAIN)}

    text = bench.rounds_table([main_rows(None), main_rows(True)])
    assert text.splitlines()[-1] == ("The whole pipeline (teacher and rounds 1-3, the last round's robustness "
                                     "included), working time per seed: not recorded (measured before the end "
                                     "of a round was recorded); 31.5 min (26.0 min of it training, 2.0 min "
                                     "robustness evaluation).")


def test_a_row_saved_again_unchanged_keeps_where_it_was_measured(bench, tiny_base, tmp_path, monkeypatch):
    from records import Records

    records = Records(tmp_path / "records", tiny_base)
    monkeypatch.setattr(sys, "argv", ["fashion_mnist.py", "--rows", "teacher"])
    records.save(0, {"teacher": {"acc": 0.8, "row": {"round": 0}, "seconds": 1.0}})
    first = records.load(0)["teacher"]["measured"]
    assert first["command"] == "python fashion_mnist.py --rows teacher"

    # a later command skips the finished round and saves it again: same result, same provenance
    monkeypatch.setattr(sys, "argv", ["fashion_mnist.py", "--rows", "no-balance"])
    records.save(0, {"teacher": {"acc": 0.8, "row": {"round": 0}, "seconds": 1.0, "elapsed_end": 2.0}})
    kept = records.load(0)["teacher"]
    assert kept["measured"] == first and kept["elapsed_end"] == 2.0

    # a retrained round is a new measurement
    records.save(0, {"teacher": {"acc": 0.7, "row": {"round": 0}, "seconds": 1.0}})
    assert records.load(0)["teacher"]["measured"]["command"] == "python fashion_mnist.py --rows no-balance"
    assert "elapsed_end" not in records.load(0)["teacher"]


def test_noised_teacher_line_reports_its_own_teacher_and_pairs_with_the_clean_run(bench):
    per_seed = [{"teacher": _row(0.83), "ns-1": _row(0.87),
                 "noised-teacher": {**_row(0.85), "teacher_acc": 0.80}},
                {"teacher": _row(0.82), "noised-teacher": {**_row(0.86), "teacher_acc": 0.81}},
                {"ns-1": _row(0.88), "noised-teacher": _row(0.84)}]  # recorded without its teacher: left out
    line = bench.noised_teacher_line(per_seed)
    assert line == ("Noised teacher, then noised student (2 seeds): the noised teacher 80.50 +- 0.71%, "
                    "its student 85.50 +- 0.71% (student minus teacher 5.00 +- 0.00 points); noised minus clean "
                    "(the teacher and ns-1 of the same seed), per seed: teacher -3.00, student -2.00 points.")
    assert bench.noised_teacher_line([{"noised-teacher": _row(0.84)}]) == ""


def test_tune_borrows_the_shared_rounds_with_their_metrics(tune, tmp_path):
    src, dst = tmp_path / "seed0-a", tmp_path / "seed0-b"
    (src / "round-1").mkdir(parents=True)
    (src / "round-1" / "model.json").write_text("{}")
    stages = ["run", "round-1/select", "round-1", "round-1", "round-1/evaluate", "run", "round-2/select", "round-2"]
    (src / "metrics.jsonl").write_text("".join(
        json.dumps({"stage": s, "time": 100.0 + i, **({"seconds": 30.0} if s == "round-1" else {})}) + "\n"
        for i, s in enumerate(stages)))
    assert not tune.borrow_rounds(tmp_path / "missing", dst, 1)
    assert tune.borrow_rounds(src, dst, 1)
    assert (dst / "round-1" / "model.json").exists() and not (dst / "round-2").exists()
    copied = [json.loads(line)["stage"] for line in (dst / "metrics.jsonl").read_text().splitlines()]
    assert copied == stages[:5]  # up to round 1's evaluation: not the source's later sitting
    assert tune.train_minutes(tune.read_metrics(dst / "metrics.jsonl")) == {1: 1.0}
    assert not tune.borrow_rounds(src, dst, 1)  # already there: left alone


def test_a_tuned_teacher_replaces_round_zero_only(tune):
    from noisystudent import Config

    base = Config.from_yaml(tune.CONFIG).with_overrides([*tune.BASE, "pipeline.rounds=3",
                                                         *tune.VARIANTS["m5-lr04-w16-warm"]])
    assert tune.with_teacher(base, None, 3) is base
    cfg = tune.with_teacher(base, "resnet44_w16", 3)
    assert [cfg.model_for_round(k) for k in range(4)] == ["resnet44_w16"] + ["resnet32_w16"] * 3
    # a variant whose one model name serves teacher and student keeps the student's
    short = base.with_overrides(["pipeline.rounds=1", *tune.VARIANTS["r8-e10"]])
    assert tune.with_teacher(short, "resnet32_w16", 1).model.names == ["resnet32_w16", "resnet8"]
    # a run continued with more rounds keeps its model.names (the run directory refuses a changed one)
    one, three = (tune.with_teacher(base, "resnet32_w16", rounds).model.names for rounds in (1, 3))
    assert one == three == ["resnet32_w16"] * 4
    assert tune.with_teacher(base, "resnet32_w16", 0).model.names == ["resnet32_w16"]  # the teacher's own run
    # every tuned teacher is a resolvable config: its model exists and its overrides apply
    from noisystudent.models import list_models
    for model, overrides, teacher_only in tune.TEACHERS.values():
        assert model is None or model in list_models()
        base.with_overrides(overrides + teacher_only)
        assert not any(o.startswith("noise.") and "noise_teacher" not in o for o in overrides)  # students' own


def test_every_tune_variant_resolves_and_changes_the_config(tune):
    from noisystudent import Config

    base = Config.from_yaml(tune.CONFIG).with_overrides(tune.BASE)
    resolved = {name: base.with_overrides(overrides) for name, overrides in tune.VARIANTS.items()}
    assert resolved["base"] == base
    assert resolved["m5-lr04-w16-warm-t05"].pseudo.temperature == 0.5
    # no two variants are the same computation under different names
    seen = [c.to_dict() for c in resolved.values()]
    assert all(seen.count(d) == 1 for d in seen)


def test_soft_label_stats_of_sharp_and_flat_labels(sharpness):
    import torch

    soft_label_stats = sharpness.soft_label_stats
    probs = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25], [0.05, 0.95, 0.0, 0.0]])
    s = soft_label_stats(probs, torch.tensor([0, 3, 0]))
    assert s["accuracy"] == pytest.approx(1 / 3)  # the flat row's argmax is class 0, not 3; the third is wrong
    assert s["mean_top1"] == pytest.approx((1 + 0.25 + 0.95) / 3)
    assert s["above_0.9"] == pytest.approx(2 / 3)
    expected = (torch.log(torch.tensor(4.0)) - 0.05 * torch.log(torch.tensor(0.05)) - 0.95 * torch.log(torch.tensor(0.95))) / 3
    assert s["entropy"] == pytest.approx(expected.item(), rel=1e-5)
    assert torch.isnan(torch.tensor(soft_label_stats(probs, None)["accuracy"]))


def test_flip_average_gain_scores_the_averaged_labels_top_class(sharpness):
    import torch

    labels = torch.tensor([0, 1, 2])
    plain = torch.tensor([[0.6, 0.4, 0.0], [0.2, 0.7, 0.1], [0.5, 0.1, 0.4]])     # right, right, wrong
    mirrored = torch.tensor([[0.3, 0.7, 0.0], [0.1, 0.8, 0.1], [0.2, 0.1, 0.7]])  # wrong, right, right
    # averaged: [0.45, 0.55, 0] wrong (the confident mirror wins), right, [0.35, 0.1, 0.55] right
    acc, gain = sharpness.flip_average_gain(plain, mirrored, labels)
    assert acc == pytest.approx(2 / 3)
    assert gain == pytest.approx(0.0)
    acc, gain = sharpness.flip_average_gain(mirrored, plain, labels)  # the same average, from 2/3 plain accuracy
    assert (acc, gain) == (pytest.approx(2 / 3), pytest.approx(0.0))
    acc, gain = sharpness.flip_average_gain(plain, plain, labels)
    assert (acc, gain) == (pytest.approx(2 / 3), pytest.approx(0.0))
    better = torch.tensor([[0.9, 0.1, 0.0], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8]])
    acc, gain = sharpness.flip_average_gain(plain, better, labels)
    assert (acc, gain) == (pytest.approx(1.0), pytest.approx(1 / 3))


def test_ensemble_gain_averages_the_members_and_compares_with_the_single_model(sharpness):
    import torch

    labels = torch.tensor([0, 1, 2])
    a = torch.tensor([[0.6, 0.4, 0.0], [0.2, 0.7, 0.1], [0.5, 0.1, 0.4]])  # right, right, wrong
    b = torch.tensor([[0.3, 0.7, 0.0], [0.6, 0.3, 0.1], [0.2, 0.1, 0.7]])  # wrong, wrong, right
    c = torch.tensor([[0.8, 0.2, 0.0], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8]])  # right, right, right
    # mean of a, b, c: [0.57, 0.43, 0] right, [0.3, 0.6, 0.1] right, [0.27, 0.1, 0.63] right
    assert sharpness.ensemble_gain([a, b, c], labels, a) == (pytest.approx(1.0), pytest.approx(1 / 3))
    assert sharpness.ensemble_gain([a, b, c], labels, c) == (pytest.approx(1.0), pytest.approx(0.0))
    # mean of a and b: [0.45, 0.55, 0] wrong, [0.4, 0.5, 0.1] right, [0.35, 0.1, 0.55] right: no gain over a
    assert sharpness.ensemble_gain([a, b], labels, a) == (pytest.approx(2 / 3), pytest.approx(0.0))
    assert sharpness.ensemble_gain([a, b], labels, b) == (pytest.approx(2 / 3), pytest.approx(1 / 3))


def test_group_gains_scores_every_group_against_its_best_member(sharpness):
    import torch

    labels = torch.tensor([0, 1, 2])
    a = torch.tensor([[0.6, 0.4, 0.0], [0.2, 0.7, 0.1], [0.5, 0.1, 0.4]])  # right, right, wrong
    b = torch.tensor([[0.3, 0.7, 0.0], [0.6, 0.3, 0.1], [0.2, 0.1, 0.7]])  # wrong, wrong, right
    c = torch.tensor([[0.8, 0.2, 0.0], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8]])  # right, right, right
    got = {g: (acc, gain) for g, acc, gain in sharpness.group_gains([a, b, c], labels)}
    assert set(got) == {(0, 1), (0, 2), (1, 2), (0, 1, 2)}
    assert got[(0, 1)] == (pytest.approx(2 / 3), pytest.approx(0.0))   # against a, the better of the two
    assert got[(0, 1, 2)] == (pytest.approx(1.0), pytest.approx(0.0))  # against c, already all right
    # b + c: [0.55, 0.45, 0] right, [0.35, 0.55, 0.1] right, [0.15, 0.1, 0.75] right; c alone is all right
    assert got[(1, 2)] == (pytest.approx(1.0), pytest.approx(0.0))
    assert sharpness.group_gains([a], labels) == []
    x = torch.tensor([[0.7, 0.3, 0.0], [0.6, 0.4, 0.0], [0.1, 0.1, 0.8]])  # right, wrong, right
    y = torch.tensor([[0.4, 0.6, 0.0], [0.1, 0.9, 0.0], [0.1, 0.1, 0.8]])  # wrong, right, right
    # averaged: [0.55, 0.45, 0] right, [0.35, 0.65, 0] right, right: a third more than either alone
    assert sharpness.group_gains([x, y], labels) == [((0, 1), pytest.approx(1.0), pytest.approx(1 / 3))]


def test_unlabeled_for_all_leaves_out_every_runs_labeled_images(sharpness):
    from types import SimpleNamespace

    import torch

    from noisystudent.data.splits import split_per_class

    labels = torch.arange(3).repeat_interleave(10)  # 3 classes of 10
    runs = [SimpleNamespace(labeled_per_class=2, split_seed=s) for s in (0, 1)]
    chosen = [set(split_per_class(labels, 2, s)[0].tolist()) for s in (0, 1)]
    assert chosen[0] != chosen[1]
    keep = sharpness.unlabeled_for_all(labels, runs)
    assert set(keep.tolist()) == set(range(30)) - chosen[0] - chosen[1]
    assert len(sharpness.unlabeled_for_all(labels, runs[:1])) == 24
    assert torch.equal(sharpness.unlabeled_for_all(labels, runs[:1] * 3), sharpness.unlabeled_for_all(labels, runs[:1]))


def test_top_fraction_accuracy_keeps_each_class_most_confident(sharpness):
    import torch

    # class 0 (by top class): confidences 0.9 right, 0.8 wrong, 0.6 wrong; class 1: 0.95 wrong, 0.7 right
    probs = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.6, 0.4], [0.05, 0.95], [0.3, 0.7]])
    labels = torch.tensor([0, 1, 1, 0, 1])
    acc = sharpness.top_fraction_accuracy
    assert acc(probs, labels, 1.0) == pytest.approx(2 / 5)
    assert acc(probs, labels, 0.5) == pytest.approx(1 / 3)   # ceil: 2 of class 0 (right, wrong), 1 of class 1 (wrong)
    assert acc(probs, labels, 0.3) == pytest.approx(1 / 2)   # 1 of each: 0.9 right, 0.95 wrong
    probs[3] = torch.tensor([0.35, 0.65])                    # class 1's wrong label is now its least confident
    assert acc(probs, labels, 0.3) == pytest.approx(1.0)


def test_flip_diagnosis_splits_noise_corruptions_from_the_others(flips):
    from noisystudent.robustness import CORRUPTIONS

    errors = {c: (0.4 if c in flips.NOISE_CORRUPTIONS else 0.1) for c in CORRUPTIONS}
    errors["gaussian_noise"] = 0.7
    robustness = {"corruption_error": errors, "mce": 0.2, "flip_rate": {"translate": 0.031, "noise": 0.0579}}
    assert set(flips.NOISE_CORRUPTIONS) < set(CORRUPTIONS) and len(CORRUPTIONS) == 15
    assert flips.corruption_columns(robustness) == ["20.00", "50.00", "10.00", "3.10", "5.79"]


def test_noise_ablations_switch_off_every_input_noise_the_config_may_hold(bench):
    """no-noise removes every noise setting, model-noise-only every input noise, even where the YAML
    turns on pixel noise or mixup (a noise setting added later must be added to these rows too)."""
    from dataclasses import fields

    from noisystudent import Config
    from noisystudent.config import NoiseConfig

    noisy = Config.from_yaml(bench.CONFIG).with_overrides(["noise.pixel_noise=0.05", "noise.mixup=0.3"])
    settings = [f.name for f in fields(NoiseConfig) if f.name != "noise_teacher"]
    off = noisy.with_overrides(bench.ABLATIONS["no-noise"][0]).noise
    assert not any(getattr(off, name) for name in settings)
    model_only = noisy.with_overrides(bench.ABLATIONS["model-noise-only"][0]).noise
    inputs = {"randaugment", "pixel_noise", "mixup"}
    assert not any(getattr(model_only, name) for name in inputs)
    assert all(getattr(model_only, name) for name in set(settings) - inputs)  # dropout, stochastic depth stay
    input_only = noisy.with_overrides(bench.ABLATIONS["input-noise-only"][0]).noise
    assert all(getattr(input_only, name) for name in inputs)
    assert not any(getattr(input_only, name) for name in set(settings) - inputs)


def test_knn_graph_links_nearest_neighbours_symmetrically_and_normalises(sharpness):
    import torch

    # two tight groups of three points (by direction), far apart
    f = torch.tensor([[1.0, 0.0], [1.0, 0.1], [1.0, -0.1], [0.0, 1.0], [0.1, 1.0], [-0.1, 1.0]])
    g = sharpness.knn_graph(f, k=2).to_dense()
    assert torch.equal(g, g.T)
    assert torch.all(g.diagonal() == 0)                  # no self-links
    assert torch.all(g[:3, 3:] == 0) and torch.all(g[:3, :3].sum(1) > 0)  # links stay within each group
    w = torch.zeros(6, 6)                                # the unnormalised weights, by hand
    sim = torch.nn.functional.normalize(f, dim=1) @ torch.nn.functional.normalize(f, dim=1).T
    for i in range(6):
        sim[i, i] = -1
        for j in sim[i].topk(2).indices:
            w[i, j] += sim[i, j].clamp_min(0) ** 3
    w = w + w.T
    d = w.sum(1).rsqrt()
    assert torch.allclose(g, d[:, None] * w * d[None, :], atol=1e-6)
    assert torch.linalg.eigvalsh(g).abs().max() <= 1 + 1e-5


def test_propagate_corrects_an_isolated_label_and_keeps_sources_at_alpha_zero(sharpness):
    import torch

    f = torch.tensor([[1.0, 0.0], [1.0, 0.1], [1.0, -0.1], [1.0, 0.05], [0.0, 1.0], [0.1, 1.0], [-0.1, 1.0]])
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 1])
    sources = torch.nn.functional.one_hot(labels, 2).float()
    sources[3] = torch.tensor([0.3, 0.7])                # one wrong soft label among class 0's neighbours
    g = sharpness.knn_graph(f, k=3)
    assert torch.equal(sharpness.propagate(g, sources, 0.0), sources)
    z = sharpness.propagate(g, sources, 0.9)
    assert torch.equal(z.argmax(1), labels)
    assert torch.allclose(z, 0.9 * (g @ z) + 0.1 * sources, atol=1e-4)  # at the fixed point


def test_propagation_gains_scores_each_alpha_against_the_plain_labels(sharpness):
    import torch

    f_l = torch.tensor([[1.0, 0.0], [0.0, 1.0]])                     # one labeled image per class
    f_u = torch.tensor([[1.0, 0.1], [1.0, -0.1], [1.0, 0.05], [0.1, 1.0], [-0.1, 1.0]])
    labels_u = torch.tensor([0, 0, 0, 1, 1])
    probs_u = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.4, 0.6], [0.2, 0.8], [0.1, 0.9]])  # the third wrong
    got = sharpness.propagation_gains(f_l, torch.tensor([0, 1]), f_u, probs_u, labels_u, [0.0, 0.9], k=3)
    assert got[0] == (pytest.approx(0.8), pytest.approx(0.0))        # alpha 0: the plain labels
    assert got[1] == (pytest.approx(1.0), pytest.approx(0.2))
