"""Pseudo-labeling throughput of one process, and what it means for 300M images a day.

    python benchmarks/labeling.py                               # resnet8 and resnet20, 1x28x28, CPU
    python benchmarks/labeling.py --device cuda --models resnet20,wrn28_2 --size 32 --channels 3

Times the library's own `pseudo_label.predict` (clean teacher, eval mode, batches of
`--batch`, top-k kept) on `--images` images, median of `--repeats` interleaved runs after a
warm-up, and prints images/s per model with its forward FLOPs per image (torch.utils.flop_counter)
and the FLOP/s that makes, so the rate can be scaled to a bigger model. Then the worked estimate of
docs/SCALING.md: the rate needed to label 300M images in 24 hours, how many devices like this one
that takes at the measured rate, and the bytes per image of the stored labels (measured on files
that `PseudoLabels.save` writes for 1,000 classes) against a dense float32 N x 1000 matrix.
"""

from __future__ import annotations

import argparse
import logging
import math

import torch
from torch.utils.flop_counter import FlopCounterMode

from common import interleaved, machine_line, synthetic_or_fashion

N_PAPER = 300_000_000   # unlabeled images (JFT-300M in the paper)
DAY_S = 24 * 3600       # seconds
CLASSES = 1000          # ImageNet classes


def label_bytes(k: int, classes: int = CLASSES) -> int:
    """Bytes per image of a pseudo_labels.safetensors with top-k of `classes`: the size difference
    of two files written by the library, 2,000 and 1,000 images (the header cancels)."""
    import tempfile
    from pathlib import Path

    from noisystudent.pseudo_label import PseudoLabels

    sizes = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in (1000, 2000):
            index = torch.randint(0, classes, (n, k))
            pl = PseudoLabels(index[:, 0], torch.rand(n), index, torch.rand(n, k))
            pl.save(Path(tmp) / f"{n}.safetensors", temperature=1.0)
            sizes.append((Path(tmp) / f"{n}.safetensors").stat().st_size)
    return round((sizes[1] - sizes[0]) / 1000)


def forward_flops(model: torch.nn.Module, image: torch.Tensor) -> int:
    """FLOPs of one eval-mode forward pass over one float image (1, C, H, W)."""
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        model(image)
    return fc.get_total_flops()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="resnet8,resnet20")
    ap.add_argument("--size", type=int, default=28)
    ap.add_argument("--channels", type=int, default=1)
    ap.add_argument("--images", type=int, default=8192)
    ap.add_argument("--batch", type=int, default=512, help="pseudo.batch_size")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    logging.disable(logging.INFO)
    from noisystudent.models import create_model
    from noisystudent.pseudo_label import predict

    images = synthetic_or_fashion(args.images, args.size, args.channels)
    mean, std = torch.full((args.channels,), 0.3), torch.full((args.channels,), 0.3)
    models = {}
    for name in args.models.split(","):
        torch.manual_seed(0)
        models[name] = create_model(name, 10, args.channels).to(args.device, memory_format=torch.channels_last)

    def call(name: str):
        return lambda: predict(models[name], images, mean=mean, std=std, topk=5, batch_size=args.batch,
                               device=args.device, progress=False)

    fns = {name: call(name) for name in models}
    interleaved(fns, 1, args.device)  # warm-up
    seconds = interleaved(fns, args.repeats, args.device)
    print(machine_line(args.device))
    print(f"{args.images:,} images {args.channels}x{args.size}x{args.size}, batch {args.batch}, "
          f"median of {args.repeats} interleaved repeats, device {args.device}")
    print("| model | forward MFLOP/image | pseudo-label images/s | achieved GFLOP/s |\n|---|---:|---:|---:|")
    rate = {name: args.images / s for name, s in seconds.items()}
    for name, r in rate.items():
        flops = forward_flops(models[name], torch.zeros(1, args.channels, args.size, args.size, device=args.device))
        print(f"| {name} | {flops / 1e6:,.1f} | {r:,.0f} | {r * flops / 1e9:,.1f} |")
    need = N_PAPER / DAY_S
    print(f"\n300M images in 24 h need {need:,.0f} images/s:")
    for name, r in rate.items():
        print(f"  {name}: {math.ceil(need / r)} devices like this one ({args.device}) at {r:,.0f} images/s each")
    dense = N_PAPER * CLASSES * 4
    print(f"storage for 300M images, {CLASSES} classes: dense float32 {dense / 1e12:.2f} TB")
    for k in (1, 5, 10, CLASSES):
        b = label_bytes(k)
        print(f"  ours, top-{k}: {b:,} bytes/image, {N_PAPER * b / 1e9:,.1f} GB ({N_PAPER * b / dense:.3f} of dense)")


if __name__ == "__main__":
    main()
