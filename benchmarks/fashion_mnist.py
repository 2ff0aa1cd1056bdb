"""Fashion-MNIST benchmark: the paper's findings at small scale, with ablations.

    python benchmarks/fashion_mnist.py --quick                    # reduced protocol, a few minutes
    python benchmarks/fashion_mnist.py --seeds 0 1 2 --write       # the full protocol (hours on 2 cores)
    python benchmarks/fashion_mnist.py --rows teacher ns-1 ns-2 ns-3 --seeds 0
    python benchmarks/fashion_mnist.py --rows teacher ns-1 --seeds 0 --set data.validation=5000 \
        --set student.epochs=8 --out-dir runs/fmnist-val-e8   # tuning: 5,000 pool images replace the test set

Rows (each a run directory under --out-dir, so an interrupted benchmark continues where it stopped):
  teacher            labeled-only round-0 model
  oracle             the final student's architecture trained on all 60,000 labels with the students'
                     noise and budget (student.epochs passes at their step size): a same-budget
                     comparison, not a converged upper bound
  ns-1, ns-2, ns-3   Noisy Student rounds 1-3 (configs/fashion_mnist.yaml)
  no-noise, input-noise-only, model-noise-only, hard-labels, no-threshold, no-balance, equal-student
                     ablations of round 1 (they reuse the round-0 teacher of the main run)
  noised-teacher     noised teacher, then noised student (round 1)
  consistency        consistency training (online KL to the teacher, weight averaging), round 1
Prints two Markdown tables, mean +- std over seeds: every row's test accuracy and training time;
then, per round of the main run, pseudo-labels kept, their accuracy, per-class counts after
balancing, robustness (mCE, relative mCE, flip rates) and the wall time since the run started, and
when the pipeline first reaches 90%. Robustness is measured on the main rounds and on no-noise (the
other ablations skip it, for time). `--write` puts the tables into docs/RESULTS.md between the
fashion-mnist markers (--block), with the command, machine and date.

The full protocol takes longer than one sitting, so rows are recorded as they finish under
benchmarks/records/fashion_mnist/<config key>/ (per seed: each row's result, when, where and by which
command it was measured, and the round-0 teacher's weights; see records.py). A recorded row is not
re-run, in a later sitting or on another machine, and the tables combine every recorded row:
    python benchmarks/fashion_mnist.py --rows no-balance --seeds 1        # adds one row to the records
    python benchmarks/fashion_mnist.py --recorded-only --write            # tabulates what is recorded
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import statistics
import sys
import time
from pathlib import Path

import torch

from common import machine_line
from records import Records, sittings
from noisystudent import Config, run
from noisystudent.config import TrainConfig
from noisystudent.data.sources import load_idx
from noisystudent.evaluate import accuracy
from noisystudent.models import create_model
from noisystudent.report.run_files import read_metrics, record_round
from noisystudent.targets import Targets
from noisystudent.tensors import channel_stats
from noisystudent.train import Augmentation, train
from noisystudent.augment import RandAugment

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "configs" / "fashion_mnist.yaml"
MAIN = ["teacher", "ns-1", "ns-2", "ns-3"]
# row -> (overrides of round 1, reuse the main run's teacher)
ABLATIONS = {
    "no-noise": (["noise.randaugment=", "noise.pixel_noise=0", "noise.mixup=0", "noise.dropout=0", "noise.drop_path=0"],
                 True),
    "input-noise-only": (["noise.dropout=0", "noise.drop_path=0"], True),
    "model-noise-only": (["noise.randaugment=", "noise.pixel_noise=0", "noise.mixup=0"], True),
    "hard-labels": (["pseudo.mode=hard"], True),
    "no-threshold": (["pseudo.threshold=0"], True),
    "no-balance": (["pseudo.balance=false"], True),
    "equal-student": (["model.names=[resnet8]", "model.warm_start=false"], True),  # size alone: a fresh init
    "noised-teacher": (["noise.noise_teacher=true"], False),
    "consistency": (["pipeline.variant=consistency", "student.ema=0.999", "pseudo.temperature=2"], True),
}
ALL_ROWS = MAIN + ["oracle"] + list(ABLATIONS)
# quick: 5,000 unlabeled images; students get 4 passes (~100 steps), enough not to collapse
QUICK = ["data.max_unlabeled=5000", "teacher.epochs=40", "student.epochs=4", "teacher.eval_every=0",
         "student.eval_every=0", "pipeline.report=false"]
RECORDS = ROOT / "benchmarks" / "records" / "fashion_mnist"


ROBUST_ABLATIONS = {"no-noise"}  # the other ablation rows skip the robustness evaluation (minutes per row)


def row_runs(rows: list[str], seed: int, base: Config, out: Path, records: Records | None = None) -> dict[str, dict]:
    """Per requested row for one seed: test accuracy, training seconds, and for the main rounds the
    pipeline's result row plus `elapsed` (working seconds from the run's start to the round's
    evaluation, robustness of earlier rounds included, pauses between resumed sittings left out).

    With `records`, rows recorded there are taken as they are (not re-run), the rest are measured
    and recorded, and the kept teacher stands in for a missing round 0 (see records.py)."""
    recorded = records.load(seed) if records else {}
    res: dict[str, dict] = {name: recorded[name] for name in rows if name in recorded}
    todo = [name for name in rows if name not in recorded]
    main_cfg = base.with_overrides([f"out_dir={out}", f"name=seed{seed}-main", f"seed={seed}",
                                    f"data.split_seed={seed}"])
    main_dir = out / main_cfg.name
    if any(r in MAIN for r in todo) or any(ABLATIONS[r][1] for r in todo if r in ABLATIONS):
        restored = records.restore_teacher(seed, main_dir) if records else False
        want = max([MAIN.index(r) for r in todo if r in MAIN] + [0])
        for k in range(want + 1):  # round by round, so that each finished round is recorded at once
            t0 = time.perf_counter()
            result = run(main_cfg.with_overrides([f"pipeline.rounds={k}"]), progress=False)
            metrics = read_metrics(main_dir / "metrics.jsonl")
            starts = _run_starts(metrics, main_dir / "run.log")
            r = result.rows[k]
            evaluated, ended = _round_elapsed(metrics, starts).get(k, (None, None))
            fresh = {MAIN[k]: {"acc": r["test_accuracy"], "row": r,
                               "seconds": _round_seconds(metrics).get(k, time.perf_counter() - t0),
                               "elapsed": evaluated, "elapsed_end": ended}}
            if k == 0 and restored and "teacher" in recorded:  # the recorded teacher itself: as recorded
                fresh = {"teacher": recorded["teacher"]}
            # every main round of this run is recorded: rounds retrained here replace the old ones, so
            # the recorded rounds stay one chain (each round the student of the one before)
            res.update({name: value for name, value in fresh.items() if name in rows})
            if records:
                records.save(seed, fresh)
                records.archive_teacher(seed, main_dir)
    for name in todo:
        if name not in ABLATIONS:
            continue
        overrides, reuse = ABLATIONS[name]
        robust = [] if name in ROBUST_ABLATIONS else ["pipeline.robustness=false"]
        cfg = main_cfg.with_overrides([f"name=seed{seed}-{name}", "pipeline.rounds=1", *robust, *overrides])
        if reuse and not (out / cfg.name / "round-0" / "model.json").exists():
            (out / cfg.name).mkdir(parents=True, exist_ok=True)
            shutil.copytree(main_dir / "round-0", out / cfg.name / "round-0", dirs_exist_ok=True)
        result = run(cfg, progress=False)
        res[name] = {"acc": result.rows[-1]["test_accuracy"], "row": result.rows[-1],
                     "seconds": _round_seconds(read_metrics(out / cfg.name / "metrics.jsonl")).get(1, float("nan"))}
        if not reuse:  # the row trained its own teacher (noised-teacher): its accuracy too
            res[name]["teacher_acc"] = result.rows[0]["test_accuracy"]
        if records:
            records.save(seed, {name: res[name]})
    if "oracle" in todo:
        acc, seconds = oracle(main_cfg, out / f"seed{seed}-oracle")
        res["oracle"] = {"acc": acc, "seconds": seconds}
        if records:
            records.save(seed, {"oracle": res["oracle"]})
    if records:  # as recorded: with where each row was measured
        kept = records.load(seed)
        res = {name: kept.get(name, value) for name, value in res.items()}
    return res


def oracle(cfg: Config, directory: Path) -> tuple[float, float]:
    """The final student's architecture, trained with the student's noise on all training labels."""
    done = directory / "result.json"
    if done.exists():
        d = json.loads(done.read_text())
        return d["test_accuracy"], d["seconds"]
    directory.mkdir(parents=True, exist_ok=True)
    tr, te = load_idx(cfg.data.dir, "train"), load_idx(cfg.data.dir, "test")
    if cfg.data.max_unlabeled:  # quick mode: as many images as the students see
        tr = tr.subset(torch.arange(min(len(tr), cfg.data.max_unlabeled + 10 * cfg.data.labeled_per_class)))
    mean, std = channel_stats(tr.images)
    name = cfg.model_for_round(cfg.pipeline.rounds)
    torch.manual_seed(cfg.seed)
    model = create_model(name, len(tr.classes), tr.shape[0], cfg.noise.dropout, cfg.noise.drop_path)
    s = cfg.student
    # the students' step: batch_size * (1 + unlabeled_ratio) images, for `epochs` passes over the data
    tcfg = TrainConfig(**{**vars(s), "batch_size": round(s.batch_size * (1 + s.unlabeled_ratio)), "eval_every": 0})
    aug = Augmentation(cfg.augment.crop_pad, cfg.augment.flip,
                       RandAugment.from_spec(cfg.noise.randaugment) if cfg.noise.randaugment else None,
                       pixel_noise=cfg.noise.pixel_noise, mixup=cfg.noise.mixup)  # the students' input noise
    t0 = time.perf_counter()
    train(model, labeled=(tr.images, Targets.from_labels(tr.labels)), unlabeled=None, cfg=tcfg,
          num_classes=len(tr.classes), mean=mean, std=std, augmentation=aug, seed=cfg.seed,
          state_path=directory / "train_state.safetensors", tag="oracle", progress=False)
    seconds = time.perf_counter() - t0
    acc = accuracy(model, te.images, te.labels, mean=mean, std=std)
    done.write_text(json.dumps({"model": name, "test_accuracy": acc, "seconds": seconds}))
    return acc, seconds


def _round_seconds(records: list[dict]) -> dict[int, float]:
    """Training seconds per round, from a run's metrics records (sum over epochs)."""
    out: dict[int, float] = {}
    for rec in records:
        parsed = record_round(rec)
        if parsed is not None and parsed[1] is None and "seconds" in rec:
            out[parsed[0]] = out.get(parsed[0], 0.0) + rec["seconds"]
    return out


def _run_starts(records: list[dict], log: Path | None = None) -> list[float]:
    """Epoch seconds at which the pipeline started or resumed this run: its "run" records in
    metrics.jsonl, and for sittings from before the pipeline wrote them, the "run ...: device" lines
    of its run.log (local time; a line within 5 s of a record is the same sitting)."""
    starts = [r["time"] for r in records if r.get("stage") == "run"]
    if log is not None and log.exists():
        for line in log.read_text().splitlines():
            if " noisystudent.pipeline: run " in line and ": device " in line:
                stamp = line[:23]  # "YYYY-mm-dd HH:MM:SS,mmm", logging's asctime
                t = time.mktime(time.strptime(stamp[:19], "%Y-%m-%d %H:%M:%S")) + int(stamp[20:]) / 1000
                if all(abs(t - s) > 5.0 for s in starts):
                    starts.append(t)
    return sorted(starts)


def _round_elapsed(records: list[dict], starts: list[float] = ()) -> dict[int, tuple[float, float]]:
    """Per round: working seconds from the run's start to the round's evaluation (robustness of earlier
    rounds included) and to the round's last step (its own robustness included). A resumed run counts
    each sitting from its start to its last metrics record, so time between sittings (and an epoch
    lost to the interruption) is not counted."""
    if not records:
        return {}
    times = sorted(r["time"] for r in records)
    first = [s for s in starts if s <= times[0]][-1:] or [times[0]]  # the sitting of the first record
    starts = first + [s for s in starts if s > times[0]]

    # per sitting: its start, and the working seconds of the sittings before it
    offsets, done = [], 0.0
    for s, nxt in zip(starts, starts[1:] + [float("inf")]):
        offsets.append((s, done))
        in_sitting = [x for x in times if s <= x < nxt]
        done += (in_sitting[-1] - s) if in_sitting else 0.0

    def elapsed(t: float) -> float:
        s, before = next((o for o in reversed(offsets) if o[0] <= t), offsets[0])
        return before + t - s

    evaluated: dict[int, float] = {}
    ended: dict[int, float] = {}
    for rec in records:
        p = record_round(rec)
        if p is None or p[1] is None:  # not a round's record, or a training epoch
            continue
        if p[1] == "evaluate":
            evaluated[p[0]] = elapsed(rec["time"])
        ended[p[0]] = max(ended.get(p[0], 0.0), elapsed(rec["time"]))
    return {k: (evaluated[k], ended[k]) for k in evaluated}


def _ms(values: list[float], scale: float = 100.0, digits: int = 2) -> str:
    """'mean +- std' of the values times `scale`; the value alone when there is one; '-' when none."""
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    if len(values) == 1:  # one seed: its value, no spread to show
        return f"{scale * values[0]:.{digits}f}"
    sd = statistics.stdev(values)
    return f"{scale * statistics.mean(values):.{digits}f} +- {scale * sd:.{digits}f}"


def _signed(values: list[float]) -> str:
    """Differences in points, signed, in seed order: '+4.90, -0.31'."""
    return ", ".join(f"{100 * v:+.2f}" for v in values)


def _seeds(n: int) -> str:
    return f"{n} seed{'s' * (n != 1)}"


def table(rows: list[str], per_seed: list[dict[str, dict]], validation: bool = False) -> str:
    what = "validation accuracy (held out of the unlabeled pool)" if validation else "test accuracy"
    lines = [f"| row | {what} % (mean +- std) | seeds | training time per seed |", "|---|---|---|---|"]
    for name in rows:
        got = [r[name] for r in per_seed if name in r]
        if not got:
            continue
        lines.append(f"| {name} | {_ms([g['acc'] for g in got])} | {len(got)} | "
                     f"{statistics.mean(g['seconds'] for g in got) / 60:.1f} min |")
    return "\n".join(lines)


def _selection(rows: list[dict]) -> tuple[str, str, str]:
    """Table cells for the pseudo-labels of result rows: how many were kept (mean +- std), the share
    of them that is correct, and the range of the per-class counts after balancing."""
    kept = [r["pseudo_labels_kept"] for r in rows if r.get("pseudo_labels_kept") is not None]
    per_class = [c for r in rows if r.get("per_class_after_balance") for c in r["per_class_after_balance"]]
    return (_ms(kept, 1, 0) if kept else "-", _ms([r.get("pseudo_label_accuracy_selected") for r in rows]),
            f"{min(per_class):,}-{max(per_class):,}" if per_class else "-")


def _flips(rows: list[dict]) -> dict[str, list[float | None]]:
    """Per flip-rate sequence, each result row's rate (None where the row measured no robustness)."""
    return {kind: [r["flip_rate"][kind] if r.get("flip_rate") else None for r in rows]
            for kind in ("translate", "noise")}


def rounds_table(per_seed: list[dict[str, dict]], target: float = 0.90) -> str:
    """The main run round by round: selection, robustness, elapsed time; then the time to `target`."""
    head = ("| round | model | test accuracy % | pseudo-labels kept | kept that are correct % | per-class after "
            "balancing (min-max) | mCE % | relative mCE | flip rate translate % | flip rate noise % | "
            "elapsed min |")
    lines = [head, "|---|---|---|---|---|---|---|---|---|---|---|"]
    for k, name in enumerate(MAIN):
        got = [r[name] for r in per_seed if name in r]
        if not got:
            continue
        rows = [g["row"] for g in got]
        flips = _flips(rows)
        lines.append(
            f"| {k} | {rows[0]['model']} | {_ms([g['acc'] for g in got])} | "
            f"{' | '.join(_selection(rows))} | {_ms([r['mce'] for r in rows])} | "
            f"{_ms([r['relative_mce'] for r in rows], 1, 3)} | {_ms(flips['translate'])} | {_ms(flips['noise'])} | "
            f"{_ms([g['elapsed'] for g in got], 1 / 60, 1)} |")
    firsts = []
    for s in per_seed:
        hit = [(k, s[n]["elapsed"]) for k, n in enumerate(MAIN) if n in s and s[n]["acc"] >= target]
        firsts.append(f"round {hit[0][0]} at {hit[0][1] / 60:.1f} min" if hit and hit[0][1] is not None
                      else "not reached")
    lines += ["", f"First reaches {100 * target:.0f}% test accuracy, per seed: " + "; ".join(firsts) + "."]
    whole = [_whole_pipeline(s) for s in per_seed if MAIN[-1] in s]
    if whole:
        lines += ["", f"The whole pipeline (teacher and rounds 1-{len(MAIN) - 1}, the last round's robustness "
                  "included), working time per seed: " + "; ".join(whole) + "."]
    return "\n".join(lines)


def _whole_pipeline(rows: dict[str, dict]) -> str:
    """One seed's working time to the end of the last main round, the part of it spent on the
    robustness evaluations (each round's time from its evaluation to its end), and the part spent
    training (the rounds' summed epoch seconds)."""
    ends = [rows[name].get("elapsed_end") for name in MAIN]
    if ends[-1] is None:
        return "not recorded (measured before the end of a round was recorded)"
    if any(e is None for e in ends):  # main rounds recorded in different ways: the total alone
        return f"{ends[-1] / 60:.1f} min"
    robustness = sum(end - rows[name]["elapsed"] for name, end in zip(MAIN, ends))
    training = sum(rows[name]["seconds"] for name in MAIN)
    return (f"{ends[-1] / 60:.1f} min ({training / 60:.1f} min of it training, "
            f"{robustness / 60:.1f} min robustness evaluation)")


def ablation_table(rows: list[str], per_seed: list[dict[str, dict]], seeds: list[int] | None = None) -> str:
    """Round-1 ablations against the main round 1 (ns-1), paired by seed: the accuracy difference (mean
    and each seed's, `seeds` naming per_seed's entries, 0, 1, ... when not given) and, where the row
    measured it, robustness. Empty when no ablation row ran with ns-1."""
    seeds = list(range(len(per_seed))) if seeds is None else seeds
    lines = ["| row | test accuracy % | minus ns-1, paired by seed (points) | per seed (points) | pseudo-labels "
             "kept | kept that are correct % | per-class after balancing (min-max) | relative mCE | "
             "flip rate translate % | flip rate noise % |", "|---|---|---|---|---|---|---|---|---|---|"]
    for name in ["ns-1"] + [r for r in rows if r in ABLATIONS]:
        got = [(seed, s[name], s["ns-1"]) for seed, s in zip(seeds, per_seed) if name in s and "ns-1" in s]
        if not got:
            continue
        rob = [g["row"] for _, g, _ in got if g.get("row") and g["row"].get("relative_mce") is not None]
        flips = _flips(rob)
        diffs = [(seed, g["acc"] - base["acc"]) for seed, g, base in got]
        diff, each = ("-", "-") if name == "ns-1" else (
            _ms([d for _, d in diffs]), ", ".join(f"seed {seed} {100 * d:+.2f}" for seed, d in diffs))
        lines.append(f"| {name} | {_ms([g['acc'] for _, g, _ in got])} | {diff} | {each} | "
                     f"{' | '.join(_selection([g.get('row') or {} for _, g, _ in got]))} | "
                     f"{_ms([r['relative_mce'] for r in rob], 1, 3)} | {_ms(flips['translate'])} | "
                     f"{_ms(flips['noise'])} |")
    return "\n".join(lines) if len(lines) > 3 else ""


def gain_line(per_seed: list[dict[str, dict]]) -> str:
    """What the rounds add, paired by seed: the last main round minus the teacher, and each round's
    mean gain over the round before it. Empty when no seed has the teacher and a later round."""
    final = next((n for n in reversed(MAIN[1:]) if any(n in s and "teacher" in s for s in per_seed)), None)
    pairs = [s for s in per_seed if final and final in s and "teacher" in s]
    if not pairs:
        return ""
    gain = [s[final]["acc"] - s["teacher"]["acc"] for s in pairs]
    text = f"{final} minus the teacher, paired by seed: {_ms(gain)} points (per seed {_signed(gain)})"
    steps = []
    for before, name in zip(MAIN, MAIN[1:MAIN.index(final) + 1]):
        d = [s[name]["acc"] - s[before]["acc"] for s in per_seed if name in s and before in s]
        steps.append(f"{name} {100 * statistics.mean(d):+.2f} ({_seeds(len(d))})" if d else f"{name} -")
    return text + "; mean gain of each round over the one before: " + ", ".join(steps) + "."


def noised_teacher_line(per_seed: list[dict[str, dict]]) -> str:
    """The noised-teacher row as the seed article reports it: its own (noised) teacher and that
    teacher's noised student, against the clean teacher and ns-1 of the same seed. Empty when no seed
    recorded the row's teacher."""
    got = [s for s in per_seed if "teacher_acc" in s.get("noised-teacher", {})]
    if not got:
        return ""
    nt = [s["noised-teacher"] for s in got]
    text = (f"Noised teacher, then noised student ({_seeds(len(got))}): the noised teacher "
            f"{_ms([r['teacher_acc'] for r in nt])}%, its student {_ms([r['acc'] for r in nt])}% "
            f"(student minus teacher {_ms([r['acc'] - r['teacher_acc'] for r in nt])} points)")
    pairs = [(s["noised-teacher"], s) for s in got if "teacher" in s and "ns-1" in s]
    if pairs:
        text += (f"; noised minus clean (the teacher and ns-1 of the same seed), per seed: teacher "
                 f"{_signed([r['teacher_acc'] - s['teacher']['acc'] for r, s in pairs])}, student "
                 f"{_signed([r['acc'] - s['ns-1']['acc'] for r, s in pairs])} points")
    return text + "."


def oracle_line(per_seed: list[dict[str, dict]]) -> str:
    """How far the last main round that ran is from the oracle, paired by seed, and the share of the
    teacher-to-oracle gap it closes. Empty when no seed has both the oracle and a main round."""
    final = next((n for n in reversed(MAIN) if any(n in s and "oracle" in s for s in per_seed)), None)
    pairs = [s for s in per_seed if final and final in s and "oracle" in s]
    if not pairs:
        return ""
    gap = [s["oracle"]["acc"] - s[final]["acc"] for s in pairs]
    text = f"Oracle minus {final}, paired by seed: {_ms(gap)} points (per seed {_signed(gap)})"
    # the share of the gap closed means something only where the oracle beats the teacher on every seed
    if final != "teacher" and all("teacher" in s and s["oracle"]["acc"] > s["teacher"]["acc"] for s in pairs):
        closed = [(s[final]["acc"] - s["teacher"]["acc"]) / (s["oracle"]["acc"] - s["teacher"]["acc"]) for s in pairs]
        text += f"; {final} closes {_ms(closed, 100, 0)}% of the teacher-to-oracle gap"
    elif "teacher" in pairs[0]:
        text += "; the oracle is below the teacher on " + \
            f"{sum(s['oracle']['acc'] <= s['teacher']['acc'] for s in pairs)} of {len(pairs)} seeds"
    return text + "."


def write_results(text: str, block: str = "fashion-mnist") -> None:
    """Put `text` into docs/RESULTS.md between the `block` markers (appended when they are missing)."""
    path = ROOT / "docs" / "RESULTS.md"
    doc = path.read_text()
    begin, end = f"<!-- {block}:begin -->", f"<!-- {block}:end -->"
    body = f"{begin}\n{text}\n{end}"
    if begin in doc:
        doc = doc[:doc.index(begin)] + body + doc[doc.index(end) + len(end):]
    else:
        doc = doc.rstrip() + f"\n\n## Fashion-MNIST ({block})\n\n" + body + "\n"
    path.write_text(doc)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--rows", nargs="+", default=ALL_ROWS, choices=ALL_ROWS)
    ap.add_argument("--quick", action="store_true", help="5,000 unlabeled, short training, seed 0 (a few minutes)")
    ap.add_argument("--data-dir", help="directory of the Fashion-MNIST IDX files")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--out-dir", default=None, help="where the run directories go (one per seed and row); "
                    "another setting (--set) needs another --out-dir")
    ap.add_argument("--records", default=str(RECORDS), help="recorded rows, kept across sittings and machines: "
                    "a recorded row is not re-run, a measured one is recorded (default %(default)s; not with --quick)")
    ap.add_argument("--no-records", action="store_true", help="neither read nor write records")
    ap.add_argument("--recorded-only", action="store_true",
                    help="run nothing: tabulate the recorded rows (rows and seeds without a record are left out)")
    ap.add_argument("--write", action="store_true", help="write the tables into docs/RESULTS.md")
    ap.add_argument("--block", default="fashion-mnist",
                    help="which marked block of docs/RESULTS.md --write replaces (one per setting)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    overrides = (QUICK if args.quick else []) + ([f"data.dir={args.data_dir}"] if args.data_dir else []) + args.overrides
    base = Config.from_yaml(CONFIG).with_overrides(overrides)
    seeds = [0] if args.quick and args.seeds == [0, 1, 2] else args.seeds
    out = Path(args.out_dir or ROOT / "runs" / ("bench-fmnist-quick" if args.quick else "bench-fmnist"))
    records = None if args.no_records or args.quick else Records(Path(args.records), base)
    if args.recorded_only and records is None:
        ap.error("--recorded-only needs the records (drop --no-records / --quick)")
    t0 = time.perf_counter()
    if args.recorded_only:
        got = {s: {r: recs[r] for r in args.rows if r in recs} for s, recs in ((s, records.load(s)) for s in seeds)}
        got = {s: v for s, v in got.items() if v}
    else:
        got = {s: row_runs(args.rows, s, base, out, records) for s in seeds}
    per_seed = list(got.values())
    text = "\n".join([
        f"- Command: `python benchmarks/fashion_mnist.py {' '.join(sys.argv[1:])}`",
        f"- {machine_line()}",
        f"- Config: configs/fashion_mnist.yaml, overrides {overrides or 'none'}; seeds {list(got)}",
        f"- Whole benchmark: {(time.perf_counter() - t0) / 60:.1f} min (rows already on disk"
        f"{' or recorded' if records else ''} are not re-run)",
    ] + ([f"- Records: {records.dir.relative_to(ROOT) if records.dir.is_relative_to(ROOT) else records.dir}; "
          "rows measured by:"] + [f"  - {line}" for line in sittings(got)] if records else []) + [
        "",
        table(args.rows, per_seed, validation=base.data.validation > 0),
    ] + (["", "Main run, round by round (robustness on a seeded subset of "
          f"{base.pipeline.robustness_images or 'all'} test images; elapsed: working time from the run's start "
          "to the round's evaluation, robustness of earlier rounds included, pauses between resumed sittings "
          "left out):", "",
          rounds_table(per_seed)] if any(r in MAIN for r in args.rows) else []))
    ablations = ablation_table(args.rows, per_seed, list(got))
    if ablations:
        text += ("\n\nAblations of round 1 against the main round 1 (same teacher, same seed; robustness only "
                 f"where the row measures it, relative to the round-0 teacher):\n\n{ablations}")
    for line in (gain_line(per_seed), oracle_line(per_seed), noised_teacher_line(per_seed)):
        if line:
            text += "\n\n" + line
    print(text)
    if args.write:
        write_results(text, args.block)


if __name__ == "__main__":
    main()
