"""Why a model's noise flip rate is what it is: how many images lie near a tie, in noise units.

    python benchmarks/flip_diagnosis.py runs/fashion-mnist/round-{0,1,2,3}/model.safetensors
    python benchmarks/flip_diagnosis.py --run-dirs runs/fashion-mnist runs/other   # every round of each

The pipeline's "noise" flip rate (ImageNet-P) counts how often a model's top-1 prediction on a
noisy copy of a test image (Gaussian, std 0.03 in [0, 1] units, rounded and clipped to uint8)
differs from its prediction on another noisy copy. An image flips when the noise moves it across a
decision boundary, so the rate depends on two things per image: how far the clean logits are from
a tie (the margin m = top-1 logit - top-2 logit) and how fast that margin moves with the pixels
(the gradient g of m with respect to the pixels, in [0, 1] units). To first order the noisy margin
is m + g.mu + N(0, sum_j g_j^2 s_j^2), where mu_j and s_j are the mean shift and the std that the
noise, the rounding and the clipping give pixel j (clipping at 0 makes the noise on the black
background one-sided, so mu_j > 0 there). Its z-score z = (m + g.mu) / sqrt(sum_j g_j^2 s_j^2) is how
many noise standard deviations the image is from a tie; it does not change when the logits are
scaled, unlike m and g alone. An image flips between two frames with probability 2 p (1 - p),
p = P(noisy margin < 0) = Phi(-z): the mean over images is the linear prediction, printed next to
the measured rate to show how far the first-order picture holds. A model whose rate is higher
has more images at small z: the shares at z < 1 and z < 2 say how many.

Per model it prints, on the seeded subset of test images the pipeline's robustness stage uses
(`--images 2000 --split-seed 0`, the Fashion-MNIST config's): clean accuracy; the noise flip rate at
each `--sigmas` (the pipeline's is 0.03, seed 0: the 0.03 column repeats robustness.json); the
median top-1 probability; the linear prediction; the shares of images at z < 1 and z < 2; the
measured flip rate on the images the model classifies correctly and on those it gets wrong; the
flip rate when the noise (sigma 0.03) touches only the black background (pixels 0 in the clean
image) and only the garment (the other pixels). A second table gives the flip rate per true class.
A third, for the checkpoints with a robustness.json beside them (the pipeline's), splits the
corruption errors: the mean over the three noise corruptions (Gaussian, shot, impulse), which a
model trained with pixel noise (noise.pixel_noise) has seen a form of, and over the twelve others.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch

from common import machine_line
from noisystudent.checkpoint import load_model
from noisystudent.data.sources import load_idx
from noisystudent.evaluate import predict_labels
from noisystudent.robustness import flip_counts
from noisystudent.robustness.metrics import FLIP_NOISE_SIGMA, noise_frame


def pixel_noise_moments(sigma: float, samples: int = 20_000, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(256,) mean shift and std, in [0, 1] units, that the flip rate's noise gives a pixel of each uint8
    value: x + N(0, sigma^2), rounded to 1/255 and clipped to [0, 1] (Monte Carlo, seeded)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.arange(256, dtype=torch.float64)[:, None] / 255
    y = ((x + sigma * torch.randn(256, samples, generator=g, dtype=torch.float64)) * 255).round().clamp(0, 255) / 255
    return (y.mean(1) - x[:, 0]).float(), y.std(1).float()


def margins_and_gradients(model: torch.nn.Module, images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor,
                          batch: int = 100) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per image: top-1 softmax probability, logit margin top-1 - top-2, and the gradient (C*H*W) of that
    margin with respect to the pixels in [0, 1] units (the model in eval mode)."""
    model.eval()
    probs, margins, grads = [], [], []
    for start in range(0, len(images), batch):
        x = (images[start:start + batch].float() / 255).requires_grad_(True)
        # normalised as to_model_input does, but out of place: the gradient flows back to x
        logits = model(((x - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)).contiguous(memory_format=torch.channels_last))
        top2 = logits.topk(2, dim=1)
        margin = top2.values[:, 0] - top2.values[:, 1]
        (g,) = torch.autograd.grad(margin.sum(), x)
        probs.append(logits.softmax(1).max(1).values.detach())
        margins.append(margin.detach())
        grads.append(g.flatten(1))
    return torch.cat(probs), torch.cat(margins), torch.cat(grads)


def z_scores(margin: torch.Tensor, grad: torch.Tensor, shift: torch.Tensor, spread: torch.Tensor) -> torch.Tensor:
    """(N,) (m + g.shift) / sqrt(sum g^2 spread^2): noise standard deviations from a tie, to first order."""
    return (margin + (grad * shift).sum(1)) / ((grad * spread) ** 2).sum(1).sqrt().clamp_min(1e-12)


def linear_flip_rate(z: torch.Tensor) -> float:
    """Mean over images of 2 p (1 - p), p = Phi(-z): the chance that two noisy frames fall on either side."""
    p = 0.5 * torch.erfc(z / math.sqrt(2))
    return float((2 * p * (1 - p)).mean())


def masked_noise_flips(model: torch.nn.Module, images: torch.Tensor, where: torch.Tensor, *, mean: torch.Tensor,
                       std: torch.Tensor, sigma: float, frames: int, seed: int = 0) -> float:
    """The noise flip rate with the noise kept only on the pixels where `where` (N, C, H, W) is true
    (the others stay clean): frame t >= 1 against frame 0, as `flip_counts(kind="noise")` counts."""
    gen = torch.Generator().manual_seed(seed)
    flips, reference = 0, None
    for _ in range(frames):
        frame = torch.where(where, noise_frame(images, sigma, gen), images)
        pred = predict_labels(model, frame, mean=mean, std=std)
        if reference is None:
            reference = pred
        else:
            flips += int((pred != reference).sum())
    return flips / (len(images) * (frames - 1))


NOISE_CORRUPTIONS = ("gaussian_noise", "shot_noise", "impulse_noise")


def corruption_columns(robustness: dict) -> list[str]:
    """From a robustness.json: mCE, the mean error over NOISE_CORRUPTIONS and over the other corruptions,
    and the two flip rates, as % strings."""
    errors = robustness["corruption_error"]
    noise = [errors[c] for c in NOISE_CORRUPTIONS]
    others = [e for c, e in errors.items() if c not in NOISE_CORRUPTIONS]
    return [f"{100 * v:.2f}" for v in (robustness["mce"], sum(noise) / len(noise), sum(others) / len(others),
                                       robustness["flip_rate"]["translate"], robustness["flip_rate"]["noise"])]


def checkpoints(args: argparse.Namespace) -> list[Path]:
    paths = [Path(p) for p in args.models]
    for run in args.run_dirs:
        found = sorted(Path(run).glob("round-*/model.safetensors"), key=lambda p: int(p.parent.name.split("-")[1]))
        if not found:
            raise SystemExit(f"{run}: not a run directory with round-*/model.safetensors (give checkpoint files "
                             "before --run-dirs)")
        paths += found
    return paths


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="*", help="checkpoint files (model.safetensors)")
    ap.add_argument("--run-dirs", nargs="*", default=[], help="run directories: every round's checkpoint")
    ap.add_argument("--data-dir", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--images", type=int, default=2000, help="seeded subset of the test set (0: all)")
    ap.add_argument("--split-seed", type=int, default=0, help="the seed of that subset (data.split_seed)")
    ap.add_argument("--sigmas", nargs="+", type=float, default=[0.01, 0.03, 0.05])
    ap.add_argument("--frames", type=int, default=10)
    args = ap.parse_args()
    paths = checkpoints(args)
    if not paths:
        ap.error("give checkpoint files or --run-dirs")

    print(machine_line())
    test = load_idx(args.data_dir, "test")
    images, labels = test.images, test.labels
    if 0 < args.images < len(images):  # the subset pipeline._robustness takes
        g = torch.Generator().manual_seed(args.split_seed)
        rows = torch.randperm(len(images), generator=g)[:args.images].sort().values
        images, labels = images[rows], labels[rows]
    print(f"{len(images)} test images (split seed {args.split_seed}); flip rates over {args.frames} noisy frames, "
          f"seed 0; linear prediction at sigma {FLIP_NOISE_SIGMA}")
    shift_lut, spread_lut = pixel_noise_moments(FLIP_NOISE_SIGMA)
    print(f"that noise, rounded and clipped, on a black pixel: mean {255 * shift_lut[0]:+.1f} gray levels, std "
          f"{255 * spread_lut[0]:.1f}; on a mid-gray one (128): mean {255 * shift_lut[128]:+.1f}, std {255 * spread_lut[128]:.1f}")
    pixels = images.flatten(1).long()
    shift, spread = shift_lut[pixels], spread_lut[pixels]

    head = (["model", "clean acc %"] + [f"noise flips % (sigma {s:g})" for s in args.sigmas]
            + ["median top-1 prob", "linear prediction %", "share z < 1 %", "share z < 2 %",
               "flips % on correct", "flips % on wrong", "flips %, noise on the black background only",
               "flips %, noise on the garment only"])
    rows, per_class, corruption = [], [], []
    for path in paths:
        model, meta = load_model(path)
        mean, std = torch.tensor(meta["input"]["mean"]), torch.tensor(meta["input"]["std"])
        pred = predict_labels(model, images, mean=mean, std=std)
        right = pred == labels
        counts = [flip_counts(model, images, mean=mean, std=std, kind="noise", frames=args.frames, seed=0,
                              noise_sigma=s).float() / (args.frames - 1) for s in args.sigmas]
        main_counts = counts[args.sigmas.index(FLIP_NOISE_SIGMA)] if FLIP_NOISE_SIGMA in args.sigmas else \
            flip_counts(model, images, mean=mean, std=std, kind="noise", frames=args.frames,
                        seed=0).float() / (args.frames - 1)
        prob, margin, grad = margins_and_gradients(model, images, mean, std)
        z = z_scores(margin, grad, shift, spread)
        label = f"{meta['model']['name']} ({path.parent.parent.name}/{path.parent.name})"
        rows.append([label, f"{100 * float(right.float().mean()):.2f}"]
                    + [f"{100 * float(c.mean()):.2f}" for c in counts]
                    + [f"{prob.median():.3f}", f"{100 * linear_flip_rate(z):.2f}",
                       f"{100 * float((z < 1).float().mean()):.1f}", f"{100 * float((z < 2).float().mean()):.1f}",
                       f"{100 * float(main_counts[right].mean()):.2f}", f"{100 * float(main_counts[~right].mean()):.2f}"]
                    + [f"{100 * masked_noise_flips(model, images, where, mean=mean, std=std, sigma=FLIP_NOISE_SIGMA, frames=args.frames):.2f}"
                       for where in (images == 0, images > 0)])
        per_class.append([label] + [f"{100 * float(main_counts[labels == c].mean()):.2f}"
                                    for c in range(len(test.classes))])
        print("| " + " | ".join(rows[-1]) + " |", flush=True)
        if (path.parent / "robustness.json").exists():
            corruption.append([label, *corruption_columns(json.loads((path.parent / "robustness.json").read_text()))])
    print()
    tables = [(head, rows), (["model"] + list(test.classes), per_class)]
    if corruption:
        tables.append((["model", "mCE %", "noise corruptions, mean error %", "the 12 others, mean error %",
                        "flip rate translate %", "flip rate noise %"], corruption))
    for table_head, table in tables:
        print("| " + " | ".join(table_head) + " |")
        print("|" + "---|" * len(table_head))
        for row in table:
            print("| " + " | ".join(row) + " |")
        print()


if __name__ == "__main__":
    main()
