"""`DiskImages`: an (N, C, H, W) uint8 array in a raw file, read a batch at a time.

The file is a plain C-order array (row i starts at byte i * C * H * W), so `numpy.memmap(path,
uint8, "r", shape=(N, C, H, W))` maps it too. We read it with positioned reads (`os.pread`)
instead of through a memory map: pages of a memory map that the process has touched count in its
resident memory, so streaming a million images through a map grows RSS by the file's size, while
a positioned read goes through the kernel's page cache and leaves RSS flat. Reading never holds
more than the rows asked for.

`DiskImages` supports what the training and inference loops do with an image tensor: `len()`,
`.shape`, `.dtype`, `.dim()`, slices (one read) and index tensors (consecutive rows merged into
one read each), and `subset()` for a lazy view of some rows.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch


class DiskImages:
    def __init__(self, path: str | Path, count: int, image_shape: tuple[int, int, int],
                 rows: torch.Tensor | None = None):
        self.path = Path(path)
        self.count = int(count)                             # rows in the file that are valid
        self.image_shape = tuple(int(s) for s in image_shape)  # (C, H, W)
        self.row_bytes = int(np.prod(self.image_shape))
        self.rows = None if rows is None else torch.as_tensor(rows, dtype=torch.long)  # view -> file rows
        self._fd: int | None = None
        self._pid = -1
        need = self.count * self.row_bytes
        have = self.path.stat().st_size
        if have < need:
            raise ValueError(f"{self.path}: holds {have:,} bytes, fewer than {self.count:,} images need ({need:,})")

    # -- tensor-like surface
    dtype = torch.uint8

    def __len__(self) -> int:
        return self.count if self.rows is None else len(self.rows)

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self), *self.image_shape))

    def dim(self) -> int:
        return 4

    def __repr__(self) -> str:
        return f"DiskImages({str(self.path)!r}, shape={tuple(self.shape)})"

    def __getitem__(self, key: int | slice | torch.Tensor | list[int]) -> torch.Tensor:
        if isinstance(key, slice):
            start, stop, step = key.indices(len(self))
            if step == 1 and self.rows is None:
                return self._read_run(start, max(stop - start, 0))
            key = torch.arange(start, stop, step)
        if isinstance(key, int):
            return self[torch.tensor([key])][0]
        index = torch.as_tensor(key, dtype=torch.long)
        if index.dim() != 1:
            raise IndexError("DiskImages takes a slice, an int or a 1-d index")
        if len(index) and (int(index.min()) < -len(self) or int(index.max()) >= len(self)):
            raise IndexError(f"index out of range for {len(self):,} images")
        index = index % max(len(self), 1)
        return self._gather(index if self.rows is None else self.rows[index])

    def subset(self, index: torch.Tensor) -> "DiskImages":
        """A lazy view of rows `index` of this view (nothing is read)."""
        index = torch.as_tensor(index, dtype=torch.long) % max(len(self), 1)
        rows = index if self.rows is None else self.rows[index]
        return DiskImages(self.path, self.count, self.image_shape, rows)

    def load(self) -> torch.Tensor:
        """Every image of the view in memory, as a contiguous uint8 tensor."""
        return self[0:len(self)] if self.rows is None else self._gather(self.rows)

    # -- reads
    def _file(self) -> int:
        if self._fd is None or self._pid != os.getpid():  # a forked child opens its own descriptor
            self._fd = os.open(self.path, os.O_RDONLY)
            self._pid = os.getpid()
        return self._fd

    def _read_run(self, first: int, n: int) -> torch.Tensor:
        out = torch.empty((n, *self.image_shape), dtype=torch.uint8)
        if n:
            self._read_into(out.numpy().reshape(-1), first, n)
        return out

    def _read_into(self, flat: np.ndarray, first: int, n: int) -> None:
        """Read file rows first..first+n-1 into the flat uint8 buffer `flat`."""
        want = n * self.row_bytes
        done = 0
        fd = self._file()
        while done < want:  # pread may return fewer bytes than asked for
            chunk = os.preadv(fd, [memoryview(flat[done:want])], (first * self.row_bytes) + done)
            if chunk <= 0:
                raise OSError(f"{self.path}: unexpected end of file at image {first + done // self.row_bytes}")
            done += chunk

    def _gather(self, file_rows: torch.Tensor) -> torch.Tensor:
        """Rows `file_rows` (any order, repeats allowed); runs of consecutive rows are read at once."""
        n = len(file_rows)
        out = torch.empty((n, *self.image_shape), dtype=torch.uint8)
        if n == 0:
            return out
        order = torch.argsort(file_rows, stable=True)
        sorted_rows = file_rows[order].numpy()
        uniq = np.unique(sorted_rows)
        # runs of consecutive unique rows -> one read each into a staging buffer
        staging = np.empty((len(uniq), self.row_bytes), dtype=np.uint8)
        breaks = np.flatnonzero(np.diff(uniq) != 1) + 1
        starts = np.concatenate([[0], breaks])
        ends = np.concatenate([breaks, [len(uniq)]])
        for a, b in zip(starts.tolist(), ends.tolist()):
            self._read_into(staging[a:b].reshape(-1), int(uniq[a]), b - a)
        # every sorted position maps to its unique row; then undo the sort
        which = np.searchsorted(uniq, sorted_rows)
        flat = out.numpy().reshape(n, self.row_bytes)
        flat[order.numpy()] = staging[which]
        return out

    def close(self) -> None:
        if self._fd is not None and self._pid == os.getpid():
            os.close(self._fd)
        self._fd = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown
            pass

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_fd"], state["_pid"] = None, -1
        return state
