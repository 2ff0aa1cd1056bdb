"""Run under torchrun by tests/test_distributed.py: `train` on every rank of a gloo process group.

    python -m torch.distributed.run --standalone --nproc_per_node=2 tests/ddp_train_driver.py OUT_DIR

Trains the small models of `cases()` (no batch norm, so one global batch split over ranks must give
the single-process gradient up to float summation order) and writes, from rank 0,
OUT_DIR/<case>.safetensors (the weights), plus `resumed-*` cases: a training interrupted on every rank
after its 2nd saved epoch, then resumed from the state file, next to the uninterrupted one. Every rank
also checks that all ranks end with the same weights.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

from noisystudent.checkpoint import save_tensors
from noisystudent.config import TrainConfig
from noisystudent.distributed import Dist, exit_worker, init_distributed
from noisystudent.targets import Targets
from noisystudent.train import Augmentation, train
import noisystudent.train as train_module


def data() -> dict[str, torch.Tensor]:
    """Seeded random 8x8 images: 46 labeled (batches of 15 leave a last batch of 1 row, so rank 1 gets
    none), 41 unlabeled with soft targets over 10 classes."""
    g = torch.Generator().manual_seed(0)
    return {"x_l": torch.randint(0, 256, (46, 1, 8, 8), dtype=torch.uint8, generator=g),
            "y_l": torch.randint(0, 10, (46,), generator=g),
            "x_u": torch.randint(0, 256, (41, 1, 8, 8), dtype=torch.uint8, generator=g),
            "p_u": torch.rand(41, 10, generator=g).softmax(1)}


def small_model(dropout: float, seed: int = 1) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 32), torch.nn.ReLU(),
                               torch.nn.Dropout(dropout), torch.nn.Linear(32, 10))


def cases() -> dict[str, dict]:
    """name -> train() arguments besides the model and dist: teacher-like (labeled only, EMA),
    student-like (labeled + soft pseudo-labels) and consistency (online teacher, KL)."""
    d = data()
    labeled = (d["x_l"], Targets.from_labels(d["y_l"]))
    soft = Targets(torch.arange(10).expand(41, 10).clone(), d["p_u"])
    base = dict(labeled=labeled, num_classes=10, mean=torch.tensor([0.5]), std=torch.tensor([0.3]),
                augmentation=Augmentation(), seed=3, progress=False)
    cfg = dict(epochs=4, batch_size=15, lr=0.05, warmup_epochs=1.0, eval_every=0)
    return {
        "teacher": dict(base, unlabeled=None, cfg=TrainConfig(**cfg, ema=0.5)),
        "student": dict(base, unlabeled=(d["x_u"], soft), cfg=TrainConfig(**cfg, unlabeled_ratio=1.0)),
        "consistency": dict(base, unlabeled=(d["x_u"], None), cfg=TrainConfig(**cfg, unlabeled_ratio=1.0),
                            teacher=small_model(0.0, seed=2), temperature=2.0),
    }


def train_case(name: str, dist: Dist, dropout: float = 0.0, **extra) -> torch.nn.Module:
    model = small_model(dropout)
    train(model, dist=dist, tag=name, **{**cases()[name], **extra})
    return model


class Interrupt(Exception):
    pass


def interrupted_then_resumed(name: str, dist: Dist, state: Path) -> torch.nn.Module:
    """Stop every rank at the end of epoch 3, before its state is saved (the state file holds epoch 2),
    then train again from the state file."""
    original, calls = train_module._rng_states, []

    def stop_at_third(*a, **k):  # a collective every rank runs once per epoch, just before saving
        calls.append(1)
        if len(calls) == 3:
            raise Interrupt
        return original(*a, **k)

    train_module._rng_states = stop_at_third
    try:
        train_case(name, dist, dropout=0.3, state_path=state)
        raise AssertionError("the interruption did not happen")
    except Interrupt:
        pass
    finally:
        train_module._rng_states = original
    return train_case(name, dist, dropout=0.3, state_path=state)


def main() -> None:
    out = Path(sys.argv[1])
    dist = init_distributed(torch.device("cpu"), os.environ)
    assert dist.world_size == 2, dist
    results = {name: train_case(name, dist) for name in cases()}
    results["uninterrupted-student"] = train_case("student", dist, dropout=0.3, state_path=out / "a.safetensors")
    results["resumed-student"] = interrupted_then_resumed("student", dist, out / "b.safetensors")
    for name, model in results.items():
        flat = torch.cat([p.detach().flatten() for p in model.state_dict().values()])
        ranks = dist.all_gather(flat)
        assert all(torch.equal(ranks[0], r) for r in ranks), f"{name}: ranks end with different weights"
        if dist.is_main:
            save_tensors(out / f"{name}.safetensors", model.state_dict())
    dist.close()
    exit_worker(0)


if __name__ == "__main__":
    main()
