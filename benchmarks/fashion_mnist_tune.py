"""Tuning the Fashion-MNIST student on a validation split (never the test set).

    python benchmarks/fashion_mnist_tune.py                       # every variant, seed 0
    python benchmarks/fashion_mnist_tune.py --variants base r8-e10 --seeds 0 1

The protocol of configs/fashion_mnist.yaml with `data.validation=5000`: 5,000 images of the
59,000-image unlabeled pool (seeded) are held out with their labels and replace the test set, so
every figure here is a validation accuracy. One round-0 teacher per seed is trained once and
shared; each variant then trains one noisy-student round from it (robustness and report off, for
time). Variants change one or two things at about the same compute per round (images seen x
model cost), so the comparison is what a fixed time budget buys:

  base          the config before this tuning (resnet14 student, rand-n2-m9, dropout 0.5, drop_path
                0.2, threshold 0.3, 5 passes over the selected pseudo-labels); the variants below
                change that, so a rerun reproduces the recorded figures whatever the YAML holds now
  r8-e10        base with an equal-size student (resnet8, about half the cost per image), 10 passes
  m5            milder input noise rand-n2-m5 (everything else as base)
  m5-t08        milder input noise rand-n2-m5, and threshold 0.8 (fewer, cleaner pseudo-labels)
  no-noise      no RandAugment, dropout or stochastic depth (the paper's ablation)
  m5-lr02       rand-n2-m5 and student.lr=0.2: the student's step holds 256 images against the
                teacher's 64, so 0.2 is the teacher's 0.05 scaled linearly with the batch
  m5-lr04       rand-n2-m5 and student.lr=0.4 (benchmarks/fashion_mnist_recipe.py: with true labels
                at the students' step, lr 0.05 is far too slow)
  m9-lr04       base (rand-n2-m9) with student.lr=0.4: does the paper's noise pay at a working lr?
  no-noise-lr04 no-noise with student.lr=0.4: the noise ablation at a working lr
  m5-lr04-e3    m5-lr04 with 3 passes instead of 5 (0.6 of the compute: the 60-minute budget)
  m5-lr04-input m5-lr04 without model noise (dropout 0, drop_path 0): input noise alone
  m5-lr04-d02   m5-lr04 with milder model noise (dropout 0.2, drop_path 0.1)
  m5-lr04-hard  m5-lr04 with hard pseudo-labels
  m5-lr04-r32w16-e7  m5-lr04 with a narrower, deeper student (resnet32_w16: 467k parameters against
                resnet14's 696k, faster per image) for 7 passes: about resnet14's 5-pass training time
  m5-lr04-w16   m5-lr04 with narrow students at the config's 5 passes: resnet32_w16 in rounds 1 and 2,
                resnet44_w16 (661k) in round 3, for the 60-minute budget (with --rounds 3)
  m5-lr04-warm  m5-lr04 with resnet14 students in all three rounds, each from the weights of the one
                before (model.warm_start; round 1, from the resnet8 teacher, starts fresh and is
                m5-lr04's round 1, borrowed from its run when that exists): later rounds add up passes
  m5-lr04-w16-warm  the same with narrow students: resnet32_w16 in all three rounds (round 1 is
                m5-lr04-w16's), for the 60-minute budget; the config's models since 2026-12-05
  m5-lr04-w16-warm-input  m5-lr04-w16-warm without model noise (dropout 0, drop_path 0) in every round:
                does the warm-started chain, whose students train 3 x 5 passes, do better on input
                noise alone, as one round does (m5-lr04-input)?
  m5-lr04-w16-warm-t05  m5-lr04-w16-warm with soft labels at temperature 0.5 (sharpened; the threshold
                still reads the T=1 confidence): for a teacher whose labels are soft (r8-noise-e300)
  m5-lr04-w16-warm-px05  m5-lr04-w16-warm with Gaussian pixel noise in the students' input noise
                (noise.pixel_noise=0.05: std drawn per image up to 12.75 gray levels): RandAugment never
                textures the flat background, and the students' noise flips rise over the rounds
  m5-lr04-w16-warm-px02  the same at 0.02 (up to 5.1 gray levels): 0.05 cost 0.3-0.7 points on this
                split; does a milder setting keep the accuracy?
  m5-lr04-w16-e15  one round of m5-lr04-w16-warm's student for 15 passes instead of 5 (with --rounds 1):
                the three warm-started rounds' training in one, from the teacher's labels alone. Do the
                rounds pay for themselves, or would the same passes do as well without relabeling?
                2026-12-06, 2 seeds: 87.73% against the chain's 88.38% on one machine (docs/RESULTS.md)
  m5-lr04-s2-warm  m5-lr04-w16-warm with resnet32_w16_s2 students (the same blocks behind a stride-2 stem:
                every stage at half the resolution, a pass in about 0.3 of the time): the chain in under
                a third of the training time. 2026-12-06, 2 seeds: 87.20% against 88.38 (docs/RESULTS.md)
  m5-lr04-s2-warm-e15  the same with 15 passes per round: about the config's training time, three times
                the passes (with true labels at equal minutes, 91.18% against resnet32_w16's 88.76%).
                2026-12-06, 2 seeds: 89.13% against 88.38, in 0.88 of the training time; a fourth round
                (--rounds 4, 2026-12-07) ends level with the third: 89.02%
  m5-lr04-s2-warm-e9  the same with 9 passes per round, for --rounds 5: m5-lr04-s2-warm-e15's 45 passes
                with the labels refreshed four times instead of twice (more rounds of 15 passes would pass
                the hour). 2026-12-07, 2 seeds: 88.55% against 89.13 (docs/RESULTS.md "More rounds")
  m5-lr04-s2-warm-e15-mix1  m5-lr04-s2-warm-e15 with mixup in the students' input noise (noise.mixup=1.0:
                a row keeps a weight in [0.5, 1] of its own image and target, uniformly): mixing targets is
                what Arazo et al. (2020) found to stop a pseudo-labeling student memorising the labels' errors.
                2026-12-07, 2 seeds, round 1: 87.50% against 87.34 (docs/RESULTS.md "Mixup in the students' noise")
  m5-lr04-s2-warm-e15-mix03  the same with noise.mixup=0.3 (most rows mixed lightly). 2026-12-07, 2 seeds:
                round 1 88.00% against 87.34, round 3 89.14 against 89.13
  m5-lr04-s2-warm-e9-mix03  m5-lr04-s2-warm-e9 (5 rounds of 9 passes with --rounds 5) with noise.mixup=0.3:
                Arazo et al. found mixup to be what lets frequent relabeling pay; without it the 9-pass
                chain ended 0.58 below the 15-pass one. 2026-12-07, 3 seeds: 89.15% (88.94, 89.74, 88.76)
                against m5-lr04-s2-warm-e15's 88.85 (89.08, 89.18, 88.30), paired +0.29 +- 0.38
  m5-lr04-s2-warm-pc3240-e25  m5-lr04-s2-warm-e15 keeping only each class's 3,240 most confident
                pseudo-labels (pseudo.per_class=3240: 60% of the 54,000-image pool, the paper's selection of
                the most confident images per class) for 25 passes, the same number of steps: the
                teacher's top 60% per class are 93.0% right against 84.4% for all (seed 0). 2026-12-07,
                2 seeds: round 1 88.07% against 87.34, round 3 88.46 against 89.13 (docs/RESULTS.md
                "Fewer, cleaner pseudo-labels")
  m5-lr04-s2-warm-e15-cur  m5-lr04-s2-warm-e15 with a curriculum (pseudo.curriculum=[0.6,0.8,1.0]): round 1
                trains on each class's most confident 60%, round 2 on 80%, round 3 on all, each repeated up
                to the same per-class target (the same steps): m5-lr04-s2-warm-pc3240-e25's round 1, with the
                hard images given back in the later rounds. 2026-12-07, 3 seeds, paired on one machine:
                round 1 -0.01, round 3 88.48% against 88.38 (+0.10 +- 0.21; docs/RESULTS.md "A curriculum")
  m5-lr04-r20s2-warm-e9  m5-lr04-s2-warm-e15 with resnet20_s2 students (resnet20's blocks, twice as wide: 32-64-128
                channels, behind the stride-2 stem) for 9 passes per round, about the same minutes: on true
                labels at equal minutes 91.52% against resnet32_w16_s2's 91.18 (one seed, docs/RESULTS.md
                "Stride-2 stems"). 2026-12-08, 2 seeds, paired on one machine: round 3 88.42% against
                88.34 (+0.18, -0.02) in 1.21 times the training time (docs/RESULTS.md "resnet20_s2 students")
  m5-lr04-s2-warm-u7-e19  m5-lr04-s2-warm-e15 with 32 labeled and 224 pseudo-labeled images per step
                (student.unlabeled_ratio=7, FixMatch's mu) instead of 64 and 192: the same 256 images per
                step and lr, 19 passes for about the same images seen (241 steps a pass against 307). The
                labeled images are an eighth of each step instead of a quarter, seen 147 times a round
                instead of 295. 2026-12-08, 2 seeds, paired on one machine: round 1 +0.08, round 3 87.78%
                against 88.34 (-0.36, -0.76; docs/RESULTS.md "Label propagation, and 7 pseudo-labels")
The three before m5-lr04-r32w16-e7 check on the validation split what the test-set ablations of
round 1 suggested on seed 0 (docs/RESULTS.md, 2026-12-03): that at 5 passes the model noise costs accuracy and hard
labels do not; the config changes only if they hold here, on several seeds.

With `--rounds K` every variant runs K rounds from the shared teacher (a finished 1-round run
directory is continued, not retrained), the rows are those of round K, and each run also prints its
working time for rounds 1..K (pseudo-labeling and evaluation included, pauses between sittings not).

Prints one row per variant and seed: validation accuracy, pseudo-labels kept and their accuracy,
minutes of training (rounds 1..K); then mean +- std per variant.

`--teacher T` replaces the shared round-0 teacher (default r8, the config's); `--variants` with no
name trains and prints the teachers only (validation accuracy of round 0, mean +- std over seeds):

  r8              the config's teacher: resnet8, 150 passes over the 1,000 labels, flip and crop only
  r8-e300         the same for 300 passes
  r8-noise-e300   noised like a student (noise.noise_teacher: rand-n2-m5, dropout 0.5, stochastic depth
                  0.2) for 300 passes: the paper's teacher is trained with the same noise
  w16-noise-e300  the same with the students' architecture, resnet32_w16 (trained at 450-520 images/s
                  against resnet8's ~700, configs/fashion_mnist.yaml); with model.warm_start the round-1
                  student then starts from the teacher. Not run yet (2026-12-06)
  w16             the config's teacher training (150 passes, flip and crop only) with the students'
                  architecture, resnet32_w16: with model.warm_start every round, round 1 included, starts
                  from the model before it, so the final student adds the teacher's passes to its 15.
                  2026-12-06, 2 seeds: teacher +1.36 points, round 3 level (+0.03; docs/RESULTS.md)
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

from common import machine_line
from fashion_mnist import _round_elapsed, _round_seconds, _run_starts
from noisystudent import Config, run
from noisystudent.report.run_files import read_metrics, record_round

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "configs" / "fashion_mnist.yaml"
# the YAML's noise and models before this tuning, so the shared teacher's run directory (made then) still
# matches its config; base and r8-e10 keep them, the other variants set their own noise (and lr: 0.05 was
# the student's lr before this tuning) and some their own models
BASE = ["data.validation=5000", "pipeline.robustness=false", "pipeline.report=false",
        "noise.randaugment=rand-n2-m9", "student.lr=0.05",
        "model.names=[resnet8,resnet14,resnet14,resnet20]", "model.warm_start=false",
        "student.epochs=5"]  # the YAML's 15 since 2026-12-07 (with resnet32_w16_s2 students)
M5_LR04 = ["noise.randaugment=rand-n2-m5", "student.lr=0.4"]  # the config's student since this tuning
W16_WARM = [*M5_LR04, "model.names=[resnet8,resnet32_w16,resnet32_w16,resnet32_w16]",
            "model.warm_start=true"]  # the config's students of 2026-12-05 to 06
S2_WARM = [*M5_LR04, "model.names=[resnet8,resnet32_w16_s2,resnet32_w16_s2,resnet32_w16_s2]",
           "model.warm_start=true"]  # the config's students since 2026-12-07 (with student.epochs=15)
VARIANTS = {
    "base": [],
    "r8-e10": ["model.names=[resnet8]", "student.epochs=10"],
    "m5": ["noise.randaugment=rand-n2-m5"],
    "m5-t08": ["noise.randaugment=rand-n2-m5", "pseudo.threshold=0.8"],
    "no-noise": ["noise.randaugment=", "noise.dropout=0", "noise.drop_path=0"],
    "m5-lr02": ["noise.randaugment=rand-n2-m5", "student.lr=0.2"],
    "m5-lr04": M5_LR04,
    "m9-lr04": ["student.lr=0.4"],
    "no-noise-lr04": ["noise.randaugment=", "noise.dropout=0", "noise.drop_path=0", "student.lr=0.4"],
    "m5-lr04-e3": [*M5_LR04, "student.epochs=3"],
    "m5-lr04-input": [*M5_LR04, "noise.dropout=0", "noise.drop_path=0"],
    "m5-lr04-d02": [*M5_LR04, "noise.dropout=0.2", "noise.drop_path=0.1"],
    "m5-lr04-hard": [*M5_LR04, "pseudo.mode=hard"],
    "m5-lr04-r32w16-e7": [*M5_LR04, "model.names=[resnet8,resnet32_w16]", "student.epochs=7"],
    "m5-lr04-w16": [*M5_LR04, "model.names=[resnet8,resnet32_w16,resnet32_w16,resnet44_w16]"],
    "m5-lr04-warm": [*M5_LR04, "model.names=[resnet8,resnet14,resnet14,resnet14]", "model.warm_start=true"],
    "m5-lr04-w16-warm": W16_WARM,
    "m5-lr04-w16-warm-input": [*W16_WARM, "noise.dropout=0", "noise.drop_path=0"],
    "m5-lr04-w16-warm-t05": [*W16_WARM, "pseudo.temperature=0.5"],
    "m5-lr04-w16-warm-px05": [*W16_WARM, "noise.pixel_noise=0.05"],
    "m5-lr04-w16-warm-px02": [*W16_WARM, "noise.pixel_noise=0.02"],
    "m5-lr04-w16-e15": [*W16_WARM, "student.epochs=15"],
    "m5-lr04-s2-warm": S2_WARM,
    "m5-lr04-s2-warm-e15": [*S2_WARM, "student.epochs=15"],
    "m5-lr04-s2-warm-e9": [*S2_WARM, "student.epochs=9"],
    "m5-lr04-s2-warm-e15-mix1": [*S2_WARM, "student.epochs=15", "noise.mixup=1.0"],
    "m5-lr04-s2-warm-e15-mix03": [*S2_WARM, "student.epochs=15", "noise.mixup=0.3"],
    "m5-lr04-s2-warm-e9-mix03": [*S2_WARM, "student.epochs=9", "noise.mixup=0.3"],
    "m5-lr04-s2-warm-pc3240-e25": [*S2_WARM, "student.epochs=25", "pseudo.per_class=3240"],
    "m5-lr04-s2-warm-e15-cur": [*S2_WARM, "student.epochs=15", "pseudo.curriculum=[0.6,0.8,1.0]"],
    "m5-lr04-r20s2-warm-e9": [*S2_WARM, "model.names=[resnet8,resnet20_s2,resnet20_s2,resnet20_s2]",
                              "student.epochs=9"],
    "m5-lr04-s2-warm-u7-e19": [*S2_WARM, "student.batch_size=32", "student.unlabeled_ratio=7", "student.epochs=19"],
}
# the students' noise of the config, given to the teacher run only (a variant keeps its own students' noise)
TEACHER_NOISE = ["noise.randaugment=rand-n2-m5", "noise.dropout=0.5", "noise.drop_path=0.2"]
# teacher -> (round-0 model, None = the config's resnet8; overrides of the teacher's training, also saved
# in the variants' configs; overrides of the teacher run only)
TEACHERS = {
    "r8": (None, [], []),
    "r8-e300": (None, ["teacher.epochs=300"], []),
    "r8-noise-e300": (None, ["teacher.epochs=300", "noise.noise_teacher=true"], TEACHER_NOISE),
    "w16-noise-e300": ("resnet32_w16", ["teacher.epochs=300", "noise.noise_teacher=true"], TEACHER_NOISE),
    "w16": ("resnet32_w16", [], []),
}
# variant -> (variant, round): rounds 1..round are the same computation in both (same settings, same
# seeds), so a finished run of the second lends them to the first instead of training them again
SHARED_ROUNDS = {"m5-lr04-warm": ("m5-lr04", 1),  # a student larger than resnet8: warm start does not apply
                 "m5-lr04-w16-warm": ("m5-lr04-w16", 1)}


def borrow_rounds(src: Path, dst: Path, last: int) -> bool:
    """Copy rounds 1..last of the finished run `src` into the new run `dst`, with the metrics records
    up to the end of round `last` (so its training and working minutes count); False if there is
    nothing to borrow (`src` lacks them, or `dst` has them already)."""
    if (dst / f"round-{last}" / "model.json").exists() or not (src / f"round-{last}" / "model.json").exists():
        return False
    for k in range(1, last + 1):
        shutil.copytree(src / f"round-{k}", dst / f"round-{k}", dirs_exist_ok=True)
    records = read_metrics(src / "metrics.jsonl")
    ends = [i for i, rec in enumerate(records) if (r := record_round(rec)) is not None and r[0] <= last]
    (dst / "metrics.jsonl").write_text("".join(json.dumps(rec) + "\n" for rec in records[: ends[-1] + 1])
                                       if ends else "")
    return True


def with_teacher(cfg: Config, model: str | None, rounds: int) -> Config:
    """`cfg` with round 0's architecture replaced by `model` (None: unchanged); rounds 1..rounds keep theirs.
    A student run's list covers at least the rounds `cfg` names, so its run directory continued with
    more rounds (`--rounds`) keeps the same model.names; the teacher's run (rounds 0) names `model` alone."""
    if model is None:
        return cfg
    last = max(rounds, len(cfg.model.names) - 1) if rounds else 0
    names = [model, *(cfg.model_for_round(k) for k in range(1, last + 1))]
    return cfg.with_overrides([f"model.names=[{','.join(names)}]"])


def train_minutes(records: list[dict]) -> dict[int, float]:
    """Training minutes per round, from a run directory's metrics records."""
    return {k: s / 60 for k, s in _round_seconds(records).items()}


def working_minutes(records: list[dict], run_dir: Path) -> float:
    """Working minutes from the first sitting's start to the last round's evaluation."""
    elapsed = _round_elapsed(records, _run_starts(records, run_dir / "run.log"))
    return elapsed[max(elapsed)][0] / 60 if elapsed else 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS),
                    help="student variants (none: train and print the teachers only)")
    ap.add_argument("--teacher", default="r8", choices=list(TEACHERS), help="the shared round-0 teacher")
    ap.add_argument("--rounds", type=int, default=1, help="noisy-student rounds per variant (default 1)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--out-dir", type=Path, default=ROOT / "runs" / "fmnist-tune")
    args = ap.parse_args()
    if args.rounds < 1:
        ap.error("--rounds must be at least 1")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    base = Config.from_yaml(CONFIG).with_overrides(BASE + args.overrides)
    print(machine_line())
    print(f"command: python benchmarks/fashion_mnist_tune.py {' '.join(sys.argv[1:])}")
    t_model, t_overrides, t_noise = TEACHERS[args.teacher]
    t_name = "teacher" if args.teacher == "r8" else f"teacher-{args.teacher}"  # r8: the run names of before
    suffix = "" if args.teacher == "r8" else f"-{t_name}"  # of the variants' runs
    rows: dict[str, list[dict]] = {v: [] for v in args.variants}
    t_rows: list[dict] = []
    t0 = time.perf_counter()
    for seed in args.seeds:
        seeded = base.with_overrides([f"out_dir={args.out_dir}", f"seed={seed}", f"data.split_seed={seed}",
                                      *t_overrides])
        teacher = with_teacher(seeded.with_overrides([f"name=seed{seed}-{t_name}", "pipeline.rounds=0",
                                                      *t_noise]), t_model, 0)
        t_row = run(teacher, progress=False).rows[0]
        t_row["minutes"] = train_minutes(read_metrics(args.out_dir / teacher.name / "metrics.jsonl")).get(0, 0.0)
        t_rows.append(t_row)
        print(f"seed {seed} teacher {args.teacher} ({teacher.model_for_round(0)}): validation "
              f"{100 * t_row['test_accuracy']:.2f}% ({t_row['minutes']:.1f} min)", flush=True)
        for name in args.variants:
            cfg = with_teacher(seeded.with_overrides([f"name=seed{seed}-{name}{suffix}",
                                                      f"pipeline.rounds={args.rounds}", *VARIANTS[name]]),
                               t_model, args.rounds)
            if not (args.out_dir / cfg.name / "round-0" / "model.json").exists():
                shutil.copytree(args.out_dir / teacher.name / "round-0", args.out_dir / cfg.name / "round-0",
                                dirs_exist_ok=True)
            if name in SHARED_ROUNDS:
                other, last = SHARED_ROUNDS[name]
                if borrow_rounds(args.out_dir / f"seed{seed}-{other}{suffix}", args.out_dir / cfg.name, last):
                    shared = f"round {last} is" if last == 1 else f"rounds 1-{last} are"
                    print(f"seed {seed} {name}: {shared} {other}'s (the same computation), copied", flush=True)
            result = run(cfg, progress=False).rows
            r = result[args.rounds]
            records = read_metrics(args.out_dir / cfg.name / "metrics.jsonl")
            minutes = train_minutes(records)
            per_round = [minutes.get(k, 0.0) for k in range(1, args.rounds + 1)]
            r["minutes"] = sum(per_round)
            r["teacher"] = t_row["test_accuracy"]
            rows[name].append(r)
            if args.rounds > 1:
                print(f"seed {seed} {name}: " + "; ".join(
                    f"round {k} {cfg.model_for_round(k)} {100 * result[k]['test_accuracy']:.2f}% "
                    f"({per_round[k - 1]:.1f} min)" for k in range(1, args.rounds + 1))
                      + f"; working time {working_minutes(records, args.out_dir / cfg.name):.1f} min", flush=True)
            print(f"seed {seed} {name:9s}: validation {100 * r['test_accuracy']:.2f}% (teacher "
                  f"{100 * r['teacher']:.2f}%), kept {r['pseudo_labels_kept']:,} at "
                  f"{100 * r['pseudo_label_accuracy_selected']:.1f}% correct, {r['minutes']:.1f} min", flush=True)
    print(f"\nwhole run {(time.perf_counter() - t0) / 60:.1f} min; config {CONFIG.name} with {BASE + args.overrides}")
    acc = [100 * r["test_accuracy"] for r in t_rows]
    spread = f" +- {statistics.stdev(acc):.2f}" if len(acc) > 1 else ""
    print(f"teacher {args.teacher} {t_model or base.model_for_round(0)} {t_overrides + t_noise}: validation "
          f"{statistics.mean(acc):.2f}{spread}% ({', '.join(f'{a:.2f}' for a in acc)}), training "
          f"{statistics.mean(r['minutes'] for r in t_rows):.1f} min, {len(acc)} seeds")
    if not args.variants:
        return
    rounds = f" (rounds 1-{args.rounds})" if args.rounds > 1 else ""
    print(f"| variant | round-{args.rounds} validation accuracy % | gain over teacher (points) | "
          f"training min{rounds} | seeds |")
    print("|---|---|---|---|---|")
    for name, rs in rows.items():
        acc = [100 * r["test_accuracy"] for r in rs]
        gain = [100 * (r["test_accuracy"] - r["teacher"]) for r in rs]
        spread = f" +- {statistics.stdev(acc):.2f}" if len(acc) > 1 else ""  # one seed: no spread to show
        print(f"| {name} | {statistics.mean(acc):.2f}{spread} | {statistics.mean(gain):+.2f} | "
              f"{statistics.mean(r['minutes'] for r in rs):.1f} | {len(rs)} |")


if __name__ == "__main__":
    main()
