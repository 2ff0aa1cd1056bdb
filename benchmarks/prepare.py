"""`noisystudent prepare` on a folder of 60,000 PNG files: images/s, and the speed-up from parallel decoding.

    python benchmarks/prepare.py                       # 60,000 Fashion-MNIST training images as PNGs
    python benchmarks/prepare.py --limit 6000          # a quick run
    python benchmarks/prepare.py --workers 1,2,4

Writes the Fashion-MNIST training images (IDX files under --data-dir, from Debian's
dataset-fashion-mnist) as PNG files in class folders under --work-dir, then times `prepare_folder`
into a fresh cache with each worker count, in turns (1, 2, 1, 2, ...) so drift hits all alike, and
checks that every cache holds the same bytes. Then it adds 1% new files and times the update,
which decodes only those. Prints images/s per worker count and, last, the speed-up of the largest
worker count over one process.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import time
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_line  # noqa: E402

from noisystudent.data.cache import IMAGES, prepare_folder  # noqa: E402
from noisystudent.data.sources import load_idx  # noqa: E402


def write_pngs(root: Path, data_dir: str, limit: int) -> int:
    train = load_idx(data_dir, "train")
    n = min(limit, len(train))
    for c, name in enumerate(train.classes):
        (root / name.replace("/", "-")).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        name = train.classes[int(train.labels[i])].replace("/", "-")
        Image.fromarray(train.images[i, 0].numpy()).save(root / name / f"{i:05d}.png")
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--work-dir", type=Path, default=Path("/tmp/noisystudent-prepare-bench"))
    ap.add_argument("--limit", type=int, default=60000, help="PNG files to write (default: all 60,000)")
    ap.add_argument("--workers", default="1,2", help="worker counts to compare (default: 1,2)")
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    workers = [int(w) for w in args.workers.split(",")]

    print(machine_line())
    print(f"command: python benchmarks/prepare.py --limit {args.limit} --workers {args.workers} --repeats {args.repeats}")
    shutil.rmtree(args.work_dir, ignore_errors=True)
    src = args.work_dir / "png"
    t0 = time.perf_counter()
    n = write_pngs(src, args.data_dir, args.limit)
    mb = sum(p.stat().st_size for p in src.rglob("*.png")) / 2**20
    print(f"wrote {n:,} PNG files ({mb:.0f} MB) in {time.perf_counter() - t0:.1f} s")

    times: dict[int, list[float]] = {w: [] for w in workers}
    reference = None
    try:
        for _ in range(args.repeats):
            for w in workers:
                out = args.work_dir / f"cache-{w}"
                shutil.rmtree(out, ignore_errors=True)
                t0 = time.perf_counter()
                _, report = prepare_folder(src, out, channels=1, size=(28, 28), labeled=True, workers=w)
                times[w].append(time.perf_counter() - t0)
                data = (out / IMAGES).read_bytes()
                assert report.total == n and (reference is None or data == reference), "caches differ"
                reference = data
        for w in workers:
            s = statistics.median(times[w])
            print(f"workers {w}: {n / s:8,.0f} images/s  ({s:.1f} s median of {args.repeats}, "
                  f"runs {', '.join(f'{t:.1f}' for t in times[w])} s)")
        # an update: 1% new files are decoded, the rest only stat-ed and compared with the index
        new = max(1, n // 100)
        for i in range(new):
            Image.open(next((src / "Bag").glob("*.png"))).save(src / "Bag" / f"new-{i:05d}.png")
        out = args.work_dir / f"cache-{workers[-1]}"
        t0 = time.perf_counter()
        _, report = prepare_folder(src, out, channels=1, size=(28, 28), labeled=True, workers=workers[-1])
        print(f"update after adding {new:,} files: {time.perf_counter() - t0:.2f} s "
              f"({report.added:,} decoded, {report.unchanged:,} unchanged)")
        speedup = statistics.median(times[workers[0]]) / statistics.median(times[workers[-1]])
        print(f"speed-up of {workers[-1]} workers over {workers[0]}: {speedup:.2f}x")
    finally:
        shutil.rmtree(args.work_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
