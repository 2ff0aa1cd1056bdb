"""metrics.jsonl -> TensorBoard event files under `run_dir/tensorboard/` (optional: needs `tensorboard`).

    run_dir/tensorboard/round-k/    training scalars of round k per epoch (train/loss, train/lr, ...)
    run_dir/tensorboard/pipeline/   per-round scalars (test accuracy, pseudo-label statistics), step = round

One TensorBoard "run" per round, so the rounds' curves overlay in the same charts:
`tensorboard --logdir runs/<name>/tensorboard`.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

from noisystudent.report.run_files import record_round

log = logging.getLogger(__name__)

ENABLE_HINT = "pip install 'noisystudent[tensorboard]'"
_SKIP = {"time", "stage", "epoch", "epochs"}


def summary_writer_class() -> Any:
    """torch's SummaryWriter, or None when TensorBoard is not installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter


def write_scalars(run_dir: str | Path) -> bool:
    """Convert `run_dir/metrics.jsonl` to event files in `run_dir/tensorboard/` (replacing earlier ones).

    Returns True when written; False (with one log line saying how to enable it) when TensorBoard
    is not installed or there is no metrics.jsonl.
    """
    run_dir = Path(run_dir)
    writer_class = summary_writer_class()
    if writer_class is None:
        log.info("TensorBoard files not written: TensorBoard is not installed (%s)", ENABLE_HINT)
        return False
    from noisystudent.report.run_files import read_metrics

    records = read_metrics(run_dir / "metrics.jsonl")
    if not records:
        return False
    out = run_dir / "tensorboard"
    if out.exists():
        shutil.rmtree(out)
    writers: dict[str, Any] = {}
    try:
        for record in records:
            _write_record(record, writers, out, writer_class)
    finally:
        for w in writers.values():
            w.close()
    return True


def _write_record(record: dict[str, Any], writers: dict[str, Any], out: Path, writer_class: Any) -> None:
    """Add the numeric fields of one metrics record to the writer of its round (or the pipeline's)."""
    parsed = record_round(record)
    if parsed is None:
        return
    k, step_kind = parsed
    if step_kind is None and "epoch" in record:
        name, prefix, step = f"round-{k}", "train", int(record["epoch"])
    elif step_kind is not None:
        name, prefix, step = "pipeline", step_kind, k
    else:
        return
    if name not in writers:
        writers[name] = writer_class(log_dir=str(out / name))
    for key, value in record.items():
        if key in _SKIP or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        writers[name].add_scalar(f"{prefix}/{key}", value, global_step=step, walltime=record.get("time"))
