"""Robustness metrics: corruption errors and mCE (ImageNet-C), flip rates (ImageNet-P), FGSM accuracy.

Every function takes a model that maps `to_model_input(images, mean, std)` to logits, (N, C, H, W)
uint8 images (they may stay on the CPU; batches move to `device`), and runs the model in eval
mode, restoring its mode afterwards. Random draws are seeded per block of `block_size(images)`
images (block k uses seed + BLOCK_SEED_STRIDE * k), so results do not depend on `batch_size`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from noisystudent.errors import UserError
from noisystudent.progress import progress_bar
from noisystudent.evaluate import accuracy, predict_labels
from noisystudent.inference import INFERENCE_BATCH
from noisystudent.robustness import filters
from noisystudent.robustness.corruptions import CORRUPTIONS, SEVERITIES, check_corruption, check_images, corrupt

FLIP_KINDS = ("translate", "noise")
FLIP_NOISE_SIGMA = 0.03  # std of the Gaussian noise of "noise" flip-rate frames, in [0, 1] units
FGSM_EPSILONS = (1, 2, 4, 8)  # in 1/255 units
BLOCK_VALUES = 1 << 24  # images are corrupted in blocks of at most this many uint8 values ...
MAX_BLOCK = 1000  # ... and at most this many images
BLOCK_SEED_STRIDE = 1_000_003  # block k of a call with seed s draws from seed s + 1_000_003 k


# ----------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------


def block_size(images: torch.Tensor) -> int:
    """Images per corruption block: a function of the image shape only (not of batch_size or device)."""
    values = max(1, images.shape[1] * images.shape[2] * images.shape[3])
    return max(1, min(MAX_BLOCK, BLOCK_VALUES // values))


def iter_blocks(images: torch.Tensor, device: torch.device | str,
                seed: int) -> Iterator[tuple[slice, torch.Tensor, int]]:
    """Yield (rows, images[rows] on `device`, seed of the block) for consecutive blocks."""
    size = block_size(images)
    for k, start in enumerate(range(0, len(images), size)):
        rows = slice(start, min(start + size, len(images)))
        yield rows, images[rows].to(device), seed + BLOCK_SEED_STRIDE * k


def check_inputs(images: torch.Tensor, labels: Any = None) -> torch.Tensor | None:
    """Raise UserError unless images are (N, C, H, W) uint8, N >= 1, with N integer labels when
    given; returns the labels as an int64 CPU tensor (or None)."""
    check_images(images)
    if len(images) == 0:
        raise UserError("no images to evaluate (got an empty batch)")
    if labels is None:
        return None
    labels = torch.as_tensor(labels).cpu()
    if labels.dim() != 1 or len(labels) != len(images) or labels.is_floating_point():
        raise UserError(f"expected {len(images):,} integer labels (one per image), got shape {tuple(labels.shape)}")
    return labels.long()


def stats(mean: Any, std: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """mean and std as float32 tensors (lists and tuples accepted)."""
    return torch.as_tensor(mean, dtype=torch.float32), torch.as_tensor(std, dtype=torch.float32)


# ----------------------------------------------------------------------------------------------
# ImageNet-C: corruption errors and mCE
# ----------------------------------------------------------------------------------------------


def corruption_errors(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, *, mean: Any, std: Any,
                      device: torch.device | str = "cpu", batch_size: int = INFERENCE_BATCH, seed: int = 0,
                      corruptions: Iterable[str] = CORRUPTIONS, severities: Iterable[int] = SEVERITIES,
                      progress: bool = False) -> dict[str, Any]:
    """Top-1 error on the corrupted images, per corruption and severity.

    Returns {"by_severity": {name: {severity: error}}, "by_corruption": {name: mean over the
    severities}, "mce": mean over the corruptions, "n": N}; errors are fractions in [0, 1], not
    normalised by a baseline (see `relative_mce`).
    """
    corruptions, severities = list(corruptions), list(severities)
    for name in corruptions:
        for severity in severities:
            check_corruption(name, severity)
    if not corruptions or not severities:
        raise UserError("need at least one corruption and one severity")
    labels = check_inputs(images, labels)
    mean, std = stats(mean, std)
    by_severity: dict[str, dict[int, float]] = {}
    bar = progress_bar(total=len(corruptions) * len(severities), desc="corruptions", unit="pair", enable=progress)
    for name in corruptions:
        by_severity[name] = {}
        for severity in severities:
            bar.update(1)
            wrong = 0
            for rows, block, block_seed in iter_blocks(images, device, seed):
                corrupted = corrupt(block, name, severity, seed=block_seed)
                pred = predict_labels(model, corrupted, mean=mean, std=std, device=device, batch_size=batch_size)
                wrong += int((pred != labels[rows]).sum())
            by_severity[name][severity] = wrong / len(images)
    bar.close()
    by_corruption = {name: sum(errs.values()) / len(errs) for name, errs in by_severity.items()}
    mce = sum(by_corruption.values()) / len(by_corruption)
    return {"by_severity": by_severity, "by_corruption": by_corruption, "mce": mce, "n": len(images)}


def _per_corruption(errors: Mapping[str, Any], what: str) -> Mapping[str, float]:
    """{name: error} from a `corruption_errors` result, a `robustness_report`, or a plain
    {name: error} dict."""
    table = errors.get("by_corruption", errors.get("corruption_error", errors))
    if not isinstance(table, Mapping) or not all(isinstance(v, (int, float)) for v in table.values()):
        raise UserError(f"{what} must be a corruption_errors() result or a {{corruption: error}} dict")
    return table


def relative_mce(errors: Mapping[str, Any], baseline_errors: Mapping[str, Any]) -> float:
    """Mean over corruptions of error / baseline error (ImageNet-C's mCE; there the baseline is
    AlexNet, here typically the round-0 teacher). 1.0 = as robust as the baseline, lower = better.

    Both arguments are `corruption_errors` results or {corruption: error} dicts; the mean runs
    over the corruptions of `errors`, which the baseline must all have, with nonzero error.
    """
    ours = _per_corruption(errors, "errors")
    base = _per_corruption(baseline_errors, "baseline_errors")
    if not ours:
        raise UserError("errors has no corruptions to compare")
    missing = [name for name in ours if name not in base]
    if missing:
        raise UserError(f"the baseline has no error for {', '.join(missing)}")
    zero = [name for name in ours if base[name] <= 0]
    if zero:
        raise UserError(f"the baseline error is 0 for {', '.join(zero)}, so the ratio is undefined")
    return sum(ours[name] / base[name] for name in ours) / len(ours)


# ----------------------------------------------------------------------------------------------
# ImageNet-P: flip rates
# ----------------------------------------------------------------------------------------------


def translate_frame(images: torch.Tensor, t: int, direction: torch.Tensor) -> torch.Tensor:
    """Frame t of a translation sequence: each image rolled (wrapping around) by t pixels along its
    direction (B,) in 0..3 = right, left, down, up."""
    dx = torch.tensor([1, -1, 0, 0], device=images.device)[direction] * t  # (B,)
    dy = torch.tensor([0, 0, 1, -1], device=images.device)[direction] * t
    return filters.roll(images, dx, dy)


def noise_frame(images: torch.Tensor, sigma: float, gen: torch.Generator) -> torch.Tensor:
    """One frame of a noise sequence: uint8 images + independent N(0, sigma^2) noise in [0, 1] units."""
    x = images.float() / 255 + sigma * filters.normal(tuple(images.shape), gen).to(images.device)
    return (x * 255).round_().clamp_(0, 255).to(torch.uint8)


def flip_counts(model: torch.nn.Module, images: torch.Tensor, *, mean: Any, std: Any,
                device: torch.device | str = "cpu", kind: str = "translate", frames: int = 10, seed: int = 0,
                batch_size: int = INFERENCE_BATCH, noise_sigma: float = FLIP_NOISE_SIGMA) -> torch.Tensor:
    """(N,) int64: for each image, how many of its `frames - 1` comparisons changed the top-1 prediction.

    kind="translate": frame t is the image rolled by t pixels (wrapping around) in a random
    direction per image (right, left, down or up), t = 0 .. frames - 1; counts the consecutive
    pairs (t - 1, t) whose predictions differ. kind="noise": `frames` independent noisy copies
    (Gaussian, std `noise_sigma` in [0, 1] units, frame 0 noisy too, rounded to uint8); counts
    the frames t >= 1 whose prediction differs from frame 0's, as ImageNet-P does for noise.
    """
    if kind not in FLIP_KINDS:
        raise UserError(f"kind must be one of {', '.join(FLIP_KINDS)}, got {kind!r}")
    if isinstance(frames, bool) or not isinstance(frames, int) or frames < 2:
        raise UserError(f"frames must be an integer >= 2, got {frames!r}")
    check_inputs(images)
    mean, std = stats(mean, std)
    counts = torch.zeros(len(images), dtype=torch.long)
    for rows, block, block_seed in iter_blocks(images, device, seed):
        gen = torch.Generator(device=block.device).manual_seed(block_seed)
        direction = torch.randint(0, 4, (len(block),), generator=gen, device=block.device)
        reference = None  # predictions of the previous frame (translate) or of frame 0 (noise)
        for t in range(frames):
            if kind == "translate":
                frame = translate_frame(block, t, direction)
            else:
                frame = noise_frame(block, noise_sigma, gen)
            pred = predict_labels(model, frame, mean=mean, std=std, device=device, batch_size=batch_size)
            if reference is not None:
                counts[rows] += (pred != reference).long()
            if kind == "translate" or reference is None:
                reference = pred
    return counts


def flip_rate(model: torch.nn.Module, images: torch.Tensor, *, frames: int = 10, **kw: Any) -> float:
    """ImageNet-P flip probability: how often the top-1 prediction changes along a sequence
    (`flip_counts` has the sequences and the options). Returns flips / (N * (frames - 1)), in [0, 1]."""
    counts = flip_counts(model, images, frames=frames, **kw)
    return int(counts.sum()) / (len(images) * (frames - 1))


# ----------------------------------------------------------------------------------------------
# FGSM
# ----------------------------------------------------------------------------------------------


def _normalise(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Pixels in [0, 1] -> model input, the same arithmetic as `to_model_input`."""
    x = (x - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)
    return x.contiguous(memory_format=torch.channels_last)


def fgsm_accuracy(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, *, mean: Any, std: Any,
                  device: torch.device | str = "cpu", epsilons: Sequence[float] = FGSM_EPSILONS,
                  batch_size: int = INFERENCE_BATCH) -> dict[float, float]:
    """Top-1 accuracy under the fast gradient sign attack, {epsilon: accuracy}.

    x_adv = clip(x + epsilon / 255 * sign(grad_x cross_entropy(model(x), label)), 0, 1) with x the
    pixels in [0, 1] (before normalisation by mean and std), the gradient taken in eval mode;
    epsilon is in 1/255 units of the uint8 pixel scale, and epsilon 0 gives the clean accuracy.
    """
    epsilons = list(epsilons)
    if any(isinstance(e, bool) or not isinstance(e, (int, float)) or e < 0 for e in epsilons):
        raise UserError(f"epsilons must be numbers >= 0 (in 1/255 units), got {epsilons!r}")
    labels = check_inputs(images, labels)
    mean, std = stats(mean, std)
    mean, std = mean.to(device), std.to(device)
    correct = {eps: 0 for eps in epsilons}
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(images), batch_size):
            x = images[start:start + batch_size].to(device).float().div_(255)  # (B, C, H, W) in [0, 1]
            y = labels[start:start + batch_size].to(device)
            with torch.enable_grad():
                x.requires_grad_(True)
                loss = F.cross_entropy(model(_normalise(x, mean, std)).float(), y, reduction="sum")
                (grad,) = torch.autograd.grad(loss, x)
            x, sign = x.detach(), grad.sign()
            with torch.no_grad():
                for eps in epsilons:
                    adv = (x + (eps / 255) * sign).clamp_(0, 1)
                    correct[eps] += int((model(_normalise(adv, mean, std)).argmax(1) == y).sum())
    finally:
        model.train(was_training)
    return {eps: correct[eps] / len(images) for eps in epsilons}


# ----------------------------------------------------------------------------------------------
# Everything at once
# ----------------------------------------------------------------------------------------------


def robustness_report(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, *, mean: Any, std: Any,
                      device: torch.device | str = "cpu", seed: int = 0,
                      baseline: Mapping[str, Any] | None = None, batch_size: int = INFERENCE_BATCH, frames: int = 10,
                      epsilons: Sequence[float] = FGSM_EPSILONS, corruptions: Iterable[str] = CORRUPTIONS,
                      severities: Iterable[int] = SEVERITIES, progress: bool = False) -> dict[str, Any]:
    """Clean accuracy, corruption errors and mCE, relative mCE (with a baseline), flip rates and
    FGSM accuracies, as a JSON-ready dict (severities and epsilons become string keys).

    baseline: the reference model's (e.g. the round-0 teacher's) report, `corruption_errors`
    result or {corruption: error} dict; relative_mce is None without it. Corruptions on which
    the baseline makes no error at all have no ratio: they are left out of relative_mce and
    listed in relative_mce_skipped.
    """
    labels = check_inputs(images, labels)
    mean, std = stats(mean, std)
    common = {"mean": mean, "std": std, "device": device}
    clean = accuracy(model, images, labels, batch_size=batch_size, **common)
    errors = corruption_errors(model, images, labels, batch_size=batch_size, seed=seed, corruptions=corruptions,
                               severities=severities, progress=progress, **common)
    fgsm = fgsm_accuracy(model, images, labels, epsilons=epsilons, batch_size=batch_size, **common)
    relative, skipped = None, []
    if baseline is not None:
        base = _per_corruption(baseline, "baseline")
        skipped = [name for name in errors["by_corruption"] if base.get(name, 1.0) <= 0]
        kept = {name: e for name, e in errors["by_corruption"].items() if name not in skipped}
        relative = relative_mce(kept, base) if kept else None
    return {
        "n": len(images),
        "seed": seed,
        "clean_accuracy": clean,
        "clean_error": 1.0 - clean,
        "corruption_error_by_severity": {
            name: {str(s): e for s, e in errs.items()} for name, errs in errors["by_severity"].items()
        },
        "corruption_error": dict(errors["by_corruption"]),
        "mce": errors["mce"],
        "relative_mce": relative,
        "relative_mce_skipped": skipped,
        "flip_rate": {
            kind: flip_rate(model, images, kind=kind, frames=frames, seed=seed, batch_size=batch_size, **common)
            for kind in FLIP_KINDS
        },
        "fgsm_accuracy": {str(eps): acc for eps, acc in fgsm.items()},
    }
