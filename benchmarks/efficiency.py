"""How close student training runs to the machine's fp32 peak.

    python benchmarks/efficiency.py                       # resnet14 student, 28x28x1, batch 256, full noise
    python benchmarks/efficiency.py --model resnet20 --device cuda

Achieved FLOP/s = FLOPs of one training step (forward + backward, counted by
torch.utils.flop_counter) x steps/s of the library's training loop with full noise. Peak = fp32
matmul FLOP/s measured by this script on the same device just before and after (median). The last
line is the ratio (goal >= 0.40 on CPU for the default student at 28x28).
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from common import machine_line, sync, synthetic_or_fashion
from noisystudent.augment import RandAugment
from noisystudent.config import TrainConfig
from noisystudent.models import create_model
from noisystudent.targets import Targets
from noisystudent.tensors import to_model_input
from noisystudent.train import Augmentation, train


def peak_matmul_flops(device: str, n: int = 2048, repeats: int = 10) -> float:
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    for _ in range(2):
        a @ b
    times = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        a @ b
        sync(device)
        times.append(time.perf_counter() - t0)
    return 2 * n**3 / statistics.median(times)


def step_flops(model: torch.nn.Module, x: torch.Tensor) -> int:
    model.train()
    with FlopCounterMode(display=False) as fc:
        model(x).float().logsumexp(1).mean().backward()
    model.zero_grad(set_to_none=True)
    return fc.get_total_flops()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="resnet14")
    ap.add_argument("--size", type=int, default=28)
    ap.add_argument("--channels", type=int, default=1)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    logging.disable(logging.INFO)

    n = args.batch * args.steps
    images = synthetic_or_fashion(n, args.size, args.channels)
    labels = torch.arange(n) % 10
    mean, std = torch.full((args.channels,), 0.3), torch.full((args.channels,), 0.3)
    model = create_model(args.model, 10, args.channels, drop_rate=0.5, drop_path_rate=0.2).to(args.device)
    x = to_model_input(images[:args.batch].to(args.device), mean.to(args.device), std.to(args.device))
    flops = step_flops(model.to(memory_format=torch.channels_last), x)
    cfg = TrainConfig(epochs=1, batch_size=args.batch, warmup_epochs=0, eval_every=0)
    aug = Augmentation(crop_pad=2, randaugment=RandAugment(2, 9))

    def run_once() -> float:
        r = train(model, labeled=(images, Targets.from_labels(labels)), unlabeled=None, cfg=cfg, num_classes=10,
                  mean=mean, std=std, seed=0, device=args.device, progress=False, augmentation=aug)
        return r.images_per_second / args.batch * flops  # FLOP/s

    peaks = [peak_matmul_flops(args.device)]
    run_once()  # warm-up
    achieved = []
    for _ in range(args.repeats):
        achieved.append(run_once())
        peaks.append(peak_matmul_flops(args.device))
    peak, got = statistics.median(peaks), statistics.median(achieved)
    print(machine_line(args.device))
    print(f"model {args.model}, {args.channels}x{args.size}x{args.size}, batch {args.batch}, full noise, "
          f"device {args.device}")
    print(f"training FLOPs per image (forward + backward): {flops / args.batch / 1e6:,.1f} MFLOP")
    print(f"achieved: {got / 1e9:,.1f} GFLOP/s; peak fp32 matmul: {peak / 1e9:,.1f} GFLOP/s "
          f"(min {min(peaks) / 1e9:,.1f}, max {max(peaks) / 1e9:,.1f})")
    print(f"efficiency (achieved / peak): {got / peak:.3f}")


if __name__ == "__main__":
    main()
