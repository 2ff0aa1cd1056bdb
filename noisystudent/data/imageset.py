"""`ImageSet`: the in-memory form every data source produces."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class ImageSet:
    """Images with optional labels.

    images: (N, C, H, W) uint8, contiguous.
    labels: (N,) int64 class indices into `classes`, or None when unknown. Unlabeled pools built
        from labeled data (digits, Fashion-MNIST) keep their true labels here so that pseudo-label
        accuracy can be reported; training never reads them.
    classes: class names, index i names label i (may be empty for a pool of unknown classes).
    sources: optional per-image origin (file path relative to the root, or "" for arrays).
    """

    images: torch.Tensor
    labels: torch.Tensor | None
    classes: list[str]
    sources: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError(f"images must be (N, C, H, W) uint8, got {tuple(self.images.shape)} {self.images.dtype}")
        if self.labels is not None and self.labels.shape != (len(self.images),):
            raise ValueError(f"labels must be ({len(self.images)},), got {tuple(self.labels.shape)}")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    def subset(self, index: torch.Tensor) -> "ImageSet":
        index = torch.as_tensor(index, dtype=torch.long)
        return ImageSet(
            images=self.images[index].contiguous(),
            labels=None if self.labels is None else self.labels[index],
            classes=list(self.classes),
            sources=[self.sources[i] for i in index.tolist()] if self.sources else [],
        )
