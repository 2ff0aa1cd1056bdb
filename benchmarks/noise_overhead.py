"""Cost of the student's noise: training throughput with full noise / without noise.

    python benchmarks/noise_overhead.py                      # resnet14, 28x28x1, batch 256, CPU
    python benchmarks/noise_overhead.py --model resnet20 --device cuda
    python benchmarks/noise_overhead.py --pixel-noise 0.05   # a third side: full noise + pixel noise

Both sides run the library's own training loop (`noisystudent.train.train`) on the same model
architecture, batch and weak augmentation (crop); "noised" adds RandAugment rand-n2-m9, dropout 0.5
and stochastic depth to survival 0.8 (and with `--pixel-noise`, a third side adds Gaussian pixel
noise, noise.pixel_noise). The sides are timed in turns and the median is taken. The last lines are
the ratios to no noise (goal >= 0.90).
"""

from __future__ import annotations

import argparse
import logging

from common import StudentTraining, add_student_args, interleaved_rates, machine_line
from noisystudent.augment import RandAugment
from noisystudent.models import create_model
from noisystudent.train import Augmentation


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_student_args(ap, steps=8, repeats=5)
    ap.add_argument("--randaugment", default="rand-n2-m9")
    ap.add_argument("--pixel-noise", type=float, default=0.0,
                    help="also time full noise + Gaussian pixel noise of this max std (0: not timed)")
    args = ap.parse_args()
    logging.disable(logging.INFO)

    data = StudentTraining(args)
    sides = {  # (dropout, stochastic depth, RandAugment, pixel noise)
        "no noise": (0.0, 0.0, None, 0.0),
        "full noise": (0.5, 0.2, RandAugment.from_spec(args.randaugment), 0.0),
    }
    if args.pixel_noise:
        sides["full noise + pixel noise"] = (0.5, 0.2, RandAugment.from_spec(args.randaugment), args.pixel_noise)
    models = {k: create_model(args.model, 10, args.channels, drop_rate=d, drop_path_rate=p)
              for k, (d, p, _, _) in sides.items()}
    augs = {k: Augmentation(crop_pad=2, randaugment=ra, pixel_noise=px) for k, (_, _, ra, px) in sides.items()}
    med = interleaved_rates({k: (lambda k=k: data.run(models[k], augs[k])) for k in sides}, args.repeats,
                            args.device)
    print(machine_line(args.device))
    print(f"model {args.model}, {args.channels}x{args.size}x{args.size}, batch {args.batch}, "
          f"{args.steps} steps x {args.repeats} repeats (median), device {args.device}")
    print("| setting | train images/s |\n|---|---:|")
    for k, v in med.items():
        print(f"| {k} | {v:,.0f} |")
    for k in list(sides)[1:]:
        print(f"noise overhead ratio ({k} / no noise): {med[k] / med['no noise']:.3f}")


if __name__ == "__main__":
    main()
