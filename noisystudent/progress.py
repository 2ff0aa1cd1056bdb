"""Progress bars (tqdm) that a caller can switch off, and the run's machine-readable log."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm


def progress_bar(total: int, desc: str, unit: str = "it", enable: bool = True) -> tqdm:
    """A tqdm bar with rate and ETA; `enable=False` gives a silent one with the same interface."""
    return tqdm(total=total, desc=desc, unit=unit, disable=not enable, dynamic_ncols=True,
                leave=False, unit_scale=unit == "img")


class MetricsLog:
    """Appends one JSON object per line to `metrics.jsonl` (epochs, stages, evaluations)."""

    def __init__(self, path: str | Path | None):
        self.path = Path(path) if path else None

    def write(self, **record: Any) -> None:
        if self.path is None:
            return
        record = {"time": round(time.time(), 3), **record}
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
