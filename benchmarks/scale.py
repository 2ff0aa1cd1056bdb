"""Pseudo-labeling from the on-disk cache at 100k, 300k and 1M images: throughput and peak memory.

    python benchmarks/scale.py                          # 100k, 300k, 1M synthetic 28x28 images
    python benchmarks/scale.py --sizes 10000,30000,100000   # a quick run
    python benchmarks/scale.py --device cuda

Writes one synthetic cache of the largest size (Fashion-MNIST test images repeated with a seeded
shift and noise, 28x28x1; `--cache-dir`, removed afterwards unless `--keep`), then runs each
measurement in a fresh process, so that its peak resident memory (VmHWM) is its own:

    memory  N=100k   the same model's inference on an in-memory uint8 tensor (the reference)
    cache   N        `pseudo_label.predict` streaming the first N cached images from disk
    memory  N=100k   the reference again, last, so that drift of the machine shows

The model is the default teacher (resnet8, random weights: speed does not depend on them).
Prints one row per measurement, then the ratios: cache throughput / mean in-memory throughput
for each N (goal >= 0.80), and peak RSS at the largest N / at the smallest (goal < 2, and below
2 GB at 1M).
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_line, synthetic_or_fashion  # noqa: E402


def make_cache(out: Path, n: int, block: int = 65536) -> float:
    """A cache of n synthetic 28x28 images, written block by block; returns seconds."""
    from noisystudent.data.cache import write_array_cache

    base = synthetic_or_fashion(10000, 28, 1).numpy()
    rng = np.random.default_rng(0)

    def blocks():
        for start in range(0, n, block):
            k = min(block, n - start)
            x = base[rng.integers(0, len(base), k)]
            x = np.roll(x, int(rng.integers(-2, 3)), axis=-1)
            noise = rng.integers(0, 16, x.shape, dtype=np.uint8)
            yield np.minimum(x.astype(np.uint16) + noise, 255).astype(np.uint8), [None] * k

    t0 = time.perf_counter()
    write_array_cache(out, blocks(), shape=(1, 28, 28), classes=[], labeled=False,
                      source={"kind": "synthetic", "n": n}, name="synthetic", total=n)
    return time.perf_counter() - t0


def child(args: argparse.Namespace) -> None:
    """One measurement in this process; prints a JSON line."""
    from noisystudent.data.cache import ImageCache
    from noisystudent.models import create_model
    from noisystudent.pseudo_label import predict

    torch.manual_seed(0)
    model = create_model(args.model, 10, 1).to(args.device, memory_format=torch.channels_last).eval()
    mean, std = torch.tensor([72.9]), torch.tensor([90.0])
    disk = ImageCache(args.cache_dir).images
    if args.child == "memory":
        images = disk[0:args.n]  # (N, 1, 28, 28) uint8 tensor in memory
    else:
        images = disk.subset(torch.arange(args.n)) if args.n < len(disk) else disk
    predict(model, images[0:2 * args.batch], mean=mean, std=std, batch_size=args.batch, device=args.device,
            progress=False)  # warm-up
    t0 = time.perf_counter()
    pl = predict(model, images, mean=mean, std=std, topk=args.topk, batch_size=args.batch, device=args.device,
                 progress=False)
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    assert len(pl) == args.n
    peak_mb = peak_rss_mb()
    print(json.dumps({"kind": args.child, "n": args.n, "seconds": seconds, "images_per_second": args.n / seconds,
                      "peak_rss_mb": peak_mb}))


def peak_rss_mb() -> float:
    """Peak resident memory of this process since it started (VmHWM). Not ru_maxrss: on Linux that
    carries over the parent's peak through fork and exec, which would hide this process's own."""
    try:
        status = Path("/proc/self/status").read_text()
        return int(status.split("VmHWM:")[1].split()[0]) / 1024  # kB -> MB
    except (OSError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(args: argparse.Namespace, kind: str, n: int) -> dict:
    cmd = [sys.executable, __file__, "--child", kind, "--n", str(n), "--cache-dir", str(args.cache_dir),
           "--model", args.model, "--batch", str(args.batch), "--topk", str(args.topk), "--device", args.device]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    row = json.loads(out.strip().splitlines()[-1])
    print(f"{kind:6s} N={n:>9,}  {row['images_per_second']:8,.0f} images/s  {row['seconds']:7.1f} s  "
          f"peak RSS {row['peak_rss_mb']:7,.0f} MB", flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="100000,300000,1000000", help="comma-separated image counts")
    ap.add_argument("--model", default="resnet8")
    ap.add_argument("--batch", type=int, default=512, help="inference batch (pseudo.batch_size)")
    ap.add_argument("--topk", type=int, default=0, help="probabilities stored per image (0 = all 10)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--cache-dir", type=Path, default=Path("/tmp/noisystudent-scale-cache"))
    ap.add_argument("--keep", action="store_true", help="keep the synthetic cache")
    ap.add_argument("--child", choices=("memory", "cache"), help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return

    sizes = sorted(int(s) for s in args.sizes.split(","))
    print(machine_line(args.device))
    print(f"command: python benchmarks/scale.py --sizes {args.sizes} --model {args.model} --batch {args.batch}")
    from noisystudent.data.cache import is_cache, ImageCache

    if not (is_cache(args.cache_dir) and ImageCache(args.cache_dir).count >= sizes[-1]):
        shutil.rmtree(args.cache_dir, ignore_errors=True)
        seconds = make_cache(args.cache_dir, sizes[-1])
        mb = (args.cache_dir / "images.u8").stat().st_size / 2**20
        print(f"wrote a cache of {sizes[-1]:,} images ({mb:,.0f} MB) in {seconds:.1f} s")
    try:
        ref = sizes[0]
        rows = [measure(args, "memory", ref)]
        rows += [measure(args, "cache", n) for n in sizes]
        rows.append(measure(args, "memory", ref))
    finally:
        if not args.keep:
            shutil.rmtree(args.cache_dir, ignore_errors=True)
    mem = [r["images_per_second"] for r in rows if r["kind"] == "memory"]
    mem_ips = sum(mem) / len(mem)
    cache_rows = [r for r in rows if r["kind"] == "cache"]
    print(f"in-memory reference: {mem_ips:,.0f} images/s (first {mem[0]:,.0f}, last {mem[-1]:,.0f})")
    for r in cache_rows:
        print(f"N={r['n']:>9,}: throughput ratio cache / in-memory {r['images_per_second'] / mem_ips:.3f}, "
              f"peak RSS {r['peak_rss_mb']:,.0f} MB")
    growth = cache_rows[-1]["peak_rss_mb"] / cache_rows[0]["peak_rss_mb"]
    worst = min(r["images_per_second"] for r in cache_rows) / mem_ips
    print(f"peak RSS growth from N={cache_rows[0]['n']:,} to N={cache_rows[-1]['n']:,}: {growth:.2f}x "
          f"({cache_rows[-1]['peak_rss_mb']:,.0f} MB at the largest)")
    print(f"lowest throughput ratio cache / in-memory: {worst:.3f}")


if __name__ == "__main__":
    main()
