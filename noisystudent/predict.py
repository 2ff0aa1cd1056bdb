"""Classify image files with a saved checkpoint: `predict(checkpoint, [files or folders])`.

    from noisystudent import predict
    for r in predict("runs/digits-demo/round-2/model.safetensors", ["photos/"], topk=3):
        print(r["path"], r.get("error") or r["top"])

Images are decoded exactly like the training folders (`decode_image`: converted to the
checkpoint's channels, resized to its height x width) and normalised with the checkpoint's mean
and std. A file that cannot be read gives an entry with an "error" field instead of an exception.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch

from noisystudent.checkpoint import load_model
from noisystudent.data.decode import decode_image, list_image_files
from noisystudent.errors import UserError
from noisystudent.inference import INFERENCE_BATCH, iter_logits

log = logging.getLogger(__name__)


def expand_images(items: Iterable[str | os.PathLike]) -> list[Path]:
    """Files as given, folders replaced by their image files (recursive, sorted, hidden files skipped)."""
    paths: list[Path] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            found, notes = list_image_files(path)
            for note in notes:
                log.warning(note)
            if not found:
                log.warning("%s: no image files in this folder", path)
            paths.extend(path / rel for rel in found)
        else:
            paths.append(path)
    return paths


def predict(checkpoint: str | Path, images: Iterable[str | os.PathLike], topk: int = 5,
            device: str | torch.device = "cpu", batch_size: int = INFERENCE_BATCH) -> list[dict[str, Any]]:
    """Top-k classes of each image: [{"path", "top": [(class name, probability), ...]}], in input order.

    `images` are files and/or folders (expanded recursively, sorted). An unreadable file gives
    {"path", "error"} instead of "top".
    """
    if topk < 1:
        raise UserError(f"topk must be at least 1, got {topk}")
    paths = expand_images(images)
    if not paths:
        raise UserError("no images to predict: the given folders hold no image files")
    model, meta = load_model(checkpoint, device)
    spec = meta["input"]
    size = (int(spec["height"]), int(spec["width"]))
    results: list[dict[str, Any]] = []
    pending: list[tuple[int, np.ndarray]] = []  # (index in results, decoded image)
    for path in paths:
        results.append({"path": str(path)})
        try:
            pending.append((len(results) - 1, decode_image(path, int(spec["channels"]), size)))
        except UserError as err:
            results[-1]["error"] = str(err)
    if not pending:
        return results
    classes = [str(c) for c in meta["classes"]]
    rows = [row for row, _ in pending]
    images = torch.from_numpy(np.stack([image for _, image in pending]))  # (N, C, H, W) uint8
    for sl, logits in iter_logits(model, images, mean=torch.tensor(spec["mean"]), std=torch.tensor(spec["std"]),
                                  batch_size=batch_size, device=device):
        probs, idx = logits.softmax(1).topk(min(topk, len(classes)), dim=1)
        for row, p, i in zip(rows[sl], probs.tolist(), idx.tolist()):
            results[row]["top"] = [(classes[c], prob) for c, prob in zip(i, p)]
    return results


def format_text(results: list[dict[str, Any]]) -> str:
    """One block per image: its path, then one '  class  probability' line per class (or the error)."""
    blocks = []
    for r in results:
        if "error" in r:
            blocks.append(f"{r['path']}\n  error: {r['error']}")
            continue
        width = max(len(c) for c, _ in r["top"])
        lines = [f"  {c:<{width}}  {100 * p:6.2f}%" for c, p in r["top"]]
        blocks.append("\n".join([r["path"], *lines]))
    return "\n\n".join(blocks)
