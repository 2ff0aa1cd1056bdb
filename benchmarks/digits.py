"""The embedded demo (`noisystudent run`) for several seeds: mean and spread per round.

    python benchmarks/digits.py                 # seeds 0 1 2, the demo's defaults
    python benchmarks/digits.py --seeds 0 1 2 3 4 --set pipeline.rounds=3

Each seed changes both the labeled/unlabeled/test split (data.split_seed) and the training seed.
Prints a Markdown table (test accuracy per round, mean +- std over seeds) and, last, the gain of
the final student over its round-0 teacher. The demo's defaults were chosen on split seeds 10 and
11, not on the seeds reported here.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from datetime import date

import torch

from noisystudent import Config, run


def mean_std(xs: list[float], percent: bool = True) -> str:
    k = 100 if percent else 1
    m = statistics.mean(xs)
    s = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return f"{k * m:.2f} +- {k * s:.2f}" if percent else f"{m:.3f} +- {s:.3f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--out-dir", default="runs/bench-digits")
    args = ap.parse_args()

    per_seed, seconds = [], []
    for seed in args.seeds:
        cfg = Config().with_overrides([f"out_dir={args.out_dir}", f"name=seed{seed}", f"seed={seed}",
                                       f"data.split_seed={seed}", *args.overrides])
        t0 = time.perf_counter()
        result = run(cfg, progress=False, force=True)
        seconds.append(time.perf_counter() - t0)
        per_seed.append(result.rows)
        accs = ", ".join(f"{100 * r['test_accuracy']:.2f}" for r in result.rows)
        print(f"seed {seed}: test accuracy by round [{accs}] in {seconds[-1]:.0f} s", flush=True)

    rows = per_seed[0]
    print(f"\nmachine: {platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}; "
          f"date {date.today()}; seeds {args.seeds}; overrides {args.overrides or 'none'}")
    print("\n| round | model | test accuracy % | pseudo-label accuracy % | mCE % | relative mCE | "
          "flip rate (translate) % |")
    print("|---|---|---|---|---|---|---|")
    for k, r in enumerate(rows):
        def col(key: str, sub: str | None = None, percent: bool = True) -> str:
            vals = [rs[k][key] if sub is None else rs[k][key][sub] for rs in per_seed if rs[k].get(key) is not None]
            return "-" if not vals else mean_std(vals, percent)
        print(f"| {k} | {r['model']} | {col('test_accuracy')} | {col('pseudo_label_accuracy')} | {col('mce')} | "
              f"{col('relative_mce', percent=False)} | {col('flip_rate', sub='translate')} |")
    print(f"\nwall time per seed: {statistics.mean(seconds):.0f} s (max {max(seconds):.0f} s)")
    gains = [rs[-1]["test_accuracy"] - rs[0]["test_accuracy"] for rs in per_seed]
    print(f"final student - teacher (points): {mean_std(gains)}")


if __name__ == "__main__":
    main()
