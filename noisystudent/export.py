"""Export a checkpoint to ONNX or TorchScript, and check the export against PyTorch.

The exported model takes float32 pixels in [0, 1] (uint8 value / 255), shape (batch, C, H, W)
with any batch size, and normalises them with the checkpoint's mean and std itself; it returns
logits (batch, classes). A JSON file beside it (`<file>.json`) names the classes and the input.

ONNX needs the `onnx` extra (`pip install 'noisystudent[onnx]'`: onnx, onnxruntime, onnxscript).
The dynamo exporter is used, falling back to the TorchScript-based one if it fails.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import logging
import warnings
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn

from noisystudent.checkpoint import load_model, write_json
from noisystudent.errors import UserError
from noisystudent.tensors import to_model_input

log = logging.getLogger(__name__)

FORMATS = {"onnx": ".onnx", "torchscript": ".pt"}
ONNX_EXTRA = "pip install 'noisystudent[onnx]'"
INPUT_NAME, OUTPUT_NAME = "pixels", "logits"
_CHATTY_LOGGERS = ("torch.onnx", "torch.export", "torch._dynamo", "torch.fx", "onnxscript", "onnx_ir")


class Normalized(nn.Module):
    """`model` behind its input normalisation: float pixels in [0, 1] -> logits."""

    def __init__(self, model: nn.Module, mean: list[float], std: list[float]):
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model((pixels - self.mean) / self.std)


def export(checkpoint: str | Path, out_path: str | Path | None = None, format: str = "onnx") -> Path:
    """Write the checkpoint's model as ONNX or TorchScript (default path: beside it, .onnx / .pt); returns the path."""
    if format not in FORMATS:
        raise UserError(f"export format must be one of {', '.join(FORMATS)}, got {format!r}")
    if format == "onnx" and importlib.util.find_spec("onnx") is None:
        raise UserError(f"ONNX export needs the onnx package: {ONNX_EXTRA}")
    checkpoint = Path(checkpoint)
    out = Path(out_path) if out_path else checkpoint.with_suffix(FORMATS[format])
    model, meta = load_model(checkpoint)
    spec = meta["input"]
    wrapped = Normalized(model.to(memory_format=torch.contiguous_format), spec["mean"], spec["std"]).eval()
    example = torch.rand(2, int(spec["channels"]), int(spec["height"]), int(spec["width"]))
    out.parent.mkdir(parents=True, exist_ok=True)
    if format == "torchscript":
        with torch.no_grad(), _quiet():
            torch.jit.trace(wrapped, example).save(str(out))
    else:
        _export_onnx(wrapped, example, out)
    write_json(_sidecar(out), _describe(checkpoint, format, meta))
    return out


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def _describe(checkpoint: Path, format: str, meta: dict[str, Any]) -> dict[str, Any]:
    """What the JSON beside an export says: source, classes, input and output."""
    spec = meta["input"]
    return {
        "format": format,
        "checkpoint": str(checkpoint),
        "model": meta["model"].get("name"),
        "classes": meta["classes"],
        "input": {"name": INPUT_NAME, "shape": ["batch", spec["channels"], spec["height"], spec["width"]],
                  "dtype": "float32", "range": "0..1 (uint8 pixel / 255); normalised inside the model",
                  "mean": spec["mean"], "std": spec["std"]},
        "output": {"name": OUTPUT_NAME, "shape": ["batch", len(meta["classes"])], "meaning": "logits"},
    }


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the exporters' deprecation warnings, progress prints and info logging."""
    loggers = [logging.getLogger(name) for name in _CHATTY_LOGGERS]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _export_onnx(module: nn.Module, example: torch.Tensor, out: Path) -> None:
    """torch.onnx.export with a dynamic batch axis: dynamo exporter first, TorchScript-based if it fails."""
    names = dict(input_names=[INPUT_NAME], output_names=[OUTPUT_NAME])
    try:
        if importlib.util.find_spec("onnxscript") is None:
            raise ImportError("onnxscript is not installed")
        with torch.no_grad(), _quiet():
            torch.onnx.export(module, (example,), str(out), dynamo=True, verbose=False, external_data=False,
                              dynamic_shapes=({0: torch.export.Dim("batch")},), **names)
        return
    except Exception as err:  # any exporter failure: the older exporter may still handle the model
        log.info("dynamo ONNX exporter failed (%s); using the TorchScript-based exporter", err)
    with torch.no_grad(), _quiet():
        torch.onnx.export(module, (example,), str(out), dynamo=False,
                          dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}}, **names)


def check_export(exported: str | Path, checkpoint: str | Path, images: torch.Tensor | None = None,
                 *, n: int = 16, seed: int = 0) -> float:
    """Top-1 agreement (0..1) of the exported model with the PyTorch checkpoint on `images`.

    `images`: (N, C, H, W) uint8; None draws `n` random images (seeded). The format follows the
    file's suffix (.onnx: onnxruntime; anything else: torch.jit.load).
    """
    model, meta = load_model(checkpoint)
    spec = meta["input"]
    if images is None:
        shape = (n, int(spec["channels"]), int(spec["height"]), int(spec["width"]))
        images = torch.randint(0, 256, shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))
    if len(images) == 0:
        raise UserError("check_export needs at least one image")
    with torch.no_grad():
        reference = model(to_model_input(images, torch.tensor(spec["mean"]), torch.tensor(spec["std"])))
    logits = run_exported(exported, images.float() / 255)
    return (logits.argmax(1) == reference.argmax(1)).float().mean().item()


def run_exported(exported: str | Path, pixels: torch.Tensor) -> torch.Tensor:
    """Logits of an exported model (ONNX via onnxruntime, else TorchScript) for float pixels in [0, 1]."""
    exported = Path(exported)
    if not exported.exists():
        raise UserError(f"{exported}: file not found")
    if exported.suffix == ".onnx":
        try:
            import onnxruntime as ort
        except ImportError:
            raise UserError(f"running an ONNX export needs onnxruntime: {ONNX_EXTRA}") from None
        session = ort.InferenceSession(str(exported), providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return torch.from_numpy(session.run(None, {name: pixels.contiguous().numpy()})[0])
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript is deprecated in recent torch
        return torch.jit.load(str(exported), map_location="cpu")(pixels)


def run_images(checkpoint: str | Path, n: int = 64) -> tuple[torch.Tensor | None, str]:
    """Up to `n` test images of the run a checkpoint lies in (round-k/ of a run directory), and their description.

    (None, reason) when the checkpoint is not in a run directory or the images cannot be rebuilt.
    """
    run_dir = Path(checkpoint).resolve().parent.parent
    if not (run_dir / "config.yaml").is_file():
        return None, "the checkpoint is not in a run directory"
    from noisystudent.config import Config
    from noisystudent.data.build import build_datasets

    try:
        cfg = Config.from_yaml(run_dir / "config.yaml")
        data = build_datasets(cfg.data, cache_root=cfg.cache_root())
    except (UserError, OSError) as err:
        return None, f"the run's images could not be loaded ({err})"
    images, which = (data.test.images, "test") if data.test is not None else (data.labeled.images, "labeled")
    _, meta = load_model(checkpoint)
    spec = meta["input"]
    if tuple(images.shape[1:]) != (spec["channels"], spec["height"], spec["width"]):
        return None, "the run's images do not have the checkpoint's input shape"
    return images[:n], f"{min(n, len(images))} {which} images of the run"
