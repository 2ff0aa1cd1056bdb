"""Time the 15 corruptions x 5 severities on the Fashion-MNIST test images (10,000 of 28x28).

    python benchmarks/corruptions.py                      # all 10,000 images, all 75 pairs
    python benchmarks/corruptions.py --limit 500          # a quick run
    python benchmarks/corruptions.py --data-dir DIR --device cuda

Prints one line per corruption (seconds for its 5 severities, and per severity), and last the
total, e.g. `total: 71.3 s for 75 pairs x 10,000 images`. Each call to `corrupt` gets the whole
set; the time includes the uint8 -> float -> uint8 conversions.
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from noisystudent.data.sources import load_idx
from noisystudent.robustness import CORRUPTIONS, SEVERITIES, corrupt


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default="/usr/share/datasets/fashion-mnist",
                    help="folder with t10k-images-idx3-ubyte[.gz] (default: %(default)s)")
    ap.add_argument("--limit", type=int, default=None, help="use only the first N test images")
    ap.add_argument("--device", default="cpu", help="torch device (default: %(default)s)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--corruptions", nargs="+", default=list(CORRUPTIONS), choices=CORRUPTIONS, metavar="NAME")
    args = ap.parse_args()

    device = torch.device(args.device)
    images = load_idx(args.data_dir, "test").images  # (10000, 1, 28, 28) uint8
    if args.limit is not None:
        images = images[: args.limit]
    images = images.to(device)
    n = len(images)
    print(f"{n:,} images {tuple(images.shape[1:])} on {device}; {platform.machine()}, "
          f"{torch.get_num_threads()} torch threads, torch {torch.__version__}", flush=True)

    total = 0.0
    for name in args.corruptions:
        times = []
        for severity in SEVERITIES:
            synchronize(device)
            t0 = time.perf_counter()
            corrupt(images, name, severity, seed=args.seed)
            synchronize(device)
            times.append(time.perf_counter() - t0)
        total += sum(times)
        per = " ".join(f"{t:5.2f}" for t in times)
        print(f"{name:18s} {sum(times):6.2f} s  (severities 1-5: {per})", flush=True)
    pairs = len(args.corruptions) * len(SEVERITIES)
    print(f"total: {total:.1f} s for {pairs} pairs x {n:,} images")


if __name__ == "__main__":
    main()
