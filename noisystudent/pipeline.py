"""The Noisy Student rounds, as stages that write into the run directory.

    runs/<name>/config.yaml                  the resolved config
    runs/<name>/round-0/model.safetensors    teacher weights (+ model.json: arguments, input format, metrics)
    runs/<name>/round-k/pseudo_labels.safetensors   clean teacher's labels for every unlabeled image
    runs/<name>/round-k/selection.json       threshold and class-balance statistics
    runs/<name>/round-k/selected.safetensors indices of the selected images (repeats = duplicates)
    runs/<name>/round-k/model.safetensors    student of round k (the teacher of round k+1)
    runs/<name>/round-k/eval.json            test metrics
    runs/<name>/round-k/robustness.json      corruption errors, mCE, relative mCE, flip rates, FGSM accuracy
    runs/<name>/round-k/train_state.safetensors   resumable state while training (removed when done)
    runs/<name>/metrics.jsonl, run.log, summary.json, summary.md, report.html (+ plots/, tensorboard/)

A stage whose output exists is skipped, so re-running the same command continues where it stopped.

With several processes (`dist`, from torchrun), every rank runs the same rounds: training is data
parallel, pseudo-labeling is sharded, and rank 0 alone writes files and evaluates while the
others wait at a barrier before they read what it wrote.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from noisystudent.augment import RandAugment
from noisystudent.checkpoint import (atomic_write_bytes, load_model, load_tensors, read_json, save_model,
                                     save_tensors, write_json)
from noisystudent.config import Config, diff_keys
from noisystudent.data.build import Datasets, build_datasets
from noisystudent.data.imageset import take_rows
from noisystudent.distributed import Dist
from noisystudent.errors import UserError
from noisystudent.evaluate import evaluate
from noisystudent.models import count_params, create_model, list_models
from noisystudent.progress import MetricsLog
from noisystudent.pseudo_label import PseudoLabels, accuracy_stats, make_targets, predict_to_file, select
from noisystudent.targets import Targets
from noisystudent.tensors import channel_stats
from noisystudent.train import Augmentation, Evaluation, _derive, train

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    run_dir: Path
    rows: list[dict[str, Any]] = field(default_factory=list)

    def table(self) -> str:
        """Markdown table: one row per round."""
        rob = any(r.get("mce") is not None for r in self.rows)
        head = "| round | model | params | pseudo-labels kept | pseudo-label acc. | test acc. |"
        rule = "|---|---|---:|---:|---:|---:|"
        if rob:
            head += " mCE | rel. mCE | flip rate (translate) | FGSM 4/255 acc. |"
            rule += "---:|---:|---:|---:|"
        lines = [head, rule]
        for r in self.rows:
            kept = "-" if r["pseudo_labels_kept"] is None else f"{r['pseudo_labels_kept']:,}"
            line = (f"| {r['round']} | {r['model']} | {r['params']:,} | {kept} | "
                    f"{_pct(r['pseudo_label_accuracy'])} | {_pct(r['test_accuracy'])} |")
            if rob and r.get("mce") is not None:
                line += (f" {_pct(r['mce'])} | {r['relative_mce']:.3f} | {_pct(r['flip_rate'].get('translate'))} |"
                         f" {_pct(r['fgsm_accuracy'].get('4'))} |")
            lines.append(line)
        return "\n".join(lines)

    @property
    def final_accuracy(self) -> float | None:
        return self.rows[-1]["test_accuracy"] if self.rows else None


def run(cfg: Config, *, progress: bool = True, force: bool = False, dist: Dist | None = None) -> RunResult:
    """Run (or continue) the whole pipeline described by `cfg`; returns the per-round summary.

    `dist`: the process group when several processes run this together (every rank calls `run` with
    the same config; see `noisystudent.distributed.init_distributed`); default: one process.
    """
    dist = dist or Dist()
    unknown = [n for n in cfg.model.names if n not in list_models()]
    if unknown:
        raise UserError(f"model.names: unknown model {unknown[0]!r}; available: {', '.join(list_models())}")
    device = dist.device_for(resolve_device(cfg.device))
    if dist.distributed and device.type != "cuda" and (cfg.teacher.sync_bn or cfg.student.sync_bn):
        raise UserError("teacher.sync_bn / student.sync_bn: synchronized batch norm needs CUDA (torch's "
                        "SyncBatchNorm runs only on GPUs); set them to false for CPU processes")
    run_dir = Path(cfg.out_dir) / cfg.name
    _check_run_dir(run_dir, cfg, force)
    progress = progress and dist.is_main
    # before the run directory is written: bad input leaves nothing behind. Rank 0 decodes folder
    # inputs into their caches first; the other ranks then open the same caches (nothing to decode).
    data, error = None, None
    if dist.is_main:
        try:
            data = build_datasets(cfg.data, progress, cfg.cache_root())
        except UserError as e:
            error = e
    if int(dist.all_reduce_sum(torch.tensor([0 if error is None else 1]))[0]):  # every rank learns of it
        raise error or UserError("process 0 could not read the data (its message says why)")
    if data is None:
        data = build_datasets(cfg.data, False, cfg.cache_root(), prepare=False)
    if dist.is_main:
        _claim_run_dir(run_dir, cfg, force)
    dist.barrier()  # the other ranks use the run directory only once rank 0 has made it
    if not (run_dir / "config.yaml").exists():
        raise UserError(f"{run_dir}: process {dist.rank} does not see the run directory that process 0 made; with "
                        "several machines, out_dir must be on a file system all of them share")
    handler = _log_to_file(run_dir / "run.log") if dist.is_main else None
    try:
        return _run(cfg, run_dir, data, device, progress, dist)
    finally:
        if handler is not None:
            logging.getLogger("noisystudent").removeHandler(handler)
            handler.close()


def _run(cfg: Config, run_dir: Path, data: Datasets, device: torch.device, progress: bool, dist: Dist) -> RunResult:
    config_hash = cfg.hash()
    log.info("run %s: device %s (%d CPU threads, %s), config hash %s", run_dir, device, torch.get_num_threads(),
             dist.describe(), config_hash)
    for note in data.notes:
        log.info(note)
    log.info("data: %s", data.describe())
    mean, std = channel_stats(data.labeled.images)
    metrics = MetricsLog(run_dir / "metrics.jsonl" if dist.is_main else None)
    # one record per sitting: a resumed run's working time leaves out the pauses between sittings
    metrics.write(stage="run", device=str(device), threads=torch.get_num_threads(), processes=dist.world_size,
                  config_hash=config_hash)
    ctx = _Context(cfg, run_dir, data, mean, std, device, metrics, progress, dist)

    result = RunResult(run_dir)
    for k in range(cfg.pipeline.rounds + 1):
        t0 = time.perf_counter()
        row = _round(ctx, k)
        log.info("round %d (%s): test accuracy %s, pseudo-labels kept %s (%.0f s)", k, row["model"],
                 _pct(row["test_accuracy"]), row["pseudo_labels_kept"], time.perf_counter() - t0)
        result.rows.append(row)
        if dist.is_main:
            write_json(run_dir / "summary.json", {"config_hash": config_hash, "rounds": result.rows})
    if not dist.is_main:
        return result
    atomic_write_bytes(run_dir / "summary.md", (result.table() + "\n").encode())
    if cfg.pipeline.report:
        from noisystudent.report import build_report

        log.info("report: %s", build_report(run_dir))
    return result


@dataclass
class _Context:
    cfg: Config
    run_dir: Path
    data: Datasets
    mean: torch.Tensor
    std: torch.Tensor
    device: torch.device
    metrics: MetricsLog  # writes nothing on ranks other than 0
    progress: bool
    dist: Dist = field(default_factory=Dist)

    @property
    def num_classes(self) -> int:
        return len(self.data.classes)


def _round(ctx: _Context, k: int) -> dict[str, Any]:
    cfg, rdir = ctx.cfg, ctx.run_dir / f"round-{k}"
    rdir.mkdir(parents=True, exist_ok=True)
    selection: dict[str, Any] | None = None
    unlabeled = None
    teacher = previous = None
    trained = (rdir / "model.json").exists()
    if k > 0 and trained:  # a finished round: its statistics are on disk, nothing to prepare
        selection = read_json(rdir / "selection.json")
    elif k > 0:
        teacher, _ = load_model(ctx.run_dir / f"round-{k - 1}" / "model.safetensors", ctx.device)
        previous = teacher
        pl, chosen, selection = stage_pseudo_label(ctx, rdir, k, teacher)
        if len(chosen) == 0 and cfg.pipeline.variant != "consistency":
            log.warning("round %d: no pseudo-label passed the threshold %.2f; the student trains on the labeled "
                        "images only (lower pseudo.threshold or train the teacher longer)", k, cfg.pseudo.threshold)
        if cfg.pipeline.variant == "consistency":
            unlabeled = (ctx.data.unlabeled.images, None)
        else:
            unlabeled = (take_rows(ctx.data.unlabeled.images, chosen), make_targets(pl, chosen, cfg.pseudo.mode))
            teacher = None  # offline pseudo-labels: the teacher is not needed while training
    model = stage_train(ctx, rdir, k, unlabeled, teacher, previous)
    ev = stage_evaluate(ctx, rdir, model)
    rob = stage_robustness(ctx, rdir, model) if cfg.pipeline.robustness else None
    return {
        "round": k,
        "model": cfg.model_for_round(k),
        "params": count_params(model),
        "pseudo_labels_kept": None if selection is None else selection["selected"],
        "pseudo_label_accuracy": None if selection is None else selection["pseudo_label_accuracy"],
        "pseudo_label_accuracy_selected": None if selection is None else selection["pseudo_label_accuracy_selected"],
        "per_class_after_balance": None if selection is None else selection["per_class_after"],
        "test_accuracy": None if ev is None else ev["accuracy"],
        "mce": None if rob is None else rob["mce"],
        "relative_mce": None if rob is None else rob["relative_mce"],
        "flip_rate": None if rob is None else rob["flip_rate"],
        "fgsm_accuracy": None if rob is None else rob["fgsm_accuracy"],
    }


# ---- stages ------------------------------------------------------------------------------------------
def stage_pseudo_label(ctx: _Context, rdir: Path, k: int,
                       teacher: torch.nn.Module) -> tuple[PseudoLabels, torch.Tensor, dict[str, Any]]:
    """Label every unlabeled image with the clean teacher, then threshold, keep round k's curriculum
    fraction of each class and balance."""
    cfg = ctx.cfg.pseudo
    pl_path, sel_path = rdir / "pseudo_labels.safetensors", rdir / "selection.json"
    if pl_path.exists():
        pl = PseudoLabels.load(pl_path)
    else:  # sharded over the ranks; every rank gets the whole result
        pl = predict_to_file(teacher, ctx.data.unlabeled.images, pl_path, dist=ctx.dist, mean=ctx.mean, std=ctx.std,
                             temperature=cfg.temperature, topk=cfg.topk, batch_size=cfg.batch_size, device=ctx.device,
                             progress=ctx.progress, desc=f"{rdir.name} pseudo-label")
    idx_path = rdir / "selected.safetensors"
    if sel_path.exists() and idx_path.exists():
        return pl, load_tensors(idx_path)["indices"], read_json(sel_path)
    chosen, stats = select(pl, num_classes=ctx.num_classes, threshold=cfg.threshold, balance=cfg.balance,
                           per_class=cfg.per_class, fraction=ctx.cfg.curriculum_for_round(k))
    stats.update(accuracy_stats(pl, chosen, ctx.data.unlabeled.labels))
    log.info("%s: %s of %s unlabeled images pass the threshold %.2f (%.1f%%); %s%s selected after balancing%s",
             rdir.name, f"{stats['passed_threshold']:,}", f"{stats['total']:,}", cfg.threshold,
             100 * stats["kept_fraction"],
             "" if "curriculum_fraction" not in stats else
             f"each class's most confident {stats['curriculum_fraction']:.0%} ({stats['unique_selected']:,} images) kept, ",
             f"{stats['selected']:,}",
             "" if stats["pseudo_label_accuracy"] is None else
             f"; pseudo-label accuracy {_pct(stats['pseudo_label_accuracy'])} on all, "
             f"{_pct(stats['pseudo_label_accuracy_selected'])} on the selected")
    ctx.metrics.write(stage=f"{rdir.name}/select", **stats)
    if ctx.dist.is_main:  # the other ranks computed the same selection (it is deterministic)
        save_tensors(idx_path, {"indices": chosen})
        write_json(sel_path, stats)
    return pl, chosen, stats


def stage_train(ctx: _Context, rdir: Path, k: int, unlabeled: tuple[torch.Tensor, Targets | None] | None,
                teacher: torch.nn.Module | None, previous: torch.nn.Module | None = None) -> torch.nn.Module:
    """Train the model of round k (teacher at k=0, noised student after) unless it exists. `teacher`:
    the online teacher of the consistency variant; `previous`: round k-1's model (k > 0), the teacher
    the student is compared with and, with `model.warm_start`, starts from."""
    cfg = ctx.cfg
    path = rdir / "model.safetensors"
    if path.with_suffix(".json").exists():
        model, _ = load_model(path, ctx.device)
        return model
    noised = k > 0 or cfg.noise.noise_teacher
    name = cfg.model_for_round(k)
    args = {"name": name, "num_classes": ctx.num_classes, "in_chans": ctx.data.labeled.shape[0],
            "drop_rate": cfg.noise.dropout if noised else 0.0,
            "drop_path_rate": cfg.noise.drop_path if noised else 0.0}
    torch.manual_seed(_derive(cfg.seed, "init", k))
    model = create_model(**args)
    if previous is not None:
        if count_params(model) < count_params(previous):
            log.warning("round %d: student %s (%s parameters) is smaller than its teacher %s (%s); "
                        "Noisy Student asks for an equal or larger student", k, name,
                        f"{count_params(model):,}", cfg.model_for_round(k - 1), f"{count_params(previous):,}")
        if cfg.model.warm_start:
            _warm_start(model, k, name, cfg.model_for_round(k - 1), previous)
    weak = dict(crop_pad=cfg.augment.crop_pad, flip=cfg.augment.flip)
    ra = RandAugment.from_spec(cfg.noise.randaugment) if noised and cfg.noise.randaugment else None
    augmentation = Augmentation(randaugment=ra, pixel_noise=cfg.noise.pixel_noise if noised else 0.0,
                                mixup=cfg.noise.mixup if noised else 0.0, **weak)
    tcfg = cfg.student if k > 0 else cfg.teacher
    test = ctx.data.test
    result = train(
        model,
        labeled=(ctx.data.labeled.images, Targets.from_labels(ctx.data.labeled.labels)),
        unlabeled=unlabeled, cfg=tcfg, num_classes=ctx.num_classes, mean=ctx.mean, std=ctx.std,
        augmentation=augmentation, seed=cfg.seed, device=ctx.device,
        teacher=teacher, teacher_augmentation=Augmentation(**weak), temperature=cfg.pseudo.temperature,
        evaluation=None if test is None else Evaluation(test.images, test.labels, cfg.pseudo.batch_size),
        state_path=rdir / "train_state.safetensors", metrics=ctx.metrics, tag=f"round-{k}",
        progress=ctx.progress, dist=ctx.dist)
    c, h, w = ctx.data.labeled.shape
    meta = {
        "model": args,
        "classes": ctx.data.classes,
        "input": {"channels": c, "height": h, "width": w, "mean": ctx.mean.tolist(), "std": ctx.std.tolist()},
        "round": k,
        "config_hash": cfg.hash(),
        "train": asdict(result),
    }
    if ctx.dist.is_main:
        save_model(path, model, meta)
        (rdir / "train_state.safetensors").unlink(missing_ok=True)
    ctx.dist.barrier()  # the model file exists for every rank (the next round's teacher)
    return model


def _warm_start(model: torch.nn.Module, k: int, name: str, teacher_name: str, teacher: torch.nn.Module) -> None:
    """`model.warm_start`: the student of round k starts from its teacher's weights when both are the
    same architecture; a different (larger) student keeps its fresh initialisation."""
    if name != teacher_name:
        log.info("round %d: student %s is not its teacher's architecture (%s): it starts from a fresh "
                 "initialisation (model.warm_start applies to equal students only)", k, name, teacher_name)
        return
    model.load_state_dict(teacher.state_dict())
    log.info("round %d: student %s starts from its teacher's weights (model.warm_start)", k, name)


def stage_evaluate(ctx: _Context, rdir: Path, model: torch.nn.Module) -> dict[str, Any] | None:
    """Test metrics of the round's model, on rank 0 (the other ranks wait, then read eval.json)."""
    return _on_main(ctx, rdir / "eval.json", lambda: _evaluate(ctx, rdir, model))


def stage_robustness(ctx: _Context, rdir: Path, model: torch.nn.Module) -> dict[str, Any] | None:
    """Robustness of the round's model, on rank 0 (the other ranks wait, then read robustness.json)."""
    return _on_main(ctx, rdir / "robustness.json", lambda: _robustness(ctx, rdir, model))


def _on_main(ctx: _Context, path: Path, compute: Callable[[], dict[str, Any] | None]) -> dict[str, Any] | None:
    """`compute()` (which writes `path`, or returns None) on rank 0 only; every other rank waits for
    it, then reads `path`. One process: just `compute()`."""
    result = compute() if ctx.dist.is_main else None
    ctx.dist.barrier()
    if ctx.dist.is_main:
        return result
    return read_json(path) if path.exists() else None


def _evaluate(ctx: _Context, rdir: Path, model: torch.nn.Module) -> dict[str, Any] | None:
    test = ctx.data.test
    if test is None:
        return None
    path = rdir / "eval.json"
    if path.exists():
        return read_json(path)
    ev = evaluate(model, test.images, test.labels, ctx.num_classes, mean=ctx.mean, std=ctx.std, device=ctx.device,
                  batch_size=ctx.cfg.pseudo.batch_size)
    write_json(path, ev)
    ctx.metrics.write(stage=f"{rdir.name}/evaluate", test_accuracy=ev["accuracy"], n=ev["n"])
    return ev


def _robustness(ctx: _Context, rdir: Path, model: torch.nn.Module) -> dict[str, Any] | None:
    """Corruption errors, mCE, relative mCE (normalised by the round-0 teacher), flip rates and FGSM
    accuracy on the test set, or on a seeded subset of `pipeline.robustness_images` of it; the subset
    and the corruptions are seeded, so every round sees the same corrupted images."""
    from noisystudent.robustness import robustness_report

    test = ctx.data.test
    if test is None:
        return None
    path = rdir / "robustness.json"
    if path.exists():
        return read_json(path)
    base_path = ctx.run_dir / "round-0" / "robustness.json"
    baseline = read_json(base_path) if base_path.exists() and rdir.name != "round-0" else None
    n = ctx.cfg.pipeline.robustness_images
    if 0 < n < len(test):
        g = torch.Generator().manual_seed(ctx.cfg.data.split_seed)
        test = test.subset(torch.randperm(len(test), generator=g)[:n].sort().values)
    rob = robustness_report(model, test.images, test.labels, mean=ctx.mean, std=ctx.std, device=ctx.device,
                            seed=ctx.cfg.data.split_seed, baseline=baseline, batch_size=ctx.cfg.pseudo.batch_size,
                            progress=ctx.progress)
    if baseline is None:  # the teacher is its own reference
        rob["relative_mce"] = 1.0
    write_json(path, rob)
    ctx.metrics.write(stage=f"{rdir.name}/robustness", mce=rob["mce"], relative_mce=rob["relative_mce"],
                      flip_rate=rob["flip_rate"], fgsm_accuracy=rob["fgsm_accuracy"])
    log.info("%s: mCE %s, relative mCE %.3f, flip rate %s", rdir.name, _pct(rob["mce"]), rob["relative_mce"],
             ", ".join(f"{k} {100 * v:.2f}%" for k, v in rob["flip_rate"].items()))
    return rob


# ---- run directory -------------------------------------------------------------------------------------
def _check_run_dir(run_dir: Path, cfg: Config, force: bool) -> None:
    """Refuse a run directory that holds another config, naming the changed keys (unless `force`).

    `pipeline.rounds` may change: adding rounds continues a finished run.
    """
    cfg_path = run_dir / "config.yaml"
    if force or not cfg_path.exists():
        return
    try:
        old = Config.from_dict(yaml.safe_load(cfg_path.read_text()) or {}, origin=str(cfg_path)).hash_dict()
    except (UserError, yaml.YAMLError):
        old = None
    changed = ["(unreadable saved config)"] if old is None else diff_keys(old, cfg.hash_dict())
    changed = [key for key in changed if key != "pipeline.rounds"]
    if changed:
        shown = ", ".join(changed[:6]) + (f" and {len(changed) - 6} more" if len(changed) > 6 else "")
        raise UserError(f"{run_dir}: this run directory was made with a different config (changed: {shown}); "
                        "use --force to start it over, or --name to start a new run")


def _claim_run_dir(run_dir: Path, cfg: Config, force: bool) -> None:
    """Create the run directory (emptied first with `force`) and save the resolved config in it."""
    _check_run_dir(run_dir, cfg, force)
    if force and run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(run_dir / "config.yaml", cfg.to_yaml().encode())


def _log_to_file(path: Path) -> logging.Handler:
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("noisystudent")
    logger.addHandler(handler)
    if logger.level == logging.NOTSET or logger.level > logging.INFO:
        logger.setLevel(logging.INFO)
    return handler


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device: {name!r} was asked for but this PyTorch has no CUDA device "
                        f"(torch {torch.__version__}); use --device cpu")
    return torch.device(name)


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"
