"""Command line: builds a Config from flags and calls the library. Nothing else reads these flags."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from noisystudent.errors import UserError

DESCRIPTION = """\
Noisy Student Training on your own images: train a teacher on the labeled images, pseudo-label
the unlabeled images with the clean teacher, train an equal-or-larger student on both under noise
(RandAugment, dropout, stochastic depth), make the student the next teacher, repeat.

Run with no arguments for the embedded demo (scikit-learn's digits, a teacher and two rounds, a
few minutes on a laptop CPU). Results go to runs/<name>/: config.yaml, round-<k>/model.safetensors,
metrics.jsonl, summary.md. Re-running the same command continues an interrupted run.
"""

RUN_EPILOG = """\
examples:
  noisystudent run                                         # embedded digits demo
  noisystudent run -c configs/fashion_mnist.yaml --set pipeline.rounds=3
  noisystudent run --labeled data/labeled --unlabeled data/unlabeled --test data/test --name mine
  noisystudent run --set teacher.epochs=5 --set model.names=resnet8,resnet14,resnet20
  noisystudent run --nproc 2                               # 2 processes on this machine (docs/SCALING.md)
  torchrun --nproc_per_node=8 -m noisystudent run --device cuda   # the same, launched by torchrun

config keys (see `noisystudent config` for all of them and their values):
  data.*      source (digits|idx|cifar|folder), dir, labeled, unlabeled, test, channels, image_size, ...
  model.names teacher first, then the student of each round (the last one repeats)
  model.warm_start  an equal student starts from its teacher's weights (true|false)
  noise.*     randaugment (e.g. rand-n2-m9), dropout, drop_path, pixel_noise, mixup, noise_teacher
  teacher.* / student.*   epochs, batch_size, unlabeled_ratio, optimizer, lr, schedule, ema, sync_bn, ...
  pseudo.*    mode (soft|hard), temperature, threshold, balance, per_class, curriculum, topk
  pipeline.*  rounds, variant (noisy_student|consistency), report
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="noisystudent", description=DESCRIPTION,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    def config_args(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("-c", "--config", metavar="FILE", help="YAML config (defaults: the digits demo)")
        sp.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one config key, e.g. --set teacher.epochs=5 (repeatable)")
        sp.add_argument("--labeled", metavar="DIR", help="labeled images, DIR/<class>/<image> (sets data.source=folder)")
        sp.add_argument("--unlabeled", metavar="DIR", help="unlabeled images: every image under DIR")
        sp.add_argument("--test", metavar="DIR", help="test images, DIR/<class>/<image>")
        sp.add_argument("--data-dir", metavar="DIR", help="directory of IDX files (MNIST / Fashion-MNIST); sets data.source=idx")
        sp.add_argument("--name", help="run name: results go to OUT_DIR/NAME (default from the config)")
        sp.add_argument("--out-dir", help="parent directory of runs (default: runs)")
        sp.add_argument("--device", help="cpu, cuda, cuda:N or auto (default: cpu)")
        sp.add_argument("--seed", type=int, help="training seed")
        sp.add_argument("--rounds", type=int, help="noisy-student rounds after the teacher")
        sp.add_argument("--strict", action="store_true", help="an unreadable image is an error (default: skip and count)")

    run = sub.add_parser("run", help="train teacher and students (the whole pipeline)", description=DESCRIPTION,
                         epilog=RUN_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    config_args(run)
    run.add_argument("--force", action="store_true",
                     help="start the run over even if its directory holds results of another config")
    run.add_argument("-q", "--quiet", action="store_true", help="no progress bars, warnings only")
    run.add_argument("--nproc", type=int, metavar="N",
                     help="N data-parallel processes on this machine, launched with torchrun (standalone "
                          "rendezvous): each batch_size (a global batch) split over them, pseudo-labeling "
                          "sharded, rank 0 writes the files. CPU: each process gets (CPU cores // N) torch "
                          "threads unless OMP_NUM_THREADS is set (torchrun used directly gives 1); --device "
                          "cuda: process r uses cuda:r. Under torchrun, leave --nproc out")

    cfg = sub.add_parser("config", help="print the resolved config as YAML (what `run` would use)")
    config_args(cfg)

    sub.add_parser("models", help="list the available models with their parameter counts")

    ev = sub.add_parser("evaluate", help="test accuracy (and robustness) of a saved model",
                        description="Evaluate CKPT on --test DIR (class folders), on the test set of -c CONFIG, "
                                    "or on the test set of the run directory CKPT lies in.")
    ev.add_argument("checkpoint", metavar="CKPT", help="e.g. runs/digits-demo/round-2/model.safetensors")
    ev.add_argument("--test", metavar="DIR", help="test images, DIR/<class>/<image>")
    ev.add_argument("-c", "--config", metavar="FILE", help="take the test set from this config")
    ev.add_argument("--robustness", action="store_true",
                    help="also 15 corruptions x 5 severities (mCE), flip rates and FGSM accuracy")
    ev.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N (default: cpu)")
    ev.add_argument("--json", action="store_true", help="print the whole result as JSON")

    prev = sub.add_parser("augment-preview", help="PNG grid of RandAugment on your images: rows = images, "
                          "columns = magnitude 0..10", description="Each row draws its ops once; the columns "
                          "only change the magnitude M, so you see what M means on your own data.")
    config_args(prev)
    prev.add_argument("--spec", help="RandAugment spec (default: the config's noise.randaugment)")
    prev.add_argument("--rows", type=int, default=8, help="labeled images shown (default: 8)")
    prev.add_argument("-o", "--output", default="augment_preview.png", metavar="PNG", help="default: augment_preview.png")
    prep = sub.add_parser(
        "prepare", help="decode images once into a uint8 cache that `run` streams from",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Decode SRC (an image folder, a folder of MNIST-format IDX files or CIFAR python batches,\n"
                    "or a .npz with 'images' and optional 'labels') into the cache folder OUT: one uint8 array\n"
                    "file (N, C, H, W) plus an index (path, original size, content hash, label). Decoding runs\n"
                    "in parallel processes; unreadable files are listed in OUT/report.txt and skipped. Running\n"
                    "it again on a folder decodes only new or changed files.",
        epilog="examples:\n"
               "  noisystudent prepare photos/unlabeled cache/unlabeled --channels 3 --size 64\n"
               "  noisystudent prepare photos/labeled cache/labeled --channels 3 --size 64   # class folders\n"
               "  noisystudent run --labeled cache/labeled --unlabeled cache/unlabeled --test photos/test "
               "--set data.channels=3 --set data.image_size=64\n\n"
               "`run` makes these caches itself for folder inputs (under OUT_DIR/cache); `prepare` is for\n"
               "building them ahead of time, elsewhere, or for arrays.")
    prep.add_argument("src", metavar="SRC", help="image folder, IDX or CIFAR folder, or .npz file")
    prep.add_argument("out", metavar="OUT", help="cache folder (created; updated when it exists)")
    prep.add_argument("--labels", choices=("auto", "folders", "none"), default="auto",
                      help="folders: SRC/<class>/<image>; none: every image under SRC, unlabeled; "
                           "auto (default): class folders when SRC has sub-folders and no images of its own")
    prep.add_argument("--channels", type=int, choices=(1, 3), help="1 = grayscale, 3 = RGB (folders: default 1)")
    prep.add_argument("--size", type=int, metavar="PX", help="square side in pixels (folders: default 32; "
                      "arrays: their own)")
    prep.add_argument("--split", choices=("train", "test"), default="train", help="IDX / CIFAR split (default: train)")
    prep.add_argument("--workers", type=int, default=0, help="decoding processes (default: one per CPU core)")
    prep.add_argument("--strict", action="store_true", help="stop at the first unreadable image")
    prep.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    _add_output_parsers(sub)
    return p


def config_from_args(args: argparse.Namespace) -> "Config":
    from noisystudent.config import Config

    cfg = Config.from_yaml(args.config) if args.config else Config()
    overrides = []
    if args.labeled or args.unlabeled or args.test:
        overrides.append("data.source=folder")
        if not args.config and not any(o.startswith("name=") for o in args.overrides) and not args.name:
            overrides.append("name=folder-run")
    for flag, key in (("labeled", "data.labeled"), ("unlabeled", "data.unlabeled"), ("test", "data.test")):
        if getattr(args, flag):
            overrides.append(f"{key}={_quote(getattr(args, flag))}")
    if args.data_dir:
        overrides += ["data.source=idx", f"data.dir={_quote(args.data_dir)}"]
    for flag, key in (("name", "name"), ("out_dir", "out_dir"), ("device", "device"), ("seed", "seed"),
                      ("rounds", "pipeline.rounds")):
        value = getattr(args, flag)
        if value is not None:
            overrides.append(f"{key}={_quote(value) if isinstance(value, str) else value}")
    if args.strict:
        overrides.append("data.strict=true")
    return cfg.with_overrides(overrides + args.overrides)


def _say_error(line: str) -> None:
    """One line to stderr in a single write: under --nproc, processes share stderr, and print() writes
    the text and its newline separately, so two processes' lines could run into one."""
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def _terminal_logging(level: int) -> None:
    """Log lines of `level` and above to stderr through one handler of our own (replaced on each call).

    Only that handler's level changes: a run log file (pipeline) and other handlers (pytest's caplog, a
    user's own) keep receiving INFO, so `-q` quiets the terminal without emptying `run.log`.
    """
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_noisystudent_terminal", False)]:
        root.removeHandler(old)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler.setLevel(level)
    handler._noisystudent_terminal = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    if root.level == logging.NOTSET or root.level > logging.INFO:
        root.setLevel(logging.INFO)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:  # `noisystudent` alone: the demo
        args = parser.parse_args(["run", *(argv or [])])
    quiet = getattr(args, "quiet", False)
    _terminal_logging(logging.WARNING if quiet else logging.INFO)
    try:
        if args.command == "models":
            return _models()
        if args.command == "evaluate":
            return _evaluate(args)
        if args.command == "prepare":
            return _prepare(args, progress=not quiet and sys.stderr.isatty())
        if args.command in OUTPUT_COMMANDS:  # report / predict / export: see the block at the end
            return OUTPUT_COMMANDS[args.command](args)
        if getattr(args, "nproc", None) is not None and args.nproc < 1:
            raise UserError(f"--nproc {args.nproc}: expected a number of processes of at least 1")
        cfg = config_from_args(args)
        if args.command == "config":
            print(cfg.to_yaml(), end="")
            return 0
        if args.command == "augment-preview":
            return _augment_preview(cfg, args)
        if args.nproc is not None and args.nproc > 1:
            return _launch(args.nproc, cfg, sys.argv[1:] if argv is None else argv)
        return _run(cfg, args, quiet)
    except UserError as e:
        _say_error(f"noisystudent{_rank_note()}: {e}")
        return 2
    except KeyboardInterrupt:
        _say_error("noisystudent: interrupted; run the same command again to continue")
        return 130


def _prepare(args: argparse.Namespace, progress: bool) -> int:
    from noisystudent.data.cache import prepare

    if args.workers < 0:
        raise UserError(f"--workers must be >= 0, got {args.workers}")
    if args.size is not None and args.size <= 0:
        raise UserError(f"--size must be a positive number of pixels, got {args.size}")
    cache, report, kind = prepare(args.src, args.out, labels=args.labels, channels=args.channels, size=args.size,
                                  split=args.split, workers=args.workers, strict=args.strict, progress=progress)
    for warning in report.warnings:
        logging.getLogger("noisystudent").warning(warning)
    c, h, w = cache.shape
    classes = f", {len(cache.classes)} classes" if cache.labeled else ", unlabeled"
    print(f"{args.src}: read as {kind}")
    print(report.summary())
    print(f"cache: {cache.count:,} images of {c}x{h}x{w}{classes}; use it with "
          f"`noisystudent run --{'labeled' if cache.labeled else 'unlabeled'} {args.out}`")
    return 0


def _run(cfg: "Config", args: argparse.Namespace, quiet: bool) -> int:
    """The pipeline in this process: alone, or as one rank of a torchrun process group."""
    from noisystudent.distributed import exit_worker, init_distributed
    from noisystudent.pipeline import resolve_device, run

    dist = init_distributed(resolve_device(cfg.device), os.environ)
    try:
        if not dist.is_main:  # rank 0 speaks for all; the others only report their own errors
            _terminal_logging(logging.ERROR)
        result = run(cfg, progress=not quiet and sys.stderr.isatty(), force=args.force, dist=dist)
        if dist.is_main:
            print(result.table())
            print(f"\nresults: {result.run_dir}/ (report.html, summary.md, metrics.jsonl, round-*/model.safetensors)")
    finally:
        dist.close()
    if dist.distributed:  # a process of a group: leave without interpreter shutdown (see exit_worker)
        exit_worker(0)
    return 0


def _launch(nproc: int, cfg: "Config", argv: list[str]) -> int:
    """Run this same command as `nproc` processes on this machine through torch.distributed.run
    (`torchrun --standalone --nproc_per_node=nproc -m noisystudent ...`, in this process); returns the
    exit status. A failed process has printed its own one-line error; this adds one line, not torchrun's
    report."""
    import torch
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run as torchrun

    from noisystudent.distributed import usable_cores
    from noisystudent.pipeline import resolve_device

    if os.environ.get("WORLD_SIZE"):
        raise UserError("--nproc: this process already runs under torchrun (WORLD_SIZE is set); leave --nproc out")
    device = resolve_device(cfg.device)
    if device.type == "cuda" and nproc > torch.cuda.device_count():
        raise UserError(f"--nproc {nproc} with device cuda: this machine has {torch.cuda.device_count()} GPU(s), "
                        "one per process is needed")
    threads = os.environ.get("OMP_NUM_THREADS")
    if device.type == "cpu" and threads is None:  # the processes share the cores instead of fighting over them
        os.environ["OMP_NUM_THREADS"] = str(max(1, usable_cores() // nproc))
    launch = parse_args(["--standalone", f"--nproc_per_node={nproc}", "-m", "noisystudent", *without_nproc(argv)])
    logging.disable(logging.ERROR)  # torchrun's own log lines; the processes log on their own
    try:
        torchrun(launch)
        return 0
    except ChildFailedError as e:
        rank, failure = e.get_first_failure()
        _say_error(f"noisystudent: process {rank} of {nproc} failed with exit status {failure.exitcode} "
                   "(its message is above)")
        return failure.exitcode if failure.exitcode > 0 else 1
    except SignalException:
        raise KeyboardInterrupt from None
    finally:
        logging.disable(logging.NOTSET)
        if threads is None:
            os.environ.pop("OMP_NUM_THREADS", None)


def without_nproc(argv: list[str]) -> list[str]:
    """`argv` less its --nproc option (`--nproc N`, `--nproc=N`, or an abbreviation such as `--np N`)."""
    out, skip = [], False
    for token in argv:
        if skip:
            skip = False
            continue
        name, eq, _ = token.partition("=")
        if len(name) >= 4 and "--nproc".startswith(name):  # "--np" is the shortest unambiguous prefix
            skip = not eq
            continue
        out.append(token)
    return out


def _rank_note() -> str:
    """' (rank r)' in a process of rank r > 0 under torchrun, so an error names its process."""
    rank = os.environ.get("RANK", "0")
    return "" if rank in ("", "0") else f" (rank {rank})"


def _evaluate(args: argparse.Namespace) -> int:
    import json

    from noisystudent.config import Config
    from noisystudent.evaluate import evaluate_checkpoint

    cfg = Config.from_yaml(args.config) if args.config else None
    r = evaluate_checkpoint(args.checkpoint, test_dir=args.test, config=cfg, robustness=args.robustness,
                            device=args.device)
    if args.json:
        print(json.dumps(r, indent=2))
        return 0
    print(f"{r['checkpoint']}: test accuracy {100 * r['accuracy']:.2f}% on {r['n']:,} images")
    rob = r.get("robustness")
    if rob:
        rel = "" if rob["relative_mce"] is None else f", relative mCE {rob['relative_mce']:.3f} (vs round 0)"
        print(f"mean corruption error {100 * rob['mce']:.2f}%{rel}")
        print("flip rate: " + ", ".join(f"{k} {100 * v:.2f}%" for k, v in rob["flip_rate"].items()))
        print("FGSM accuracy: " + ", ".join(f"eps {e}/255 {100 * a:.2f}%" for e, a in rob["fgsm_accuracy"].items()))
        print("error by corruption: " + ", ".join(f"{k} {100 * v:.1f}%" for k, v in rob["corruption_error"].items()))
    return 0


def _augment_preview(cfg: "Config", args: argparse.Namespace) -> int:
    from noisystudent.data.build import build_datasets
    from noisystudent.report import augment_preview

    spec = args.spec or cfg.noise.randaugment
    if not spec:
        raise UserError("augment-preview: RandAugment is off (noise.randaugment is empty); give --spec rand-n2-m9")
    labeled = build_datasets(cfg.data).labeled
    # the first image of each class, so the rows show different classes
    rows = [int((labeled.labels == c).nonzero()[0]) for c in labeled.labels.unique().tolist()][:args.rows]
    names = [labeled.classes[int(labeled.labels[i])] for i in rows]
    print(augment_preview(labeled.images[rows], spec, args.output, seed=cfg.seed, row_labels=names))
    return 0


def _models() -> int:
    from noisystudent.models import count_params, create_model, list_models

    names = list_models()
    w = max(len(n) for n in [*names, "model"])
    print(f"{'model':<{w}} {'params (10 classes, 3 channels)':>32}")
    for name in names:
        print(f"{name:<{w}} {count_params(create_model(name, 10, 3)):>32,}")
    return 0


def _quote(value: str) -> str:
    """Keep a path a string when the override is parsed as YAML (e.g. 'yes', '1e3', '[x]')."""
    return "'" + str(value).replace("'", "''") + "'"


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("noisystudent")
    except PackageNotFoundError:
        return "unknown"


# ---- report / predict / export: what users see after a run --------------------------------------------
def _add_output_parsers(sub: argparse._SubParsersAction) -> None:
    """Parsers of the `report`, `predict` and `export` commands."""
    rep = sub.add_parser("report", help="write RUN_DIR/report.html: accuracy, curves, pseudo-labels, images")
    rep.add_argument("run_dir", metavar="RUN_DIR", help="a run directory, e.g. runs/digits-demo")
    rep.add_argument("--no-tensorboard", action="store_true", help="do not write RUN_DIR/tensorboard/ event files")

    pred = sub.add_parser("predict", help="classify image files with a checkpoint",
                          description="Print the top classes of each image (folders: every image under them). "
                                      "Exit status 1 when some image could not be read.")
    pred.add_argument("checkpoint", metavar="CKPT", help="a model checkpoint, e.g. runs/digits-demo/round-2/model.safetensors")
    pred.add_argument("images", metavar="IMAGE_OR_DIR", nargs="+", help="image files and/or folders")
    pred.add_argument("--topk", type=int, default=5, help="classes shown per image (default: 5)")
    pred.add_argument("--json", action="store_true", help="print JSON instead of text")
    pred.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N (default: cpu)")

    exp = sub.add_parser("export", help="export a checkpoint to ONNX or TorchScript and check it against PyTorch",
                         description="The exported model takes float32 pixels in [0, 1], shape (batch, C, H, W), "
                                     "and returns logits; a JSON file beside it names the classes.")
    exp.add_argument("checkpoint", metavar="CKPT", help="a model checkpoint (.safetensors)")
    exp.add_argument("--format", choices=["onnx", "torchscript"], default="onnx", help="default: onnx")
    exp.add_argument("-o", "--output", metavar="PATH", help="output file (default: beside CKPT, .onnx or .pt)")


def _report_command(args: argparse.Namespace) -> int:
    from noisystudent.report import build_report

    print(build_report(args.run_dir, tensorboard=not args.no_tensorboard))
    return 0


def _predict_command(args: argparse.Namespace) -> int:
    import json

    from noisystudent.predict import format_text, predict

    results = predict(args.checkpoint, args.images, topk=args.topk, device=args.device)
    print(json.dumps(results, indent=2) if args.json else format_text(results))
    return 1 if any("error" in r for r in results) else 0


def _export_command(args: argparse.Namespace) -> int:
    from noisystudent.export import check_export, export, run_images

    out = export(args.checkpoint, args.output, format=args.format)
    print(f"wrote {out} (classes and input format in {out.name}.json)")
    images, where = run_images(args.checkpoint)
    if images is None:
        where = f"16 random inputs ({where})"
    try:
        agreement = check_export(out, args.checkpoint, images)
    except UserError as e:
        print(f"not checked against PyTorch: {e}")
        return 0
    print(f"top-1 agreement with PyTorch on {where}: {100 * agreement:.2f}%")
    return 0


OUTPUT_COMMANDS = {"report": _report_command, "predict": _predict_command, "export": _export_command}


if __name__ == "__main__":
    raise SystemExit(main())
