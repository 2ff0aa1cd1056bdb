"""What the students' training budget buys with true labels: a recipe check on a validation split.

    python benchmarks/fashion_mnist_recipe.py                          # every variant, resnet8, 1 pass
    python benchmarks/fashion_mnist_recipe.py --variants clean m5-lr02 --model resnet14 --epochs 3
    python benchmarks/fashion_mnist_recipe.py --variants full-lr04 --model resnet20_w16 --epochs 11

Why: the oracle row of benchmarks/fashion_mnist.py (resnet20 on all 60,000 labels with the students'
noise, step and 5 passes) ended below the 1,000-label teacher, so the student's recipe itself, not
pseudo-labeling, may be what limits the students. Here every variant trains one model on 55,000
true labels of the training set and is scored on the other 5,000 (a seeded validation split; the
test set is never read). One step is 256 images, as a student's (64 labeled + 192 pseudo-labeled).
Variants change the learning rate and the noise:

  clean-lr005   crop 2 px + flip only, lr 0.05 (the config's student lr)
  clean-lr02    crop + flip, lr 0.2 (0.05 scaled linearly with the 4x larger step)
  m5-lr005      + RandAugment rand-n2-m5, lr 0.05
  m5-lr02       + rand-n2-m5, lr 0.2
  full-lr005    + rand-n2-m5, dropout 0.5, stochastic depth 0.2 (the config's student noise), lr 0.05
  full-lr02     the same at lr 0.2
  full-m9-lr02  rand-n2-m9 (the paper's), dropout 0.5, stochastic depth 0.2, lr 0.2
  clean-lr04, full-lr04, full-m9-lr04   the same at lr 0.4

Prints, per variant: validation accuracy, the last pass's training loss, minutes of training.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import torch

from common import machine_line
from noisystudent.augment import RandAugment
from noisystudent.config import TrainConfig
from noisystudent.data.sources import load_idx
from noisystudent.evaluate import accuracy
from noisystudent.models import create_model
from noisystudent.targets import Targets
from noisystudent.tensors import channel_stats
from noisystudent.train import Augmentation, train

# variant -> (RandAugment spec or None, dropout, drop_path, lr)
VARIANTS = {
    "clean-lr005": (None, 0.0, 0.0, 0.05),
    "clean-lr02": (None, 0.0, 0.0, 0.2),
    "m5-lr005": ("rand-n2-m5", 0.0, 0.0, 0.05),
    "m5-lr02": ("rand-n2-m5", 0.0, 0.0, 0.2),
    "full-lr005": ("rand-n2-m5", 0.5, 0.2, 0.05),
    "full-lr02": ("rand-n2-m5", 0.5, 0.2, 0.2),
    "full-m9-lr02": ("rand-n2-m9", 0.5, 0.2, 0.2),
    "clean-lr04": (None, 0.0, 0.0, 0.4),
    "full-lr04": ("rand-n2-m5", 0.5, 0.2, 0.4),
    "full-m9-lr04": ("rand-n2-m9", 0.5, 0.2, 0.4),
}
VALIDATION = 5000  # images held out of the 60,000 training images


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--model", default="resnet8")
    ap.add_argument("--epochs", type=int, default=1, help="passes over the 55,000 training images")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data-dir", default="/usr/share/datasets/fashion-mnist")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    print(machine_line())
    print(f"command: python benchmarks/fashion_mnist_recipe.py {' '.join(sys.argv[1:])}", flush=True)
    data = load_idx(args.data_dir, "train")
    perm = torch.randperm(len(data), generator=torch.Generator().manual_seed(args.seed))
    val, tr = data.subset(perm[:VALIDATION]), data.subset(perm[VALIDATION:])
    mean, std = channel_stats(tr.images)
    rows = []
    for name in args.variants:
        spec, dropout, drop_path, lr = VARIANTS[name]
        torch.manual_seed(args.seed)
        model = create_model(args.model, len(data.classes), 1, dropout, drop_path)
        cfg = TrainConfig(epochs=args.epochs, batch_size=256, lr=lr, warmup_epochs=0.2, eval_every=0)
        aug = Augmentation(2, True, RandAugment.from_spec(spec) if spec else None)
        t0 = time.perf_counter()
        result = train(model, labeled=(tr.images, Targets.from_labels(tr.labels)), unlabeled=None, cfg=cfg,
                       num_classes=len(data.classes), mean=mean, std=std, augmentation=aug, seed=args.seed,
                       tag=name, progress=False)
        minutes = (time.perf_counter() - t0) / 60
        acc = accuracy(model, val.images, val.labels, mean=mean, std=std)
        rows.append((name, acc, result.loss, minutes))
        print(f"{name}: validation {100 * acc:.2f}%, last-pass loss {result.loss:.3f}, {minutes:.1f} min", flush=True)
    print(f"\n{args.model}, {args.epochs} pass(es) over {len(tr):,} labeled images at 256 per step, seed {args.seed}")
    print("| variant | RandAugment | dropout | drop_path | lr | validation accuracy % | last-pass loss | min |")
    print("|---|---|---|---|---|---|---|---|")
    for name, acc, loss, minutes in rows:
        spec, dropout, drop_path, lr = VARIANTS[name]
        print(f"| {name} | {spec or '-'} | {dropout} | {drop_path} | {lr} | {100 * acc:.2f} | {loss:.3f} | {minutes:.1f} |")


if __name__ == "__main__":
    main()
