"""One training loop for teacher and student.

A step draws `batch_size` labeled images and, when pseudo-labeled data is given,
`round(batch_size * unlabeled_ratio)` pseudo-labeled images; both go through the same
augmentation (weak crop/flip, then RandAugment when noise is on) and one forward pass, and the
loss is cross-entropy on the labeled targets plus `unlabeled_weight` times cross-entropy on the
(soft or hard) pseudo-label targets. In the consistency variant the pseudo-label targets are the
teacher's temperature-softened predictions, computed online on a weakly augmented view, and the
unlabeled loss is T^2 * KL(teacher || student). With `Augmentation.mixup` the step's rows are then
mixed pairwise, model inputs and targets alike (`noisystudent.augment.mix`).

An epoch is one pass over the pseudo-labeled set when there is one, else over the labeled set
(the labeled stream cycles, reshuffled each pass). Everything random is seeded per epoch from
`seed`, and the state (weights, optimizer, EMA, RNG) is saved atomically after every epoch, so an
interrupted training resumes from its last completed epoch and ends with the same weights.

With several processes (`dist`), every rank draws the same global batches and takes its part of
each (`rank_rows`), so `batch_size` stays the global batch; the model is wrapped in
DistributedDataParallel, and each rank's loss is scaled so that the averaged gradient is the
gradient of the global batch's mean loss. Only rank 0 writes the state file and the metrics.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from noisystudent.augment import RandAugment, gaussian_pixel_noise, mixup, random_crop_flip
from noisystudent.checkpoint import load_tensors, optimizer_from_tensors, optimizer_to_tensors, save_tensors
from noisystudent.config import TrainConfig
from noisystudent.distributed import Dist, rank_rows
from noisystudent.errors import UserError
from noisystudent.evaluate import accuracy
from noisystudent.inference import INFERENCE_BATCH
from noisystudent.progress import MetricsLog, progress_bar
from noisystudent.targets import Targets
from noisystudent.tensors import to_model_input

log = logging.getLogger(__name__)


@dataclass
class Augmentation:
    """What a training applies to its input images."""

    crop_pad: int = 0                       # pixels
    flip: bool = False
    randaugment: RandAugment | None = None  # input noise (students; teachers only when noised)
    pixel_noise: float = 0.0                # input noise: max per-image std of Gaussian pixel noise,
                                            # in units of the pixel range (0 = off)
    mixup: float = 0.0                      # input noise on images and targets: Beta parameter of per-row
                                            # mixup (0 = off); `train` applies it to the model input, since
                                            # it needs the targets (`noisystudent.augment.mixup`)

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        x = images
        if self.crop_pad or self.flip:
            x = random_crop_flip(x, pad=self.crop_pad, flip=self.flip, generator=generator)
        if self.randaugment is not None:
            x = self.randaugment(x, generator=generator)
        if self.pixel_noise:
            x = gaussian_pixel_noise(x, self.pixel_noise, generator=generator)
        return x


@dataclass
class Evaluation:
    """Test images for the per-epoch log line (reported, never used to choose anything)."""

    images: torch.Tensor  # (N, C, H, W) uint8
    labels: torch.Tensor  # (N,) int64
    batch_size: int = INFERENCE_BATCH  # images per inference batch


@dataclass
class TrainResult:
    epochs: int
    loss: float
    test_accuracy: float | None
    seconds: float
    images_per_second: float


class NonFiniteLoss(UserError):
    pass


def train(model: torch.nn.Module, *, labeled: tuple[torch.Tensor, Targets],
          unlabeled: tuple[torch.Tensor, Targets | None] | None, cfg: TrainConfig, num_classes: int,
          mean: torch.Tensor, std: torch.Tensor, augmentation: Augmentation, seed: int,
          device: torch.device | str = "cpu", teacher: torch.nn.Module | None = None,
          teacher_augmentation: Augmentation | None = None, temperature: float = 1.0,
          evaluation: Evaluation | None = None, state_path: str | Path | None = None,
          metrics: MetricsLog | None = None, tag: str = "train", progress: bool = True,
          dist: Dist | None = None) -> TrainResult:
    """Train `model` in place (ending with the EMA weights when `cfg.ema` > 0).

    labeled: ((N_l, C, H, W) uint8 images, targets). unlabeled: ((N_u, C, H, W) uint8, targets), or
    targets None with a `teacher` for the consistency variant. `state_path`: resumable state file
    (every rank reads it, rank 0 writes it). `dist`: the process group (default: one process); every
    rank must call `train` with the same arguments, and all of them return the same weights.
    """
    device = torch.device(device)
    dist = dist or Dist()
    metrics = metrics if metrics is not None and dist.is_main else MetricsLog(None)
    progress = progress and dist.is_main
    if cfg.sync_bn and dist.distributed and device.type != "cuda":
        raise UserError(f"{tag}: sync_bn needs CUDA (torch's SyncBatchNorm runs only on GPUs); "
                        "set sync_bn=false for CPU processes")
    images_l, targets_l = labeled
    n_l = len(images_l)
    if n_l == 0:
        raise UserError(f"{tag}: no labeled images to train on")
    b_l = min(cfg.batch_size, n_l)
    if unlabeled is not None and len(unlabeled[0]) > 0:
        images_u, targets_u = unlabeled
        if targets_u is None and teacher is None:
            raise ValueError("unlabeled images without targets need a teacher (consistency variant)")
        b_u = max(1, round(b_l * cfg.unlabeled_ratio))
        steps = math.ceil(len(images_u) / b_u)
    else:
        images_u = targets_u = None
        b_u = 0
        steps = math.ceil(n_l / b_l)
    total_steps = steps * cfg.epochs
    mean, std = mean.to(device), std.to(device)

    model.to(device, memory_format=torch.channels_last).train()
    ema = _Ema(model, cfg.ema) if cfg.ema > 0 else None
    plain_bn = _to_sync_batchnorm(model) if cfg.sync_bn and dist.distributed else {}
    optimizer = _make_optimizer(model, cfg)
    fingerprint = _fingerprint(tag, cfg, n_l, 0 if images_u is None else len(images_u), seed)
    start_epoch = 0
    torch.manual_seed(_rank_seed(dist, seed, tag, "model-noise"))  # dropout / stochastic depth draws
    if state_path is not None and Path(state_path).exists():
        start_epoch = _load_state(state_path, fingerprint, model, optimizer, ema, device, dist)
        log.info("%s: resuming after epoch %d/%d", tag, start_epoch, cfg.epochs)
    if teacher is not None:
        teacher.to(device).eval()
    net = _wrap_ddp(model, device) if dist.distributed else model

    result = TrainResult(start_epoch, float("nan"), None, 0.0, 0.0)
    bar = progress_bar(total=total_steps, desc=tag, unit="step", enable=progress)
    bar.update(start_epoch * steps)
    t_start = time.perf_counter()
    images_seen = 0
    for epoch in range(start_epoch, cfg.epochs):
        t0 = time.perf_counter()
        g_index = torch.Generator().manual_seed(_derive(seed, tag, "index", epoch))
        g_aug = torch.Generator(device=device).manual_seed(_rank_seed(dist, seed, tag, "augment", epoch))
        rng_mix = np.random.default_rng(_rank_seed(dist, seed, tag, "mixup", epoch))  # host draws: no sync
        labeled_rows = _cycle(n_l, b_l, g_index)
        unlabeled_order = None if images_u is None else torch.randperm(len(images_u), generator=g_index)
        loss_sum = torch.zeros((), device=device)
        for step in range(steps):
            _set_lr(optimizer, _lr_at(epoch * steps + step, total_steps, steps, cfg))
            global_l = next(labeled_rows)                           # the global batch; this rank's part:
            rows_l = rank_rows(global_l, dist.world_size, dist.rank)
            n_global = len(global_l)
            x = images_l[rows_l]
            if images_u is not None:
                global_u = unlabeled_order[step * b_u:(step + 1) * b_u]
                rows_u = rank_rows(global_u, dist.world_size, dist.rank)
                n_global += len(global_u)
                x = torch.cat([x, images_u[rows_u]])
            x = x.to(device, non_blocking=True)                     # (B, C, H, W) uint8
            y_l = targets_l.dense(rows_l, num_classes, cfg.label_smoothing, device)
            if images_u is not None and targets_u is None:           # consistency: online teacher
                with torch.no_grad():
                    view = teacher_augmentation(x[len(rows_l):], g_aug) if teacher_augmentation else x[len(rows_l):]
                    y_u = (teacher(to_model_input(view, mean, std)).float() / temperature).softmax(1)
            elif images_u is not None:
                y_u = targets_u.dense(rows_u, num_classes, device=device)
            x_in = augmentation(x, g_aug) if len(x) else x          # a rank may get no rows of a short batch
            inputs = to_model_input(x_in, mean, std)
            if augmentation.mixup > 0:  # rows mix across the labeled and pseudo-labeled parts (of this rank's rows)
                y_all = torch.cat([y_l, y_u]) if images_u is not None else y_l
                inputs, y_all = mixup(inputs, y_all, augmentation.mixup, rng_mix)
                y_l, y_u = y_all[:len(rows_l)], y_all[len(rows_l):]
            logits = net(inputs).float()
            loss = _soft_ce(logits[:len(rows_l)], y_l, _share(dist, len(global_l)))
            if images_u is not None:
                if targets_u is None:
                    loss_u = _kl(logits[len(rows_l):], y_u, temperature, _share(dist, len(global_u)))
                else:
                    loss_u = _soft_ce(logits[len(rows_l):], y_u, _share(dist, len(global_u)))
                loss = loss + cfg.unlabeled_weight * loss_u
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if ema is not None:
                ema.update(model, epoch * steps + step)
            loss_sum += loss.detach()
            images_seen += n_global
            bar.update(1)
        if dist.distributed:  # rank losses are scaled by world / global batch: their mean is the global loss
            loss_sum = dist.all_reduce_sum(loss_sum) / dist.world_size
        epoch_loss = (loss_sum / steps).item()  # the one sync per epoch
        if not math.isfinite(epoch_loss):
            where = f" (last good state: {state_path})" if state_path else ""
            raise NonFiniteLoss(f"{tag}: the loss became non-finite ({epoch_loss}) in epoch {epoch + 1}; "
                                f"lower the learning rate{where}")
        seconds = time.perf_counter() - t0
        eval_model = ema.model if ema is not None else model
        test_acc = None
        last = epoch + 1 == cfg.epochs
        if evaluation is not None and dist.is_main and (last or (cfg.eval_every and (epoch + 1) % cfg.eval_every == 0)):
            test_acc = accuracy(eval_model, evaluation.images, evaluation.labels, mean=mean, std=std, device=device,
                                batch_size=evaluation.batch_size)
        n_images = steps * (b_l + b_u) if images_u is not None else n_l
        record = {"stage": tag, "epoch": epoch + 1, "epochs": cfg.epochs, "loss": epoch_loss,
                  "lr": optimizer.param_groups[0]["lr"], "images_per_second": n_images / seconds,
                  "seconds": seconds}
        if test_acc is not None:
            record["test_accuracy"] = test_acc
        metrics.write(**record)
        bar.set_postfix_str(f"loss {epoch_loss:.3f}" + (f" test {100 * test_acc:.1f}%" if test_acc is not None else ""))
        # without a progress bar, one log line per epoch keeps a long run visible
        log.log(logging.DEBUG if progress else logging.INFO, "%s epoch %d/%d loss %.4f%s", tag, epoch + 1, cfg.epochs, epoch_loss,
                  f" test {100 * test_acc:.2f}%" if test_acc is not None else "")
        if state_path is not None:
            rng = _rng_states(device, dist)  # a collective: every rank gives its RNG state to rank 0
            if dist.is_main:
                _save_state(state_path, fingerprint, epoch + 1, model, optimizer, ema, rng, dist.world_size)
        result = TrainResult(epoch + 1, epoch_loss, test_acc, result.seconds + seconds, 0.0)
    bar.close()
    elapsed = time.perf_counter() - t_start
    result.images_per_second = images_seen / elapsed if elapsed > 0 else 0.0
    if ema is not None:
        model.load_state_dict(ema.model.state_dict())
    for t in model.state_dict().values():  # rank 0's BN statistics (and EMA) on every rank
        dist.broadcast_(t)
    _from_sync_batchnorm(model, plain_bn)
    model.eval()
    return result


# ---- pieces ---------------------------------------------------------------------------------------
def _soft_ce(logits: torch.Tensor, target: torch.Tensor, denominator: float | None = None) -> torch.Tensor:
    """Cross-entropy with a target distribution per row: mean_b -sum_k t_bk log softmax(z_b)_k, or the
    sum over rows divided by `denominator` (a rank's share of the global batch, see `_share`)."""
    if denominator is None:
        return -(target * logits.log_softmax(1)).sum(1).mean()
    return -(target * logits.log_softmax(1)).sum() / denominator


def _kl(logits: torch.Tensor, target: torch.Tensor, temperature: float, denominator: float | None) -> torch.Tensor:
    """T^2 * KL(target || softmax(logits / T)), averaged over rows (or summed / `denominator`)."""
    log_p = (logits / temperature).log_softmax(1)
    if denominator is None:
        return F.kl_div(log_p, target, reduction="batchmean") * temperature ** 2
    return F.kl_div(log_p, target, reduction="sum") / denominator * temperature ** 2


def _share(dist: Dist, n_global: int) -> float | None:
    """Denominator of a rank's summed loss: global batch rows / world size, so that DDP's average of the
    rank gradients is the gradient of the global batch's mean loss (None: one process, plain mean)."""
    return None if not dist.distributed else n_global / dist.world_size


def _rank_seed(dist: Dist, seed: int, *parts: Any) -> int:
    """The seed of a per-process random stream: rank 0 (and a single process) keeps the seed it always had."""
    return _derive(seed, *parts) if dist.rank == 0 else _derive(seed, *parts, "rank", dist.rank)


def _wrap_ddp(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """DistributedDataParallel around `model` (gradients averaged over ranks in backward; rank 0's
    buffers, i.e. BN statistics, broadcast at every forward)."""
    from torch.nn.parallel import DistributedDataParallel

    if device.type != "cuda":
        return DistributedDataParallel(model)
    index = device.index if device.index is not None else torch.cuda.current_device()
    return DistributedDataParallel(model, device_ids=[index], output_device=index)


def _to_sync_batchnorm(model: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """Replace every batch-norm layer below `model` by a SyncBatchNorm sharing its parameters and buffers
    (batch statistics over all ranks' rows); returns the replaced layers by name, for `_from_sync_batchnorm`."""
    originals = {name: m for name, m in model.named_modules()
                 if name and isinstance(m, torch.nn.modules.batchnorm._BatchNorm)}
    for name, bn in originals.items():
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent), child, torch.nn.SyncBatchNorm.convert_sync_batchnorm(bn))
    return originals


def _from_sync_batchnorm(model: torch.nn.Module, originals: dict[str, torch.nn.Module]) -> None:
    """Put the plain batch-norm layers back, with the trained values of their SyncBatchNorm stand-ins."""
    for name, bn in originals.items():
        parent, _, child = name.rpartition(".")
        bn.load_state_dict(model.get_submodule(name).state_dict())
        setattr(model.get_submodule(parent), child, bn)


def _cycle(n: int, batch: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Endless batches of row indices, reshuffled after every pass; batches never straddle passes
    (the last batch of a pass is short when n % batch != 0)."""
    while True:
        perm = torch.randperm(n, generator=generator)
        for start in range(0, n, batch):
            yield perm[start:start + batch]


def _derive(seed: int, *parts: Any) -> int:
    """A 63-bit seed from the run seed and a name, so streams are independent and reproducible."""
    h = hashlib.sha256(json.dumps([seed, *parts]).encode()).digest()
    return int.from_bytes(h[:8], "little") & (2**63 - 1)


def _fingerprint(tag: str, cfg: TrainConfig, n_l: int, n_u: int, seed: int) -> str:
    return hashlib.sha256(json.dumps([tag, vars(cfg), n_l, n_u, seed], sort_keys=True).encode()).hexdigest()[:16]


def _lr_at(step: int, total: int, steps_per_epoch: int, cfg: TrainConfig) -> float:
    if cfg.schedule == "onecycle":  # as torch's OneCycleLR: 30% cosine rise from lr/25, cosine fall to lr/25e4
        up = max(1, round(0.3 * total))
        if step < up:
            return _cos_interp(cfg.lr / 25, cfg.lr, step / up)
        return _cos_interp(cfg.lr, cfg.lr / 25e4, (step - up) / max(1, total - up))
    warm = cfg.warmup_epochs * steps_per_epoch
    if step < warm:
        return cfg.lr * (step + 1) / warm
    if cfg.schedule == "constant":
        return cfg.lr
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))


def _cos_interp(a: float, b: float, t: float) -> float:
    return b + (a - b) * 0.5 * (1 + math.cos(math.pi * min(max(t, 0.0), 1.0)))


def _set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def _make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """SGD with Nesterov momentum or AdamW; no weight decay on biases and normalisation weights."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if cfg.optimizer == "adamw":
        make = lambda **kw: torch.optim.AdamW(groups, lr=cfg.lr, **kw)  # noqa: E731
    else:
        make = lambda **kw: torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum,  # noqa: E731
                                            nesterov=cfg.momentum > 0, **kw)
    try:
        return make(fused=True)  # one kernel for all parameters (CPU and CUDA)
    except (RuntimeError, TypeError, ValueError):
        return make(foreach=True)  # devices without a fused implementation


class _Ema:
    """Exponential moving average of the weights (BN statistics copied), in a model copy.

    The decay warms up as min(decay, (1 + t) / (10 + t)) at update t (TensorFlow's num_updates rule):
    with a fixed 0.999, a run of 1,500 steps would still hold 0.999^1500 = 22% of its random
    initialisation. `t` is the global step, so a resumed run continues the same schedule."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    def decay_at(self, t: int) -> float:
        return min(self.decay, (1 + t) / (10 + t))

    @torch.no_grad()
    def update(self, model: torch.nn.Module, t: int) -> None:
        torch._foreach_lerp_(list(self.model.parameters()), list(model.parameters()), 1 - self.decay_at(t))
        for b_ema, b in zip(self.model.buffers(), model.buffers()):
            b_ema.copy_(b)


def _rng_states(device: torch.device, dist: Dist) -> dict[str, torch.Tensor]:
    """The global RNG states (dropout / stochastic depth) of every rank, as state-file tensors:
    rng.cpu (+ rng.cuda) for rank 0 (a single process writes only these), rng.cpu.rank<r> for rank r."""
    own = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        own["cuda"] = torch.cuda.get_rng_state(device)
    out = {}
    for kind, state in own.items():
        for r, s in enumerate(dist.all_gather(state)):
            out[f"rng.{kind}" if r == 0 else f"rng.{kind}.rank{r}"] = s
    return out


def _save_state(path: str | Path, fingerprint: str, epoch: int, model: torch.nn.Module,
                optimizer: torch.optim.Optimizer, ema: _Ema | None, rng: dict[str, torch.Tensor],
                world_size: int) -> None:
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    if ema is not None:
        tensors.update({f"ema.{k}": v for k, v in ema.model.state_dict().items()})
    opt_tensors, opt_rest = optimizer_to_tensors(optimizer)
    tensors.update(opt_tensors)
    tensors.update(rng)
    meta = {"fingerprint": fingerprint, "epoch": str(epoch), "optimizer": json.dumps(opt_rest)}
    if world_size > 1:
        meta["world_size"] = str(world_size)
    save_tensors(path, tensors, metadata=meta)


def _load_state(path: str | Path, fingerprint: str, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                ema: _Ema | None, device: torch.device, dist: Dist) -> int:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if meta.get("fingerprint") != fingerprint:
        raise UserError(f"{path}: saved training state belongs to a different training; "
                        "delete it or run with --force")
    t = load_tensors(path)
    model.load_state_dict({k[6:]: v for k, v in t.items() if k.startswith("model.")})
    if ema is not None:
        ema.model.load_state_dict({k[4:]: v for k, v in t.items() if k.startswith("ema.")})
    optimizer_from_tensors(optimizer, {k: v.to(device) for k, v in t.items() if k.startswith("optim.")},
                           json.loads(meta["optimizer"]))
    saved_world = int(meta.get("world_size", "1"))
    if saved_world != dist.world_size:  # a valid continuation, with this rank's fresh model-noise stream
        if dist.is_main:
            log.warning("%s: the saved state was written by %d process(es), this run has %d; training continues, "
                        "but not bit-identically to an uninterrupted run", path, saved_world, dist.world_size)
        return int(meta["epoch"])
    suffix = "" if dist.rank == 0 else f".rank{dist.rank}"
    torch.set_rng_state(t["rng.cpu" + suffix])
    if device.type == "cuda" and "rng.cuda" + suffix in t:
        torch.cuda.set_rng_state(t["rng.cuda" + suffix], device)
    return int(meta["epoch"])
