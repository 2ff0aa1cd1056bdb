"""The report's figures: matplotlib (Agg, no pyplot state), each function from plain data to PNG bytes.

Nothing here reads a run directory; `noisystudent.report` gathers the numbers and calls these.
matplotlib is imported inside the functions, so `import noisystudent.report` works without it;
`have_matplotlib()` says whether plots can be drawn.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from noisystudent.errors import UserError

PLOTS_EXTRA = "pip install 'noisystudent[plots]'"
GOOD, BAD = "#1a7f37", "#cf222e"  # caption colours: correct / wrong pseudo-label
TEACHER, STUDENT = "#8c959f", "#0969da"
MIN_BIN = 5  # images a confidence bin needs to get an accuracy point


def have_matplotlib() -> bool:
    """True when matplotlib imports (plots can be drawn)."""
    try:
        import matplotlib  # noqa: F401
        from matplotlib.figure import Figure  # noqa: F401
    except ImportError:
        return False
    return True


def _figure(width: float, height: float) -> Any:
    """A matplotlib Figure (Agg rendering, no pyplot global state), constrained layout."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _png(fig: Any) -> bytes:
    """Render `fig` to PNG bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def _percent_axis(ax: Any) -> None:
    """Label the y axis of fractions as percentages without trailing zeros (0.435 -> 43.5%)."""
    from matplotlib.ticker import FuncFormatter

    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{100 * v:.2f}".rstrip("0").rstrip(".") + "%"))


def _show_image(ax: Any, image: np.ndarray) -> None:
    """Draw one (C, H, W) uint8 image without axes (grayscale for C = 1), pixels as squares."""
    image = np.asarray(image)
    if image.shape[0] == 1:
        ax.imshow(image[0], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    else:
        ax.imshow(image.transpose(1, 2, 0), interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


# ---- numbers --------------------------------------------------------------------------------------------
def accuracy_plot(labels: Sequence[str], test_accuracy: Sequence[float | None],
                  pseudo_label_accuracy: Sequence[float | None]) -> bytes:
    """Test accuracy per round (line with values) and pseudo-label accuracy where known."""
    fig = _figure(7.5, 3.4)
    ax = fig.add_subplot()
    x = np.arange(len(labels))
    for values, name, colour, marker in ((test_accuracy, "test accuracy", STUDENT, "o"),
                                         (pseudo_label_accuracy, "pseudo-label accuracy (all unlabeled)",
                                          "#bf8700", "s")):
        pts = [(i, v) for i, v in zip(x, values) if v is not None]
        if not pts:
            continue
        xs, ys = zip(*pts)
        ax.plot(xs, ys, marker=marker, color=colour, label=name)
        for xi, yi in pts:
            ax.annotate(f"{100 * yi:.1f}%", (xi, yi), textcoords="offset points", xytext=(0, 7),
                        ha="center", fontsize=8, color=colour)
    known = [v for v in (*test_accuracy, *pseudo_label_accuracy) if v is not None]
    if known:
        lo, hi = min(known), max(known)
        pad = max(0.02, 0.15 * (hi - lo))
        ax.set_ylim(max(0.0, lo - pad), min(1.02, hi + pad))
    ax.set_xticks(x, labels, fontsize=8)
    ax.set_xlim(-0.5, len(labels) - 0.5)
    _percent_axis(ax)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return _png(fig)


def training_curves_plot(curves: dict[str, dict[str, list[float | None]]]) -> bytes:
    """Loss (log scale) and test accuracy per epoch, one line per round.

    curves: {round label: {"epoch": [...], "loss": [...], "test_accuracy": [... or None]}}.
    """
    fig = _figure(10, 3.6)
    ax_loss, ax_acc = fig.subplots(1, 2)
    for label, c in curves.items():
        ax_loss.plot(c["epoch"], c["loss"], label=label, linewidth=1.2)
        acc = [(e, a) for e, a in zip(c["epoch"], c["test_accuracy"]) if a is not None]
        if acc:
            ax_acc.plot(*zip(*acc), label=label, linewidth=1.2)
    if all(v > 0 for c in curves.values() for v in c["loss"]):
        ax_loss.set_yscale("log")
    ax_loss.set(title="training loss", xlabel="epoch")
    ax_acc.set(title="test accuracy", xlabel="epoch")
    _percent_axis(ax_acc)
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    if not any(a is not None for c in curves.values() for a in c["test_accuracy"]):
        ax_acc.text(0.5, 0.5, "not measured during training\n(eval_every = 0)", ha="center", va="center",
                    transform=ax_acc.transAxes, color="#57606a")
    return _png(fig)


def per_class_plot(classes: Sequence[str], series: dict[str, Sequence[float]]) -> bytes:
    """Per-class accuracy of each named model (e.g. teacher, final student) as dots joined per class."""
    fig = _figure(min(max(5.0, 0.35 * len(classes) + 1.5), 11), 3.4)
    ax = fig.add_subplot()
    x = np.arange(len(classes))
    values = [np.asarray(v, dtype=float) for v in series.values()]
    if len(values) == 2:
        ax.vlines(x, np.minimum(*values), np.maximum(*values), color="#d0d7de", linewidth=3, zorder=1)
    colours = [TEACHER, STUDENT, "#bf8700", "#8250df"]
    for i, (name, v) in enumerate(zip(series, values)):
        ax.scatter(x, v, s=36, label=name, color=colours[i % len(colours)], zorder=2)
    long_names = max(map(len, classes), default=0) > 3
    ax.set_xticks(x, classes, rotation=45 if long_names else 0, ha="right" if long_names else "center", fontsize=8)
    lo = min((float(v.min()) for v in values if len(v)), default=0.0)
    ax.set_ylim(max(0.0, lo - 0.05), 1.01)
    ax.set_xlim(-0.6, len(classes) - 0.4)
    _percent_axis(ax)
    ax.grid(alpha=0.3)
    fig.legend(loc="outside upper center", ncols=len(series), fontsize=8)
    return _png(fig)


def confusion_plot(classes: Sequence[str], confusion: Sequence[Sequence[int]], title: str) -> bytes:
    """Confusion matrix (rows = truth, columns = prediction), coloured by row share, counts written in."""
    conf = np.asarray(confusion, dtype=np.int64)
    share = conf / np.maximum(conf.sum(1, keepdims=True), 1)
    side = min(9.0, 1.8 + 0.3 * len(classes))
    fig = _figure(side + 0.8, side)
    ax = fig.add_subplot()
    im = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    if len(classes) <= 25:
        for i, j in np.ndindex(conf.shape):
            if conf[i, j]:
                ax.text(j, i, str(conf[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if share[i, j] > 0.5 else "black")
    ticks = np.arange(len(classes))
    ax.set_xticks(ticks, classes, rotation=90 if max(map(len, classes), default=0) > 2 else 0, fontsize=7)
    ax.set_yticks(ticks, classes, fontsize=7)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    fig.colorbar(im, ax=ax, shrink=0.7, label="share of the true class")
    return _png(fig)


def confidence_plot(rounds: Sequence[tuple[str, np.ndarray, float, float]]) -> bytes:
    """One histogram of pseudo-label confidence per round with its threshold marked.

    rounds: (label, confidences (N,), threshold, kept fraction).
    """
    n = max(len(rounds), 1)
    fig = _figure(min(4.2 * n, 13), 3.2)
    axes = np.atleast_1d(fig.subplots(1, n, sharey=True, squeeze=False)[0])
    counts = [np.histogram(np.asarray(conf), bins=np.linspace(0, 1, 41))[0] for _, conf, _, _ in rounds]
    nonzero = np.concatenate([c[c > 0] for c in counts]) if counts else np.array([])
    log_scale = len(nonzero) > 0 and nonzero.max() >= 20 * nonzero.min()  # a long tail: log counts
    for ax, (label, conf, threshold, kept) in zip(axes, rounds):
        ax.hist(np.asarray(conf), bins=np.linspace(0, 1, 41), color=STUDENT, alpha=0.85)
        ax.axvline(threshold, color=BAD, linestyle="--", linewidth=1.5, label=f"threshold {threshold:.2f}")
        ax.set(title=f"{label}: {100 * kept:.1f}% kept", xlabel="confidence (max softmax)", xlim=(-0.02, 1.0))
        if log_scale:
            ax.set_yscale("log")
        ax.legend(fontsize=8, loc="upper left")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("images (log scale)" if log_scale else "images")
    return _png(fig)


def balance_plot(classes: Sequence[str], rounds: Sequence[tuple[str, Sequence[int], Sequence[int]]]) -> bytes:
    """Per-class pseudo-label counts before (threshold only) and after class balancing, per round."""
    n = max(len(rounds), 1)
    fig = _figure(min(max(4.0, 0.45 * len(classes) + 2) * n, 13), 3.2)
    axes = fig.subplots(1, n, sharey=True, squeeze=False)[0]
    x = np.arange(len(classes))
    for ax, (label, before, after) in zip(axes, rounds):
        ax.bar(x - 0.2, before, 0.4, label="after threshold", color=TEACHER)
        ax.bar(x + 0.2, after, 0.4, label="after balancing", color=STUDENT)
        ax.set_xticks(x, classes, fontsize=7, rotation=90 if max(map(len, classes), default=0) > 2 else 0)
        ax.set(title=label)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("pseudo-labeled images")
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside upper center", ncols=2, fontsize=8)
    return _png(fig)


def pseudo_label_accuracy_plot(rounds: Sequence[tuple[str, np.ndarray, np.ndarray]]) -> bytes:
    """Pseudo-label accuracy against confidence (10 equal-width bins of >= MIN_BIN images), one line per round.

    rounds: (label, confidences (N,), correct (N,) bool).
    """
    fig = _figure(6.5, 3.4)
    ax = fig.add_subplot()
    edges = np.linspace(0, 1, 11)
    for label, conf, correct in rounds:
        conf, correct = np.asarray(conf), np.asarray(correct, dtype=float)
        which = np.clip(np.digitize(conf, edges) - 1, 0, 9)
        counts = np.bincount(which, minlength=10)
        hits = np.bincount(which, weights=correct, minlength=10)
        mask = counts >= MIN_BIN
        centres = (edges[:-1] + edges[1:]) / 2
        ax.plot(centres[mask], hits[mask] / counts[mask], marker="o", label=label)
    ax.plot([0, 1], [0, 1], color="#8c959f", linestyle=":", label="confidence = accuracy")
    ax.set(xlabel="teacher confidence (bin centre)", ylabel="pseudo-label accuracy", xlim=(0, 1), ylim=(0, 1.02))
    _percent_axis(ax)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return _png(fig)


def robustness_plot(corruptions: Sequence[str], errors: dict[str, Sequence[float | None]]) -> bytes:
    """Grouped bars of the error per corruption type, one bar per model (round)."""
    fig = _figure(max(7.0, 0.5 * len(corruptions) * max(len(errors), 1) + 2), 3.6)
    ax = fig.add_subplot()
    x = np.arange(len(corruptions))
    width = 0.8 / max(len(errors), 1)
    for i, (label, values) in enumerate(errors.items()):
        ys = [np.nan if v is None else v for v in values]
        ax.bar(x + (i - (len(errors) - 1) / 2) * width, ys, width, label=label)
    ax.set_xticks(x, corruptions, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("error")
    ax.grid(axis="y", alpha=0.3)
    fig.legend(loc="outside upper center", ncols=min(len(errors), 4), fontsize=8)
    return _png(fig)


# ---- images ---------------------------------------------------------------------------------------------
def image_grid_plot(panels: Sequence[tuple[str, np.ndarray, Sequence[str], Sequence[str]]],
                    columns: int = 4) -> bytes:
    """Side-by-side panels of captioned images.

    panels: (panel title, images (N, C, H, W) uint8, captions (N,), caption colours (N,)).
    """
    rows = max((int(np.ceil(len(p[1]) / columns)) for p in panels), default=1)
    fig = _figure(4.6 * len(panels), 1.25 * rows + 0.5)
    subs = np.atleast_1d(fig.subfigures(1, len(panels), wspace=0.05))
    for sub, (title, images, captions, colours) in zip(subs, panels):
        sub.suptitle(title, fontsize=10)
        axes = sub.subplots(rows, columns, squeeze=False)
        for i, ax in enumerate(axes.flat):
            if i >= len(images):
                ax.axis("off")
                continue
            _show_image(ax, images[i])
            ax.set_title(captions[i], fontsize=8, color=colours[i], pad=2)
    return _png(fig)


def augment_preview(images: torch.Tensor | np.ndarray, randaugment: Any, path: str | Path,
                    magnitudes: Sequence[float] = range(11), seed: int = 0,
                    row_labels: Sequence[str] | None = None) -> Path:
    """Write a PNG grid showing what RandAugment's magnitude M does; returns `path`.

    Rows are `images` ((N, C, H, W) uint8); columns are `magnitudes` (0..10). Each row draws its
    ops once (`randaugment.sample`) and keeps them, with their random signs and positions, across
    the columns, so only the magnitude changes along a row. `randaugment` is a `RandAugment` or a
    spec such as "rand-n2-m9"; the column of its own magnitude is marked.
    """
    from noisystudent.augment import RandAugment

    if not have_matplotlib():
        raise UserError(f"the augmentation preview needs matplotlib: {PLOTS_EXTRA}")
    ra = RandAugment.from_spec(randaugment) if isinstance(randaugment, str) else randaugment
    grid, ops = augment_grid(torch.as_tensor(images), ra, magnitudes, seed)
    labels = list(row_labels) if row_labels is not None else [""] * len(ops)
    fig = _figure(0.95 * len(grid[0]) + 1.8, 1.0 * len(grid) + 0.6)
    axes = fig.subplots(len(grid), len(grid[0]), squeeze=False)
    for r, row in enumerate(grid):
        for c, (m, image) in enumerate(zip(magnitudes, row)):
            ax = axes[r, c]
            _show_image(ax, image)
            if r == 0:
                own = float(m) == ra.m
                ax.set_title(f"M={m:g}" + (" (run)" if own else ""), fontsize=8,
                             fontweight="bold" if own else "normal", color=BAD if own else "black")
            if float(m) == ra.m:
                for spine in ax.spines.values():
                    spine.set(color=BAD, linewidth=2)
        axes[r, 0].set_ylabel(f"{labels[r]}\n{ops[r]}".strip(), fontsize=7, rotation=0, ha="right", va="center")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(_png(fig))
    return path


def augment_grid(images: torch.Tensor, ra: Any, magnitudes: Sequence[float],
                 seed: int = 0) -> tuple[list[list[np.ndarray]], list[str]]:
    """Augmented copies of each image at each magnitude, with one op draw per image for all magnitudes.

    Returns (grid[row][column] (C, H, W) uint8 arrays, the op names of each row).
    """
    if images.dim() == 3:
        images = images[None]
    if images.dtype != torch.uint8 or images.dim() != 4:
        raise UserError(f"augment_preview: images must be (N, C, H, W) uint8, got {tuple(images.shape)} {images.dtype}")
    bad = [m for m in magnitudes if not 0 <= float(m) <= 10]
    if bad or len(magnitudes) == 0:
        raise UserError(f"augment_preview: magnitudes must be in 0..10, got {list(magnitudes)}")
    op_idx, _ = ra.sample(len(images), torch.Generator().manual_seed(seed))
    columns = []
    for m in magnitudes:
        mags = torch.full(op_idx.shape, float(m))
        # the same generator state for every column: same signs and cutout positions
        columns.append(ra.apply(images, op_idx, mags, torch.Generator().manual_seed(seed + 1)).numpy())
    grid = [[col[r] for col in columns] for r in range(len(images))]
    ops = [" + ".join(ra.ops[i] for i in op_idx[:, r].tolist()) or "no ops" for r in range(len(images))]
    return grid, ops
