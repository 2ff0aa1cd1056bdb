"""Batched inference over uint8 images: the one loop shared by pseudo-labeling and evaluation."""

from __future__ import annotations

from collections.abc import Iterator

import torch

from noisystudent.progress import progress_bar
from noisystudent.tensors import to_model_input

# Images per inference batch when the caller does not say (config: pseudo.batch_size). Predictions do
# not depend on it; speed does: on a 2-core CPU at 28x28, 128 ran 1.04-1.6x faster than 512 (never
# slower), whose activations overflow the caches (benchmarks/inference_batch.py). A GPU may want more.
INFERENCE_BATCH = 128


@torch.no_grad()
def iter_logits(model: torch.nn.Module, images: torch.Tensor, *, mean: torch.Tensor, std: torch.Tensor,
                batch_size: int = INFERENCE_BATCH, device: torch.device | str = "cpu", progress: bool = False,
                desc: str = "predict") -> Iterator[tuple[slice, torch.Tensor]]:
    """Yield (rows, logits (B, K) float32 on `device`) for consecutive batches of (N, C, H, W) uint8 images.

    The model runs in eval mode (no dropout, no stochastic depth, BN running statistics) and its
    mode is restored afterwards. Images move to `device` one batch at a time, so they may stay in
    CPU memory or a memory map.
    """
    was_training = model.training
    model.eval()
    mean, std = mean.to(device), std.to(device)
    try:
        with progress_bar(total=len(images), desc=desc, unit="img", enable=progress) as bar:
            for start in range(0, len(images), batch_size):
                batch = images[start:start + batch_size].to(device, non_blocking=True)
                yield slice(start, start + len(batch)), model(to_model_input(batch, mean, std)).float()
                bar.update(len(batch))
    finally:
        model.train(was_training)
