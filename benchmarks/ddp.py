"""Student-training throughput with 1 process against N data-parallel processes (torchrun, DDP).

    python benchmarks/ddp.py                         # resnet14, 1x28x28, global batch 256, CPU: 1 vs 2 processes
    python benchmarks/ddp.py --device cuda --procs 1,8

Every side runs the library's own training loop (`noisystudent.train.train`) as a student: global
batch = 64 labeled + 192 pseudo-labeled images (unlabeled_ratio 3) with soft targets, RandAugment
rand-n2-m9, dropout 0.5, stochastic depth to survival 0.8. The global batch is the same for every
process count (each rank takes its part of it), so the sides do the same work per step. Each side
is a fresh `torchrun --standalone --nproc_per_node=N` launch: one warm-up epoch of 2 steps, then one
timed epoch of `--steps` steps; images/s = global images / wall seconds on rank 0 (start-up is not
counted). Launches alternate (1, 2, 1, 2, ...) so drift hits both sides alike; every launch prints
its figure, then the medians, and the last line is the ratio.

CPU threads: the machine's cores are shared out, cores // N torch threads per process (as
`noisystudent run --nproc N` does); on a 2-core machine 2 processes of 1 thread compete with 1
process of 2 threads, so expect little gain there.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="resnet14")
    ap.add_argument("--size", type=int, default=28, help="image side in pixels")
    ap.add_argument("--channels", type=int, default=1)
    ap.add_argument("--batch", type=int, default=64, help="labeled images per global step (x4 with pseudo-labels)")
    ap.add_argument("--steps", type=int, default=6, help="timed training steps per launch")
    ap.add_argument("--repeats", type=int, default=5, help="launches per process count")
    ap.add_argument("--procs", default="1,2", help="process counts to compare, comma-separated (first = baseline)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (process r uses cuda:<local rank>)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    return ap.parse_args()


# ---- one rank of one launch ----------------------------------------------------------------------------
def worker(args: argparse.Namespace) -> None:
    """Train as a student for a warm-up and a timed epoch; rank 0 prints `RESULT {json}`."""
    from common import synthetic_or_fashion
    from noisystudent.augment import RandAugment
    from noisystudent.config import TrainConfig
    from noisystudent.distributed import init_distributed
    from noisystudent.models import create_model
    from noisystudent.targets import Targets
    from noisystudent.train import Augmentation, train

    logging.disable(logging.WARNING)
    dist = init_distributed(torch.device(args.device), os.environ)
    device = dist.device_for(torch.device(args.device))
    b_u = 3 * args.batch
    images = synthetic_or_fashion(args.batch * args.steps + b_u * args.steps, args.size, args.channels)
    n_l = args.batch * args.steps
    labeled = (images[:n_l], Targets.from_labels(torch.arange(n_l) % 10))
    g = torch.Generator().manual_seed(0)
    probs = torch.rand(b_u * args.steps, 10, generator=g).softmax(1)
    soft = Targets(torch.arange(10).expand(len(probs), 10).clone(), probs)
    torch.manual_seed(0)
    model = create_model(args.model, 10, args.channels, drop_rate=0.5, drop_path_rate=0.2)
    cfg = TrainConfig(epochs=1, batch_size=args.batch, unlabeled_ratio=3.0, warmup_epochs=0, eval_every=0)
    shared = dict(labeled=labeled, cfg=cfg, num_classes=10, mean=torch.full((args.channels,), 0.3),
                  std=torch.full((args.channels,), 0.3), seed=0, device=device, progress=False, dist=dist,
                  augmentation=Augmentation(crop_pad=2, randaugment=RandAugment.from_spec("rand-n2-m9")))
    train(model, unlabeled=(images[n_l:n_l + 2 * b_u], Targets(soft.index[:2 * b_u], soft.prob[:2 * b_u])),
          **shared)  # warm-up: 2 steps
    result = train(model, unlabeled=(images[n_l:], soft), **shared)
    if dist.is_main:
        print("RESULT " + json.dumps({"images_per_second": result.images_per_second,
                                      "threads": torch.get_num_threads(), "world": dist.world_size}), flush=True)
    dist.close()


# ---- the launcher ---------------------------------------------------------------------------------------
def launch(args: argparse.Namespace, nproc: int) -> dict:
    """One torchrun launch of `nproc` workers; returns rank 0's RESULT."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    if args.device == "cpu":
        env["OMP_NUM_THREADS"] = str(max(1, cpu_count() // nproc))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", __file__,
           "--worker", "--model", args.model, "--size", str(args.size), "--channels", str(args.channels),
           "--batch", str(args.batch), "--steps", str(args.steps), "--device", args.device]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    lines = [l for l in done.stdout.splitlines() if l.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        sys.exit(f"launch with {nproc} processes failed (exit status {done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def machine(device: str) -> str:
    """The machine line: device, cores, versions, date (the workers' threads are in the table)."""
    import platform
    from datetime import date

    where = f"{torch.cuda.device_count()} x {torch.cuda.get_device_name()}" if device.startswith("cuda") else \
        f"{platform.machine()} CPU"
    return (f"machine: {where}, {cpu_count()} CPU cores, torch {torch.__version__}, python {platform.python_version()}; "
            f"date {date.today()}")


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def main() -> None:
    args = parse_args()
    if args.worker:
        return worker(args)
    procs = [int(p) for p in args.procs.split(",")]
    rates: dict[int, list[float]] = {p: [] for p in procs}
    threads: dict[int, int] = {}
    print(machine(args.device))
    print(f"model {args.model}, {args.channels}x{args.size}x{args.size}, global batch {args.batch} labeled + "
          f"{3 * args.batch} pseudo-labeled, full noise, {args.steps} timed steps per launch, device {args.device}")
    for rep in range(args.repeats):
        for p in procs:
            r = launch(args, p)
            rates[p].append(r["images_per_second"])
            threads[p] = r["threads"]
            print(f"repeat {rep + 1}: {p} process(es) x {r['threads']} thread(s): {r['images_per_second']:,.0f} img/s",
                  flush=True)
    print("| processes | threads each | train images/s (median) | min | max |\n|---:|---:|---:|---:|---:|")
    med = {p: statistics.median(v) for p, v in rates.items()}
    for p, v in rates.items():
        print(f"| {p} | {threads[p]} | {med[p]:,.0f} | {min(v):,.0f} | {max(v):,.0f} |")
    base = procs[0]
    for p in procs[1:]:
        print(f"throughput ratio {p} processes / {base}: {med[p] / med[base]:.3f}")


if __name__ == "__main__":
    main()
