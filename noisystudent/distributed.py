"""The process group, as one explicit object handed to training and labeling.

`Dist` holds what a process needs to know about the others: its rank, how many there are, its
rank on this machine (which picks its GPU), and the collective operations the library uses. It is
made once, from the torchrun environment (`init_distributed(device, os.environ)`, in the command
line) and passed down as `dist=`; library code never reads the environment itself. A single
process is `Dist()`: world size 1, no process group, every collective a no-op, so everything
behaves exactly as it does without this module.

Backends: gloo for CPU tensors, NCCL for CUDA (rank r on cuda:<local rank r>).

Also here, the arithmetic of who does what: `shard_rows` (a batch-aligned, contiguous slice of the
rows per rank, for labeling) and `rank_rows` (a rank's part of one global training batch).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch

from noisystudent.errors import UserError

def usable_cores() -> int:
    """The CPU cores this process may use (its affinity mask where the OS has one)."""
    import os

    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


TIMEOUT_S = 4 * 3600.0  # seconds a collective waits; covers rank-0-only evaluation of a large test set


@dataclass(frozen=True)
class Dist:
    """This process's place in the process group (world size 1 and no backend: a single process)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    backend: str | None = None  # "gloo" | "nccl" | None (no process group)

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes files, logs metrics and shows progress bars."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def device_for(self, device: torch.device) -> torch.device:
        """The device this rank computes on: cuda:<local rank> when several processes share CUDA."""
        if self.distributed and device.type == "cuda":
            return torch.device("cuda", self.local_rank)
        return device

    def describe(self) -> str:
        if not self.distributed:
            return "1 process"
        return f"rank {self.rank} of {self.world_size} ({self.backend}, local rank {self.local_rank})"

    # ---- collectives (no-ops for a single process) ------------------------------------------------
    def barrier(self) -> None:
        """Wait until every rank gets here."""
        if not self.distributed:
            return
        if self.backend == "nccl":
            torch.distributed.barrier(device_ids=[self.local_rank])
        else:
            torch.distributed.barrier()

    def all_reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        """Sum of `t` over all ranks (a new tensor on t's device)."""
        if not self.distributed:
            return t
        buf = self._to_comm(t.clone())
        torch.distributed.all_reduce(buf, op=torch.distributed.ReduceOp.SUM)
        return buf.to(t.device)

    def broadcast_(self, t: torch.Tensor, src: int = 0) -> None:
        """Overwrite `t` in place with rank `src`'s values."""
        if not self.distributed:
            return
        buf = self._to_comm(t.detach().contiguous())
        torch.distributed.broadcast(buf, src=src)
        if buf is not t:
            with torch.no_grad():
                t.copy_(buf)

    def all_gather(self, t: torch.Tensor) -> list[torch.Tensor]:
        """Every rank's `t` (same shape and dtype on all ranks), in rank order, on t's device."""
        if not self.distributed:
            return [t]
        buf = self._to_comm(t.contiguous())
        out = [torch.empty_like(buf) for _ in range(self.world_size)]
        torch.distributed.all_gather(out, buf)
        return [o.to(t.device) for o in out]

    def close(self) -> None:
        """Leave the process group (no-op for a single process)."""
        if self.distributed and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()

    def _to_comm(self, t: torch.Tensor) -> torch.Tensor:
        """NCCL moves only CUDA tensors; gloo takes CPU tensors."""
        if self.backend == "nccl":
            return t.to(torch.device("cuda", self.local_rank))
        return t.cpu()


def init_distributed(device: torch.device, env: Mapping[str, str], timeout_s: float = TIMEOUT_S) -> Dist:
    """Join the process group that torchrun describes in `env` (RANK, WORLD_SIZE, LOCAL_RANK,
    LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT), or return `Dist()` when WORLD_SIZE is absent or 1.

    `device` is the resolved `--device`: CPU uses gloo; CUDA uses NCCL, one GPU per process
    (cuda:<local rank>), so a machine needs at least as many GPUs as it runs processes.
    """
    world = _env_int(env, "WORLD_SIZE", 1)
    if world <= 1:
        return Dist()
    rank, local_rank = _env_int(env, "RANK", 0), _env_int(env, "LOCAL_RANK", 0)
    local_world = _env_int(env, "LOCAL_WORLD_SIZE", world)
    if device.type == "cuda":
        if device.index is not None:
            raise UserError(f"device: {device} names one GPU, but {world} processes each need their own; "
                            "use --device cuda (process r uses cuda:<local rank r>)")
        gpus = torch.cuda.device_count()
        if local_world > gpus:
            raise UserError(f"device: cuda with {local_world} processes on this machine, but it has {gpus} GPU(s); "
                            f"use --nproc {gpus} (or --nproc_per_node={gpus} with torchrun) or fewer")
        torch.cuda.set_device(local_rank)
        backend = "nccl"
    elif device.type == "cpu":
        backend = "gloo"
    else:
        raise UserError(f"device: {device.type!r} is not supported with several processes; use cpu or cuda")
    if not torch.distributed.is_available():
        raise UserError(f"this PyTorch ({torch.__version__}) was built without torch.distributed")
    torch.distributed.init_process_group(backend, rank=rank, world_size=world, timeout=timedelta(seconds=timeout_s))
    return Dist(rank=rank, world_size=world, local_rank=local_rank, local_world_size=local_world, backend=backend)


def _env_int(env: Mapping[str, str], key: str, default: int) -> int:
    raw = env.get(key)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise UserError(f"environment variable {key}={raw!r}: expected an integer (set by torchrun)") from None


# ---- who does what -------------------------------------------------------------------------------------
def shard_rows(n: int, batch_size: int, world_size: int, rank: int) -> slice:
    """Rank `rank`'s contiguous slice of `n` rows, with boundaries on multiples of `batch_size`.

    The ceil(n / batch_size) batches are split as evenly as possible (the first `batches % world`
    ranks take one more), so every inference batch a rank runs is exactly a batch a single process
    would run over all `n` rows: same rows, same size. With fewer batches than ranks the last ranks
    get empty slices. The slices of ranks 0..world_size-1 cover 0..n in order, each row once.
    """
    if n < 0 or batch_size <= 0 or world_size <= 0 or not 0 <= rank < world_size:
        raise ValueError(f"shard_rows: bad arguments n={n}, batch_size={batch_size}, world={world_size}, rank={rank}")
    batches = -(-n // batch_size)
    per, extra = divmod(batches, world_size)
    first = rank * per + min(rank, extra)
    last = first + per + (rank < extra)
    return slice(min(first * batch_size, n), min(last * batch_size, n))


def rank_rows(rows: torch.Tensor, world_size: int, rank: int) -> torch.Tensor:
    """Rank `rank`'s part of one global batch of row indices: rows[rank::world_size].

    The parts are disjoint and together are the whole batch; sizes differ by at most one, and a
    rank past the batch's length gets none (its loss contribution is then zero).
    """
    if world_size == 1:
        return rows
    return rows[rank::world_size]


class RowRange:
    """Rows [start, stop) of an image array, read lazily: `len`, `shape` and `view[a:b]` (a slice with
    step 1) only, so an on-disk array is never read whole. `images` is anything with `len()` and
    `shape` whose `[a:b]` gives a (B, C, H, W) uint8 tensor."""

    def __init__(self, images: Any, rows: slice):
        start, stop, _ = rows.indices(len(images))
        self.images, self.start, self.stop = images, start, max(start, stop)

    def __len__(self) -> int:
        return self.stop - self.start

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self), *tuple(self.images.shape[1:]))

    def __getitem__(self, item: slice) -> torch.Tensor:
        if not isinstance(item, slice) or item.step not in (None, 1):
            raise TypeError("RowRange supports only [a:b] slices")
        a, b, _ = item.indices(len(self))
        return self.images[self.start + a:self.start + max(a, b)]


def exit_worker(code: int) -> None:
    """End a process of a process group now, skipping interpreter shutdown.

    With the gloo backend and PyTorch 2.13, a process that has finished its work, left the group
    (`Dist.close`) and written its files can still abort while the interpreter shuts down ("terminate
    called without an active exception", SIGABRT; 3 of 88 two-process runs of tests/ddp_train_driver.py
    on 2026-12-04), and torchrun then reports the whole run as failed. Flushing logs and streams and
    leaving with `os._exit` avoids that shutdown; call it last, after everything that must reach disk
    is closed.
    """
    import logging
    import os
    import sys

    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed or broken pipe: nothing left to save
            pass
    os._exit(code)
