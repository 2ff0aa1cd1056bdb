"""benchmarks/fashion_mnist.py's elapsed-time column: a resumed run counts only its working time."""

from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location("fashion_mnist_bench", BENCH / "fashion_mnist.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path.remove(str(BENCH))


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
    assert bench._elapsed_at_evaluation(records, starts) == pytest.approx({0: 10.0, 1: 100.0 + 50.0})
    # without the log, the first record is the start and the pause counts
    assert bench._elapsed_at_evaluation(records)[1] == pytest.approx(5045.0)


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
    lines = bench.ablation_table(["no-noise", "hard-labels"], per_seed).splitlines()
    assert [line.split(" | ")[0] for line in lines[2:]] == ["| ns-1", "| no-noise", "| hard-labels"]
    no_noise = lines[3].split(" | ")
    assert no_noise[2] == "-0.50 +- 0.71"      # differences -1.0 and 0.0 points, paired by seed
    assert no_noise[3] == "0.940 +- 0.014"     # relative mCE, measured on this row
    assert lines[4].split(" | ")[2] == "1.00 +- 0.00" and lines[4].split(" | ")[3] == "-"
    assert bench.ablation_table(["no-noise"], [{"ns-1": _row(0.85, 0.6)}]) == ""  # no ablation ran


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
