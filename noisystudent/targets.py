"""Sparse soft targets: k (class, probability) pairs per image, densified one batch at a time."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Targets:
    index: torch.Tensor  # (N, k) int64 classes
    prob: torch.Tensor   # (N, k) float32 probabilities; each row sums to 1

    def __len__(self) -> int:
        return len(self.index)

    @classmethod
    def from_labels(cls, labels: torch.Tensor) -> "Targets":
        """One-hot targets for (N,) int64 labels."""
        return cls(labels.long().unsqueeze(1), torch.ones(len(labels), 1))

    def dense(self, rows: torch.Tensor, num_classes: int, smoothing: float = 0.0,
              device: torch.device | str = "cpu") -> torch.Tensor:
        """(B, num_classes) float32 target distributions for the given rows."""
        idx = self.index[rows].to(device, non_blocking=True)
        p = self.prob[rows].to(device, non_blocking=True)
        out = torch.zeros(len(rows), num_classes, device=device).scatter_(1, idx, p)
        if smoothing > 0:
            out = out * (1 - smoothing) + smoothing / num_classes
        return out
