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

from common import StudentTraining, add_student_args, machine_line, sync
from noisystudent.augment import RandAugment
from noisystudent.models import create_model
from noisystudent.tensors import to_model_input
from noisystudent.train import Augmentation


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
    add_student_args(ap, steps=10, repeats=3)
    args = ap.parse_args()
    logging.disable(logging.INFO)

    data = StudentTraining(args)
    model = create_model(args.model, 10, args.channels, drop_rate=0.5, drop_path_rate=0.2).to(args.device)
    x = to_model_input(data.images[:args.batch], data.mean.to(args.device), data.std.to(args.device))
    flops = step_flops(model.to(memory_format=torch.channels_last), x)
    aug = Augmentation(crop_pad=2, randaugment=RandAugment(2, 9))

    peaks = [peak_matmul_flops(args.device)]
    data.run(model, aug)  # warm-up
    achieved = []
    for _ in range(args.repeats):
        achieved.append(data.run(model, aug) / args.batch * flops)  # FLOP/s
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
