"""Kill a run with SIGKILL at 10 points, re-run it, and get the same bytes as an uninterrupted run.

The child process patches three functions to count their calls and SIGKILL itself on the n-th:
`Targets.dense` (inside a training epoch), `MetricsLog.write` (between epochs and stages) and
`os.replace` (during a checkpoint write, after the temp file is written and before the rename).
"""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from noisystudent import Config

DRIVER = r'''
import json, os, signal, sys
target, n, config = sys.argv[1], int(sys.argv[2]), sys.argv[3]
counts = {}
def hook(name, orig):
    def wrapper(*a, **k):
        counts[name] = counts.get(name, 0) + 1
        if name == target and counts[name] == n:
            os.kill(os.getpid(), signal.SIGKILL)
        return orig(*a, **k)
    return wrapper
import noisystudent.checkpoint as C, noisystudent.progress as P, noisystudent.targets as T
from noisystudent import Config, run
T.Targets.dense = hook("dense", T.Targets.dense)
P.MetricsLog.write = hook("metrics", P.MetricsLog.write)
C.os.replace = hook("replace", os.replace)
run(Config.from_yaml(config), progress=False)
print(json.dumps(counts))
'''

TINY = ["teacher.epochs=3", "student.epochs=2", "model.names=[resnet8]", "data.max_unlabeled=120",
        "data.labeled_per_class=4", "teacher.batch_size=20", "student.batch_size=10", "pipeline.rounds=2",
        "teacher.eval_every=0", "student.eval_every=0", "student.ema=0.5", "pipeline.report=false", "pipeline.robustness=false"]
OUTPUTS = ["round-0/model.safetensors", "round-1/pseudo_labels.safetensors", "round-1/selected.safetensors",
           "round-1/selection.json", "round-1/model.safetensors", "round-2/pseudo_labels.safetensors",
           "round-2/model.safetensors", "round-0/eval.json", "round-1/eval.json", "round-2/eval.json",
           "summary.json"]


def child(tmp: Path, name: str, target: str = "none", n: int = 0) -> subprocess.CompletedProcess:
    cfg = Config().with_overrides(TINY + [f"out_dir={tmp}", f"name={name}"])
    path = tmp / f"{name}.yaml"
    path.write_text(cfg.to_yaml())
    driver = tmp / "driver.py"
    driver.write_text(DRIVER)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(driver), target, str(n), str(path)], capture_output=True,
                          text=True, env=env, timeout=300)


def test_sigkill_at_ten_points_then_resume_gives_identical_results(tmp_path):
    ref = child(tmp_path, "reference")
    assert ref.returncode == 0, ref.stderr
    counts = json.loads(ref.stdout.strip().splitlines()[-1])
    ref_bytes = {p: (tmp_path / "reference" / p).read_bytes() for p in OUTPUTS}
    # spread the 10 kill points over the run: inside epochs, between stages, during checkpoint writes
    points = [("dense", f) for f in (0.05, 0.3, 0.55, 0.9)] + [("metrics", f) for f in (0.2, 0.5, 0.8)] + \
             [("replace", f) for f in (0.1, 0.45, 0.75)]
    for i, (target, frac) in enumerate(points):
        n = max(1, round(frac * counts[target]))
        name = f"kill{i}-{target}-{n}"
        killed = child(tmp_path, name, target, n)
        assert killed.returncode == -signal.SIGKILL, f"{name} was not killed: {killed.stderr[-500:]}"
        resumed = child(tmp_path, name)
        assert resumed.returncode == 0, f"{name}: {resumed.stderr[-2000:]}"
        for p in OUTPUTS:
            assert (tmp_path / name / p).read_bytes() == ref_bytes[p], f"{name}: {p} differs"
        assert not list((tmp_path / name).rglob("train_state.safetensors")), name
