"""Checkpoints as safetensors: model weights under their own names, and, in ``last``, the optimiser,
loss-scaler and RNG states and the progress under ``_``-prefixed keys and metadata (and, when the
saved weights are a moving average, the weights training continues from). One file per
checkpoint, written atomically, so weights and training state can never disagree after a crash."""

from __future__ import annotations

import errno
import json
import os
import re
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from ..files import atomic_write

_OPT = "_optimizer."
_TRAINED = "_trained."
_RNG = "_rng.torch"
_CUDA_RNG = "_rng.cuda"


def save(path: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer | None = None,
         meta: dict | None = None, scaler: torch.amp.GradScaler | None = None, trained: nn.Module | None = None) -> None:
    """Write weights (and optionally the optimiser, scaler and RNG states plus JSON-able ``meta``, and
    the ``trained`` network's weights where ``model`` holds their average) atomically and durably."""
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    if trained is not None:
        tensors.update({_TRAINED + k: v.detach().contiguous().cpu() for k, v in trained.state_dict().items()})
    metadata = {"meta": json.dumps(meta or {})}
    if optimizer is not None:
        state = optimizer.state_dict()
        for i, slots in state["state"].items():
            for key, value in slots.items():
                tensors[f"{_OPT}{i}.{key}"] = value.detach().contiguous().cpu()
        metadata["optimizer_groups"] = json.dumps(state["param_groups"])
        metadata["scaler"] = json.dumps(scaler.state_dict() if scaler is not None else {})
        tensors[_RNG] = torch.get_rng_state()
        if torch.cuda.is_available():
            tensors[_CUDA_RNG] = torch.cuda.get_rng_state()

    def write(tmp: Path) -> None:
        try:
            save_file(tensors, str(tmp), metadata=metadata)
        except SafetensorError as exc:  # safetensors reports a full disk this way: an OSError, for atomic_write
            found = re.search(r"os error (\d+)", str(exc))
            code = int(found.group(1)) if found else errno.EIO
            raise OSError(code, os.strerror(code) if found else str(exc)) from None

    atomic_write(path, write)


def load(path: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer | None = None,
         scaler: torch.amp.GradScaler | None = None, trained: nn.Module | None = None) -> dict:
    """Restore weights (and the optimiser, scaler and RNG states when given an optimiser, and the
    ``trained`` network's weights that ``save`` stored beside their average); return the saved ``meta``."""
    path = Path(path)
    try:
        tensors = load_file(str(path))
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
    except (OSError, SafetensorError, ValueError) as exc:
        raise ValueError(f"{path}: unreadable checkpoint ({exc})") from exc
    weights = {k: v for k, v in tensors.items() if not k.startswith("_")}
    try:
        model.load_state_dict(weights)
    except RuntimeError as exc:
        raise ValueError(f"{path}: weights do not match the model in config.json ({str(exc).splitlines()[0]})") from exc
    if trained is not None:
        own = {k[len(_TRAINED):]: v for k, v in tensors.items() if k.startswith(_TRAINED)}
        if not own:
            raise ValueError(f"{path}: holds the averaged weights only, not those training continues from")
        trained.load_state_dict(own)
    if optimizer is not None:
        if "optimizer_groups" not in metadata:
            raise ValueError(f"{path}: holds weights only, no training state to resume from")
        state: dict[int, dict] = {}
        for key, value in tensors.items():
            if key.startswith(_OPT):
                index, slot = key[len(_OPT):].split(".", 1)
                state.setdefault(int(index), {})[slot] = value
        optimizer.load_state_dict({"state": state, "param_groups": _metadata(path, metadata, "optimizer_groups")})
        scaler_state = _metadata(path, metadata, "scaler")
        if scaler is not None and scaler_state:
            scaler.load_state_dict(scaler_state)
        torch.set_rng_state(tensors[_RNG])
        if _CUDA_RNG in tensors and torch.cuda.is_available():
            torch.cuda.set_rng_state(tensors[_CUDA_RNG])
    return _metadata(path, metadata, "meta")


def tensor_shapes(path: str | Path) -> dict[str, tuple[int, ...]]:
    """The shape of every weight a checkpoint holds, read from its header alone (no tensor is loaded).

    Raises:
        ValueError: the file cannot be read as a checkpoint.
    """
    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys() if not k.startswith("_")}  # noqa: SIM118
    except (OSError, SafetensorError, ValueError) as exc:
        raise ValueError(f"{path}: unreadable checkpoint ({exc})") from None


def read_meta(path: str | Path) -> dict:
    """The JSON-able ``meta`` a checkpoint was saved with, read from its header alone (no tensor is loaded)."""
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
    except (OSError, SafetensorError, ValueError) as exc:
        raise ValueError(f"{path}: unreadable checkpoint ({exc})") from exc
    meta = _metadata(path, metadata, "meta")
    return meta if isinstance(meta, dict) else {}


def _metadata(path: Path, metadata: dict[str, str], key: str) -> dict | list:
    """One JSON entry of the checkpoint's header ({} when absent); a damaged one is refused by file name."""
    try:
        return json.loads(metadata.get(key, "{}"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: damaged checkpoint ({key} in its header: {exc})") from None
