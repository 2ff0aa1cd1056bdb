"""Batched RandAugment (noisystudent.augment) against a per-image PIL RandAugment.

    python benchmarks/augment.py                       # one CPU thread, batch 256, rand-n2-m9
    python benchmarks/augment.py --repeats 21 --clock wall
    python benchmarks/augment.py --backend torch       # our pure-torch code instead of the default
    python benchmarks/augment.py --device cuda

Speed: for each image size, images/s of
- PIL: `benchmarks/pil_randaugment.py`, the way a DataLoader worker runs timm's RandAugment: per
  image, (H, W, C) uint8 numpy -> PIL image -> N random ops (random op, random sign) -> numpy,
  then the batch is stacked (the collate step);
- ours: `RandAugment(N, M, backend=--backend)` on the (B, C, H, W) uint8 tensor on --device (CUDA
  timings end with torch.cuda.synchronize()). The default backend "auto" runs the native C kernels
  (noisystudent/augment/native.c) on CPU tensors when they could be built, else torch; the machine
  line says which ran.
Both get the same op list and magnitude. The two are timed alternately, --repeats times after a
warm-up, and the medians are compared: speed-up = PIL time / our time. The clock: with one thread
on the CPU (the default), the CPU time of this thread (time.thread_time), so that other programs
on a shared machine do not skew the ratio (it equals wall time on an idle machine); otherwise, or
with --clock wall, wall time.

Per op: the same comparison for each op alone, in microseconds per image: PIL's op on a PIL image
(no conversions; the conversions get their own row) against `RandAugment(1, M, ops=[op])` on the
batch (so everything our RandAugment does for an op is counted).

Agreement: for every op at M = 3, 6 and 9, our op (`RandAugment(1, M, ops=[op]).apply_given` with
--backend, on --device) and the PIL reference op on the same images with the same sign (half the
batch +, half -) and the same cutout centres; the table gives the mean absolute difference in grey
levels (0..255) and the largest single difference. Tolerance (as tests/test_augment.py): mean <=
0.01 and max <= 1 grey level, room for float rounding in the ImageEnhance blends; the ops are
written to match PIL bit for bit, so 0 is expected.

The test images are smooth random color fields plus noise (natural-image-like histograms).
The last line printed is the smallest speed-up over the image sizes.
"""

from __future__ import annotations

import argparse
import platform
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))  # for pil_randaugment

import pil_randaugment as pil  # noqa: E402

from noisystudent.augment import OPS, RandAugment  # noqa: E402
from noisystudent.augment.randaugment import BACKENDS  # noqa: E402
from noisystudent.augment import native  # noqa: E402
from noisystudent.augment import ops as O  # noqa: E402

SIZES = ((28, 28, 1), (32, 32, 3), (96, 96, 3))  # (H, W, C)
AGREEMENT_MAGNITUDES = (3.0, 6.0, 9.0)
MEAN_TOL = 0.01  # grey levels: mean |ours - PIL| allowed per op and magnitude
MAX_TOL = 1  # grey levels: largest single |ours - PIL| allowed
NOISE_STD = 12.0  # grey levels of the noise added to the smooth test images
COARSE = 4  # the smooth fields are bilinear upsamplings of COARSE x COARSE random images
PER_OP_PIL_IMAGES = 64  # images per PIL per-op timing (per-image times hardly depend on it)
PER_OP_REPEATS = 5  # timed repeats per op and contender in the per-op table

Clock = Callable[[], float]


def test_images(b: int, h: int, w: int, c: int, seed: int) -> torch.Tensor:
    """(b, c, h, w) uint8: smooth random fields plus Gaussian noise, clipped to 0..255."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(b, c, COARSE, COARSE, generator=g) * 255.0
    smooth = F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)
    noisy = smooth + NOISE_STD * torch.randn(b, c, h, w, generator=g)
    return noisy.round_().clamp_(0, 255).to(torch.uint8)


def to_numpy(x: torch.Tensor) -> np.ndarray:
    """(B, C, H, W) uint8 tensor -> (B, H, W, C) uint8 numpy (the PIL side's input)."""
    return np.ascontiguousarray(x.permute(0, 2, 3, 1).cpu().numpy())


def timed(fn: Callable[[], object], clock: Clock, device: torch.device) -> float:
    """Seconds `fn()` takes on `clock`, CUDA work included."""
    t0 = clock()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return clock() - t0


def alternate(pil_fn: Callable, ours_fn: Callable, repeats: int, clock: Clock, device: torch.device):
    """Median seconds of (pil_fn, ours_fn): one warm-up each, then `repeats` rounds, the order
    alternating from round to round."""
    times: dict[str, list[float]] = {"pil": [], "ours": []}
    contenders = [("pil", pil_fn), ("ours", ours_fn)]
    for repeat in range(repeats + 1):
        for name, fn in contenders if repeat % 2 == 0 else contenders[::-1]:
            seconds = timed(fn, clock, device)
            if repeat > 0:  # round 0 is the warm-up
                times[name].append(seconds)
    return statistics.median(times["pil"]), statistics.median(times["ours"])


def time_randaugment(x: torch.Tensor, args: argparse.Namespace, clock: Clock) -> tuple[float, float]:
    """Median seconds per batch of (PIL RandAugment with conversions, ours)."""
    arrays = to_numpy(x)
    reference = pil.PilRandAugment(args.layers, args.magnitude)
    ours = RandAugment(args.layers, args.magnitude, backend=args.backend)
    rng, g = random.Random(args.seed), torch.Generator(device=x.device).manual_seed(args.seed)
    return alternate(lambda: np.stack([reference(a, rng) for a in arrays]), lambda: ours(x, generator=g),
                     args.repeats, clock, x.device)


def time_ops(x: torch.Tensor, args: argparse.Namespace, clock: Clock) -> dict[str, tuple[float, float]]:
    """op -> median microseconds per image (PIL op alone, our RandAugment(1, M, ops=[op]));
    "conversions" -> (PIL's numpy -> PIL -> numpy, 0)."""
    b, _, h, w = x.shape
    arrays = to_numpy(x)[:PER_OP_PIL_IMAGES]
    images = [pil.to_pil(a) for a in arrays]
    rng, g = random.Random(args.seed), torch.Generator(device=x.device).manual_seed(args.seed)
    draws = [(rng.choice((-1.0, 1.0)), (rng.randrange(h), rng.randrange(w))) for _ in images]  # sign, centre
    result = {}
    for name in OPS:
        ours = RandAugment(1, args.magnitude, ops=[name], backend=args.backend)

        def run_pil(name: str = name) -> None:
            for img, (sign, centre) in zip(images, draws):
                pil.apply_op(img, name, args.magnitude, sign, centre)

        pil_s, ours_s = alternate(run_pil, lambda: ours(x, generator=g), PER_OP_REPEATS, clock, x.device)
        result[name] = (1e6 * pil_s / len(images), 1e6 * ours_s / b)
    convert_s = statistics.median(
        timed(lambda: [pil.from_pil(pil.to_pil(a)) for a in arrays], clock, x.device) for _ in range(PER_OP_REPEATS))
    result["conversions"] = (1e6 * convert_s / len(arrays), 0.0)
    return result


def agreement(x: torch.Tensor, seed: int, backend: str) -> dict[tuple[str, float], tuple[float, int]]:
    """(op, M) -> (mean, max) |ours - PIL| in grey levels on the images x (B, C, H, W)."""
    b, _, h, w = x.shape
    g = torch.Generator().manual_seed(seed)
    sign = torch.tensor([1.0, -1.0]).repeat((b + 1) // 2)[:b]
    centre = O.random_centre((b,), h, w, g, torch.device("cpu"))
    first_op = torch.zeros(1, b, dtype=torch.long, device=x.device)  # (1 layer, B): each sample's only op
    arrays = to_numpy(x)
    result = {}
    for name in OPS:
        ours_op = RandAugment(1, ops=[name], backend=backend)
        for m in AGREEMENT_MAGNITUDES:
            mag = torch.full((1, b), m, device=x.device)
            ours = to_numpy(ours_op.apply_given(x, first_op, mag, sign[None].to(x.device), centre[None].to(x.device)))
            ref = np.stack([
                pil.from_pil(pil.apply_op(pil.to_pil(a), name, m, float(sign[i]), tuple(centre[i].tolist())))
                for i, a in enumerate(arrays)
            ])
            diff = np.abs(ours.astype(np.int16) - ref.astype(np.int16))
            result[name, m] = (float(diff.mean()), int(diff.max()))
    return result


def backend_line(args: argparse.Namespace) -> str:
    """Which backend `RandAugment(backend=args.backend)` runs on args.device, in words."""
    ran = RandAugment(backend=args.backend).backend_for(args.device)
    if ran == "native":
        return f"native ({native.load().simd} C kernels)"
    reason = native.unavailable_reason() if args.backend == "auto" and torch.device(args.device).type == "cpu" else None
    return "torch" + (f" (native unavailable: {reason})" if reason else "")


def print_tables(args: argparse.Namespace, clock_name: str, sizes: tuple, speed: dict, per_op: dict,
                 agree: dict) -> None:
    """The Markdown tables (speed, per op, agreement) and, last, the smallest speed-up."""
    print(f"machine: {platform.machine()} {platform.processor() or ''}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} torch thread(s), device {args.device}; PIL {pil.Image.__version__}, "
          f"numpy {np.__version__}; clock: {clock_name}; ours: backend {args.backend} -> {backend_line(args)}")
    print(f"RandAugment(n={args.layers}, m={args.magnitude:g}), {len(OPS)} ops, batch {args.batch}, "
          f"median of {args.repeats} alternating repeats\n")
    print("| image HxWxC | PIL per image (img/s) | ours batched (img/s) | speed-up |")
    print("|---|---:|---:|---:|")
    for size in sizes:
        pil_s, ours_s = speed[size]
        print(f"| {'x'.join(map(str, size))} | {args.batch / pil_s:,.0f} | {args.batch / ours_s:,.0f} "
              f"| {pil_s / ours_s:.1f}x |")

    print("\nPer op: microseconds per image, PIL op alone / ours (RandAugment(1, M, ops=[op]) on the batch)"
          " / speed-up\n")
    print("| op | " + " | ".join("x".join(map(str, size)) for size in sizes) + " |")
    print("|---|" + "---:|" * len(sizes))
    for name in (*OPS, "conversions"):
        cells = []
        for size in sizes:
            pil_us, ours_us = per_op[size][name]
            cells.append(f"{pil_us:.1f} / {ours_us:.1f} / {pil_us / ours_us:.1f}x" if ours_us else f"{pil_us:.1f} / -")
        print(f"| {name} | " + " | ".join(cells) + " |")

    print(f"\nAgreement with PIL: mean |ours - PIL| (max) in grey levels, {args.agreement_batch} images per size;"
          f" tolerance mean <= {MEAN_TOL}, max <= {MAX_TOL}\n")
    header = " | ".join(f"{'x'.join(map(str, size))} M={m:g}" for size in sizes for m in AGREEMENT_MAGNITUDES)
    print(f"| op | {header} |")
    print("|---|" + "---:|" * (len(sizes) * len(AGREEMENT_MAGNITUDES)))
    failures = []
    for name in OPS:
        cells = []
        for size in sizes:
            for m in AGREEMENT_MAGNITUDES:
                mean, worst = agree[size][name, m]
                cells.append(f"{mean:.3g} ({worst})")
                if mean > MEAN_TOL or worst > MAX_TOL:
                    failures.append(f"{name} at {'x'.join(map(str, size))} M={m:g}")
        print(f"| {name} | " + " | ".join(cells) + " |")
    print(f"\nagreement: {'all within tolerance' if not failures else 'OUT OF TOLERANCE: ' + ', '.join(failures)}")
    print(f"min speed-up over PIL: {min(pil_s / ours_s for pil_s, ours_s in speed.values()):.1f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    ap.add_argument("--batch", type=int, default=256, help="images per batch (default 256)")
    ap.add_argument("--repeats", type=int, default=11, help="timed batches per contender and size (default 11)")
    ap.add_argument("--device", default="cpu", help="where our RandAugment runs: cpu or cuda")
    ap.add_argument("--backend", choices=BACKENDS, default="auto",
                    help="our RandAugment's backend (default auto: native C on the CPU when available, else torch)")
    ap.add_argument("--clock", choices=("auto", "wall"), default="auto",
                    help="auto: this thread's CPU time with one CPU thread, else wall time (default auto)")
    ap.add_argument("--layers", type=int, default=2, help="RandAugment N (default 2)")
    ap.add_argument("--magnitude", type=float, default=9.0, help="RandAugment M (default 9)")
    ap.add_argument("--agreement-batch", type=int, default=32, help="images per size for the agreement check")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    thread_clock = args.clock == "auto" and args.threads == 1 and device.type == "cpu"
    clock, clock_name = (time.thread_time, "thread CPU time") if thread_clock else (time.perf_counter, "wall time")

    speed, per_op, agree = {}, {}, {}
    for size in SIZES:
        h, w, c = size
        x = test_images(args.batch, h, w, c, args.seed).to(device)
        speed[size] = time_randaugment(x, args, clock)
        per_op[size] = time_ops(x, args, clock)
        agree[size] = agreement(x[: args.agreement_batch], args.seed, args.backend)
    print_tables(args, clock_name, SIZES, speed, per_op, agree)


if __name__ == "__main__":
    main()
