"""Cost of the student's noise: training throughput with full noise / without noise.

    python benchmarks/noise_overhead.py                      # resnet14, 28x28x1, batch 256, CPU
    python benchmarks/noise_overhead.py --model resnet20 --device cuda

Both sides run the library's own training loop (`noisystudent.train.train`) on the same model
architecture, batch and weak augmentation (crop); "noised" adds RandAugment rand-n2-m9, dropout 0.5
and stochastic depth to survival 0.8. The two are timed in turns and the median is taken. The last
line is the ratio (goal >= 0.90).
"""

from __future__ import annotations

import argparse
import logging

import torch

from common import interleaved, machine_line, synthetic_or_fashion
from noisystudent.augment import RandAugment
from noisystudent.config import TrainConfig
from noisystudent.models import create_model
from noisystudent.targets import Targets
from noisystudent.train import Augmentation, train


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="resnet14")
    ap.add_argument("--size", type=int, default=28)
    ap.add_argument("--channels", type=int, default=1)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--steps", type=int, default=8, help="training steps per timed call")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--randaugment", default="rand-n2-m9")
    args = ap.parse_args()
    logging.disable(logging.INFO)

    n = args.batch * args.steps
    images = synthetic_or_fashion(n, args.size, args.channels)
    labels = torch.arange(n) % 10
    if args.device.startswith("cuda"):
        images = images.to(args.device)
    mean, std = torch.full((args.channels,), 0.3), torch.full((args.channels,), 0.3)
    cfg = TrainConfig(epochs=1, batch_size=args.batch, warmup_epochs=0, eval_every=0)
    sides = {
        "no noise": (0.0, 0.0, None),
        "full noise": (0.5, 0.2, RandAugment.from_spec(args.randaugment)),
    }
    models = {k: create_model(args.model, 10, args.channels, drop_rate=d, drop_path_rate=p)
              for k, (d, p, _) in sides.items()}
    rate: dict[str, list[float]] = {k: [] for k in sides}

    def step(name: str):
        def go() -> None:
            r = train(models[name], labeled=(images, Targets.from_labels(labels)), unlabeled=None, cfg=cfg,
                      num_classes=10, mean=mean, std=std, seed=0, device=args.device, progress=False,
                      augmentation=Augmentation(crop_pad=2, randaugment=sides[name][2]))
            rate[name].append(r.images_per_second)
        return go

    fns = {k: step(k) for k in sides}
    interleaved(fns, 1, args.device)  # warm-up
    for v in rate.values():
        v.clear()
    interleaved(fns, args.repeats, args.device)
    med = {k: sorted(v)[len(v) // 2] for k, v in rate.items()}
    print(machine_line(args.device))
    print(f"model {args.model}, {args.channels}x{args.size}x{args.size}, batch {args.batch}, "
          f"{args.steps} steps x {args.repeats} repeats (median), device {args.device}")
    print("| setting | train images/s |\n|---|---:|")
    for k, v in med.items():
        print(f"| {k} | {v:,.0f} |")
    print(f"noise overhead ratio (full noise / no noise): {med['full noise'] / med['no noise']:.3f}")


if __name__ == "__main__":
    main()
