"""The training loop: decode once, split by drive, train with the run's recipe, validate, checkpoint.

A run directory holds everything: ``config.json``, ``last``/``best`` checkpoints, ``history.csv``
and ``curves.png``. ``last`` is written after every epoch and when training is asked to stop
(Ctrl-C, SIGTERM), and holds everything needed to continue exactly: ``resume=True`` picks up at the
step where the run stopped. Under ``torchrun`` the same loop runs data-parallel (see distributed.py).
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from ..config import RunConfig
from ..data.cache import default_cache_dir
from ..data.dataset import Decoded, decode_dataset
from ..data.problems import DataError
from ..data.split import Split, split_by_runs
from ..data.transforms import IGNORE_INDEX, to_batch
from ..device import precision_name, resolve_precision
from ..evaluation.metrics import class_ids, scores
from ..model.unet import UNet
from ..recipes import DEFAULT_RECIPE, recipe
from ..rundir import (
    BEST,
    CURVES_FILE,
    LAST,
    RunDirError,
    load_config,
    read_history,
    save_config,
    write_history,
)
from . import checkpoint
from .augment import training_transform
from .checks import check_finite, check_memory, check_trainable
from .curves import CURVES_EVERY_S, plot_history
from .distributed import World, close_world, init_world
from .losses import make_criterion
from .step import (
    _batches,
    epoch_order,
    learning_rate,
    make_optimizer,
    step_seed,
    train_step,
    validate,
)
from .stop import StopRequest, TrainingStopped


@dataclass
class TrainResult:
    run_dir: Path
    history: list[dict]
    best_epoch: int
    best_miou: float | None  # None when there was no validation split


@dataclass
class Progress:
    """Where training stands: saved in ``last`` so a resumed run continues at the same step."""

    epoch: int = 1  # the epoch in progress
    step: int = 0  # steps of it already taken
    loss_sum: float = 0.0  # the epoch's partial sums so far (over all ranks)
    correct: int = 0
    seen: int = 0
    best: float = -math.inf  # best validation mIoU (or minus the training loss without validation)
    best_epoch: int = 0
    data: str = ""  # fingerprint of the split: resuming on other data would not continue this run


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
    split = split_by_runs(decoded.names, config.data.val_fraction, config.data.split_seed)
    return decoded, split


def _fingerprint(names: list[str], split: Split) -> str:
    text = "\n".join(names[i] for i in split.train) + "\n--\n" + "\n".join(names[i] for i in split.val)
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:16]


def train(images_dir: str | Path, masks_dir: str | Path, run_dir: str | Path, config: RunConfig | None = None, *,
          resume: bool = False, skip_invalid: bool = False, cache_dir: Path | None = None, progress: bool = True,
          log: Callable[[str], None] = print) -> TrainResult:
    """Train a U-Net on the pairs in ``images_dir``/``masks_dir`` into ``run_dir``.

    With ``resume``, the run's own config.json is used (``config`` may only change the epoch count)
    and training continues where ``last`` was saved. Raises TrainingStopped after a Ctrl-C/SIGTERM.
    Started by ``torchrun``, each process runs this and they train one model data-parallel.
    """
    world = init_world()
    together = False  # all ranks reach the end (or a requested stop) at once
    try:
        result = _train(world, Path(images_dir), Path(masks_dir), Path(run_dir), config, resume=resume,
                        skip_invalid=skip_invalid, cache_dir=cache_dir, progress=progress and world.is_main,
                        log=log if world.is_main else (lambda _: None))
        together = True
        return result
    except (TrainingStopped, FloatingPointError):  # every rank stops or diverges at the same step
        together = True
        raise
    finally:
        close_world(world, together)


def _train(world: World, images_dir: Path, masks_dir: Path, run_dir: Path, config: RunConfig | None, *,
           resume: bool, skip_invalid: bool, cache_dir: Path | None, progress: bool,
           log: Callable[[str], None]) -> TrainResult:
    if resume:
        if not (run_dir / LAST).exists():
            raise RunDirError(f"{run_dir}: nothing to resume (no {LAST})")
        saved = load_config(run_dir)
        config = saved.with_train(epochs=config.train.epochs) if config is not None else saved
    else:
        if (run_dir / LAST).exists():
            raise RunDirError(f"{run_dir}: already holds a run; use --resume to continue it or choose another --out")
        config = config or recipe(DEFAULT_RECIPE)
    check_trainable(config)
    check_memory(config, world.device())
    batch_size, epochs = config.train.batch_size, config.train.epochs
    if batch_size < world.size:
        raise ValueError(f"batch size {batch_size} is smaller than the {world.size} processes sharing each batch")

    # Every rank decodes (the cache makes the others cheap) so a data error stops all of them alike.
    decoded, split = prepare_data(images_dir, masks_dir, config, skip_invalid=skip_invalid,
                                  cache_dir=default_cache_dir() if cache_dir is None else cache_dir,
                                  progress=progress, log=log)
    images, masks = decoded.images, decoded.masks
    train_idx, val_idx = np.asarray(split.train, dtype=np.int64), np.asarray(split.val, dtype=np.int64)
    device = world.device()
    dtype = resolve_precision(config.train.precision, device)
    procs = f" x {world.size} processes" if world.distributed else ""
    log(f"{len(train_idx)} training and {len(val_idx)} validation pairs at {config.data.size[0]}x{config.data.size[1]}"
        f" on {device.type}{procs} ({precision_name(dtype)})")

    torch.manual_seed(config.train.seed)  # the same initial weights on every rank
    model = UNet(config.model).to(device, memory_format=torch.channels_last)
    net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None) \
        if world.distributed else model
    optimizer = make_optimizer(model, config.train)
    criterion = make_criterion(config, masks, train_idx)
    ignore = config.train.ignore_index
    augment = training_transform(config.data.augment, config.data.size, config.data.crop_size(config.model.step),
                                 config.data.class_crops)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    state = Progress(data=_fingerprint(decoded.names, split))
    history: list[dict] = []
    if resume:
        meta = checkpoint.load(run_dir / LAST, model, optimizer, scaler)
        saved_state = Progress(**meta["progress"])
        if saved_state.data != state.data:
            raise RunDirError(f"{run_dir}: the training data or its split changed since this run started, so it "
                              "cannot be continued exactly; train a new run with another --out")
        state = saved_state
        if not world.is_main:  # the partial sums saved are totals over all ranks: count them once
            state.loss_sum, state.correct, state.seen = 0.0, 0, 0
        history = read_history(run_dir)[: state.epoch - 1]
        if state.epoch > epochs:
            log(f"{run_dir}: all {epochs} epochs already done; pass a larger --epochs to train on")
    if world.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(run_dir, config)

    def save_last() -> None:
        if world.is_main:
            checkpoint.save(run_dir / LAST, model, optimizer, {"progress": asdict(state)}, scaler)

    if not resume:  # from the start on, a run directory can always be resumed, whenever it is killed
        save_last()

    plotted = -math.inf
    with StopRequest(log) as stop:
        for epoch in range(state.epoch, epochs + 1):
            started = time.perf_counter()
            order = train_idx[epoch_order(len(train_idx), config.train.seed, epoch)]
            batches = list(_batches(order, batch_size))
            net.train()
            bar = tqdm(total=len(batches), initial=state.step, desc=f"epoch {epoch}/{epochs}", unit="batch",
                       disable=None if progress else True, leave=False, dynamic_ncols=True)
            for step in range(state.step, len(batches)):
                batch = batches[step]
                torch.manual_seed(step_seed(config.train.seed, epoch, step, world.rank))
                for group in optimizer.param_groups:
                    group["lr"] = learning_rate(config.train, (epoch - 1) * len(batches) + step, epochs * len(batches))
                x, y = to_batch(images, masks, world.shard(batch), device, ignore)
                x, y = augment(x, y)
                try:
                    loss_sum, logits, y = train_step(net, optimizer, scaler, x, y, len(batch), device, dtype, world,
                                                     criterion)
                except FloatingPointError:
                    raise FloatingPointError(f"training diverged in epoch {epoch}, step {step + 1} (the loss is not "
                                             f"finite); the last good checkpoint in {run_dir} is intact. "
                                             "Try a lower --lr or --precision fp32.") from None
                state.step = step + 1
                state.loss_sum += loss_sum.item()
                labelled = y != IGNORE_INDEX
                state.correct += int((class_ids(logits) == y)[labelled].sum())
                state.seen += int(labelled.sum())
                bar.update()
                if state.step % 5 == 0 or state.step == len(batches):
                    bar.set_postfix(loss=f"{state.loss_sum / state.seen:.4f}",
                                    accuracy=f"{state.correct / state.seen:.4f}")
                if world.any(stop.requested):  # even after the last step: validation can wait for the resume
                    check_finite(model, epoch, run_dir)
                    state.loss_sum, state.correct, state.seen = world.sum(state.loss_sum, state.correct, state.seen)
                    save_last()
                    raise TrainingStopped(run_dir, epoch, state.step, len(batches))
            bar.close()

            loss_total, correct, seen = world.sum(state.loss_sum, state.correct, state.seen)
            row = {"epoch": epoch, "train_loss": loss_total / seen, "train_accuracy": correct / seen,
                   "val_loss": None, "val_accuracy": None, "val_miou": None, "lr": optimizer.param_groups[0]["lr"]}
            if len(val_idx):
                val_loss, cm = validate(model, images, masks, val_idx, batch_size, device, dtype, world, ignore)
                s = scores(cm)
                row.update(val_loss=val_loss, val_accuracy=s.pixel_accuracy, val_miou=s.miou)
            row["seconds"] = time.perf_counter() - started
            check_finite(model, epoch, run_dir)
            history.append(row)

            # Best by validation mIoU; without a validation split, by training loss.
            quality = row["val_miou"] if row["val_miou"] is not None else -row["train_loss"]
            state = Progress(epoch=epoch + 1, best=state.best, best_epoch=state.best_epoch, data=state.data)
            if world.is_main:  # history first: `last` may only point past rows that are on disk
                write_history(run_dir, history)
                if epoch == epochs or stop.requested or time.monotonic() - plotted >= CURVES_EVERY_S:
                    plot_history(history, run_dir / CURVES_FILE)
                    plotted = time.monotonic()
            if quality > state.best:
                state.best, state.best_epoch = quality, epoch
                if world.is_main:
                    checkpoint.save(run_dir / BEST, model, meta={"epoch": epoch})
            save_last()
            log(_epoch_line(row, epochs))
            if world.any(stop.requested) and epoch < epochs:
                raise TrainingStopped(run_dir, epoch + 1, 0, len(batches))
    best_row = next((row for row in history if row["epoch"] == state.best_epoch), None)
    return TrainResult(run_dir, history, state.best_epoch, best_row["val_miou"] if best_row else None)


def _epoch_line(row: dict, epochs: int) -> str:
    line = (f"epoch {row['epoch']:>3}/{epochs}  loss {row['train_loss']:.4f}  accuracy {row['train_accuracy']:.4f}")
    if row["val_miou"] is not None:
        line += f"  | val loss {row['val_loss']:.4f}  accuracy {row['val_accuracy']:.4f}  mIoU {row['val_miou']:.4f}"
    return line + f"  ({row['seconds']:.1f} s)"
