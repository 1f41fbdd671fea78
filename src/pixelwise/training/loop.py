"""The training loop: decode once, split by drive, train with the run's recipe, validate, checkpoint.

A run directory holds everything: ``config.json``, ``last``/``best`` checkpoints, ``history.csv``
and ``curves.png``. ``last`` is written after every epoch and when training is asked to stop
(Ctrl-C, SIGTERM), and holds everything needed to continue exactly: ``resume=True`` picks up at the
step where the run stopped. Under ``torchrun`` the same loop runs data-parallel (see distributed.py).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from ..allocator import keep_freed_memory
from ..config import RunConfig, TrainConfig
from ..data.cache import default_cache_dir
from ..data.official import OfficialSplit
from ..data.transforms import IGNORE_INDEX, to_batch
from ..device import PRECISION_STORE
from ..evaluation.metrics import class_ids, scores
from ..model.build import build_model
from ..files import remove_leftover_temps
from ..resume import run_config
from ..rundir import (
    BEST,
    CURVES_FILE,
    LAST,
    TRAINING_FILES,
    RunDirError,
    read_history,
    save_config,
    write_history,
)
from ..rundir_lock import hold_run
from . import checkpoint
from .augment import training_transform
from .averaging import WeightAverage
from .checks import check_finite, check_memory, check_trainable
from .curves import Curves
from .distributed import World, close_world, init_world
from .hooks import Hooks
from .init_run import load_init, plan_init
from .losses import Criterion, make_criterion
from .precision import Precisions, choose_precisions
from .prepare import prepare_data, split_fingerprint
from .step import (
    in_batches,
    epoch_order,
    learning_rate,
    make_optimizer,
    planned_epochs,
    step_seed,
    time_limit_plan,
    train_step,
    validate,
)
from .stop import StopRequest, TrainingStopped
from .tracking import Frames, Tracking, learning_rates, open_tracking, pick_frames, require_mlflow


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
    loss_sum: float = 0.0  # the epoch's partial sums so far (over all ranks): each step's loss times its images,
    loss_images: int = 0  # those images,
    correct: int = 0  # the labelled pixels predicted right
    seen: int = 0  # and the labelled pixels
    best: float = -math.inf  # best validation mIoU (or minus the training loss without validation)
    best_epoch: int = 0
    stale: int = 0  # validations in a row without a better best: what train.patience counts
    data: str = ""  # fingerprint of the split: resuming on other data would not continue this run


@dataclass
class _Session:
    """Everything one training run works with, built once by :func:`_set_up`."""

    config: RunConfig
    run_dir: Path
    world: World
    device: torch.device
    precisions: Precisions  # of the training steps and of validation
    images: np.ndarray
    masks: np.ndarray
    train_idx: np.ndarray
    val_idx: np.ndarray
    model: torch.nn.Module
    net: torch.nn.Module  # the model, or its DistributedDataParallel wrapper
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    criterion: Criterion
    augment: Callable
    average: WeightAverage | None  # with ``train.ema``
    fingerprint: str
    progress: bool
    log: Callable[[str], None]
    hooks: Hooks
    tracking: Tracking = field(default_factory=Tracking)  # opened once the progress to continue from is known

    @property
    def evaluated(self) -> torch.nn.Module:
        """The weights that are validated and saved as ``best``/``last``: the average, where there is one."""
        return self.average.model if self.average else self.model

    @property
    def trained(self) -> torch.nn.Module | None:
        """The weights training continues from, where they are not those saved (``train.ema``)."""
        return self.model if self.average else None

    def save_last(self, state: Progress) -> None:
        if self.world.is_main:
            checkpoint.save(self.run_dir / LAST, self.evaluated, self.optimizer,
                            {"progress": asdict(state), "precision": self.precisions.record(self.device),
                             **self.tracking.meta()},
                            self.scaler, trained=self.trained)


def train(images_dir: str | Path, masks_dir: str | Path, run_dir: str | Path, config: RunConfig | None = None, *,
          resume: bool = False, skip_invalid: bool = False, cache_dir: Path | None = None, progress: bool = True,
          log: Callable[[str], None] = print, official: OfficialSplit | None = None,
          hooks: Hooks = Hooks(), mlflow: str | None = None) -> TrainResult:
    """Train a U-Net on the pairs in ``images_dir``/``masks_dir`` into ``run_dir``, validating on
    held-out drives, or on ``official``'s validation folder or list.

    Without ``resume``, ``config`` defaults to the default recipe and ``run_dir`` must not hold a run.
    With ``resume``, training continues where ``last`` was saved, with the run's own config.json:
    ``config`` may change the epoch count and time limit and nothing else (a change is refused, naming
    the settings). Raises TrainingStopped after a Ctrl-C/SIGTERM, with everything saved. Started by
    ``torchrun``, each process runs this and they train one model data-parallel. ``hooks`` are the
    seams to watch or steer the run from outside (its clock, the curves, per-batch and per-validation
    callbacks). TensorBoard's event files go to ``run_dir/tb`` where the tensorboard package is
    installed; ``mlflow`` (a tracking URI such as ``file:./mlruns``) also logs the run to MLflow, where a
    resumed run continues the same MLflow run (training/tracking). Training stops early after
    ``train.patience`` validations without a better mIoU.
    """
    keep_freed_memory()  # glibc would hand large blocks back and fault them in again at every step (allocator.py)
    world = init_world()
    together = False  # all ranks reach the end (or a requested stop) at once
    try:
        with hold_run(run_dir, world.is_main, world.any):  # one writer per run, from the first check on
            result = _train(world, Path(images_dir), Path(masks_dir), Path(run_dir), config, resume=resume,
                            skip_invalid=skip_invalid, cache_dir=cache_dir, progress=progress and world.is_main,
                            log=log if world.is_main else (lambda _: None), official=official, hooks=hooks,
                            mlflow=mlflow)
        together = True
        return result
    except (TrainingStopped, FloatingPointError):  # every rank stops or diverges at the same step
        together = True
        raise
    finally:
        close_world(world, together)


def _train(world: World, images_dir: Path, masks_dir: Path, run_dir: Path, config: RunConfig | None, *,
           resume: bool, skip_invalid: bool, cache_dir: Path | None, progress: bool,
           log: Callable[[str], None], official: OfficialSplit | None, hooks: Hooks, mlflow: str | None
           ) -> TrainResult:
    config = run_config(run_dir, config, resume)
    if mlflow and world.is_main:
        require_mlflow(mlflow)
    if world.is_main:
        _remove_leftovers(run_dir, log)
    run = _set_up(world, images_dir, masks_dir, run_dir, config, skip_invalid=skip_invalid, cache_dir=cache_dir,
                  progress=progress, log=log, official=official, hooks=hooks)
    state, history = _restore(run) if resume else (Progress(data=run.fingerprint), [])
    if world.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(run_dir, config)
    if not resume:  # from the start on, a run directory can always be resumed, whenever it is killed
        run.save_last(state)
    run.tracking = _open_tracking(run, state, mlflow)
    finished = False
    try:
        with StopRequest(log) as stop:
            state = _train_epochs(run, state, history, stop)
        finished = True
    finally:
        run.tracking.close(finished)
    stopped_early = _out_of_patience(config.train, state)
    if config.train.time_limit and len(history) < config.train.epochs and not stopped_early:
        log(f"time limit: {len(history)} of {config.train.epochs} epochs fit in {config.train.time_limit:g} minutes "
            f"({sum(row['seconds'] for row in history) / 60:.1f} min taken)"
            + ("; the schedule decayed over those" if config.train.schedule != "constant" else ""))
    best_row = next((row for row in history if row["epoch"] == state.best_epoch), None)
    return TrainResult(run_dir, history, state.best_epoch, best_row["val_miou"] if best_row else None)


def _open_tracking(run: _Session, state: Progress, mlflow: str | None) -> Tracking:
    """TensorBoard (and MLflow, given a URI) for this session, from the step after ``state`` on; the
    main process alone reports."""
    if not run.world.is_main:
        return Tracking()
    steps = math.ceil(len(run.train_idx) / run.config.train.batch_size)
    frames = Frames(run.images, run.masks, pick_frames(run.world.shard(run.val_idx)))  # frames this process predicts
    return open_tracking(run.run_dir, run.config, (state.epoch - 1) * steps + state.step + 1, frames, mlflow=mlflow,
                         saved=checkpoint.read_meta(run.run_dir / LAST), log=run.log)


def _remove_leftovers(run_dir: Path, log: Callable[[str], None]) -> None:
    """Remove the temporary files of saves that were killed mid-write (only the run's own files' temporary
    names: nothing else in the folder is touched). Called under the run's lock, so no save is under way."""
    removed = remove_leftover_temps(run_dir, TRAINING_FILES)
    if removed:
        log(f"{run_dir}: removed {len(removed)} temporary file(s) left by an interrupted save "
            f"({', '.join(sorted(p.name for p in removed))})")


def _train_epochs(run: _Session, state: Progress, history: list[dict], stop: StopRequest) -> Progress:
    """Train epoch after epoch, appending to ``history`` and saving after each, until the plan (made
    again after every epoch) is done; returns the progress at the end. A stop request between epochs
    raises TrainingStopped."""
    curves = Curves(run.run_dir / CURVES_FILE, run.hooks.plot, run.hooks.clock, run.hooks.curves_every_s)
    epoch, epochs = state.epoch, planned_epochs(run.config.train, history)
    while epoch <= epochs and not _out_of_patience(run.config.train, state):
        started = run.hooks.clock()
        steps = _train_epoch(run, state, epoch, epochs, stop)
        epochs = _finish_epoch(run, state, epoch, epochs, history, started)
        state = _save_epoch(run, state, history, curves, final=epoch == epochs or stop.requested)
        run.tracking.epoch(epoch * steps, history[-1])
        run.log(_epoch_line(history[-1], epochs))
        if epoch == 1 and epochs < run.config.train.epochs:  # said once, as soon as the pace is known
            run.log(time_limit_plan(run.config.train, history[0]["seconds"], epochs))
        if run.world.any(stop.requested) and epoch < epochs:
            raise TrainingStopped(run.run_dir, epoch + 1, 0, steps)
        epoch += 1
    if _out_of_patience(run.config.train, state) and state.epoch <= epochs:  # before the planned end
        run.log(f"early stop after epoch {state.epoch - 1}: no better validation in the last {state.stale} "
                f"(train.patience {run.config.train.patience}); best.safetensors is epoch {state.best_epoch}'s")
    return state


def _out_of_patience(config: TrainConfig, state: Progress) -> bool:
    return bool(config.patience) and state.stale >= config.patience


def _finish_epoch(run: _Session, state: Progress, epoch: int, epochs: int, history: list[dict], started: float
                  ) -> int:
    """Append the epoch's row to ``history``, validating when due, and return the epochs the plan now
    spans. The row's seconds count from the epoch's first step to its validation's end."""
    clock, config = run.hooks.clock, run.config.train
    row = _epoch_row(run, state, epoch)
    if epoch % config.val_every == 0 or epoch >= epochs:
        row.update(_validation(run, epoch))
    row["seconds"] = _seconds_since(started, run.world, clock)
    check_finite(run.model, epoch, run.run_dir)
    history.append(row)
    epochs = planned_epochs(config, history)
    if epoch == epochs and row["val_miou"] is None:  # the time limit made this epoch the last
        started = clock()
        row.update(_validation(run, epoch))
        row["seconds"] += _seconds_since(started, run.world, clock)
    return epochs


def _save_epoch(run: _Session, state: Progress, history: list[dict], curves: Curves, final: bool) -> Progress:
    """Save the epoch just finished (the last row of ``history``): history.csv, curves.png when due,
    ``best`` when it is the best so far and ``last``; returns the progress to continue from."""
    row = history[-1]
    epoch = row["epoch"]
    # Best by validation mIoU (among the epochs validated); without a validation split, by training loss.
    quality = row["val_miou"] if len(run.val_idx) else -row["train_loss"]
    better = quality is not None and quality > state.best
    state = Progress(epoch=epoch + 1, best=state.best, best_epoch=state.best_epoch, data=state.data,
                     stale=0 if better else state.stale + (quality is not None))
    row["stale"] = state.stale
    if run.world.is_main:  # history first: `last` may only point past rows that are on disk
        write_history(run.run_dir, history)
        curves.update(history, final or _out_of_patience(run.config.train, state))
    if better:
        state.best, state.best_epoch = quality, epoch
        if run.world.is_main:
            checkpoint.save(run.run_dir / BEST, run.evaluated, meta={"epoch": epoch})
    run.save_last(state)
    return state


def _seconds_since(started: float, world: World, clock: Callable[[], float]) -> float:
    """The ranks' mean, so that every rank plans the same epochs from its history."""
    return world.sum(clock() - started)[0] / world.size


def _set_up(world: World, images_dir: Path, masks_dir: Path, run_dir: Path, config: RunConfig, *,
            skip_invalid: bool, cache_dir: Path | None, progress: bool, log: Callable[[str], None],
            official: OfficialSplit | None, hooks: Hooks) -> _Session:
    """Check the settings, decode the data, build the model, optimiser, objective and augmentation."""
    pretrained = not (run_dir / LAST).exists()  # a resumed run: its checkpoint holds every weight
    check_trainable(config, pretrained)
    init = plan_init(config) if pretrained and config.train.init else None  # refused here, before any decoding
    check_memory(config, world.device())
    if config.train.batch_size < world.size:
        raise ValueError(f"batch size {config.train.batch_size} is smaller than the {world.size} processes sharing "
                         "each batch")
    cache_dir = default_cache_dir() if cache_dir is None else cache_dir
    # Every rank decodes (the cache makes the others cheap) so a data error stops all of them alike.
    decoded, split = prepare_data(images_dir, masks_dir, config, skip_invalid=skip_invalid, cache_dir=cache_dir,
                                  progress=progress, log=log, official=official)
    train_idx, val_idx = np.asarray(split.train, dtype=np.int64), np.asarray(split.val, dtype=np.int64)
    device = world.device()
    torch.manual_seed(config.train.seed)  # the same initial weights on every rank
    model = build_model(config.model, pretrained and init is None)
    if init is not None:
        load_init(model, init)
        log(init.describe())
    model = model.to(device, memory_format=torch.channels_last)
    criterion = make_criterion(config, decoded.masks, train_idx)
    recorded = None if pretrained else checkpoint.read_meta(run_dir / LAST).get("precision")
    precisions = choose_precisions(config, model, criterion, device, world, len(val_idx), cache_dir / PRECISION_STORE,
                                   recorded)
    net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None) \
        if world.distributed else model
    procs = f" x {world.size} processes" if world.distributed else ""
    log(f"{len(train_idx)} training and {len(val_idx)} validation pairs at {config.data.size[0]}x{config.data.size[1]}"
        f" on {device.type}{procs} ({precisions.describe()})")
    return _Session(
        config, run_dir, world, device, precisions, decoded.images, decoded.masks, train_idx, val_idx, model, net,
        optimizer=make_optimizer(model, config.train),
        scaler=torch.amp.GradScaler(device.type, enabled=precisions.train == torch.float16),
        criterion=criterion,
        augment=training_transform(config.data.augment, config.data.size, config.data.crop_size(config.model.step),
                                   config.data.class_crops, config.data.paste),
        average=WeightAverage(model, config.train.ema) if config.train.ema else None,
        fingerprint=split_fingerprint(decoded.names, split), progress=progress, log=log, hooks=hooks)


def _restore(run: _Session) -> tuple[Progress, list[dict]]:
    """The weights, optimiser, scaler and progress saved in ``last``, and the history up to it."""
    meta = checkpoint.load(run.run_dir / LAST, run.evaluated, run.optimizer, run.scaler, trained=run.trained)
    state = Progress(**meta["progress"])
    if "loss_images" not in meta["progress"]:  # saved when the logs held cross-entropy: not the loss logged now
        state.loss_sum = 0.0  # so this epoch's loss counts the steps from here on
    if state.data != run.fingerprint:
        raise RunDirError(f"{run.run_dir}: the training data or its split changed since this run started, so it "
                          "cannot be continued exactly; train a new run with another run_dir")
    if not run.world.is_main:  # the partial sums saved are totals over all ranks: count them once
        state.loss_sum, state.loss_images, state.correct, state.seen = 0.0, 0, 0, 0
    history = read_history(run.run_dir)[: state.epoch - 1]
    if state.epoch > planned_epochs(run.config.train, history):
        limit = " that fit its train.time_limit" if len(history) < run.config.train.epochs else ""
        run.log(f"{run.run_dir}: all {len(history)} epochs{limit} already done; pass a larger train.epochs "
                f"{'or train.time_limit ' if limit else ''}to train on")
    return state, history


def _train_epoch(run: _Session, state: Progress, epoch: int, epochs: int, stop: StopRequest) -> int:
    """The steps of one epoch of ``epochs`` from ``state.step`` on, updating ``state``; returns the
    epoch's step count.
    A stop request saves ``last`` after the current step and raises TrainingStopped."""
    config, world = run.config.train, run.world
    order = run.train_idx[epoch_order(len(run.train_idx), config.seed, epoch)]
    batches = list(in_batches(order, config.batch_size))
    run.net.train()
    bar = tqdm(total=len(batches), initial=state.step, desc=f"epoch {epoch}/{epochs}", unit="batch",
               disable=None if run.progress else True, leave=False, dynamic_ncols=True)
    for step in range(state.step, len(batches)):
        began = time.perf_counter()  # the step's time, for TensorBoard (epochs are timed with hooks.clock)
        batch = batches[step]
        torch.manual_seed(step_seed(config.seed, epoch, step, world.rank))
        done = (epoch - 1) * len(batches) + step  # steps of the run before this one
        for group in run.optimizer.param_groups:
            group["lr"] = learning_rate(config, done, epochs * len(batches))
        x, y = to_batch(run.images, run.masks, world.shard(batch), run.device, config.ignore_index)
        x, y = run.augment(x, y)
        run.hooks.on_batch(epoch, step, x, y)
        try:
            loss, logits, y = train_step(run.net, run.optimizer, run.scaler, x, y, len(batch), run.device,
                                             run.precisions.train, world, run.criterion)
        except FloatingPointError:
            raise FloatingPointError(f"training diverged in epoch {epoch}, step {step + 1} (the loss is not "
                                     f"finite); the last good checkpoint in {run.run_dir} is intact. "
                                     "Try a lower train.lr or train.precision fp32.") from None
        if run.average:
            run.average.update(run.model, done)
        state.step = step + 1
        step_loss = loss.item()
        state.loss_sum += step_loss * len(batch)  # weighted by the batch's images; over the ranks, their mean
        state.loss_images += len(batch)
        labelled = y != IGNORE_INDEX
        state.correct += int((class_ids(logits) == y)[labelled].sum())
        state.seen += int(labelled.sum())
        bar.update()
        run.tracking.step(done + 1, step_loss, learning_rates(run.optimizer), time.perf_counter() - began)
        if state.step % 5 == 0 or state.step == len(batches):
            bar.set_postfix(loss=f"{state.loss_sum / state.loss_images:.4f}",
                            accuracy=f"{state.correct / max(state.seen, 1):.4f}")
        if world.any(stop.requested):  # even after the last step: validation can wait for the resume
            check_finite(run.model, epoch, run.run_dir)
            state.loss_sum, state.loss_images, state.correct, state.seen = world.sum(
                state.loss_sum, state.loss_images, state.correct, state.seen)
            run.save_last(state)
            raise TrainingStopped(run.run_dir, epoch, state.step, len(batches))
    bar.close()
    return len(batches)


def _epoch_row(run: _Session, state: Progress, epoch: int) -> dict:
    """The epoch's line of history.csv, from the training sums over all ranks; validation is added by
    :func:`_validation` on the epochs that validate. ``train_loss`` is the loss being optimised (the run's
    ``loss`` with its class weights), a mean over the epoch's images."""
    loss_total, images, correct, seen = run.world.sum(state.loss_sum, state.loss_images, state.correct, state.seen)
    return {"epoch": epoch, "train_loss": loss_total / images if images else math.nan,
            "train_accuracy": correct / seen if seen else math.nan,
            "val_loss": None, "val_accuracy": None, "val_miou": None, "lr": run.optimizer.param_groups[0]["lr"]}


def _validation(run: _Session, epoch: int) -> dict:
    """Validation loss (the training objective, see :func:`validate`), pixel accuracy and mIoU over all
    ranks; nothing without a validation split. Validation costs a noticeable share of an epoch at full
    resolution (docs/benchmarks.md): hence ``val_every``."""
    if not len(run.val_idx):
        return {}
    val_loss, cm = validate(run.evaluated, run.images, run.masks, run.val_idx, run.config.train.batch_size,
                            run.device, run.precisions.validate, run.world, run.config.train.ignore_index,
                            run.criterion, on_predicted=run.tracking.predicted)
    s = scores(cm)
    run.tracking.validated(s.iou)
    row = {"val_loss": val_loss, "val_accuracy": s.pixel_accuracy, "val_miou": s.miou}
    run.hooks.on_validation(epoch, dict(row))
    return row


def _epoch_line(row: dict, epochs: int) -> str:
    line = (f"epoch {row['epoch']:>3}/{epochs}  loss {row['train_loss']:.4f}  accuracy {row['train_accuracy']:.4f}")
    if row["val_miou"] is not None:
        line += f"  | val loss {row['val_loss']:.4f}  accuracy {row['val_accuracy']:.4f}  mIoU {row['val_miou']:.4f}"
    return line + f"  ({row['seconds']:.1f} s)"
