"""`ImageSet`: the in-memory form every data source produces."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from noisystudent.data.disk import DiskImages


@dataclass
class ImageSet:
    """Images with optional labels.

    images: (N, C, H, W) uint8, contiguous; or a `DiskImages` (the same surface, read from a cache
        file a batch at a time) for unlabeled pools too large to hold in memory.
    labels: (N,) int64 class indices into `classes`, or None when unknown. Unlabeled pools built
        from labeled data (digits, Fashion-MNIST) keep their true labels here so that pseudo-label
        accuracy can be reported; training never reads them.
    classes: class names, index i names label i (may be empty for a pool of unknown classes).
    sources: optional per-image origin (file path relative to the root, or "" for arrays).
    """

    images: torch.Tensor | DiskImages
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
        """The images at `index` (a lazy view when the images are on disk)."""
        index = torch.as_tensor(index, dtype=torch.long)
        images = self.images.subset(index) if isinstance(self.images, DiskImages) else self.images[index].contiguous()
        return ImageSet(
            images=images,
            labels=None if self.labels is None else self.labels[index],
            classes=list(self.classes),
            sources=[self.sources[i] for i in index.tolist()] if self.sources else [],
        )

    def in_memory(self) -> "ImageSet":
        """This set with its images loaded into a tensor (a no-op when they already are)."""
        if isinstance(self.images, DiskImages):
            return ImageSet(self.images.load(), self.labels, list(self.classes), list(self.sources))
        return self


def take_rows(images: torch.Tensor | DiskImages, rows: torch.Tensor) -> torch.Tensor | DiskImages:
    """`images[rows]`: a copy for a tensor, a lazy view (nothing read yet) for images on disk."""
    return images.subset(rows) if isinstance(images, DiskImages) else images[rows]
