"""Mixup between the rows of a batch, per sample: an input noise that also mixes the targets.

Pseudo-labeling's weakness is confirmation bias: a student that can fit every pseudo-label learns the
teacher's mistakes as faithfully as its right answers. Mixing images and their targets (Zhang et al.,
2018) is what Arazo et al. (2020, "Pseudo-labeling and confirmation bias in deep semi-supervised
learning") found to stop a pseudo-labeling student from memorising wrong labels. Each row i becomes
lam_i * x_i + (1 - lam_i) * x_perm(i), target likewise, with lam_i = max(l, 1 - l), l ~ Beta(alpha,
alpha) drawn per row (MixMatch's max keeps row i's own image dominant, so a labeled row stays mostly
labeled). The draws come from a numpy generator on the host: no device synchronisation per step.
"""

from __future__ import annotations

import numpy as np
import torch


def mixup(inputs: torch.Tensor, targets: torch.Tensor, alpha: float,
          rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """inputs: (B, ...) float model inputs; targets: (B, K) target distributions (rows sum to 1), on the
    same device. alpha > 0: the Beta distribution's parameter (1 = uniform mixing weights in [0.5, 1];
    small alpha = mostly light mixing). Returns new (mixed inputs, mixed targets); B < 2 is returned as is."""
    if alpha <= 0:
        raise ValueError(f"mixup alpha must be positive, got {alpha}")
    if inputs.shape[0] != targets.shape[0]:
        raise ValueError(f"{inputs.shape[0]} inputs but {targets.shape[0]} targets")
    b = inputs.shape[0]
    if b < 2:
        return inputs, targets
    lam = rng.beta(alpha, alpha, size=b)
    lam = np.maximum(lam, 1.0 - lam).astype(np.float32)
    perm = torch.from_numpy(rng.permutation(b)).to(inputs.device, non_blocking=True)
    lam_t = torch.from_numpy(lam).to(inputs.device, non_blocking=True)
    w = lam_t.view(b, *([1] * (inputs.ndim - 1))).to(inputs.dtype)
    mixed = torch.lerp(inputs[perm], inputs, w)  # w * inputs + (1 - w) * inputs[perm]
    t = lam_t.view(b, 1).to(targets.dtype)
    return mixed, torch.lerp(targets[perm], targets, t)
