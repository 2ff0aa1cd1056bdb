"""Pseudo-labels from a clean teacher: predict, threshold, class-balance, targets, statistics.

Stored per unlabeled image: the hard label, the confidence (max softmax probability at T=1, the
quantity the threshold is applied to) and the top-k probabilities at the soft-label temperature T.
With few classes (up to `ALL_CLASSES_UP_TO`) k is all of them by default, so the soft labels are
exact; with many it is `DEFAULT_TOPK`, and the top-k are renormalised when they become targets,
instead of holding a dense N x classes matrix. On disk, class indices are int16 (int32 beyond
32,767 classes): 6 bytes per stored class and 8 per image, against 4 bytes per class for a dense
float32 matrix.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from noisystudent.checkpoint import load_tensors, save_tensors
from noisystudent.distributed import Dist, RowRange, shard_rows
from noisystudent.inference import INFERENCE_BATCH, iter_logits
from noisystudent.targets import Targets

log = logging.getLogger(__name__)

ALL_CLASSES_UP_TO = 32  # topk=0 stores every class up to this many classes ...
DEFAULT_TOPK = 10       # ... and this many beyond


def stored_k(topk: int, num_classes: int) -> int:
    """Probabilities stored per image: `topk` (at most the classes), or the default for topk=0."""
    if topk <= 0:
        return num_classes if num_classes <= ALL_CLASSES_UP_TO else DEFAULT_TOPK
    return min(topk, num_classes)


@dataclass
class PseudoLabels:
    hard: torch.Tensor          # (N,) int64 argmax class
    confidence: torch.Tensor    # (N,) float32 max softmax probability at T = 1
    topk_index: torch.Tensor    # (N, k) int64 classes, most probable first
    topk_prob: torch.Tensor     # (N, k) float32 softmax(logits / T) of those classes

    def __len__(self) -> int:
        return len(self.hard)

    def save(self, path: str | Path, temperature: float) -> None:
        """Class indices as int16 (int32 from 32,768 classes on); they load back as int64."""
        top = int(self.topk_index.max()) if self.topk_index.numel() else 0
        small = torch.int16 if top < 2**15 else torch.int32
        save_tensors(path, {"hard": self.hard.to(small), "confidence": self.confidence,
                            "topk_index": self.topk_index.to(small), "topk_prob": self.topk_prob},
                     metadata={"temperature": repr(temperature)})

    @classmethod
    def load(cls, path: str | Path) -> "PseudoLabels":
        t = load_tensors(path)
        return cls(t["hard"].long(), t["confidence"], t["topk_index"].long(), t["topk_prob"])

    @classmethod
    def concat(cls, parts: list["PseudoLabels"]) -> "PseudoLabels":
        """The parts' rows one after the other (empty parts, whose k is a placeholder, are left out)."""
        full = [p for p in parts if len(p)] or parts[:1]
        return cls(*(torch.cat([getattr(p, f) for p in full]) for f in ("hard", "confidence", "topk_index", "topk_prob")))


def predict(model: torch.nn.Module, images: torch.Tensor, *, mean: torch.Tensor, std: torch.Tensor,
            temperature: float = 1.0, topk: int = 0, batch_size: int = INFERENCE_BATCH,
            device: torch.device | str = "cpu", progress: bool = True, desc: str = "pseudo-label") -> PseudoLabels:
    """Label `images` ((N, C, H, W) uint8) with the clean `model`: eval mode, no augmentation."""
    n = len(images)
    hard = torch.empty(n, dtype=torch.long)
    conf = torch.empty(n, dtype=torch.float32)
    idx_out = prob_out = None
    for rows, logits in iter_logits(model, images, mean=mean, std=std, batch_size=batch_size,
                                    device=device, progress=progress, desc=desc):
        k = stored_k(topk, logits.shape[1])
        if idx_out is None:
            idx_out = torch.empty(n, k, dtype=torch.long)
            prob_out = torch.empty(n, k, dtype=torch.float32)
        c, h = logits.softmax(1).max(1)
        tp, ti = (logits / temperature).softmax(1).topk(k, dim=1)
        hard[rows], conf[rows], idx_out[rows], prob_out[rows] = h.cpu(), c.cpu(), ti.cpu(), tp.cpu()
    if idx_out is None:  # no images
        idx_out, prob_out = torch.empty(0, 1, dtype=torch.long), torch.empty(0, 1)
    return PseudoLabels(hard, conf, idx_out, prob_out)


def predict_to_file(model: torch.nn.Module, images: Any, path: str | Path, *, dist: Dist, mean: torch.Tensor,
                    std: torch.Tensor, temperature: float = 1.0, topk: int = 0, batch_size: int = INFERENCE_BATCH,
                    device: torch.device | str = "cpu", progress: bool = True,
                    desc: str = "pseudo-label") -> PseudoLabels:
    """`predict` every image into `path`, the work split over the ranks of `dist`; every rank returns
    the whole result.

    Rank r labels `shard_rows(N, batch_size, world, r)` (batch-aligned, so each batch is one a single
    process would run) and writes `<stem>.rank<r>.safetensors`; after a barrier rank 0 concatenates
    the shards in rank order into `path` and removes them; after a second barrier the other ranks read
    `path`. `images` is a (N, C, H, W) uint8 tensor or anything with `len()`, `shape` and `[a:b]`
    slicing to one, and is read only through slices. With one process this is `predict` then save.
    """
    path = Path(path)
    kwargs = dict(mean=mean, std=std, temperature=temperature, topk=topk, batch_size=batch_size, device=device)
    if not dist.distributed:
        pl = predict(model, images, progress=progress, desc=desc, **kwargs)
        pl.save(path, temperature)
        return pl
    rows = shard_rows(len(images), batch_size, dist.world_size, dist.rank)
    mine = predict(model, RowRange(images, rows), progress=progress and dist.is_main, desc=desc, **kwargs)
    mine.save(shard_path(path, dist.rank), temperature)
    dist.barrier()
    if dist.is_main:
        shards = [shard_path(path, r) for r in range(dist.world_size)]
        pl = PseudoLabels.concat([PseudoLabels.load(p) for p in shards])
        pl.save(path, temperature)
        for p in shards:
            p.unlink()
    dist.barrier()
    return pl if dist.is_main else PseudoLabels.load(path)


def shard_path(path: Path, rank: int) -> Path:
    """Where rank `rank` writes its part of `path`: pseudo_labels.rank<r>.safetensors beside it."""
    return path.with_name(f"{path.stem}.rank{rank}{path.suffix}")


def most_confident_first(hard: torch.Tensor, confidence: torch.Tensor, candidates: torch.Tensor,
                         num_classes: int) -> list[torch.Tensor]:
    """Per class c (by hard label), the indices of `candidates` labeled c, most confident first (ties
    in index order); an empty tensor for a class with none."""
    return [(m := candidates[hard[candidates] == c])[confidence[m].argsort(descending=True, stable=True)]
            for c in range(num_classes)]


def most_confident_part(hard: torch.Tensor, confidence: torch.Tensor, candidates: torch.Tensor, num_classes: int,
                        fraction: float = 1.0) -> list[torch.Tensor]:
    """`most_confident_first`, each class cut to its ceil(fraction x count) most confident (0 < fraction <= 1)."""
    orders = most_confident_first(hard, confidence, candidates, num_classes)
    return orders if fraction >= 1.0 else [order[:math.ceil(fraction * len(order))] for order in orders]


def select(pl: PseudoLabels, *, num_classes: int, threshold: float = 0.0, balance: bool = True,
           per_class: int = 0, fraction: float = 1.0) -> tuple[torch.Tensor, dict[str, Any]]:
    """Indices of the pseudo-labeled images to train on (with repeats when balancing duplicates).

    Threshold: keep images whose confidence >= threshold. Balance (the paper's filtering step):
    bring each class (by hard label) to `per_class` images, keeping the most confident where a
    class has too many and repeating its images, most confident first, where it has too few.
    `per_class` = 0 uses the number kept after the threshold divided by the number of classes.
    Fraction (a curriculum's step): of each class's images that passed, only the most confident
    `fraction` are kept (`most_confident_part`); balancing then repeats them up to the same target,
    so the number selected does not change, only how many distinct images it holds.
    Returns (indices (M,) int64, statistics).
    """
    passed = (pl.confidence >= threshold).nonzero().squeeze(1)
    before = torch.bincount(pl.hard[passed], minlength=num_classes)
    stats: dict[str, Any] = {
        "total": len(pl),
        "threshold": threshold,
        "passed_threshold": len(passed),
        "kept_fraction": len(passed) / max(len(pl), 1),
        "per_class_before": before.tolist(),
    }
    if fraction < 1.0:
        stats["curriculum_fraction"] = fraction
    if not balance or len(passed) == 0:
        chosen = passed if fraction >= 1.0 else torch.cat(
            most_confident_part(pl.hard, pl.confidence, passed, num_classes, fraction))
        stats["target_per_class"] = None
    else:
        target = per_class if per_class > 0 else max(1, round(len(passed) / num_classes))
        parts = [order[torch.arange(target) % len(order)]  # most confident first; cycles when too few
                 for order in most_confident_part(pl.hard, pl.confidence, passed, num_classes, fraction)
                 if len(order)]
        chosen = torch.cat(parts) if parts else passed[:0]
        stats["target_per_class"] = target
        empty = [c for c in range(num_classes) if before[c] == 0]
        if empty:
            log.warning("pseudo-labels: no image passed the threshold for %d class(es) %s; "
                        "they get no pseudo-labeled images", len(empty), empty)
    stats["per_class_after"] = torch.bincount(pl.hard[chosen], minlength=num_classes).tolist()
    stats["selected"] = len(chosen)
    stats["unique_selected"] = int(torch.unique(chosen).numel())
    return chosen.sort().values, stats


def accuracy_stats(pl: PseudoLabels, chosen: torch.Tensor, true_labels: torch.Tensor | None) -> dict[str, Any]:
    """Pseudo-label accuracy on all images and on the selected ones, when the truth is known."""
    if true_labels is None:
        return {"pseudo_label_accuracy": None, "pseudo_label_accuracy_selected": None}
    correct = pl.hard == true_labels
    return {
        "pseudo_label_accuracy": correct.float().mean().item() if len(pl) else None,
        "pseudo_label_accuracy_selected": correct[chosen].float().mean().item() if len(chosen) else None,
    }


def make_targets(pl: PseudoLabels, chosen: torch.Tensor, mode: str) -> Targets:
    """Training targets for the chosen images: the teacher's (top-k, renormalised) distribution,
    or one-hot of the hard label."""
    if mode == "hard":
        return Targets.from_labels(pl.hard[chosen])
    prob = pl.topk_prob[chosen]
    return Targets(pl.topk_index[chosen], prob / prob.sum(1, keepdim=True).clamp_min(1e-12))
