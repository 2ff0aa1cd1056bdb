"""Screenshot a run's report.html with headless Chromium (to check how the page looks).

    python tools/screenshot_report.py RUN_DIR OUT.png [--width 1280] [--height 4000] [--build]

--build (re)writes RUN_DIR/report.html first; without it the report is built only when missing.
Needs a Chromium binary (`apt-get install chromium`); --chromium gives another path.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars"]


def find_chromium(explicit: str | None) -> str:
    """The Chromium binary: the given path, /usr/bin/chromium, or chromium / chromium-browser on PATH."""
    for candidate in (explicit, "/usr/bin/chromium", shutil.which("chromium"), shutil.which("chromium-browser")):
        if candidate and Path(candidate).exists():
            return candidate
    raise SystemExit("screenshot_report: no Chromium found (apt-get install chromium, or pass --chromium PATH)")


def screenshot(page: Path, out: Path, chromium: str, width: int, height: int, timeout: float = 120) -> None:
    """Render `page` (a local HTML file) to the PNG `out` with a fresh, throw-away browser profile."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        cmd = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--screenshot={out.resolve()}",
               f"--window-size={width},{height}", page.resolve().as_uri()]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0 or not out.exists():
        raise SystemExit(f"screenshot_report: chromium failed (exit {done.returncode}): {done.stderr.strip()[-500:]}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", type=Path, help="a run directory, e.g. runs/digits-demo")
    p.add_argument("out", type=Path, help="the PNG to write")
    p.add_argument("--width", type=int, default=1280)
    p.add_argument("--height", type=int, default=4000)
    p.add_argument("--build", action="store_true", help="rebuild report.html first")
    p.add_argument("--chromium", help="path of the Chromium binary")
    args = p.parse_args(argv)
    page = args.run_dir / "report.html"
    if args.build or not page.exists():
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
        from noisystudent.report import build_report

        page = build_report(args.run_dir)
    screenshot(page, args.out, find_chromium(args.chromium), args.width, args.height)
    print(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
