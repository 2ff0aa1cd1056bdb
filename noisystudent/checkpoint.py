"""Files the pipeline writes: atomic, safetensors for tensors, JSON for everything else.

A model checkpoint is `<stem>.safetensors` (the state dict) plus `<stem>.json` (the arguments of
`create_model`, the class names, the input format and metrics), so it rebuilds its model alone.
Nothing here unpickles: tensors come only from safetensors.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from noisystudent.errors import UserError


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` so that `path` holds either the old or the whole new content.

    Temp file in the same directory, flush, fsync, rename, fsync of the directory. A failed write
    (disk full, interruption) leaves the old file in place and no temp file behind.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise UserError(f"{path}: cannot write ({e.strerror or e})") from e
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(e, OSError):  # disk full, quota, permissions: the old file is intact
            raise UserError(f"{path}: cannot write ({e.strerror or e}); the previous version is kept") from e
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def write_json(path: str | Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def read_json(path: str | Path) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UserError(f"{path}: not a valid JSON file") from None


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    flat = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    atomic_write_bytes(path, st_save(flat, metadata=metadata))


def load_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    try:
        return st_load(path.read_bytes())
    except FileNotFoundError:
        raise UserError(f"{path}: file not found") from None
    except (SafetensorError, ValueError, OSError) as e:
        raise UserError(f"{path}: not a readable safetensors file ({e})") from None


# ---- models -----------------------------------------------------------------------------------------
def save_model(path: str | Path, model: torch.nn.Module, meta: dict[str, Any]) -> None:
    """Save weights to `path` (.safetensors) and `meta` to the .json beside it.

    `meta["model"]` must hold the keyword arguments of `create_model`. The JSON is written last,
    so its presence marks a complete checkpoint.
    """
    path = Path(path)
    if "model" not in meta or "name" not in meta["model"]:
        raise ValueError("meta['model'] must hold create_model's arguments, including 'name'")
    save_tensors(path, model.state_dict())
    write_json(path.with_suffix(".json"), meta)


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict[str, Any]]:
    """Rebuild a model from `<stem>.safetensors` + `<stem>.json`; returns (model in eval mode, meta)."""
    from noisystudent.models import create_model

    path = Path(path)
    if path.suffix != ".safetensors":
        path = path.with_suffix(".safetensors")
    meta = read_json(path.with_suffix(".json"))
    try:
        args = dict(meta["model"])
        name = args.pop("name")
    except (KeyError, TypeError):
        raise UserError(f"{path.with_suffix('.json')}: missing the 'model' section with the model name") from None
    model = create_model(name, **args)
    state = load_tensors(path)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise UserError(f"{path}: weights do not match model {name!r} "
                        f"(missing {len(missing)}, unexpected {len(unexpected)} tensors)")
    return model.to(device, memory_format=torch.channels_last).eval(), meta


# ---- training state (for resume) ----------------------------------------------------------------------
def optimizer_to_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimizer state dict into safetensors-able tensors and a JSON-able rest."""
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"optim.{pid}.{k}"] = v
            else:
                scalars.setdefault(str(pid), {})[k] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def optimizer_from_tensors(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], rest: dict[str, Any]) -> None:
    state: dict[int, dict[str, Any]] = {}
    for key, v in tensors.items():
        if key.startswith("optim."):
            _, pid, k = key.split(".", 2)
            state.setdefault(int(pid), {})[k] = v
    for pid, st in rest["scalars"].items():
        state.setdefault(int(pid), {}).update(st)
    opt.load_state_dict({"state": state, "param_groups": rest["param_groups"]})
    # Saved tensors come back in the standard layout; a buffer shaped like its parameter must take the
    # parameter's layout (e.g. channels_last), or fused/foreach kernels that walk storage mix elements.
    for group in opt.param_groups:
        for p in group["params"]:
            for k, v in opt.state.get(p, {}).items():
                if isinstance(v, torch.Tensor) and v.shape == p.shape and v.stride() != p.stride():
                    opt.state[p][k] = torch.empty_like(p, dtype=v.dtype).copy_(v)
