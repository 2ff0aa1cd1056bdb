"""Reading a run directory back for the report: JSON files, pseudo-labels, metrics and (rebuilt) images."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from noisystudent.checkpoint import read_json
from noisystudent.errors import UserError

_ROUND_DIR = re.compile(r"^round-(\d+)$")
_ROUND_STAGE = re.compile(r"^round-(\d+)(?:/(\w+))?$")


@dataclass
class RoundFiles:
    """What one round-k/ folder holds (None where a file is absent)."""

    k: int
    meta: dict[str, Any] | None = None        # model.json
    evaluation: dict[str, Any] | None = None  # eval.json
    selection: dict[str, Any] | None = None   # selection.json
    robustness: dict[str, Any] | None = None  # robustness.json
    confidence: np.ndarray | None = None      # (N,) float32, from pseudo_labels.safetensors
    hard: torch.Tensor | None = None          # (N,) int64 pseudo-labels
    params: int | None = None                 # parameter count (summary.json)
    summary_model: str | None = None          # model name (summary.json)

    @property
    def model_name(self) -> str:
        if self.meta is not None:
            return str(self.meta.get("model", {}).get("name", "?"))
        return self.summary_model or "?"

    @property
    def test_accuracy(self) -> float | None:
        return None if self.evaluation is None else self.evaluation.get("accuracy")


@dataclass
class RunFiles:
    """A run directory read back: config, rounds, metrics and, when they can be rebuilt, the images."""

    run_dir: Path
    config: Any = None                          # noisystudent.config.Config, or None if unreadable
    rounds: list[RoundFiles] = field(default_factory=list)
    metrics: list[dict[str, Any]] = field(default_factory=list)
    classes: list[str] = field(default_factory=list)
    data: Any = None                            # noisystudent.data.build.Datasets, or None
    notes: list[str] = field(default_factory=list)

    def class_name(self, i: int) -> str:
        return self.classes[i] if 0 <= i < len(self.classes) else str(i)

    def epochs(self, k: int) -> list[dict[str, Any]]:
        """Training epochs of round k from metrics.jsonl, in order; the last record of an epoch wins (resumes)."""
        by_epoch = {m["epoch"]: m for m in self.metrics
                    if m.get("stage") == f"round-{k}" and "epoch" in m and "loss" in m}
        return [by_epoch[e] for e in sorted(by_epoch)]

    @property
    def labeled(self) -> Any:
        return None if self.data is None else self.data.labeled

    @property
    def unlabeled_images(self) -> torch.Tensor | None:
        return None if self.data is None else self.data.unlabeled.images

    @property
    def unlabeled_labels(self) -> torch.Tensor | None:
        return None if self.data is None else self.data.unlabeled.labels


def load_run(run_dir: str | Path, *, images: bool = True) -> RunFiles:
    """Read a run directory; `images` also rebuilds the data sets from config.yaml (for image sections)."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise UserError(f"{run_dir}: not a run directory (no config.yaml)")
    run = RunFiles(run_dir)
    run.config = _load_config(run_dir / "config.yaml", run.notes)
    run.rounds = _load_rounds(run_dir, run.notes)
    for r in run.rounds:
        if r.summary_model is None and run.config is not None:
            r.summary_model = run.config.model_for_round(r.k)
    if not run.rounds:
        raise UserError(f"{run_dir}: no finished round yet (no round-*/model.json or eval.json)")
    run.metrics = read_metrics(run_dir / "metrics.jsonl")
    run.classes = _classes(run.rounds)
    if images and run.config is not None:
        run.data = _load_data(run.config, run.notes)
        if run.data is not None and not run.classes:
            run.classes = list(run.data.classes)
    return run


def _load_config(path: Path, notes: list[str]) -> Any:
    from noisystudent.config import Config

    try:
        return Config.from_yaml(path)
    except UserError as err:
        notes.append(f"config.yaml could not be read ({err}); sections that need it are left out.")
        return None


def _load_rounds(run_dir: Path, notes: list[str]) -> list[RoundFiles]:
    """Every round-k/ with a model, an evaluation or a selection, in order of k."""
    summary = _summary_rows(run_dir / "summary.json")
    rounds = []
    dirs = sorted((int(m.group(1)), p) for p in run_dir.iterdir() if p.is_dir() and (m := _ROUND_DIR.match(p.name)))
    for k, folder in dirs:
        r = RoundFiles(k)
        r.meta = _optional_json(folder / "model.json", notes)
        r.evaluation = _optional_json(folder / "eval.json", notes)
        r.selection = _optional_json(folder / "selection.json", notes)
        r.robustness = _optional_json(folder / "robustness.json", notes)
        if r.meta is None and r.evaluation is None and r.selection is None:
            continue  # a round still training
        r.confidence, r.hard = _pseudo_labels(folder / "pseudo_labels.safetensors", notes)
        row = summary.get(k, {})
        r.params, r.summary_model = row.get("params"), row.get("model")
        if r.params is None and r.meta is not None:
            r.params = _count_params(r.meta)
        rounds.append(r)
    return rounds


def _optional_json(path: Path, notes: list[str]) -> dict[str, Any] | None:
    if not path.exists():
        return None
    try:
        data = read_json(path)
    except UserError as err:
        notes.append(str(err))
        return None
    return data if isinstance(data, dict) else None


def _summary_rows(path: Path) -> dict[int, dict[str, Any]]:
    try:
        rows = json.loads(path.read_text())["rounds"]
        return {int(r["round"]): r for r in rows}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def _pseudo_labels(path: Path, notes: list[str]) -> tuple[np.ndarray | None, torch.Tensor | None]:
    if not path.exists():
        return None, None
    from noisystudent.pseudo_label import PseudoLabels

    try:
        pl = PseudoLabels.load(path)
    except (UserError, KeyError) as err:
        notes.append(f"{path}: unreadable pseudo-labels ({err})")
        return None, None
    return pl.confidence.numpy(), pl.hard


def _count_params(meta: dict[str, Any]) -> int | None:
    from noisystudent.models import count_params, create_model

    try:
        args = dict(meta["model"])
        return count_params(create_model(args.pop("name"), **args))
    except Exception:  # an unknown model or changed arguments: the count is only informative
        return None


def _classes(rounds: list[RoundFiles]) -> list[str]:
    for r in rounds:
        if r.meta is not None and r.meta.get("classes"):
            return [str(c) for c in r.meta["classes"]]
    return []


def record_round(record: dict[str, Any]) -> tuple[int, str | None] | None:
    """(k, step) of a metrics record whose stage is "round-k" (a training epoch: step None) or
    "round-k/step" (a pipeline step such as "evaluate"); None for any other record."""
    match = _ROUND_STAGE.match(str(record.get("stage", "")))
    return None if match is None else (int(match.group(1)), match.group(2))


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The records of metrics.jsonl; a line cut short by an interruption is skipped."""
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def _load_data(config: Any, notes: list[str]) -> Any:
    from noisystudent.data.build import build_datasets

    try:
        return build_datasets(config.data, cache_root=config.cache_root())
    except (UserError, OSError) as err:
        notes.append(f"the images could not be loaded again from config.yaml ({err}); image sections are left out.")
        return None


def corruption_errors(robustness: dict[str, Any]) -> dict[str, float]:
    """Error per corruption type (mean over severities) from a robustness.json."""
    by_type = robustness.get("corruption_error") or {}
    out = {}
    for name, value in by_type.items() if isinstance(by_type, dict) else ():
        v = as_error(value)
        if v is not None:
            out[str(name)] = v
    return out


def as_error(value: Any) -> float | None:
    """A number, or the mean of a list / dict of numbers; None for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        nums = [float(v) for v in value if isinstance(v, (int, float)) and not isinstance(v, bool)]
        return float(np.mean(nums)) if nums else None
    return None
