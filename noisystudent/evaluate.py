"""Clean evaluation: accuracy, per-class accuracy, confusion matrix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from noisystudent.inference import INFERENCE_BATCH, iter_logits


def predict_labels(model: torch.nn.Module, images: torch.Tensor, *, mean: torch.Tensor, std: torch.Tensor,
                   batch_size: int = INFERENCE_BATCH, device: torch.device | str = "cpu") -> torch.Tensor:
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


def evaluate_checkpoint(checkpoint: str | Path, *, test_dir: str | Path | None = None, config: Any = None,
                        robustness: bool = False, device: str = "cpu", seed: int = 0,
                        batch_size: int = INFERENCE_BATCH) -> dict[str, Any]:
    """Evaluate a saved model on test images: a folder of class folders (`test_dir`), or the test set of
    `config` (a Config), or of the run directory the checkpoint lies in. With `robustness`, add the
    corruption / flip-rate / FGSM report (relative mCE against the run's round-0 teacher when known)."""
    from noisystudent.checkpoint import load_model, read_json
    from noisystudent.config import Config
    from noisystudent.data.build import build_datasets
    from noisystudent.data.sources import load_image_folder
    from noisystudent.errors import UserError

    path = Path(checkpoint)
    model, meta = load_model(path, device)
    inp = meta["input"]
    run_dir = path.parent.parent if (path.parent.parent / "config.yaml").exists() else None
    if test_dir is not None:
        test, _ = load_image_folder(test_dir, channels=inp["channels"], size=(inp["height"], inp["width"]),
                                    classes=meta["classes"])
    else:
        if config is None and run_dir is None:
            raise UserError(f"{path}: not inside a run directory; give the test images (--test DIR) or a config (-c)")
        cfg = config if config is not None else Config.from_yaml(run_dir / "config.yaml")
        test = build_datasets(cfg.data).test
        if test is None:
            raise UserError("the config has no test set; give --test DIR")
    if tuple(test.shape) != (inp["channels"], inp["height"], inp["width"]):
        raise UserError(f"test images are {tuple(test.shape)} but {path.name} expects "
                        f"{(inp['channels'], inp['height'], inp['width'])}; set data.image_size / data.channels")
    mean, std = torch.tensor(inp["mean"]), torch.tensor(inp["std"])
    out = {"checkpoint": str(path), **evaluate(model, test.images, test.labels, len(meta["classes"]),
                                                mean=mean, std=std, device=device, batch_size=batch_size)}
    if robustness:
        from noisystudent.robustness import robustness_report

        base = run_dir / "round-0" / "robustness.json" if run_dir is not None else None
        baseline = read_json(base) if base is not None and base.exists() else None
        out["robustness"] = robustness_report(model, test.images, test.labels, mean=mean, std=std, device=device,
                                              seed=seed, baseline=baseline, batch_size=batch_size)
    return out
