"""The training loop: decode once, split by drive, train with the run's recipe, validate, checkpoint.

A run directory holds everything: ``config.json``, ``last``/``best`` checkpoints, ``history.csv``
and ``curves.png``. ``resume=True`` continues from ``last`` exactly where the previous run stopped.
"""

from __future__ import annotations

import csv
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from . import checkpoint
from .config import RunConfig
from .data import DataError, Decoded, Split, decode_dataset, default_cache_dir, split_by_runs
from .device import autocast, pick_device, resolve_precision
from .files import atomic_write_text
from .metrics import confusion_matrix, scores
from .model import UNet
from .viz import plot_history

HISTORY_FILE = "history.csv"
CURVES_FILE = "curves.png"
HISTORY_FIELDS = ("epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "val_miou", "lr", "seconds")


class RunDirError(Exception):
    """The run directory cannot be used as asked (it would overwrite work, or holds nothing to resume)."""


def to_batch(images: torch.Tensor, masks: torch.Tensor | None, index: np.ndarray | slice,
             device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
    """uint8 NHWC arrays → float NCHW in [0, 1] (channels-last in memory, no copy of the layout)."""
    x = images[index].to(device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255)
    y = masks[index].to(device, non_blocking=True).long() if masks is not None else None
    return x, y


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The shuffled order of one epoch, a function of (seed, epoch) alone so a resumed run repeats it."""
    return np.random.default_rng([seed, epoch]).permutation(n)


@dataclass
class TrainResult:
    run_dir: Path
    history: list[dict]
    best_epoch: int
    best_miou: float | None  # None when there was no validation split


def _batches(order: np.ndarray, batch_size: int) -> Iterator[np.ndarray]:
    for start in range(0, len(order), batch_size):
        yield order[start:start + batch_size]


@torch.no_grad()
def validate(model: UNet, images: torch.Tensor, masks: torch.Tensor, batch_size: int, device: torch.device,
             dtype: torch.dtype | None) -> tuple[float, torch.Tensor]:
    """Mean per-pixel loss and the summed confusion matrix over a set of decoded pairs."""
    model.eval()
    n_classes = model.config.n_classes
    cm = torch.zeros(n_classes, n_classes, dtype=torch.int64, device=device)
    loss_sum, pixels = 0.0, 0
    for batch in _batches(np.arange(len(images)), batch_size):
        x, y = to_batch(images, masks, batch, device)
        with autocast(device, dtype):
            logits = model(x)
        y = center_crop(y, logits.shape[-2:])
        loss_sum += F.cross_entropy(logits.float(), y, reduction="sum").item()
        pixels += y.numel()
        cm += confusion_matrix(logits.argmax(1), y, n_classes)
    return loss_sum / max(pixels, 1), cm.cpu()


def _read_history(run_dir: Path) -> list[dict]:
    path = run_dir / HISTORY_FILE
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return [{k: (float(v) if v not in ("", None) else None) if k != "epoch" else int(v) for k, v in row.items()}
                for row in csv.DictReader(f)]


def _write_history(run_dir: Path, history: list[dict]) -> None:
    lines = [",".join(HISTORY_FIELDS)]
    for row in history:
        lines.append(",".join("" if row.get(k) is None else (f"{row[k]:.6g}" if isinstance(row[k], float) else str(row[k]))
                              for k in HISTORY_FIELDS))
    atomic_write_text(run_dir / HISTORY_FILE, "\n".join(lines) + "\n")


def prepare_data(images_dir: Path, masks_dir: Path, config: RunConfig, *, skip_invalid: bool, cache_dir: Path | None,
                 progress: bool, log: Callable[[str], None]) -> tuple[Decoded, Split]:
    """Decode and validate every pair up front (refusing bad data before any training), then split."""
    decoded = decode_dataset(images_dir, masks_dir, config.data.size, config.model.n_classes,
                             image_resize=config.data.image_resize, cache_dir=cache_dir, progress=progress)
    if decoded.problems and not skip_invalid:
        raise DataError(decoded.problems)
    if decoded.problems:
        log(f"skipping {len(decoded.skipped)} invalid pair(s) (--skip-invalid):")
        for problem in decoded.problems:
            log(f"  {problem}")
    if len(decoded.names) == 0:
        raise DataError(decoded.problems) if decoded.problems else ValueError(f"{images_dir}: no image/mask pairs found")
    split = split_by_runs(decoded.names, config.data.val_fraction, config.train.seed)
    return decoded, split


def check_trainable(config: RunConfig) -> None:
    """Refuse, before any decoding, a training size the network cannot take or non-RGB input."""
    model, (h, w) = config.model, config.data.size
    if model.in_channels != 3:
        raise ValueError(f"training reads RGB images, so the model needs in_channels=3, not {model.in_channels}")
    bad = [f"{name} {n} (try {' or '.join(map(str, sorted(set(model.valid_sizes_near(n)))))})"
           for name, n in (("height", h), ("width", w)) if model.output_size(n) is None]
    if bad:
        raise ValueError(f"--size {h}x{w} does not fit this U-Net: {'; '.join(bad)}")


def center_crop(masks: torch.Tensor, size: torch.Size) -> torch.Tensor:
    """Crop (N, H, W) masks to the logits' size: an unpadded network predicts only the centre."""
    dh, dw = (masks.shape[-2] - size[0]) // 2, (masks.shape[-1] - size[1]) // 2
    return masks[..., dh:dh + size[0], dw:dw + size[1]]


def train(images_dir: str | Path, masks_dir: str | Path, run_dir: str | Path, config: RunConfig | None = None, *,
          resume: bool = False, skip_invalid: bool = False, cache_dir: Path | None = None, progress: bool = True,
          log: Callable[[str], None] = print) -> TrainResult:
    """Train a U-Net on the pairs in ``images_dir``/``masks_dir`` into ``run_dir``.

    With ``resume``, the run's own config.json is used (``config`` may only change the epoch count)
    and training continues after the last completed epoch.
    """
    run_dir = Path(run_dir)
    images_dir, masks_dir = Path(images_dir), Path(masks_dir)
    if resume:
        if not (run_dir / checkpoint.LAST).exists():
            raise RunDirError(f"{run_dir}: nothing to resume (no {checkpoint.LAST})")
        saved = RunConfig.load(run_dir)
        config = saved.with_train(epochs=config.train.epochs) if config is not None else saved
    else:
        if (run_dir / checkpoint.LAST).exists():
            raise RunDirError(f"{run_dir}: already holds a run; use --resume to continue it or choose another --out")
        config = config or RunConfig()
    check_trainable(config)
    cache_dir = default_cache_dir() if cache_dir is None else cache_dir

    decoded, split = prepare_data(images_dir, masks_dir, config, skip_invalid=skip_invalid, cache_dir=cache_dir,
                                  progress=progress, log=log)
    images, masks = torch.from_numpy(decoded.images), torch.from_numpy(decoded.masks)
    train_images, train_masks = images[split.train], masks[split.train]
    val_images, val_masks = images[split.val], masks[split.val]
    del decoded, images, masks  # keep one copy of the data, not two
    device = pick_device()
    dtype = resolve_precision(config.train.precision, device)
    log(f"{len(split.train)} training and {len(split.val)} validation pairs at {config.data.size[0]}x{config.data.size[1]}"
        f" on {device.type} ({'fp32' if dtype is None else str(dtype).removeprefix('torch.')})")

    torch.manual_seed(config.train.seed)
    model = UNet(config.model).to(device, memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.train.lr)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    history: list[dict] = []
    best, best_epoch, start_epoch = -math.inf, 0, 1
    if resume:
        meta = checkpoint.load(run_dir / checkpoint.LAST, model, optimizer)
        history = _read_history(run_dir)[: meta["epoch"]]
        best, best_epoch, start_epoch = meta["best"], meta["best_epoch"], meta["epoch"] + 1
        if start_epoch > config.train.epochs:
            log(f"{run_dir}: all {config.train.epochs} epochs already done; pass a larger --epochs to train on")
    run_dir.mkdir(parents=True, exist_ok=True)
    config.save(run_dir)

    for epoch in range(start_epoch, config.train.epochs + 1):
        started = time.perf_counter()
        model.train()
        order = epoch_order(len(train_images), config.train.seed, epoch)
        loss_sum, correct, seen = 0.0, 0, 0
        bar = tqdm(list(_batches(order, config.train.batch_size)), desc=f"epoch {epoch}/{config.train.epochs}",
                   unit="batch", disable=None if progress else True, leave=False, dynamic_ncols=True)
        for step, batch in enumerate(bar, 1):
            x, y = to_batch(train_images, train_masks, batch, device)
            with autocast(device, dtype):
                logits = model(x)
            y = center_crop(y, logits.shape[-2:])
            loss = F.cross_entropy(logits.float(), y)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"training diverged in epoch {epoch}, step {step} (loss is {loss.item()}); "
                                         f"the last good checkpoint in {run_dir} is intact. "
                                         "Try a lower --lr or --precision fp32.")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            loss_sum += loss.item() * y.numel()
            correct += int((logits.detach().argmax(1) == y).sum())
            seen += y.numel()
            if step % 5 == 0 or step == len(bar):
                bar.set_postfix(loss=f"{loss_sum / seen:.4f}", accuracy=f"{correct / seen:.4f}")
        bar.close()
        row = {"epoch": epoch, "train_loss": loss_sum / seen, "train_accuracy": correct / seen,
               "val_loss": None, "val_accuracy": None, "val_miou": None, "lr": optimizer.param_groups[0]["lr"]}
        if len(val_images):
            val_loss, cm = validate(model, val_images, val_masks, config.train.batch_size, device, dtype)
            s = scores(cm)
            row.update(val_loss=val_loss, val_accuracy=s.pixel_accuracy, val_miou=s.miou)
        row["seconds"] = time.perf_counter() - started
        history.append(row)

        # Best by validation mIoU; without a validation split, by training loss.
        quality = row["val_miou"] if row["val_miou"] is not None else -row["train_loss"]
        if quality > best:
            best, best_epoch = quality, epoch
            checkpoint.save(run_dir / checkpoint.BEST, model, meta={"epoch": epoch})
        checkpoint.save(run_dir / checkpoint.LAST, model, optimizer,
                        meta={"epoch": epoch, "best": best, "best_epoch": best_epoch})
        _write_history(run_dir, history)
        plot_history(history, run_dir / CURVES_FILE)
        log(_epoch_line(row, config.train.epochs))
    best_row = history[best_epoch - 1] if history and best_epoch else None
    return TrainResult(run_dir, history, best_epoch, best_row["val_miou"] if best_row else None)


def _epoch_line(row: dict, epochs: int) -> str:
    line = (f"epoch {row['epoch']:>3}/{epochs}  loss {row['train_loss']:.4f}  accuracy {row['train_accuracy']:.4f}")
    if row["val_miou"] is not None:
        line += f"  | val loss {row['val_loss']:.4f}  accuracy {row['val_accuracy']:.4f}  mIoU {row['val_miou']:.4f}"
    return line + f"  ({row['seconds']:.1f} s)"
