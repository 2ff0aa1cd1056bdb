"""Training throughput of several models, timed in turns in one run: their ratios, not absolute rates.

    python benchmarks/model_speed.py --models resnet8 resnet32_w16 --batch 64      # a teacher's step
    python benchmarks/model_speed.py --models resnet32_w16 resnet44_w16 --randaugment rand-n2-m5 \\
        --dropout 0.5 --drop-path 0.2                                                # a student's noise

Every model runs the library's own training loop (`noisystudent.train.train`) on the same images
and batch, with flip and crop (the config's weak augmentation) plus the noise given. The models are
timed in turns and the median is taken; the last lines give each one's rate as a ratio to the first
model's, which is what carries over to another machine (this CPU's speed drifts 20-30% between runs).
"""

from __future__ import annotations

import argparse
import logging

from common import StudentTraining, add_student_args, interleaved_rates, machine_line
from noisystudent.augment import RandAugment
from noisystudent.models import create_model, list_models
from noisystudent.train import Augmentation


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_student_args(ap, steps=8, repeats=5, model=False)  # --models instead
    ap.add_argument("--models", nargs="+", required=True, choices=list_models(), metavar="MODEL",
                    help="the first is the reference of the ratios")
    ap.add_argument("--randaugment", default="", help="e.g. rand-n2-m5 (default: none, as a clean teacher)")
    ap.add_argument("--dropout", type=float, default=0.0)
    ap.add_argument("--drop-path", type=float, default=0.0)
    args = ap.parse_args()
    logging.disable(logging.INFO)

    data = StudentTraining(args)
    aug = Augmentation(crop_pad=2, flip=True,
                       randaugment=RandAugment.from_spec(args.randaugment) if args.randaugment else None)
    models = {name: create_model(name, 10, args.channels, drop_rate=args.dropout, drop_path_rate=args.drop_path)
              for name in args.models}
    med = interleaved_rates({name: (lambda m=model: data.run(m, aug)) for name, model in models.items()},
                            args.repeats, args.device)
    print(machine_line(args.device))
    noise = f"{args.randaugment or 'no RandAugment'}, dropout {args.dropout}, drop_path {args.drop_path}"
    print(f"{args.channels}x{args.size}x{args.size}, batch {args.batch}, flip and crop, {noise}; "
          f"{args.steps} steps x {args.repeats} repeats (median), device {args.device}")
    print("| model | train images/s |\n|---|---:|")
    for name, v in med.items():
        print(f"| {name} | {v:,.0f} |")
    first = args.models[0]
    for name in args.models[1:]:
        print(f"ratio {name} / {first}: {med[name] / med[first]:.3f} (time per image x{med[first] / med[name]:.2f})")


if __name__ == "__main__":
    main()
