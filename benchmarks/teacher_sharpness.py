"""How accurate and how sharp a teacher's soft pseudo-labels are on its run's unlabeled pool.

    python benchmarks/teacher_sharpness.py runs/fmnist-tune/seed0-teacher runs/fmnist-tune/seed0-teacher-r8-e300
    python benchmarks/teacher_sharpness.py --round 2 runs/fashion-mnist
    python benchmarks/teacher_sharpness.py --flip-average runs/fmnist-tune/seed0-teacher
    python benchmarks/teacher_sharpness.py runs/fashion-mnist --round 3 --ensemble 1 2 3
    python benchmarks/teacher_sharpness.py runs/fashion-mnist --round 2 --propagate 0.5 0.9
    python benchmarks/teacher_sharpness.py --across-runs runs/fmnist-tune/seed0-teacher runs/t-seed10 runs/t-seed20

Two teachers of the same accuracy can hand their student very different targets: one trained to a
near-zero loss puts almost all its probability on its top class, one trained with noise spreads it.
For each run directory this loads the model of `--round` (default 0, the teacher), rebuilds the
run's data from its saved config.yaml (so the unlabeled pool is the one that run pseudo-labeled,
validation split included) and prints, over the whole pool, with the clean model (eval mode, no
augmentation) and the run's pseudo-labeling temperature (1 in the config): the top-1 accuracy against the pool's true
labels, the mean top-1 probability, the share of images whose top-1 probability is above 0.9 and the
mean entropy of the soft label in nats. The pool's labels are only read to score (Fashion-MNIST's
unlabeled images keep theirs); a pool without labels prints no accuracy.

`--flip-average` adds what test-time flip averaging would give the pseudo-labels: the model also
labels every image mirrored left to right, the two soft labels are averaged, and the table gains the
accuracy of that average's top class and its gain over the plain labels (points). Whether a
pseudo-labeling option for it is worth having is what this measures; mirroring preserves the class
of clothing and natural photographs, not of digits or text.

`--ensemble R [R ...]` adds what averaging the soft labels of several rounds' models of the same run
would give: the accuracy of the averaged labels' top class, and its gain over `--round`'s model
alone (points). The models of a warm-started chain descend from one another, so their errors may
be shared; this measures how much a labeller made of them would gain before anyone builds one.

`--top-fractions F [F ...]` adds, for each F, the accuracy of the labels the model is most confident
of: in each class (by the model's top class) the ceil(F x count) images of highest top-1
probability, the selection `pseudo.per_class` makes when it is below a class's count. How much
cleaner the most confident part is says what keeping only it could buy.

`--propagate A [A ...]` adds what smoothing the labels over the images' neighbourhoods would give
(label propagation, Zhou et al. 2004; for deep semi-supervised learning Iscen et al. 2019): the model's
pooled features of the labeled images and the pool make a graph in which each image links to its
`--neighbours` (default 10) nearest by cosine similarity (weight: similarity cubed, clipped at 0; symmetrised and
normalised, S = D^-1/2 W D^-1/2); the sources Y are the true one-hot labels of the labeled images and
the model's soft labels of the pool, and Z = alpha S Z + (1 - alpha) Y is iterated 50 times from Z = Y
for each alpha A in [0, 1): the fixed point to within alpha ** 50 of the start's distance from it
(0.005 at alpha 0.9; at 0.99 still 0.6, a 50-step diffusion rather than the fixed point). The table gains the accuracy of Z's top class over the pool and its gain
over the plain labels. If a pool's errors sit apart from the neighbours that share its true class, the
graph corrects them; if they come in clusters, it cannot.

`--across-runs` measures a labeller of independent models instead: the `--round` models of all the
run directories given (trained with other seeds, or on other labeled sets) label the training
images that none of the runs had labels for, and it prints each model's accuracy there and that
of the average of every group of two or more. Runs with the same `data` section but another `seed`
share their labeled images, as the members of a labeller for one user's labels would; runs with
another `data.split_seed` had other labeled images, so their average has seen more labels than any
one run (a contrast, not a labeller one user could build). IDX and CIFAR sources only: the split is
redrawn from the training set with each run's split seed.
"""

from __future__ import annotations

import argparse
from itertools import combinations
from pathlib import Path

import torch

from common import machine_line
from noisystudent import Config
from noisystudent.checkpoint import load_model
from noisystudent.data.build import SPLIT_LOADERS, build_datasets
from noisystudent.data.splits import split_per_class
from noisystudent.inference import iter_logits
from noisystudent.pseudo_label import most_confident_part, predict
from noisystudent.targets import Targets


def soft_label_stats(probs: torch.Tensor, labels: torch.Tensor | None) -> dict[str, float]:
    """(N, K) probabilities -> accuracy (nan without labels), mean top-1 probability, share above 0.9,
    mean entropy (nats)."""
    top = probs.max(1).values
    entropy = -(probs * probs.clamp_min(1e-12).log()).sum(1)
    acc = (probs.argmax(1) == labels).float().mean().item() if labels is not None else float("nan")
    return {"accuracy": acc, "mean_top1": top.mean().item(), "above_0.9": (top > 0.9).float().mean().item(),
            "entropy": entropy.mean().item()}


def ensemble_gain(members: list[torch.Tensor], labels: torch.Tensor, single: torch.Tensor) -> tuple[float, float]:
    """(accuracy of the top class of the members' averaged soft labels, its gain over `single`'s accuracy),
    as fractions."""
    plain = (single.argmax(1) == labels).float().mean().item()
    averaged = (torch.stack(members).mean(0).argmax(1) == labels).float().mean().item()
    return averaged, averaged - plain


def flip_average_gain(probs: torch.Tensor, probs_mirrored: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    """(accuracy of the averaged soft labels' top class, its gain over `probs`' accuracy), as fractions."""
    return ensemble_gain([probs, probs_mirrored], labels, probs)


def top_fraction_accuracy(probs: torch.Tensor, labels: torch.Tensor, fraction: float) -> float:
    """Accuracy of the top class over each class's ceil(fraction x count) most confident images (classes
    by the top class, confidence the top-1 probability), as a fraction; the classes' picks pooled."""
    top, hard = probs.max(1)
    keep = torch.cat(most_confident_part(hard, top, torch.arange(len(probs)), probs.shape[1], fraction))
    return (hard[keep] == labels[keep]).float().mean().item()


def knn_graph(features: torch.Tensor, k: int, power: float = 3.0, chunk: int = 4096) -> torch.Tensor:
    """(N, D) features -> the normalised affinity S = D^-1/2 W D^-1/2 of their symmetrised k-nearest-
    neighbour graph, (N, N) sparse COO: W links each row to its k most cosine-similar other rows with
    weight max(similarity, 0) ** power, then W + W^T."""
    n = len(features)
    k = min(k, n - 1)
    f = torch.nn.functional.normalize(features.float(), dim=1)
    cols, weights = torch.empty(n, k, dtype=torch.long), torch.empty(n, k)
    for start in range(0, n, chunk):  # (chunk, N) similarities at a time
        sim = f[start:start + chunk] @ f.T
        sim[torch.arange(len(sim)), torch.arange(start, start + len(sim))] = -float("inf")  # no self-links
        top, cols[start:start + chunk] = sim.topk(k, dim=1)
        weights[start:start + chunk] = top.clamp_min(0) ** power
    rows = torch.arange(n).repeat_interleave(k)
    w = torch.sparse_coo_tensor(torch.stack([rows, cols.flatten()]), weights.flatten(), (n, n), check_invariants=False)
    w = (w + w.t()).coalesce()
    degree = torch.zeros(n).index_add_(0, w.indices()[0], w.values()).clamp_min(1e-12)
    i, j = w.indices()
    values = w.values() * degree[i].rsqrt() * degree[j].rsqrt()
    return torch.sparse_coo_tensor(w.indices(), values, (n, n), is_coalesced=True, check_invariants=False)


def propagate(graph: torch.Tensor, sources: torch.Tensor, alpha: float, steps: int = 50) -> torch.Tensor:
    """Iterate Z = alpha graph Z + (1 - alpha) sources `steps` times from Z = sources; (N, K). Converges for
    alpha < 1, the graph's eigenvalues lying in [-1, 1]: the distance from the fixed point shrinks by at
    least alpha a step."""
    z, injected = sources, (1 - alpha) * sources
    for _ in range(steps):
        z = alpha * (graph @ z) + injected
    return z


class _Features(torch.nn.Module):
    """A classifier's pooled features (B, D) as its output, so `iter_logits` runs it."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_features(x)


def pooled_features(model_and_meta: tuple, images: torch.Tensor, batch_size: int) -> torch.Tensor:
    """The clean model's pooled features of `images`, (N, D), in eval mode as the pipeline labels."""
    model, meta = model_and_meta
    mean, std = torch.tensor(meta["input"]["mean"]), torch.tensor(meta["input"]["std"])
    return torch.cat([f for _, f in iter_logits(_Features(model), images, mean=mean, std=std, batch_size=batch_size)])


def propagation_gains(features_l: torch.Tensor, labels_l: torch.Tensor, features_u: torch.Tensor,
                      probs_u: torch.Tensor, labels_u: torch.Tensor, alphas: list[float],
                      k: int) -> list[tuple[float, float]]:
    """For each alpha, (accuracy of the propagated labels' top class over the pool, its gain over the top
    class of `probs_u`), as fractions: one graph over the labeled images and the pool, whose sources are
    the labeled images' true one-hot labels and the pool's soft labels."""
    graph = knn_graph(torch.cat([features_l, features_u]), k)
    sources = torch.cat([torch.nn.functional.one_hot(labels_l, probs_u.shape[1]).float(), probs_u])
    plain = (probs_u.argmax(1) == labels_u).float().mean().item()
    out = []
    for a in alphas:
        acc = (propagate(graph, sources, a)[len(features_l):].argmax(1) == labels_u).float().mean().item()
        out.append((acc, acc - plain))
    return out


def unlabeled_for_all(train_labels: torch.Tensor, data_cfgs: list) -> torch.Tensor:
    """Indices of the training images that no config's labeled split (labeled_per_class, split_seed) holds."""
    labeled = torch.zeros(len(train_labels), dtype=torch.bool)
    for d in data_cfgs:
        labeled[split_per_class(train_labels, d.labeled_per_class, d.split_seed)[0]] = True
    return (~labeled).nonzero().squeeze(1)


def group_gains(probs: list[torch.Tensor], labels: torch.Tensor) -> list[tuple[tuple[int, ...], float, float]]:
    """For every group of two or more members (by index): the accuracy of their averaged soft labels'
    top class and its gain over the group's most accurate member, as fractions."""
    alone = [(p.argmax(1) == labels).float().mean().item() for p in probs]
    groups = [g for n in range(2, len(probs) + 1) for g in combinations(range(len(probs)), n)]
    return [(g, *ensemble_gain([probs[i] for i in g], labels, probs[max(g, key=alone.__getitem__)]))
            for g in groups]


def soft_labels(model_and_meta: tuple, images: torch.Tensor, temperature: float, batch_size: int) -> torch.Tensor:
    """A checkpoint's model labels `images` as the pipeline does, all classes kept; (N, K) in class order."""
    model, meta = model_and_meta
    mean, std = torch.tensor(meta["input"]["mean"]), torch.tensor(meta["input"]["std"])
    k = meta["model"]["num_classes"]
    pl = predict(model, images, mean=mean, std=std, temperature=temperature, topk=k,
                 batch_size=batch_size, progress=False)
    return Targets(pl.topk_index, pl.topk_prob).dense(torch.arange(len(pl)), k)


def across_runs(run_dirs: list[Path], rnd: int) -> None:
    """The --across-runs table: each run's round-`rnd` model alone, then every group's average."""
    ckpts = [r / f"round-{rnd}" / "model.safetensors" for r in run_dirs]
    for r, c in zip(run_dirs, ckpts):
        if not (r / "config.yaml").exists() or not c.exists():
            raise SystemExit(f"{r}: expected a run directory with config.yaml and round-{rnd}/model.safetensors")
    cfgs = [Config.from_yaml(r / "config.yaml") for r in run_dirs]
    d0 = cfgs[0].data
    if d0.source not in SPLIT_LOADERS or any((c.data.source, c.data.dir) != (d0.source, d0.dir) for c in cfgs):
        raise SystemExit("--across-runs: every run must read the same IDX or CIFAR training set")
    train = SPLIT_LOADERS[d0.source](d0.dir, "train")
    keep = unlabeled_for_all(train.labels, [c.data for c in cfgs])
    images, labels = train.images[keep], train.labels[keep]
    probs = []
    print("| run | seed | split seed | model | images | accuracy % |\n|---|---:|---:|---|---:|---:|")
    for i, (r, c, ckpt) in enumerate(zip(run_dirs, cfgs, ckpts)):
        loaded = load_model(ckpt)
        probs.append(soft_labels(loaded, images, c.pseudo.temperature, c.pseudo.batch_size))
        acc = (probs[-1].argmax(1) == labels).float().mean().item()
        print(f"| {i}: {r.name} | {c.seed} | {c.data.split_seed} | {loaded[1]['model']['name']} | {len(labels):,} | "
              f"{100 * acc:.2f} |", flush=True)
    print("\n| members averaged | accuracy % | gain over the best member of the group (points) |\n|---|---:|---:|")
    for g, acc, gain in group_gains(probs, labels):
        print(f"| {' + '.join(map(str, g))} | {100 * acc:.2f} | {100 * gain:+.2f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dirs", nargs="+", type=Path)
    ap.add_argument("--round", type=int, default=0, help="which round's model (default 0, the teacher)")
    ap.add_argument("--flip-average", action="store_true",
                    help="also score the soft labels averaged with those of the mirrored images")
    ap.add_argument("--ensemble", type=int, nargs="+", metavar="R",
                    help="also score the soft labels averaged over these rounds' models of each run "
                         "(give it after the run directories)")
    ap.add_argument("--top-fractions", type=float, nargs="+", metavar="F",
                    help="also score each class's most confident fraction F of the labels (0 < F <= 1; "
                         "give it after the run directories)")
    ap.add_argument("--propagate", type=float, nargs="+", metavar="A",
                    help="also score the labels propagated over the nearest-neighbour graph of the model's "
                         "features, for each alpha A in [0, 1) (give it after the run directories)")
    ap.add_argument("--neighbours", type=int, default=10, help="neighbours per image in --propagate's graph (default 10)")
    ap.add_argument("--across-runs", action="store_true",
                    help="average the --round models of all the runs instead, scored on the training images "
                         "none of them had labels for (IDX and CIFAR sources)")
    args = ap.parse_args()
    if args.across_runs:
        if args.flip_average or args.ensemble or args.top_fractions or args.propagate:
            ap.error("--across-runs takes no --flip-average, --ensemble, --top-fractions or --propagate")
        print(machine_line())
        across_runs(args.run_dirs, args.round)
        return
    fractions = args.top_fractions or []
    if any(not 0 < f <= 1 for f in fractions):
        ap.error("--top-fractions takes fractions in (0, 1]")
    alphas = args.propagate or []
    if any(not 0 <= a < 1 for a in alphas):
        ap.error("--propagate takes alphas in [0, 1)")
    if args.neighbours < 1:
        ap.error("--neighbours must be at least 1")
    print(machine_line())
    extra_cols = " flip-averaged accuracy % | gain (points) |" if args.flip_average else ""
    if args.ensemble:
        extra_cols += f" rounds {'+'.join(map(str, args.ensemble))} averaged accuracy % | gain (points) |"
    extra_cols += "".join(f" top {100 * f:g}% a class: accuracy % |" for f in fractions)
    extra_cols += "".join(f" propagated, alpha {a:g}: accuracy % | gain (points) |" for a in alphas)
    print(f"| run | model | pool | accuracy % | mean top-1 probability | top-1 > 0.9 % | mean entropy (nats) |{extra_cols}")
    print("|---|---|---:|---:|---:|---:|---:|" + "---:|---:|" * (args.flip_average + bool(args.ensemble))
          + "---:|" * len(fractions) + "---:|---:|" * len(alphas))
    for run_dir in args.run_dirs:
        ckpts = {r: run_dir / f"round-{r}" / "model.safetensors" for r in {args.round, *(args.ensemble or [])}}
        missing = [p.relative_to(run_dir) for p in [run_dir / "config.yaml", *ckpts.values()] if not p.exists()]
        if missing:
            raise SystemExit(f"{run_dir}: expected a run directory with {', '.join(map(str, missing))}")
        cfg = Config.from_yaml(run_dir / "config.yaml")
        data = build_datasets(cfg.data)
        pool = data.unlabeled
        models = {r: load_model(ckpt) for r, ckpt in ckpts.items()}  # (model, meta), each read once

        def labels_of(r: int, images: torch.Tensor) -> torch.Tensor:
            return soft_labels(models[r], images, cfg.pseudo.temperature, cfg.pseudo.batch_size)

        probs, meta = labels_of(args.round, pool.images), models[args.round][1]
        s = soft_label_stats(probs, pool.labels)
        row = (f"| {run_dir.name} | {meta['model']['name']} | {len(probs):,} | {100 * s['accuracy']:.2f} | "
               f"{s['mean_top1']:.3f} | {100 * s['above_0.9']:.1f} | {s['entropy']:.3f} |")
        if args.flip_average:
            if pool.labels is None:
                row += " - | - |"
            else:
                acc, gain = flip_average_gain(probs, labels_of(args.round, pool.images[:].flip(-1)), pool.labels)
                row += f" {100 * acc:.2f} | {100 * gain:+.2f} |"
        if args.ensemble:
            if pool.labels is None:
                row += " - | - |"
            else:
                members = [probs if r == args.round else labels_of(r, pool.images) for r in args.ensemble]
                acc, gain = ensemble_gain(members, pool.labels, probs)
                row += f" {100 * acc:.2f} | {100 * gain:+.2f} |"
        for f in fractions:
            row += " - |" if pool.labels is None else f" {100 * top_fraction_accuracy(probs, pool.labels, f):.2f} |"
        if alphas:
            if pool.labels is None:
                row += " - | - |" * len(alphas)
            else:
                f_l, f_u = (pooled_features(models[args.round], d.images[:], cfg.pseudo.batch_size)
                            for d in (data.labeled, pool))
                for acc, gain in propagation_gains(f_l, data.labeled.labels, f_u, probs, pool.labels, alphas,
                                                   args.neighbours):
                    row += f" {100 * acc:.2f} | {100 * gain:+.2f} |"
        print(row, flush=True)


if __name__ == "__main__":
    main()
