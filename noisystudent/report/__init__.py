"""What a run did, on one page: `build_report(run_dir)` writes `run_dir/report.html`.

The page is self-contained (inline CSS, plots as base64 PNG data URIs); the plots are also saved
as `run_dir/plots/*.png`, and `metrics.jsonl` is converted to TensorBoard event files when
TensorBoard is installed. Sections (each an `<h2>` with the id in `SECTION_IDS`): accuracy by
round, training curves, per-class accuracy, confusion matrix, pseudo-label confidence, class
balance, pseudo-label accuracy, unlabeled images, augmentation preview and, when some round has a
`robustness.json`, robustness to corruptions.

Without matplotlib the page says so in one line and keeps its tables.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from noisystudent.report import html as H
from noisystudent.report.plots import PLOTS_EXTRA, augment_preview, have_matplotlib
from noisystudent.report import plots as P
from noisystudent.report.run_files import RoundFiles, RunFiles, as_error, corruption_errors, load_run

log = logging.getLogger(__name__)

__all__ = ["SECTION_IDS", "augment_preview", "build_report", "load_run"]

SECTION_IDS = {
    "accuracy": "Accuracy by round",
    "training-curves": "Training curves",
    "per-class-accuracy": "Per-class accuracy: teacher vs final student",
    "confusion-matrix": "Confusion matrix of the final model",
    "pseudo-label-confidence": "Pseudo-label confidence",
    "class-balance": "Pseudo-labels per class, before and after balancing",
    "pseudo-label-accuracy": "Pseudo-label accuracy",
    "unlabeled-images": "Unlabeled images and their pseudo-labels",
    "augmentation-preview": "Augmentation preview: what RandAugment's magnitude M does",
    "robustness": "Robustness to corruptions",
}
GRID_IMAGES = 16       # most and least confident unlabeled images shown
PREVIEW_ROWS = 6       # labeled images in the augmentation preview
DEFAULT_PREVIEW_SPEC = "rand-n2-m9"  # shown when the run had RandAugment off


class _Plots:
    """Draws plots into `folder/<name>.png` and returns their <img> tags ("" when matplotlib is missing)."""

    def __init__(self, folder: Path, enabled: bool):
        self.folder, self.enabled = folder, enabled

    def add(self, name: str, draw: Callable[[], bytes], alt: str) -> str:
        if not self.enabled:
            return ""
        png = draw()
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / f"{name}.png").write_bytes(png)
        return H.image(png, alt)


def build_report(run_dir: str | Path, *, tensorboard: bool = True) -> Path:
    """Write `run_dir/report.html` (and `run_dir/plots/*.png`) for a run directory; returns the page's path."""
    run = load_run(run_dir)
    plots = _Plots(run.run_dir / "plots", have_matplotlib())
    intro = _intro(run, plots.enabled)
    if tensorboard:
        from noisystudent.tensorboard import write_scalars

        intro.append(_tensorboard_line(run.run_dir, write_scalars(run.run_dir)))
    sections = [
        _accuracy(run, plots), _training_curves(run, plots), _per_class(run, plots), _confusion(run, plots),
        _confidence(run, plots), _balance(run, plots), _pseudo_label_accuracy(run, plots),
        _unlabeled_images(run, plots), _augmentation(run, plots),
    ]
    if any(r.robustness is not None for r in run.rounds):
        sections.append(_robustness(run, plots))
    path = run.run_dir / "report.html"
    path.write_text(H.page(f"Noisy Student run: {run.run_dir.name}", intro, sections), encoding="utf-8")
    log.debug("report: %s", path)
    return path


# ---- header ---------------------------------------------------------------------------------------------
def _intro(run: RunFiles, plots_enabled: bool) -> list[str]:
    """Run name, config summary, data notes and the missing-matplotlib line."""
    parts = [H.paragraph(f"{run.run_dir.resolve()} · built {time.strftime('%Y-%m-%d %H:%M')}", "meta")]
    cfg = run.config
    if cfg is not None:
        models = " → ".join(dict.fromkeys(cfg.model_for_round(r.k) for r in run.rounds)) or ", ".join(cfg.model.names)
        parts.append(H.paragraph(
            f"{cfg.pipeline.variant.replace('_', ' ')}, {len(run.rounds) - 1} round(s) after the teacher; models "
            f"{models}; student noise: RandAugment {cfg.noise.randaugment or 'off'}, dropout {cfg.noise.dropout:g}, "
            f"stochastic depth {cfg.noise.drop_path:g}; pseudo-labels {cfg.pseudo.mode}, threshold "
            f"{cfg.pseudo.threshold:g}, balance {'on' if cfg.pseudo.balance else 'off'}."))
    if run.data is not None:
        parts.append(H.paragraph(f"Data: {run.data.describe()}."))
    for note in run.notes:
        parts.append(H.paragraph(note, "note"))
    if not plots_enabled:
        parts.append(H.paragraph(f"matplotlib is not installed, so this report has tables but no plots "
                                 f"({PLOTS_EXTRA}).", "note"))
    return parts


def _tensorboard_line(run_dir: Path, written: bool) -> str:
    if written:
        return H.raw_paragraph(f"TensorBoard: <code>tensorboard --logdir {H.esc(run_dir / 'tensorboard')}</code>",
                               "meta")
    return H.raw_paragraph("TensorBoard event files were not written (<code>pip install "
                           "'noisystudent[tensorboard]'</code> to have them).", "meta")


def _role(k: int) -> str:
    return "teacher" if k == 0 else f"student {k}"


def _label(r: RoundFiles) -> str:
    return f"round {r.k} ({r.model_name})"


# ---- sections -------------------------------------------------------------------------------------------
def _accuracy(run: RunFiles, plots: _Plots) -> H.Section:
    s = H.Section("accuracy", SECTION_IDS["accuracy"])
    rows, test_acc = [], []
    teacher_acc = run.rounds[0].test_accuracy if run.rounds else None
    for r in run.rounds:
        sel, acc = r.selection or {}, r.test_accuracy
        test_acc.append(acc)
        change = "-" if acc is None or teacher_acc is None or r.k == 0 else f"{100 * (acc - teacher_acc):+.2f}"
        rows.append([r.k, _role(r.k), r.model_name, "-" if r.params is None else f"{r.params:,}",
                     "-" if not sel else f"{sel.get('selected', 0):,}", H.pct(sel.get("pseudo_label_accuracy")),
                     H.pct(sel.get("pseudo_label_accuracy_selected")), H.pct(acc), change])
    best = max(range(len(test_acc)), key=lambda i: test_acc[i], default=None) if any(
        a is not None for a in test_acc) and None not in test_acc else None
    s.add(H.table(["round", "role", "model", "params", "pseudo-labels kept", "pseudo-label acc. (all)",
                   "pseudo-label acc. (kept)", "test acc.", "vs teacher (points)"], rows, highlight=best))
    if any(a is not None for a in test_acc):
        labels = [f"{r.k}: {_role(r.k)}\n{r.model_name}" for r in run.rounds]
        pl = [(r.selection or {}).get("pseudo_label_accuracy") for r in run.rounds]
        s.add(plots.add("accuracy", lambda: P.accuracy_plot(labels, test_acc, pl), "test accuracy by round"))
    else:
        s.add(H.paragraph("No test set: test accuracy was not measured."))
    return s


def _training_curves(run: RunFiles, plots: _Plots) -> H.Section:
    s = H.Section("training-curves", SECTION_IDS["training-curves"])
    curves, rows = {}, []
    for r in run.rounds:
        epochs = run.epochs(r.k)
        if not epochs:
            continue
        accs = [e.get("test_accuracy") for e in epochs]
        known = [(a, e["epoch"]) for a, e in zip(accs, epochs) if a is not None]
        best = max(known, default=None)
        speeds = [e["images_per_second"] for e in epochs if e.get("images_per_second")]
        curves[_label(r)] = {"epoch": [e["epoch"] for e in epochs], "loss": [e["loss"] for e in epochs],
                             "test_accuracy": accs}
        rows.append([r.k, r.model_name, len(epochs), f"{epochs[-1]['loss']:.4f}", H.pct(accs[-1]),
                     "-" if best is None else f"{H.pct(best[0])} (epoch {best[1]})",
                     "-" if not speeds else f"{np.median(speeds):,.0f}",
                     f"{sum(e.get('seconds', 0.0) for e in epochs):,.0f}"])
    if not rows:
        return s.add(H.paragraph("metrics.jsonl holds no training epochs."))
    s.add(H.table(["round", "model", "epochs", "final loss", "final test acc.", "best test acc.",
                   "images/s (median)", "training time (s)"], rows))
    s.add(H.paragraph("The student's loss sums the labeled and the pseudo-labeled terms, so it is not comparable "
                      "with the teacher's.", "meta"))
    return s.add(plots.add("training_curves", lambda: P.training_curves_plot(curves), "loss and test accuracy per epoch"))


def _per_class(run: RunFiles, plots: _Plots) -> H.Section:
    s = H.Section("per-class-accuracy", SECTION_IDS["per-class-accuracy"])
    evaluated = [r for r in run.rounds if r.evaluation is not None]
    if not evaluated:
        return s.add(H.paragraph("No test set: nothing to show."))
    chosen = [evaluated[0]] if len(evaluated) == 1 else [evaluated[0], evaluated[-1]]
    series = {f"{_role(r.k)} ({r.model_name})": r.evaluation["per_class_accuracy"] for r in chosen}
    rows = []
    for c, name in enumerate(run.classes):
        vals = [r.evaluation["per_class_accuracy"][c] for r in chosen]
        change = [f"{100 * (vals[-1] - vals[0]):+.1f}"] if len(vals) == 2 else []
        rows.append([name, *[H.pct(v, 1) for v in vals], *change])
    header = ["class", *series, *(["change (points)"] if len(chosen) == 2 else [])]
    plot = plots.add("per_class_accuracy", lambda: P.per_class_plot(run.classes, series), "per-class accuracy")
    return s.add(H.row(H.table(header, rows), plot))


def _confusion(run: RunFiles, plots: _Plots) -> H.Section:
    s = H.Section("confusion-matrix", SECTION_IDS["confusion-matrix"])
    final = next((r for r in reversed(run.rounds) if r.evaluation is not None), None)
    if final is None:
        return s.add(H.paragraph("No test set: nothing to show."))
    conf = final.evaluation["confusion"]
    title = f"{_label(final)}: rows = true class, columns = prediction"
    s.add(H.paragraph(f"{title}; test accuracy {H.pct(final.test_accuracy)} on {sum(map(sum, conf)):,} images."))
    plot = plots.add("confusion_matrix", lambda: P.confusion_plot(run.classes, conf, _label(final)),
                     "confusion matrix")
    numbers = (H.table(["true \\ predicted", *run.classes], [[n, *row] for n, row in zip(run.classes, conf)])
               if len(run.classes) <= 20 else "")
    return s.add(H.row(plot, numbers))


def _confidence(run: RunFiles, plots: _Plots) -> H.Section:
    s = H.Section("pseudo-label-confidence", SECTION_IDS["pseudo-label-confidence"])
    labeled = [r for r in run.rounds if r.confidence is not None and r.selection is not None]
    if not labeled:
        return s.add(H.paragraph("No pseudo-labels yet (the teacher's round only)."))
    rows, hists = [], []
    for r in labeled:
        sel, conf = r.selection, r.confidence
        rows.append([r.k, f"{sel['threshold']:g}", f"{sel['total']:,}", f"{sel['passed_threshold']:,}",
                     H.pct(sel["kept_fraction"], 1), f"{conf.mean():.3f}", f"{np.median(conf):.3f}",
                     f"{sel['selected']:,}", f"{sel.get('unique_selected', sel['selected']):,}"])
        hists.append((f"round {r.k}", conf, float(sel["threshold"]), float(sel["kept_fraction"])))
    s.add(H.paragraph("Confidence is the clean teacher's max softmax probability; images at or above the "
                      "threshold (dashed line) are kept, then balanced per class."))
    s.add(H.table(["round", "threshold", "unlabeled", "passed threshold", "kept", "mean confidence",
                   "median confidence", "selected after balancing", "distinct selected"], rows))
    return s.add(plots.add("pseudo_label_confidence", lambda: P.confidence_plot(hists), "confidence histograms"))


def _balance(run: RunFiles, plots: _Plots) -> H.Section:
    s = H.Section("class-balance", SECTION_IDS["class-balance"])
    labeled = [r for r in run.rounds if r.selection is not None]
    if not labeled:
        return s.add(H.paragraph("No pseudo-labels yet (the teacher's round only)."))
    header = ["class"] + [f"round {r.k} {when}" for r in labeled for when in ("before", "after")]
    rows = [[name] + [r.selection[key][c] for r in labeled for key in ("per_class_before", "per_class_after")]
            for c, name in enumerate(run.classes)]
    targets = [r.selection.get("target_per_class") for r in labeled]
    s.add(H.paragraph("Per class: images kept by the threshold (before) and after balancing (after: the most "
                      "confident are kept where a class has too many, images are repeated where it has too few); "
                      "target per class: " + ", ".join(f"round {r.k}: {'off' if t is None else t}"
                                                       for r, t in zip(labeled, targets)) + "."))
    s.add(H.table(header, rows))
    data = [(f"round {r.k}", r.selection["per_class_before"], r.selection["per_class_after"]) for r in labeled]
    return s.add(plots.add("class_balance", lambda: P.balance_plot(run.classes, data), "per-class counts"))


def _pseudo_label_accuracy(run: RunFiles, plots: _Plots) -> H.Section:
    s = H.Section("pseudo-label-accuracy", SECTION_IDS["pseudo-label-accuracy"])
    labeled = [r for r in run.rounds if r.selection is not None]
    known = [r for r in labeled if r.selection.get("pseudo_label_accuracy") is not None]
    if not known:
        return s.add(H.paragraph("Unknown: the unlabeled images have no true labels." if labeled else
                                 "No pseudo-labels yet (the teacher's round only)."))
    s.add(H.paragraph("The unlabeled images' true labels are known here (they were never used for training), so "
                      "the pseudo-labels can be scored."))
    names = {r.k: r.model_name for r in run.rounds}
    s.add(H.table(["round", "teacher", "accuracy (all unlabeled)", "accuracy (kept after threshold + balance)"],
                  [[r.k, names.get(r.k - 1, "-"),
                    H.pct(r.selection["pseudo_label_accuracy"]),
                    H.pct(r.selection.get("pseudo_label_accuracy_selected"))] for r in known]))
    truth = run.unlabeled_labels
    curves = [(f"round {r.k}", r.confidence, (r.hard == truth).numpy()) for r in known
              if truth is not None and r.hard is not None and len(r.hard) == len(truth)]
    if curves:
        s.add(plots.add("pseudo_label_accuracy", lambda: P.pseudo_label_accuracy_plot(curves),
                        "pseudo-label accuracy against confidence"))
    return s


def _unlabeled_images(run: RunFiles, plots: _Plots) -> H.Section:
    s = H.Section("unlabeled-images", SECTION_IDS["unlabeled-images"])
    last = next((r for r in reversed(run.rounds) if r.confidence is not None), None)
    if last is None:
        return s.add(H.paragraph("No pseudo-labels yet (the teacher's round only)."))
    images = run.unlabeled_images
    if images is None or len(images) != len(last.confidence):
        return s.add(H.paragraph("The unlabeled images could not be loaded again from config.yaml, so they are "
                                 "not shown."))
    n = min(GRID_IMAGES, len(last.confidence))
    most = np.argsort(-last.confidence, kind="stable")[:n]
    least = np.argsort(last.confidence, kind="stable")[:n]
    panels, rows = [], []
    for title, idx in ((f"most confident {n}", most), (f"least confident {n}", least)):
        captions, colours = _captions(run, last, idx)
        panels.append((title, images[idx].numpy(), captions, colours))
        rows += [[title, int(i), captions[j]] for j, i in enumerate(idx)]
    truth = " (green: correct, red: wrong, with the true class)" if run.unlabeled_labels is not None else ""
    s.add(H.paragraph(f"Pseudo-labels of round {last.k} (by the round-{last.k - 1} model): class and confidence"
                      f"{truth}."))
    grid = plots.add("unlabeled_images", lambda: P.image_grid_plot(panels), "unlabeled images")
    return s.add(grid if grid else H.table(["group", "unlabeled index", "pseudo-label and confidence"], rows))


def _captions(run: RunFiles, r: RoundFiles, idx: np.ndarray) -> tuple[list[str], list[str]]:
    """'class 0.97' for each image; wrong ones (when the truth is known) in red with the true class."""
    captions, colours = [], []
    truth = run.unlabeled_labels
    for i in idx.tolist():
        label = int(r.hard[i])
        text = f"{_short(run.class_name(label))} {r.confidence[i]:.2f}"
        if truth is None:
            captions.append(text)
            colours.append("black")
        elif int(truth[i]) == label:
            captions.append(text)
            colours.append(P.GOOD)
        else:
            captions.append(f"{text} (true {_short(run.class_name(int(truth[i])), 6)})")
            colours.append(P.BAD)
    return captions, colours


def _short(name: str, width: int = 10) -> str:
    return name if len(name) <= width else name[:width - 1] + "…"


def _augmentation(run: RunFiles, plots: _Plots) -> H.Section:
    s = H.Section("augmentation-preview", SECTION_IDS["augmentation-preview"])
    spec = run.config.noise.randaugment if run.config is not None else ""
    if run.labeled is None:
        return s.add(H.paragraph("The labeled images could not be loaded again from config.yaml, so there is no "
                                 "preview."))
    shown = spec or DEFAULT_PREVIEW_SPEC
    note = "" if spec else f" This run had RandAugment off; the preview uses {shown} for reference."
    s.add(H.raw_paragraph(
        f"RandAugment <code>{H.esc(shown)}</code>: each row draws its ops once (named on the left) and keeps them "
        f"across the columns, which only change the magnitude M from 0 (no change) to 10 (each op's maximum); the "
        f"run's own M is outlined in red. autocontrast and equalize have no strength.{H.esc(note)}"))
    if not plots.enabled:
        return s
    images, names = _preview_images(run)
    path = augment_preview(images, shown, run.run_dir / "plots" / "augmentation_preview.png", row_labels=names)
    return s.add(H.image(path.read_bytes(), "augmentation preview"))


def _preview_images(run: RunFiles) -> tuple[torch.Tensor, list[str]]:
    """Up to PREVIEW_ROWS labeled images, one per class first."""
    labeled = run.labeled
    picks: list[int] = []
    if labeled.labels is not None:
        for c in range(len(run.classes)):
            hits = (labeled.labels == c).nonzero()
            if len(hits) and len(picks) < PREVIEW_ROWS:
                picks.append(int(hits[0]))
    picks += [i for i in range(len(labeled)) if i not in picks][:PREVIEW_ROWS - len(picks)]
    names = [f"class {_short(run.class_name(int(labeled.labels[i])))}" if labeled.labels is not None else ""
             for i in picks]
    return labeled.images[picks], names


def _robustness(run: RunFiles, plots: _Plots) -> H.Section:
    s = H.Section("robustness", SECTION_IDS["robustness"])
    measured = [r for r in run.rounds if r.robustness is not None]
    errors = {_label(r): corruption_errors(r.robustness) for r in measured}
    corruptions = sorted({c for e in errors.values() for c in e})
    rows = [[c, *[_fmt_error(e.get(c)) for e in errors.values()]] for c in corruptions]
    rows.append(["mCE", *[_fmt_error(as_error(r.robustness.get("mce"))) for r in measured]])
    rows.append(["relative mCE (round-0 teacher = 1)",
                 *[_fmt_ratio(as_error(r.robustness.get("relative_mce"))) for r in measured]])
    for kind in ("translate", "noise"):
        rows.append([f"flip rate ({kind})",
                     *[_fmt_error(as_error((r.robustness.get("flip_rate") or {}).get(kind))) for r in measured]])
    for eps in ("1", "2", "4", "8"):
        rows.append([f"FGSM accuracy, eps {eps}/255",
                     *[_fmt_error(as_error((r.robustness.get("fgsm_accuracy") or {}).get(eps))) for r in measured]])
    s.add(H.paragraph("Test error per corruption type (15 ImageNet-C types, mean over 5 severities, seeded so every "
                      "round sees the same corrupted images), then the mean corruption error, the same normalised by "
                      "the round-0 teacher, flip rates on perturbation sequences and FGSM accuracy "
                      "(from round-k/robustness.json)."))
    s.add(H.table(["corruption", *errors], rows))
    series = {label: [e.get(c) for c in corruptions] for label, e in errors.items()}
    if corruptions:
        s.add(plots.add("robustness", lambda: P.robustness_plot(corruptions, series), "error per corruption"))
    return s


def _fmt_error(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.2f}%"


def _fmt_ratio(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"
