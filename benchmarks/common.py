"""Shared by the benchmark scripts: the machine line and interleaved timing."""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable
from datetime import date

import torch


def machine_line(device: str = "cpu") -> str:
    where = torch.cuda.get_device_name() if device.startswith("cuda") else f"{platform.machine()} CPU"
    return (f"machine: {where}, {torch.get_num_threads()} torch threads, torch {torch.__version__}, "
            f"python {platform.python_version()}; date {date.today()}")


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def interleaved(fns: dict[str, Callable[[], None]], repeats: int, device: str = "cpu") -> dict[str, float]:
    """Median seconds of each function, timed in turns (a, b, a, b, ...) so drift hits all alike."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            sync(device)
            t0 = time.perf_counter()
            fn()
            sync(device)
            times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def interleaved_rates(fns: dict[str, Callable[[], float]], repeats: int, device: str = "cpu") -> dict[str, float]:
    """Median of the rates each function returns, called in turns after one warm-up round."""
    rates: dict[str, list[float]] = {k: [] for k in fns}
    calls = {k: (lambda k=k, fn=fn: rates[k].append(fn())) for k, fn in fns.items()}
    interleaved(calls, 1, device)  # warm-up
    for v in rates.values():
        v.clear()
    interleaved(calls, repeats, device)
    return {k: statistics.median(v) for k, v in rates.items()}


def synthetic_or_fashion(n: int, size: int, channels: int, seed: int = 0) -> torch.Tensor:
    """(n, C, size, size) uint8: Fashion-MNIST test images when installed (1 channel, 28x28), else seeded noise
    smoothed into blobs (so content-dependent ops do realistic work)."""
    from pathlib import Path

    fm = Path("/usr/share/datasets/fashion-mnist")
    if channels == 1 and size == 28 and (fm / "t10k-images-idx3-ubyte.gz").exists():
        from noisystudent.data.sources import load_idx

        images = load_idx(fm, "test").images
        return images[torch.arange(n) % len(images)].contiguous()
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, channels, max(2, size // 4), max(2, size // 4), generator=g)
    x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return (x * 255).round().to(torch.uint8)


def add_student_args(ap, steps: int, repeats: int, model: bool = True) -> None:
    """The options the training benchmarks share (`model`: the one-model --model option)."""
    if model:
        ap.add_argument("--model", default="resnet14")
    ap.add_argument("--size", type=int, default=28)
    ap.add_argument("--channels", type=int, default=1)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--steps", type=int, default=steps, help="training steps per timed call")
    ap.add_argument("--repeats", type=int, default=repeats)
    ap.add_argument("--device", default="cpu")


class StudentTraining:
    """`steps` full batches of images and one call of the library's training loop over them (one epoch)."""

    def __init__(self, args) -> None:
        from noisystudent.config import TrainConfig

        n = args.batch * args.steps
        self.device = args.device
        self.images = synthetic_or_fashion(n, args.size, args.channels).to(args.device)
        self.labels = torch.arange(n) % 10
        self.mean = torch.full((args.channels,), 0.3)
        self.std = torch.full((args.channels,), 0.3)
        self.cfg = TrainConfig(epochs=1, batch_size=args.batch, warmup_epochs=0, eval_every=0)

    def run(self, model: torch.nn.Module, augmentation) -> float:
        """Training images per second of one epoch."""
        from noisystudent.targets import Targets
        from noisystudent.train import train

        r = train(model, labeled=(self.images, Targets.from_labels(self.labels)), unlabeled=None, cfg=self.cfg,
                  num_classes=10, mean=self.mean, std=self.std, seed=0, device=self.device, progress=False,
                  augmentation=augmentation)
        return r.images_per_second
