"""Benchmark results that outlive their run directories.

A long benchmark (hours on 2 cores) is measured over several sittings, often on different
machines that share nothing but the repository. Its rows are kept here, per config and seed:

    benchmarks/records/<benchmark>/<key>/config.yaml        the config every record below used
    benchmarks/records/<benchmark>/<key>/seed<s>.json       per row: its result and where it was measured
    benchmarks/records/<benchmark>/<key>/seed<s>-teacher/   the round-0 run directory files (the teacher's
                                                            weights, its eval and robustness, its metrics)

<key> is a hash of the settings that change results, so a changed config starts new records rather
than mixing with old ones. The teacher is kept (about 1 MB) because later rows reuse it: an ablation
measured in a later sitting starts from the same teacher as the main round it is compared with,
and a main run resumed elsewhere counts the teacher's working time in its elapsed column. Students'
weights are not kept (a few MB each); a main round that is not recorded is retrained from the teacher.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from datetime import date
from pathlib import Path
from typing import Any

from common import machine_line
from noisystudent import Config
from noisystudent.report.run_files import read_metrics, record_round

# the round-0 files a finished teacher needs, so that the pipeline skips its training and evaluation
TEACHER_FILES = ("model.safetensors", "model.json", "eval.json", "robustness.json")


def records_key(cfg: Config) -> str:
    """16 hex digits naming the config: the settings that change results, where the data lies left out."""
    d = cfg.hash_dict()
    d["data"].pop("dir", None)
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def _result_of(row: dict[str, Any]) -> str:
    """A recorded row's measured result (accuracy and result row), as comparable text."""
    return json.dumps({k: row.get(k) for k in ("acc", "row")}, sort_keys=True)


class Records:
    """The recorded rows of one benchmark config (see the module docstring)."""

    def __init__(self, root: Path, cfg: Config):
        self.dir = Path(root) / records_key(cfg)
        self.cfg = cfg

    def _seed_file(self, seed: int) -> Path:
        return self.dir / f"seed{seed}.json"

    def load(self, seed: int) -> dict[str, dict[str, Any]]:
        """Row name -> recorded result (with its "measured" provenance); {} when none."""
        path = self._seed_file(seed)
        return json.loads(path.read_text())["rows"] if path.exists() else {}

    def save(self, seed: int, results: dict[str, dict[str, Any]]) -> None:
        """Record (or replace) these rows of `seed`, stamped with today's date, machine and command."""
        if not results:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        cfg_path = self.dir / "config.yaml"
        if not cfg_path.exists():
            cfg_path.write_text(self.cfg.to_yaml())
        stamp = {"date": str(date.today()), "machine": machine_line(),
                 "command": " ".join(["python", Path(sys.argv[0]).name, *sys.argv[1:]])}
        rows = self.load(seed)
        for name, res in results.items():
            old = rows.get(name, {})
            # a row saved again with the same result (a finished round that a later sitting skipped) is
            # the same measurement: it keeps where and when it was measured
            same = bool(old) and _result_of(old) == _result_of(res)
            rows[name] = {**(old if same else {}), **res,
                          "measured": res.get("measured") or (old["measured"] if same else stamp)}
        tmp = self._seed_file(seed).with_suffix(".tmp")
        tmp.write_text(json.dumps({"seed": seed, "rows": rows}, indent=1, sort_keys=True) + "\n")
        tmp.replace(self._seed_file(seed))

    # ---- the teacher ----------------------------------------------------------------------------
    def _teacher_dir(self, seed: int) -> Path:
        return self.dir / f"seed{seed}-teacher"

    def has_teacher(self, seed: int) -> bool:
        return (self._teacher_dir(seed) / "round-0" / "model.json").exists()

    def archive_teacher(self, seed: int, run_dir: Path) -> bool:
        """Keep the finished round 0 of `run_dir` (weights, eval, robustness, and its metrics up to its
        last round-0 record); False when round 0 is not finished or is already kept."""
        src = Path(run_dir) / "round-0"
        if self.has_teacher(seed) or not all((src / f).exists() for f in TEACHER_FILES[:3]):
            return False
        records = read_metrics(Path(run_dir) / "metrics.jsonl")
        ends = [i for i, r in enumerate(records) if (record_round(r) or (None,))[0] == 0]
        if not ends:
            return False
        dst = self._teacher_dir(seed)
        tmp = dst.with_name(dst.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        (tmp / "round-0").mkdir(parents=True)
        for name in TEACHER_FILES:
            if (src / name).exists():
                shutil.copy2(src / name, tmp / "round-0" / name)
        shutil.copy2(Path(run_dir) / "config.yaml", tmp / "config.yaml")
        kept = records[: ends[-1] + 1]
        (tmp / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in kept))
        tmp.replace(dst)
        return True

    def restore_teacher(self, seed: int, run_dir: Path) -> bool:
        """Put the kept teacher into `run_dir` when its round 0 is not finished there (its metrics
        replace the run's, which then hold no finished work); False when nothing was restored."""
        run_dir = Path(run_dir)
        if (run_dir / "round-0" / "model.json").exists() or not self.has_teacher(seed):
            return False
        src = self._teacher_dir(seed)
        (run_dir / "round-0").mkdir(parents=True, exist_ok=True)
        for name in TEACHER_FILES:
            if (src / "round-0" / name).exists():
                shutil.copy2(src / "round-0" / name, run_dir / "round-0" / name)
        (run_dir / "round-0" / "train_state.safetensors").unlink(missing_ok=True)
        shutil.copy2(src / "metrics.jsonl", run_dir / "metrics.jsonl")
        if not (run_dir / "config.yaml").exists():
            shutil.copy2(src / "config.yaml", run_dir / "config.yaml")
        return True


def sittings(per_seed: dict[int, dict[str, dict[str, Any]]]) -> list[str]:
    """One line per (date, machine, command): which seeds and rows it measured."""
    groups: dict[tuple[str, str, str], dict[int, list[str]]] = {}
    for seed, rows in per_seed.items():
        for name, res in rows.items():
            m = res.get("measured") or {}
            key = (m.get("date", "?"), m.get("machine", "?"), m.get("command", "?"))
            groups.setdefault(key, {}).setdefault(seed, []).append(name)
    lines = []
    for (day, machine, command), seeds in sorted(groups.items()):
        what = "; ".join(f"seed {s}: {', '.join(rows)}" for s, rows in sorted(seeds.items()))
        lines.append(f"{day}, `{command}` ({machine.removeprefix('machine: ')}): {what}")
    return lines
