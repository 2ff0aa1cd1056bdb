"""Inference throughput against batch size: which `pseudo.batch_size` to use.

    python benchmarks/inference_batch.py                          # resnet8, resnet32_w16 at 28x28x1
    python benchmarks/inference_batch.py --models resnet20 wrn28_2 --size 32 --channels 3
    python benchmarks/inference_batch.py --device cuda --batches 128 512 2048
    python benchmarks/inference_batch.py --models runs/fashion-mnist/round-3/model.safetensors

Pseudo-labeling, test evaluation and the robustness suite all run the model in eval mode through
`noisystudent.inference.iter_logits`, whose batch is `pseudo.batch_size` (results do not depend on
it). On a CPU a smaller batch can be faster: the activations of a 512-image batch overflow the
caches. This script times `iter_logits` over the same images at each batch size, in turns
(a, b, c, a, b, c, ...) so that drift hits all alike, and prints images/s and the ratio to the
reference batch (the last line per model: best batch and its speed-up over the reference), and
checks that the logits do not depend on the batch (max |difference| to the reference batch's). A
model is a registry name (randomly initialised) or a checkpoint file (trained weights).
With --robustness N it then times the pipeline's robustness stage (`robustness_report`: 15
corruptions x 5 severities, two flip rates, FGSM) on N test images at the reference batch and at
the best one, in turns, and prints that ratio too.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from common import interleaved, machine_line, synthetic_or_fashion
from noisystudent.checkpoint import load_model
from noisystudent.inference import iter_logits
from noisystudent.models import create_model
from noisystudent.robustness import robustness_report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=["resnet8", "resnet32_w16"])
    ap.add_argument("--batches", nargs="+", type=int, default=[64, 128, 256, 512])
    ap.add_argument("--reference", type=int, default=512, help="batch the ratios are relative to")
    ap.add_argument("--images", type=int, default=4096, help="images per timed pass")
    ap.add_argument("--size", type=int, default=28)
    ap.add_argument("--channels", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--robustness", type=int, default=0, metavar="N",
                    help="also time robustness_report on N images at the reference and the best batch")
    args = ap.parse_args()
    if args.reference not in args.batches:
        ap.error(f"--reference {args.reference} must be one of --batches")

    print(machine_line(args.device))
    images = synthetic_or_fashion(args.images, args.size, args.channels)
    mean = torch.full((args.channels,), 0.5)
    std = torch.full((args.channels,), 0.25)
    print(f"{args.images} images {args.channels}x{args.size}x{args.size}, median of {args.repeats} interleaved passes")
    for spec in args.models:
        name = spec
        if spec.endswith(".safetensors"):
            model, meta = load_model(spec, args.device)  # channels_last, eval mode
            name = f"{meta['model']['name']} ({Path(spec).parent.name})"
        else:
            model = create_model(spec, num_classes=10, in_chans=args.channels).to(args.device)
            model = model.to(memory_format=torch.channels_last)
        # one pass per batch for the logits, which also warms up the allocator and oneDNN's primitive cache
        logits = {b: torch.cat([out for _, out in iter_logits(model, images, mean=mean, std=std, batch_size=b,
                                                               device=args.device)]) for b in args.batches}

        def pass_at(batch: int):
            def run() -> None:
                for _ in iter_logits(model, images, mean=mean, std=std, batch_size=batch, device=args.device):
                    pass
            return run

        fns = {str(b): pass_at(b) for b in args.batches}
        secs = interleaved(fns, args.repeats, args.device)
        ref = secs[str(args.reference)]
        for b in args.batches:
            s = secs[str(b)]
            print(f"{name:14s} batch {b:5d}: {args.images / s:8.0f} images/s, x{ref / s:.2f} of batch {args.reference}")
        best = min(secs, key=secs.get)
        print(f"{name:14s} best batch {best}: speed-up over batch {args.reference} x{ref / secs[best]:.2f}")
        diff = max((logits[b] - logits[args.reference]).abs().max().item() for b in args.batches)
        print(f"{name:14s} max |logit difference| to batch {args.reference}: {diff:.3g}")
        if args.robustness:
            rob_images = images[:args.robustness]
            labels = torch.zeros(len(rob_images), dtype=torch.long)

            def report_at(batch: int):
                return lambda: robustness_report(model, rob_images, labels, mean=mean, std=std, device=args.device,
                                                 batch_size=batch)

            batches = sorted({args.reference, int(best)})
            rob = interleaved({str(b): report_at(b) for b in batches}, 1, args.device)
            for b in batches:
                print(f"{name:14s} robustness on {len(rob_images)} images, batch {b:5d}: {rob[str(b)]:6.1f} s, "
                      f"x{rob[str(args.reference)] / rob[str(b)]:.2f} of batch {args.reference}")


if __name__ == "__main__":
    main()
