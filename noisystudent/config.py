"""Configuration: dataclasses, YAML files and `--set a.b=value` overrides.

The defaults are the embedded digits demo. Every field has a type that is checked on load:
an unknown key or a wrong type is a `UserError` naming the key. Units are in the comments.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from noisystudent.errors import UserError


@dataclass
class DataConfig:
    source: str = "digits"          # digits | idx | cifar | folder
    dir: str = ""                   # idx: directory of train-*/t10k-* IDX files; cifar: of the python batches
    labeled: str = ""               # folder: DIR/<class>/<image>
    unlabeled: str = ""             # folder: every image under DIR, recursively
    test: str = ""                  # folder: DIR/<class>/<image>; empty = no test set
    channels: int = 1               # 1 = grayscale, 3 = RGB (folders are converted to this)
    image_size: int = 0             # pixels, square; 0 = the source's own size (folders: 32)
    labeled_per_class: int = 10     # digits/idx/cifar: labeled images per class; the rest are unlabeled
    test_fraction: float = 0.3      # digits only: stratified fraction held out as the test set
    max_unlabeled: int = 0          # keep at most this many unlabeled images (0 = all)
    validation: int = 0             # hold out this many images of the unlabeled pool (seeded), with their
                                    # labels, as the evaluation set in place of the test set: for tuning
                                    # without looking at the test set (digits/idx/cifar; 0 = off)
    split_seed: int = 0             # seed of the labeled/unlabeled/test split
    strict: bool = False            # folders: an unreadable image is an error instead of a skip
    cache: bool = True              # folders: decode once into a uint8 cache (see `noisystudent prepare`);
                                    # unlabeled images are then streamed from disk, not held in memory
    cache_dir: str = ""             # where folder caches are kept ("" = <out_dir>/cache)
    workers: int = 0                # processes decoding images into a cache (0 = one per CPU core)


@dataclass
class ModelConfig:
    # Architecture of round k is names[min(k, len(names) - 1)]: names[0] is the teacher.
    # The method asks for students equal to or larger than their teacher (a warning otherwise).
    names: list[str] = field(default_factory=lambda: ["resnet8", "resnet14"])
    warm_start: bool = False        # a student of its teacher's architecture starts from the teacher's
                                    # weights instead of a fresh initialisation (a larger one still starts
                                    # fresh): later rounds of equal students add up their passes


@dataclass
class AugmentConfig:
    """Weak augmentation used in every training, teacher and student alike."""

    flip: bool = False              # random horizontal flip (off for digits and text)
    crop_pad: int = 1               # random crop after padding by this many pixels (0 = off)


@dataclass
class NoiseConfig:
    """The student's noise (the paper's input noise and model noise)."""

    randaugment: str = "rand-n2-m9"  # RandAugment spec "rand-n<ops>-m<0..10>[-mstd<std>]"; "" = off
    dropout: float = 0.5            # dropout probability before the classifier
    drop_path: float = 0.2          # stochastic depth: drop probability of the last block (survival 0.8)
    pixel_noise: float = 0.0        # Gaussian noise on every pixel, std drawn per image in [0, this],
                                    # in units of the pixel range (0.05 = 12.75 gray levels); 0 = off
    mixup: float = 0.0              # mixup of images and targets within a step's batch: weight of a row's own
                                    # image max(l, 1-l), l ~ Beta(mixup, mixup) per row; 0 = off
    noise_teacher: bool = False     # also noise the round-0 teacher (the seed article's 2nd experiment)


@dataclass
class TrainConfig:
    epochs: int = 30                # passes over the labeled set (teacher) / over the selected
                                    # pseudo-labeled set (student)
    batch_size: int = 64            # labeled images per step
    unlabeled_ratio: float = 3.0    # pseudo-labeled images per labeled image in a step (paper: unlabel_ratio)
    unlabeled_weight: float = 1.0   # weight of the pseudo-labeled loss
    optimizer: str = "sgd"          # sgd (Nesterov momentum) | adamw
    lr: float = 0.05                # peak learning rate
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "cosine"        # cosine | onecycle | constant
    warmup_epochs: float = 1.0      # linear warm-up length in epochs (cosine and constant)
    label_smoothing: float = 0.0    # on the labeled targets
    ema: float = 0.0                # EMA decay of the weights per step (0 = off); evaluation uses the EMA;
                                    # warmed up as min(ema, (1+t)/(10+t)) at step t
    eval_every: int = 1             # epochs between test evaluations in the log (0 = only at the end)
    sync_bn: bool = False           # several CUDA processes: batch-norm statistics over all ranks' rows
                                    # (SyncBatchNorm; CUDA only); false: each rank normalises its own part


@dataclass
class PseudoLabelConfig:
    mode: str = "soft"              # soft (teacher's distribution) | hard (one-hot argmax)
    temperature: float = 1.0        # soft labels: softmax(logits / T); also the consistency KL's T
    threshold: float = 0.0          # keep unlabeled images whose teacher confidence is >= this
    balance: bool = True            # equalise per-class counts (duplicate or keep the most confident)
    per_class: int = 0              # balancing target per class (0 = kept images / classes)
    curriculum: list[float] = field(default_factory=list)
                                    # fraction of each class's most confident pseudo-labels (after the
                                    # threshold) that rounds 1, 2, ... train on; the last value repeats;
                                    # [] = all. With balance the kept ones repeat up to the per-class
                                    # target, so a round's steps do not change (e.g. [0.6, 0.8, 1.0])
    topk: int = 0                   # probabilities stored per image (0 = all classes up to 32, else 10)
    batch_size: int = 128           # images per inference batch: pseudo-labeling, test evaluation,
                                    # robustness (results do not depend on it; on a CPU 128 beat 512)


@dataclass
class PipelineConfig:
    rounds: int = 2                 # noisy-student rounds after the round-0 teacher
    variant: str = "noisy_student"  # noisy_student | consistency (online KL to the teacher)
    report: bool = True             # write report.html (+ plots, TensorBoard scalars) at the end
    robustness: bool = True         # per round: 15 corruptions x 5 severities, flip rate, FGSM on the test set
    robustness_images: int = 2000   # a seeded subset of the test set, the same every round (0 = all);
                                    # ~1M forward passes per 10,000 images, minutes per round on a CPU


@dataclass
class Config:
    name: str = "digits-demo"       # run directory: <out_dir>/<name>
    out_dir: str = "runs"
    seed: int = 0                   # training seed (data order, augmentation, init)
    device: str = "cpu"             # cpu | cuda | cuda:N | auto
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    # demo defaults: 100 labeled 8x8 digits give 2 steps per teacher epoch; ~1,160 selected
    # pseudo-labels at 192 per step give 7 steps per student epoch (noised students need long training)
    teacher: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=200))
    student: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=80))
    pseudo: PseudoLabelConfig = field(default_factory=PseudoLabelConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)

    # ---- construction -------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, d: dict[str, Any], origin: str = "config") -> "Config":
        cfg = _build(cls, d, prefix="", origin=origin)
        cfg.validate()
        return cfg

    @classmethod
    def from_yaml(cls, path: str | Path) -> "Config":
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as e:
            raise UserError(f"{path}: cannot read config file ({e.strerror or e})") from None
        try:
            d = yaml.safe_load(text)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark is not None else ""
            raise UserError(f"{path}: invalid YAML{where}") from None
        if d is None:
            d = {}
        if not isinstance(d, dict):
            raise UserError(f"{path}: expected a mapping of config keys at the top level")
        return cls.from_dict(d, origin=str(path))

    def with_overrides(self, overrides: list[str]) -> "Config":
        """Apply `a.b=value` strings; values are parsed as YAML scalars or lists."""
        d = self.to_dict()
        for item in overrides:
            key, sep, raw = item.partition("=")
            key = key.strip()
            if not sep or not key:
                raise UserError(f"--set {item!r}: expected KEY=VALUE, e.g. --set teacher.epochs=5")
            try:
                value = yaml.safe_load(raw) if raw.strip() else ""
            except yaml.YAMLError:
                value = raw
            parts = key.split(".")
            node = d
            for i, p in enumerate(parts[:-1]):
                if not isinstance(node.get(p), dict):
                    raise UserError(f"--set {key}: unknown config key {'.'.join(parts[: i + 1])!r}"
                                    f"{_suggest(p, [k for k, v in node.items() if isinstance(v, dict)])}")
                node = node[p]
            if parts[-1] not in node or isinstance(node[parts[-1]], dict):
                raise UserError(f"--set {key}: unknown config key {key!r}"
                                f"{_suggest(parts[-1], [k for k, v in node.items() if not isinstance(v, dict)])}")
            node[parts[-1]] = value
        return Config.from_dict(d, origin="--set")

    # ---- output -------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def hash_dict(self) -> dict[str, Any]:
        """The settings that change results: everything but where the run is written and how
        images are cached (the cache holds the same pixels)."""
        d = self.to_dict()
        d.pop("name")
        d.pop("out_dir")
        for key in ("cache", "cache_dir", "workers"):
            d["data"].pop(key)
        for section, key in _ADDED_LATER:  # at their defaults, as if absent: earlier hashes stay valid
            if d[section][key] == getattr(_DEFAULTS[section], key):
                d[section].pop(key)
        for (section, key), hashed in _NOT_RESULTS.items():
            d[section][key] = hashed
        return d

    def cache_root(self) -> Path | None:
        """Where folder inputs are cached, or None when `data.cache` is off."""
        if not self.data.cache:
            return None
        return Path(self.data.cache_dir) if self.data.cache_dir else Path(self.out_dir) / "cache"

    def hash(self) -> str:
        blob = json.dumps(self.hash_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def model_for_round(self, k: int) -> str:
        names = self.model.names
        return names[min(k, len(names) - 1)]

    def curriculum_for_round(self, k: int) -> float:
        """The fraction of each class's most confident pseudo-labels that round k (>= 1) keeps."""
        fractions = self.pseudo.curriculum
        return fractions[min(k, len(fractions)) - 1] if fractions else 1.0

    # ---- checks -------------------------------------------------------------------------------
    def validate(self) -> None:
        _choice("data.source", self.data.source, ("digits", "idx", "cifar", "folder"))
        _choice("data.channels", self.data.channels, (1, 3))
        _choice("pseudo.mode", self.pseudo.mode, ("soft", "hard"))
        _choice("pipeline.variant", self.pipeline.variant, ("noisy_student", "consistency"))
        for sec in ("teacher", "student"):
            t: TrainConfig = getattr(self, sec)
            _choice(f"{sec}.optimizer", t.optimizer, ("sgd", "adamw"))
            _choice(f"{sec}.schedule", t.schedule, ("cosine", "onecycle", "constant"))
            _positive(f"{sec}.epochs", t.epochs)
            _positive(f"{sec}.batch_size", t.batch_size)
            _range(f"{sec}.lr", t.lr, 0.0, None, lo_open=True)
            _range(f"{sec}.ema", t.ema, 0.0, 1.0, hi_open=True)
            _range(f"{sec}.unlabeled_ratio", t.unlabeled_ratio, 0.0, None, lo_open=True)
            _range(f"{sec}.label_smoothing", t.label_smoothing, 0.0, 1.0, hi_open=True)
            _range(f"{sec}.warmup_epochs", t.warmup_epochs, 0.0, None)
            _range(f"{sec}.eval_every", t.eval_every, 0, None)
        _range("noise.dropout", self.noise.dropout, 0.0, 1.0, hi_open=True)
        _range("noise.drop_path", self.noise.drop_path, 0.0, 1.0, hi_open=True)
        _range("noise.pixel_noise", self.noise.pixel_noise, 0.0, 1.0)
        _range("noise.mixup", self.noise.mixup, 0.0, None)
        _range("pseudo.threshold", self.pseudo.threshold, 0.0, 1.0, hi_open=True)
        _range("pseudo.temperature", self.pseudo.temperature, 0.0, None, lo_open=True)
        _range("pseudo.per_class", self.pseudo.per_class, 0, None)
        for i, f in enumerate(self.pseudo.curriculum):
            _range(f"pseudo.curriculum[{i}]", f, 0.0, 1.0, lo_open=True)
        _range("pseudo.topk", self.pseudo.topk, 0, None)
        _positive("pseudo.batch_size", self.pseudo.batch_size)
        _range("pipeline.rounds", self.pipeline.rounds, 0, None)
        _range("pipeline.robustness_images", self.pipeline.robustness_images, 0, None)
        _range("data.image_size", self.data.image_size, 0, None)
        _range("data.test_fraction", self.data.test_fraction, 0.0, 1.0, lo_open=True, hi_open=True)
        _positive("data.labeled_per_class", self.data.labeled_per_class)
        _range("data.max_unlabeled", self.data.max_unlabeled, 0, None)
        _range("data.workers", self.data.workers, 0, None)
        _range("data.validation", self.data.validation, 0, None)
        if self.data.validation and self.data.source == "folder":
            raise UserError("data.validation: needs an unlabeled pool with known labels (digits, idx, cifar); "
                            "for folders, put a validation folder in --test")
        _range("augment.crop_pad", self.augment.crop_pad, 0, None)
        if not self.model.names:
            raise UserError("model.names: expected at least one model name (the teacher)")
        if not self.name or "/" in self.name or self.name in (".", ".."):
            raise UserError(f"name: {self.name!r} is not a valid run name (no '/', not empty)")
        if self.data.source == "folder" and not self.data.labeled:
            raise UserError("data.labeled: a folder source needs a labeled directory (--labeled DIR)")
        if self.data.source == "folder" and not self.data.unlabeled:
            raise UserError("data.unlabeled: a folder source needs an unlabeled directory (--unlabeled DIR)")
        if self.data.source in ("idx", "cifar") and not self.data.dir:
            raise UserError(f"data.dir: a {self.data.source} source needs the directory of its files (--data-dir DIR)")
        if not (self.device in ("cpu", "cuda", "auto") or self.device.startswith("cuda:")):
            raise UserError(f"device: {self.device!r} is not one of cpu, cuda, cuda:N, auto")


# Settings added after run directories and benchmark records were keyed by the config hash: left out
# of the hash at their default, so a config that does not use them keeps its hash.
_ADDED_LATER = (("model", "warm_start"), ("noise", "pixel_noise"), ("noise", "mixup"), ("pseudo", "curriculum"))
_DEFAULTS = {"model": ModelConfig(), "noise": NoiseConfig(), "pseudo": PseudoLabelConfig()}
# Settings that do not change results but were hashed once: hashed at the value earlier hashes saw,
# whatever they are set to, so changing them neither forks benchmark records nor blocks a resume.
# (Inference runs in eval mode, each image on its own: its batching changes speed only.)
_NOT_RESULTS = {("pseudo", "batch_size"): 512}


def diff_keys(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two config dicts."""
    out = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += diff_keys(va, vb, f"{prefix}{k}.")
        elif va != vb:
            out.append(f"{prefix}{k}")
    return out


# ---- typed construction ---------------------------------------------------------------------------
def _build(cls: type, d: Any, prefix: str, origin: str) -> Any:
    if not isinstance(d, dict):
        raise UserError(f"{origin}: {prefix.rstrip('.') or 'config'}: expected a mapping, got {type(d).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in d.items():
        if key not in names:
            raise UserError(f"{origin}: unknown config key {prefix + str(key)!r}{_suggest(str(key), names)}")
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            kwargs[key] = _build(hint, value, f"{prefix}{key}.", origin)
        else:
            kwargs[key] = _check_type(value, hint, prefix + key, origin)
    return cls(**kwargs)


_EXPONENT_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _check_type(value: Any, hint: Any, key: str, origin: str) -> Any:
    def bad(expected: str) -> UserError:
        return UserError(f"{origin}: {key}: expected {expected}, got {value!r} ({type(value).__name__})")

    if hint is bool:
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad("an integer")
        return value
    if hint is float:
        if isinstance(value, str) and _EXPONENT_NUMBER.fullmatch(value.strip()):
            return float(value)  # YAML 1.1 (PyYAML) reads 1e-4 and 3e-4, without a dot, as strings
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad("a number")
        return float(value)
    if hint is str:
        if value is None:
            return ""
        if not isinstance(value, str):
            raise bad("a string")
        return value
    origin_t = typing.get_origin(hint)
    if origin_t in (list, typing.List):
        (item_t,) = typing.get_args(hint)
        if isinstance(value, str):  # --set model.names=resnet8 or "resnet8,resnet14"; pseudo.curriculum=0.6,1
            value = [v.strip() for v in value.split(",") if v.strip()]
            if item_t is not str:
                value = [_yaml_scalar(v) for v in value]
        if not isinstance(value, list):
            raise bad(f"a list of {item_t.__name__}")
        return [_check_type(v, item_t, f"{key}[{i}]", origin) for i, v in enumerate(value)]
    if origin_t in (typing.Union, types.UnionType):
        raise TypeError(f"unsupported config type {hint} for {key}")  # keep configs simple
    raise TypeError(f"unsupported config type {hint} for {key}")


def _yaml_scalar(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _suggest(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _choice(key: str, value: Any, allowed: tuple) -> None:
    if value not in allowed:
        raise UserError(f"{key}: {value!r} is not one of {', '.join(map(str, allowed))}")


def _positive(key: str, value: float) -> None:
    if value <= 0:
        raise UserError(f"{key}: expected a positive value, got {value}")


def _range(key: str, value: float, lo: float, hi: float | None, lo_open: bool = False, hi_open: bool = False) -> None:
    ok = (value > lo if lo_open else value >= lo) and (hi is None or (value < hi if hi_open else value <= hi))
    if not ok:
        lb = "(" if lo_open else "["
        rb = ")" if hi_open else "]"
        raise UserError(f"{key}: expected a value in {lb}{lo}, {'inf' if hi is None else hi}{rb}, got {value}")
