"""Several processes: the shard arithmetic, train() under DDP, and a 2-process gloo pipeline run.

The multi-process tests launch `python -m torch.distributed.run --standalone --nproc_per_node=2` on
this checkout (PYTHONPATH is the repository root this file lies in) with one torch thread per process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from noisystudent import Config, load_model, run
from noisystudent.checkpoint import load_tensors
from noisystudent.cli import main, without_nproc
from noisystudent.distributed import usable_cores
from noisystudent.data.build import build_datasets
from noisystudent.distributed import Dist, RowRange, init_distributed, rank_rows, shard_rows
from noisystudent.errors import UserError
from noisystudent.models import create_model
from noisystudent.pseudo_label import PseudoLabels, predict

REPO = Path(__file__).resolve().parents[1]
DRIVER = Path(__file__).resolve().parent / "ddp_train_driver.py"

# A tiny digits pipeline (teacher + 1 round) that still learns: 100 labeled images, 400 unlabeled,
# labeled in 7 inference batches of 64 (the last one short, so the 2 shards are 4 and 3 batches).
TINY = ["teacher.epochs=30", "student.epochs=10", "model.names=[resnet8]", "data.max_unlabeled=400",
        "data.labeled_per_class=10", "teacher.batch_size=20", "student.batch_size=16", "pipeline.rounds=1",
        "teacher.eval_every=0", "student.eval_every=0", "pipeline.report=false", "pipeline.robustness=false",
        "pseudo.batch_size=64", "noise.randaugment=rand-n1-m3", "noise.dropout=0.2"]
# Final (round-1) test accuracy, 2 processes vs 1, same config and global batches. Not the same
# computation: each rank normalises batch norm over its own half of the batch (10 of the teacher's 20
# rows) and draws its own augmentation and dropout. Measured on this config, seeds 0-7 each (2-core CPU,
# 2026-11-23, `noisystudent run` with these overrides and --seed; 1 process with 2 threads, 2 with 1):
#   1 process:   final 78.3% mean, 2.7 points std, range 75.1-82.4%  (teacher 88.2%)
#   2 processes: final 76.5% mean, 2.0 points std, range 73.8-79.6%  (teacher 85.0%)
#   same seed, |2 processes - 1 process|: 0.2 to 5.9 points (5.9 at seed 1; 3.9 at seed 0, the one tested)
# The teacher's 3-point drop is the half-batch batch norm, not a bug: one process whose batch-norm
# layers normalise the two halves of each batch apart (running statistics from the first half, as DDP
# broadcasts rank 0's) reaches 85.4% (seeds 0-7), the 2-process figure; and without batch norm
# (test_ddp_training_is_the_single_process_training...) the weights agree to 1e-6. The tolerance, 10
# points, covers the widest gap between any 2-process and any 1-process run above (73.8 vs 82.4: 8.6).
TOLERANCE = 0.10


def python(*args: str, timeout: float = 180, threads: str | None = "1") -> subprocess.CompletedProcess:
    """`python ARGS` on this checkout with OMP_NUM_THREADS=`threads` (None: unset), by default one torch
    thread (a process per core, as torchrun's default)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": threads}
    env = {k: v for k, v in env.items() if v is not None}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, timeout=timeout)


def torchrun(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return python("-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *args, timeout=timeout)


# ---- who does what ----------------------------------------------------------------------------------
@pytest.mark.parametrize("n, batch, world", [(0, 4, 2), (1, 4, 2), (10, 4, 4), (100, 7, 3), (1000, 512, 2),
                                             (513, 512, 2), (37, 5, 8), (64, 64, 3), (400, 64, 2)])
def test_shards_are_batch_aligned_and_cover_every_row_once(n, batch, world):
    shards = [shard_rows(n, batch, world, r) for r in range(world)]
    covered = torch.cat([torch.arange(n)[s] for s in shards])
    assert torch.equal(covered, torch.arange(n))  # in order, each row once
    single_batches = {(a, min(a + batch, n)) for a in range(0, n, batch)}
    for s in shards:
        assert s.start % batch == 0 or s.start == s.stop == n  # empty slices sit at the end
        assert {(a, min(a + batch, s.stop)) for a in range(s.start, s.stop, batch)} <= single_batches
    counts = [-(-(s.stop - s.start) // batch) for s in shards]
    assert max(counts) - min(counts) <= 1


@pytest.mark.parametrize("n, world", [(1, 2), (15, 2), (16, 2), (17, 3), (2, 4)])
def test_a_global_batch_is_split_into_disjoint_rank_parts(n, world):
    rows = torch.randperm(100)[:n]
    parts = [rank_rows(rows, world, r) for r in range(world)]
    assert sorted(torch.cat(parts).tolist()) == sorted(rows.tolist())
    assert max(map(len, parts)) - min(map(len, parts)) <= 1
    assert rank_rows(rows, 1, 0) is rows  # one process: the batch itself


def test_row_range_reads_only_slices():
    images = torch.arange(10 * 4, dtype=torch.uint8).view(10, 1, 2, 2)
    view = RowRange(images, slice(3, 8))
    assert len(view) == 5 and view.shape == (5, 1, 2, 2)
    assert torch.equal(view[1:3], images[4:6]) and torch.equal(view[4:99], images[7:8])
    with pytest.raises(TypeError):
        view[[0, 1]]


def test_sharded_labeling_equals_one_pass_bit_for_bit():
    torch.manual_seed(0)
    model = create_model("resnet8", 10, 1).eval()
    images = torch.randint(0, 256, (203, 1, 8, 8), dtype=torch.uint8)
    mean, std = torch.tensor([0.4]), torch.tensor([0.3])
    kw = dict(mean=mean, std=std, temperature=2.0, topk=3, batch_size=32, progress=False)
    whole = predict(model, images, **kw)
    for world in (2, 3, 8):  # 7 batches: 8 ranks leave one empty
        parts = [predict(model, RowRange(images, shard_rows(len(images), 32, world, r)), **kw) for r in range(world)]
        merged = PseudoLabels.concat(parts)
        for f in ("hard", "confidence", "topk_index", "topk_prob"):
            assert torch.equal(getattr(merged, f), getattr(whole, f)), (world, f)


def test_a_single_process_dist_is_inert():
    d = Dist()
    t = torch.arange(3.0)
    assert d.is_main and not d.distributed and d.all_reduce_sum(t) is t and d.all_gather(t) == [t]
    d.barrier()
    d.broadcast_(t)
    assert d.device_for(torch.device("cpu")) == torch.device("cpu")
    assert init_distributed(torch.device("cpu"), {}) == Dist()
    assert init_distributed(torch.device("cpu"), {"WORLD_SIZE": "1"}) == Dist()
    assert Dist(rank=1, world_size=2, local_rank=1).device_for(torch.device("cuda")) == torch.device("cuda", 1)


def test_sync_batchnorm_swaps_in_and_back_keeping_the_trained_values():
    from noisystudent.train import _from_sync_batchnorm, _to_sync_batchnorm

    model = create_model("resnet8", 10, 1)
    keys = set(model.state_dict())
    originals = _to_sync_batchnorm(model)
    assert len(originals) == sum(isinstance(m, torch.nn.SyncBatchNorm) for m in model.modules()) > 0
    model.train()(torch.randn(4, 1, 8, 8))  # no process group: plain batch norm, running statistics move
    trained = {k: v.clone() for k, v in model.state_dict().items()}
    _from_sync_batchnorm(model, originals)
    assert not any(isinstance(m, torch.nn.SyncBatchNorm) for m in model.modules())
    assert set(model.state_dict()) == keys
    assert all(torch.equal(v, trained[k]) for k, v in model.state_dict().items())


# ---- user errors --------------------------------------------------------------------------------------
@pytest.mark.parametrize("value", ["0", "-2"])
def test_bad_nproc_is_a_one_line_error(capsys, value):
    rc = main(["run", "--nproc", value])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err == f"noisystudent: --nproc {value}: expected a number of processes of at least 1"


def test_more_cuda_processes_than_gpus_is_a_clear_error(capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert main(["run", "--nproc", "2", "--device", "cuda"]) == 2
    assert capsys.readouterr().err.strip() == ("noisystudent: --nproc 2 with device cuda: this machine has 1 GPU(s), "
                                               "one per process is needed")
    env = {"WORLD_SIZE": "4", "RANK": "0", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "2"}
    with pytest.raises(UserError, match=r"cuda with 2 processes on this machine, but it has 1 GPU\(s\)"):
        init_distributed(torch.device("cuda"), env)


def test_sync_bn_on_cpu_processes_is_refused(tmp_path):
    cfg = Config().with_overrides([f"out_dir={tmp_path}", "student.sync_bn=true"])
    with pytest.raises(UserError, match="synchronized batch norm needs CUDA"):
        run(cfg, progress=False, dist=Dist(rank=0, world_size=2, backend="gloo"))
    assert not (tmp_path / cfg.name).exists()


def test_nproc_is_removed_from_the_relaunched_command():
    assert without_nproc(["run", "--nproc", "2", "--name", "x"]) == ["run", "--name", "x"]
    assert without_nproc(["run", "--nproc=2", "-q"]) == ["run", "-q"]
    assert without_nproc(["run", "--np", "3", "--name", "n"]) == ["run", "--name", "n"]


# ---- several processes ----------------------------------------------------------------------------------
def test_ddp_training_is_the_single_process_training_and_resumes_exactly(tmp_path):
    """No batch norm, no augmentation, no dropout: 2 ranks sharing each global batch take the same steps as
    one process (up to float summation order); with dropout, a resumed training equals an uninterrupted one."""
    sys.path.insert(0, str(DRIVER.parent))
    from ddp_train_driver import cases, train_case

    done = torchrun(str(DRIVER), str(tmp_path))
    assert done.returncode == 0, done.stderr[-3000:]
    for name in cases():  # teacher (EMA, a last batch of 1 row: rank 1 gets none), student, consistency
        single = train_case(name, Dist()).state_dict()
        ddp = load_tensors(tmp_path / f"{name}.safetensors")
        for k, v in single.items():
            torch.testing.assert_close(ddp[k], v, rtol=1e-5, atol=1e-6, msg=f"{name}: {k}")
    a = load_tensors(tmp_path / "uninterrupted-student.safetensors")
    b = load_tensors(tmp_path / "resumed-student.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_two_gloo_processes_run_the_pipeline(tmp_path):
    overrides = [a for o in TINY for a in ("--set", o)]
    done = torchrun("-m", "noisystudent", "run", "-q", "--out-dir", str(tmp_path), "--name", "ddp", *overrides,
                    timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("| round | model |") == 1  # rank 0 prints the table, rank 1 nothing
    rd = tmp_path / "ddp"
    cfg = Config.from_yaml(rd / "config.yaml")

    # pseudo-labels: exactly what one process labels with the DDP run's round-0 teacher
    teacher, meta = load_model(rd / "round-0" / "model.safetensors")
    images = build_datasets(cfg.data).unlabeled.images
    single = predict(teacher, images, mean=torch.tensor(meta["input"]["mean"]), std=torch.tensor(meta["input"]["std"]),
                     temperature=cfg.pseudo.temperature, topk=cfg.pseudo.topk, batch_size=cfg.pseudo.batch_size,
                     progress=False)
    merged = PseudoLabels.load(rd / "round-1" / "pseudo_labels.safetensors")
    for f in ("hard", "confidence", "topk_index", "topk_prob"):
        assert torch.equal(getattr(merged, f), getattr(single, f)), f

    # only rank 0 wrote: no shard or state file left, each metrics line once, one run.log start line
    assert not list(rd.rglob("*.rank*.safetensors")) and not list(rd.rglob("train_state.safetensors"))
    lines = (rd / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(l) for l in lines]
    assert len(set(lines)) == len(lines)
    assert sum(1 for r in records if r["stage"] == "round-0" and "epoch" in r) == cfg.teacher.epochs
    assert sum(1 for r in records if r["stage"] == "round-1" and "epoch" in r) == cfg.student.epochs
    assert sum(1 for r in records if r["stage"] == "round-1/select") == 1
    assert (rd / "run.log").read_text().count("rank 0 of 2 (gloo") == 1

    # accuracy: within the seed-to-seed range of a single process with the same config and global batch
    one = python("-m", "noisystudent", "run", "-q", "--out-dir", str(tmp_path), "--name", "single", *overrides)
    assert one.returncode == 0, one.stderr[-3000:]
    acc = {name: json.loads((tmp_path / name / "summary.json").read_text())["rounds"][-1]["test_accuracy"]
           for name in ("ddp", "single")}
    assert abs(acc["ddp"] - acc["single"]) <= TOLERANCE, acc



def test_nproc_relaunches_the_command_under_torchrun(tmp_path):
    tiny = ["--set", "teacher.epochs=1", "--set", "model.names=[resnet8]", "--set", "data.labeled_per_class=5",
            "--set", "data.max_unlabeled=50", "--rounds", "0", "--set", "pipeline.report=false",
            "--set", "pipeline.robustness=false"]
    done = python("-m", "noisystudent", "run", "--nproc", "2", "-q", "--out-dir", str(tmp_path), "--name", "n2", *tiny,
                  threads=None)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("| round | model |") == 1
    log = (tmp_path / "n2" / "run.log").read_text()
    threads = max(1, usable_cores() // 2)  # the cores shared out
    assert f"device cpu ({threads} CPU threads, rank 0 of 2 (gloo, local rank 0))" in log


def test_a_failing_process_under_nproc_is_reported_in_one_line_each(tmp_path):
    missing = str(tmp_path / "missing")
    done = python("-m", "noisystudent", "run", "--nproc", "2", "--labeled", missing, "--unlabeled", missing,
                  "--out-dir", str(tmp_path))
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert 1 <= sum("folder not found" in line for line in lines) <= 2  # once per process that got that far
    assert all(line.startswith("noisystudent") for line in lines), lines
    assert lines[-1].startswith("noisystudent: process ") and "failed with exit status 2" in lines[-1]


def test_two_processes_share_the_folder_caches_that_rank_0_prepares(tmp_path):
    from PIL import Image

    from noisystudent.data.sources import load_digits

    d = load_digits()
    for i in range(90):
        c = int(d.labels[i])
        kind = "labeled" if i < 30 else "unlabeled"
        path = tmp_path / kind / (f"c{c}" if kind == "labeled" else "") / f"{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(d.images[i, 0].numpy()).save(path)
    done = torchrun("-m", "noisystudent", "run", "-q", "--labeled", str(tmp_path / "labeled"), "--unlabeled",
                    str(tmp_path / "unlabeled"), "--out-dir", str(tmp_path / "runs"), "--name", "folders",
                    "--set", "data.image_size=8", "--set", "teacher.epochs=2", "--set", "student.epochs=1",
                    "--set", "model.names=[resnet8]", "--rounds", "1", "--set", "pipeline.report=false",
                    "--set", "pipeline.robustness=false")
    assert done.returncode == 0, done.stderr[-3000:]
    caches = sorted(p.name.split("-")[1] for p in (tmp_path / "runs" / "cache").iterdir())
    assert caches == ["labeled", "unlabeled"]  # one cache per input, written by rank 0 only
    unlabeled = next((tmp_path / "runs" / "cache").glob("unlabeled-*"))
    assert json.loads((unlabeled / "cache.json").read_text())["count"] == 60
    pl = PseudoLabels.load(tmp_path / "runs" / "folders" / "round-1" / "pseudo_labels.safetensors")
    assert len(pl) == 60
