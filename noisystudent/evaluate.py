"""Clean evaluation: accuracy, per-class accuracy, confusion matrix."""

from __future__ import annotations

from typing import Any

import torch

from noisystudent.inference import iter_logits


def predict_labels(model: torch.nn.Module, images: torch.Tensor, *, mean: torch.Tensor, std: torch.Tensor,
                   batch_size: int = 512, device: torch.device | str = "cpu") -> torch.Tensor:
    """(N,) int64 top-1 predictions of the model in eval mode."""
    out = torch.empty(len(images), dtype=torch.long)
    for rows, logits in iter_logits(model, images, mean=mean, std=std, batch_size=batch_size, device=device):
        out[rows] = logits.argmax(1).cpu()
    return out


def accuracy(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, **kw: Any) -> float:
    return (predict_labels(model, images, **kw) == labels).float().mean().item()


def evaluate(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, num_classes: int,
             **kw: Any) -> dict[str, Any]:
    """Accuracy, per-class accuracy (recall) and the confusion matrix (rows = truth, columns = prediction)."""
    pred = predict_labels(model, images, **kw)
    conf = torch.bincount(labels * num_classes + pred, minlength=num_classes * num_classes)
    conf = conf.view(num_classes, num_classes)
    per_class = conf.diag().float() / conf.sum(1).clamp_min(1).float()
    return {
        "accuracy": (pred == labels).float().mean().item() if len(labels) else float("nan"),
        "per_class_accuracy": per_class.tolist(),
        "confusion": conf.tolist(),
        "n": len(labels),
    }
