"""The run directory, the unit users keep and share: the one owner of its file names and formats.

A run holds ``config.json`` (everything needed to rebuild the model and the preprocessing),
``last.safetensors`` (weights plus optimiser, RNG and progress state), ``best.safetensors``,
``history.csv``, ``curves.png``, TensorBoard's event files in ``tb/``, and later ``evaluation/`` and the ONNX exports. ``evaluate``,
``predict`` and ``export`` need nothing but this folder.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import torch

from .config import RunConfig
from .files import atomic_write_text
from .model.build import build_model, meta_model
from .training import checkpoint

CONFIG_FILE = "config.json"
LAST = "last.safetensors"
BEST = "best.safetensors"
HISTORY_FILE = "history.csv"
CURVES_FILE = "curves.png"
TB_DIR = "tb"  # TensorBoard's event files: `tensorboard --logdir RUNS/` finds every run's
EVALUATION_DIR = "evaluation"
ONNX_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
WEIGHTS = {"best": BEST, "last": LAST}
TRAINING_FILES = (CONFIG_FILE, LAST, BEST, HISTORY_FILE, CURVES_FILE, TB_DIR)  # what `train` writes into a run
# history.csv, one row per epoch: train_loss and val_loss are the loss being optimised (the run's `loss`,
# cross-entropy or cross-entropy + Dice, with its class weights), a mean over the epoch's images (rows
# written by earlier releases hold plain cross-entropy there). Accuracies are pixel accuracies, val_miou
# the mean IoU, lr the decoder's learning rate at the epoch's end, seconds the epoch's time with validation,
# stale the validations in a row without a better one so far (what train.patience counts; the run stopped
# early where it reaches train.patience).
HISTORY_FIELDS = ("epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "val_miou", "lr", "seconds",
                  "stale")


class RunDirError(Exception):
    """The run directory cannot be used as asked (it would overwrite work, or holds nothing to resume)."""


def save_config(run_dir: str | Path, config: RunConfig) -> None:
    atomic_write_text(Path(run_dir) / CONFIG_FILE, json.dumps(config.to_dict(), indent=2) + "\n")


def load_config(run_dir: str | Path) -> RunConfig:
    """The run's configuration; a missing or damaged config.json is a one-line error."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir}: not a pixelwise run directory (no {CONFIG_FILE})")
    try:
        return RunConfig.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path}: unreadable run configuration ({exc})") from exc


def read_history(run_dir: Path) -> list[dict]:
    path = run_dir / HISTORY_FILE
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return [{k: (float(v) if v not in ("", None) else None) if k != "epoch" else int(v) for k, v in row.items()}
                for row in csv.DictReader(f)]


def write_history(run_dir: Path, history: list[dict]) -> None:
    lines = [",".join(HISTORY_FIELDS)]
    for row in history:
        lines.append(",".join("" if row.get(k) is None else (f"{row[k]:.6g}" if isinstance(row[k], float) else str(row[k]))
                              for k in HISTORY_FIELDS))
    atomic_write_text(run_dir / HISTORY_FILE, "\n".join(lines) + "\n")


def weights_path(run_dir: Path, weights: str = "best") -> Path:
    """``best`` or ``last``: the checkpoint file a trained run is used with."""
    if weights not in WEIGHTS:
        raise ValueError(f"weights must be 'best' or 'last', not {weights!r}")
    path = run_dir / WEIGHTS[weights]
    if not path.exists():
        raise FileNotFoundError(f"{run_dir}: no {path.name}; has this run finished (and, for best, validated) an epoch? "
                                "weights='last' uses the latest")
    return path


def load_model(run_dir: Path, config: RunConfig, weights: str = "best") -> torch.nn.Module:
    """The run's trained network (``best`` or ``last`` weights) on the CPU, in eval mode; a damaged
    config.json or checkpoint is a one-line error before any large allocation. Every weight comes from
    the checkpoint: no weight package is imported."""
    path = weights_path(run_dir, weights)
    _check_weights_fit(path, run_dir / CONFIG_FILE, config)
    model = build_model(config.model)
    checkpoint.load(path, model)
    return model.eval()


def _check_weights_fit(weights: Path, config_file: Path, config: RunConfig) -> None:
    """Compare the tensor shapes config.json implies with those in the checkpoint's header BEFORE any
    memory is allocated: a damaged config.json (say n_filters 100000000) must be an error message, not
    a model too large for memory that gets the process killed."""
    try:
        wanted = {k: tuple(v.shape) for k, v in meta_model(config.model).state_dict().items()}
    except ValueError as exc:
        raise ValueError(f"{config_file}: describes a model that cannot be built ({exc})") from None
    found = checkpoint.tensor_shapes(weights)
    if found != wanted:
        odd = sorted(k for k in wanted.keys() | found.keys() if wanted.get(k) != found.get(k))
        raise ValueError(f"{weights}: weights do not match the model in {config_file} ({len(odd)} tensor(s) differ, "
                         f"such as {odd[0]}: {found.get(odd[0], 'missing')} in the weights, "
                         f"{wanted.get(odd[0], 'missing')} in the config)")
