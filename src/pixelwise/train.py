"""The training loop: decode once, split by drive, train with the run's recipe, validate, checkpoint.

A run directory holds everything: ``config.json``, ``last``/``best`` checkpoints, ``history.csv``
and ``curves.png``. ``last`` is written after every epoch and when training is asked to stop
(Ctrl-C, SIGTERM), and holds everything needed to continue exactly: ``resume=True`` picks up at the
step where the run stopped. Under ``torchrun`` the same loop runs data-parallel (see distributed.py).
"""

from __future__ import annotations

import csv
import hashlib
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from . import checkpoint
from .augment import training_transform
from .config import RunConfig, TrainConfig
from .data import DataError, Decoded, Split, decode_dataset, default_cache_dir, split_by_runs
from .device import autocast, available_memory, precision_name, resolve_precision
from .distributed import World, close_world, init_world
from .files import atomic_write_text
from .losses import IGNORE_INDEX, Criterion, class_weights
from .metrics import class_ids, confusion_matrix, scores
from .model import UNet, center_crop, meta_unet
from .recipes import DEFAULT_RECIPE, recipe
from .viz import plot_history

HISTORY_FILE = "history.csv"
CURVES_FILE = "curves.png"
# The plot is only a view of history.csv, and drawing it took 0.3 s: 6% of a 96x128 epoch on 2 cores.
CURVES_EVERY_S = 30.0
HISTORY_FIELDS = ("epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "val_miou", "lr", "seconds")


class RunDirError(Exception):
    """The run directory cannot be used as asked (it would overwrite work, or holds nothing to resume)."""


class TrainingStopped(Exception):
    """Training was asked to stop (Ctrl-C, SIGTERM) and saved its progress in ``last``."""

    def __init__(self, run_dir: Path, epoch: int, step: int, steps: int):
        self.run_dir, self.epoch, self.step, self.steps = run_dir, epoch, step, steps
        where = f"after step {step} of {steps} in epoch {epoch}" if step else f"after epoch {epoch - 1}"
        super().__init__(f"stopped {where}; progress saved in {run_dir / checkpoint.LAST}")


class StopRequest:
    """Ctrl-C or SIGTERM asks training to finish the current step, save and stop; a second Ctrl-C
    stops at once (the last saved checkpoint stays intact)."""

    def __init__(self, log: Callable[[str], None]):
        self.requested = False
        self._log = log
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, _frame) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        self._log(f"\n{signal.Signals(signum).name}: finishing this step, then saving and stopping "
                  "(Ctrl-C again stops at once)")

    def __exit__(self, *_exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def to_batch(images: np.ndarray, masks: np.ndarray | None, index: np.ndarray, device: torch.device,
             ignore_index: int | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """uint8 NHWC arrays (in memory or memory-mapped) → float NCHW in [0, 1], channels-last in memory,
    and class ids with the run's ignored class marked IGNORE_INDEX. Only the batch is read, so a
    dataset larger than RAM trains in bounded memory."""
    x = torch.from_numpy(images[index]).to(device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255)
    if masks is None:
        return x, None
    y = torch.from_numpy(masks[index]).to(device, non_blocking=True).long()
    if ignore_index is not None:
        y[y == ignore_index] = IGNORE_INDEX
    return x, y


def learning_rate(train: TrainConfig, step: int, total: int) -> float:
    """The learning rate of global step ``step`` of ``total``: a function of the step alone, so a
    resumed run needs no scheduler state (raising --epochs on resume re-stretches the decay)."""
    warmup = round(train.warmup * total)
    if step < warmup:
        return train.lr * (step + 1) / warmup
    if train.schedule == "constant":
        return train.lr
    progress = (step - warmup) / max(total - warmup, 1)
    return train.lr * 0.5 * (1 + math.cos(math.pi * progress))


def pixel_counts(masks: np.ndarray, index: np.ndarray, n_classes: int, chunk: int = 64) -> np.ndarray:
    """Pixels per class over the masks at ``index``, read a chunk at a time (masks may be memory-mapped)."""
    counts = np.zeros(n_classes, dtype=np.int64)
    for start in range(0, len(index), chunk):
        counts += np.bincount(masks[np.sort(index[start:start + chunk])].ravel(), minlength=n_classes)[:n_classes]
    return counts


def make_criterion(config: RunConfig, masks: np.ndarray, train_idx: np.ndarray) -> Criterion:
    """The run's objective; class weights come from the training masks (never the validation ones)."""
    if config.train.class_weights == "none":
        return Criterion(config.train.loss)
    counts = pixel_counts(masks, train_idx, config.model.n_classes)
    if config.train.ignore_index is not None:
        counts[config.train.ignore_index] = 0
    return Criterion(config.train.loss, class_weights(counts))


def make_optimizer(model: torch.nn.Module, train: TrainConfig) -> torch.optim.Optimizer:
    kind = torch.optim.AdamW if train.optimizer == "adamw" else torch.optim.Adam
    return kind(model.parameters(), lr=train.lr, weight_decay=train.weight_decay)


def step_seed(seed: int, epoch: int, step: int, rank: int) -> int:
    """Seed of the random draws (dropout) of one step on one rank: each rank draws its own masks, and a
    resumed run, on any number of processes, repeats the draws of the steps it repeats."""
    return int(np.random.SeedSequence([seed, epoch, step, rank]).generate_state(1)[0])


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The shuffled order of one epoch, a function of (seed, epoch) alone so a resumed run repeats it."""
    return np.random.default_rng([seed, epoch]).permutation(n)


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


def _batches(order: np.ndarray, batch_size: int) -> Iterator[np.ndarray]:
    for start in range(0, len(order), batch_size):
        yield order[start:start + batch_size]


@torch.no_grad()
def validate(model: UNet, images: np.ndarray, masks: np.ndarray, index: np.ndarray, batch_size: int,
             device: torch.device, dtype: torch.dtype | None, world: World = World(),
             ignore_index: int | None = None) -> tuple[float, torch.Tensor]:
    """Mean per-pixel cross-entropy and the confusion matrix over the pairs at ``index``, each rank
    scoring its share and the sums reduced over all ranks, so the mIoU is exact."""
    model.eval()
    n_classes = model.config.n_classes
    cm = torch.zeros(n_classes, n_classes, dtype=torch.int64, device=device)
    loss_sum, pixels = 0.0, 0
    for batch in _batches(world.shard(index), batch_size):
        x, y = to_batch(images, masks, batch, device, ignore_index)
        with autocast(device, dtype):
            logits = model(x)
        y = center_crop(y, logits.shape[-2:])
        loss_sum += F.cross_entropy(logits.float(), y, reduction="sum", ignore_index=IGNORE_INDEX).item()
        pixels += int((y != IGNORE_INDEX).sum())
        cm += confusion_matrix(class_ids(logits), y, n_classes)
    loss_sum, pixels = world.sum(loss_sum, pixels)
    return loss_sum / max(pixels, 1), world.sum_tensor(cm).cpu()


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
    split = split_by_runs(decoded.names, config.data.val_fraction, config.data.split_seed)
    return decoded, split


def check_trainable(config: RunConfig) -> None:
    """Refuse, before any decoding, a training size the network cannot take or non-RGB input."""
    model, (h, w) = config.model, config.data.size
    if model.in_channels != 3:
        raise ValueError(f"training reads RGB images, so the model needs in_channels=3, not {model.in_channels}")
    hints = model.size_hints(h, w)
    if hints:
        raise ValueError(f"--size {h}x{w} does not fit this U-Net: {'; '.join(hints)}")
    ch, cw = config.data.crop_size(model.step)
    if config.data.crop < 1 and (ch, cw) == (h, w):
        raise ValueError(f"--crop {config.data.crop} rounds to the whole {h}x{w} image (crops are multiples of "
                         f"{model.step}); choose a smaller --crop")
    if config.data.class_crops > 0 and config.data.crop == 1 and config.data.augment != "full":
        raise ValueError("--class-crops places crops smaller than the image, so it needs --crop below 1 "
                         "or --augment full (whose zoom crops)")
    hints = model.size_hints(ch, cw)
    if hints:
        raise ValueError(f"--crop {config.data.crop} gives {ch}x{cw} crops, which do not fit this U-Net: "
                         f"{'; '.join(hints)}; choose another --crop")


def check_memory(config: RunConfig, device: torch.device) -> None:
    """Refuse, before any allocation, a network whose weights, gradients and Adam state alone exceed
    the memory free on ``device``: a typo in --filters would otherwise get the process killed without
    a word."""
    try:
        parameters = sum(p.numel() for p in meta_unet(config.model).parameters())
    except ValueError as exc:
        raise ValueError(f"this U-Net cannot be built ({exc})") from None
    need, free = 16 * parameters, available_memory(device)  # four fp32 copies: weights, gradients, 2 moments
    if free is not None and need > free:
        raise ValueError(f"a U-Net of {config.model.n_filters} base filters has {parameters:,} parameters, whose "
                         f"weights, gradients and optimiser state need {need / 2**30:,.1f} GiB, more than the "
                         f"{free / 2**30:,.1f} GiB free on {device.type}; choose fewer --filters")


def check_finite(model: torch.nn.Module, epoch: int, run_dir: Path) -> None:
    """Refuse to save weights that are no longer finite (a loss can stay finite for the step that broke them)."""
    if not all(torch.isfinite(p).all() for p in model.parameters()):
        raise FloatingPointError(f"training diverged in epoch {epoch} (the weights are no longer finite); "
                                 f"the last good checkpoint in {run_dir} is intact. Try a lower --lr.")


def train_step(net: torch.nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
               x: torch.Tensor, y: torch.Tensor, global_batch: int, device: torch.device, dtype: torch.dtype | None,
               world: World = World(), criterion: Criterion = Criterion()) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One optimiser step on this rank's share ``x, y`` of a global batch of ``global_batch`` images.
    Returns (summed cross-entropy, logits, masks cropped to the logits). A non-finite loss raises
    FloatingPointError on every rank before any weight changes."""
    with autocast(device, dtype):
        logits = net(x)
    y = center_crop(y, logits.shape[-2:])
    # Normalised so that DDP's mean over ranks is the mean over the whole global batch (a rank whose
    # share of a short last batch is empty still takes part, with a zero gradient).
    loss, ce_sum = criterion(logits, y, global_batch * logits.shape[-2] * logits.shape[-1] / world.size)
    if world.any(not (torch.isfinite(ce_sum).item() and torch.isfinite(loss).item())):
        raise FloatingPointError("the loss is not finite")
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return ce_sum, logits.detach(), y


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
        if not (run_dir / checkpoint.LAST).exists():
            raise RunDirError(f"{run_dir}: nothing to resume (no {checkpoint.LAST})")
        saved = RunConfig.load(run_dir)
        config = saved.with_train(epochs=config.train.epochs) if config is not None else saved
    else:
        if (run_dir / checkpoint.LAST).exists():
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
        meta = checkpoint.load(run_dir / checkpoint.LAST, model, optimizer, scaler)
        saved_state = Progress(**meta["progress"])
        if saved_state.data != state.data:
            raise RunDirError(f"{run_dir}: the training data or its split changed since this run started, so it "
                              "cannot be continued exactly; train a new run with another --out")
        state = saved_state
        if not world.is_main:  # the partial sums saved are totals over all ranks: count them once
            state.loss_sum, state.correct, state.seen = 0.0, 0, 0
        history = _read_history(run_dir)[: state.epoch - 1]
        if state.epoch > epochs:
            log(f"{run_dir}: all {epochs} epochs already done; pass a larger --epochs to train on")
    if world.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        config.save(run_dir)

    def save_last() -> None:
        if world.is_main:
            checkpoint.save(run_dir / checkpoint.LAST, model, optimizer, {"progress": asdict(state)}, scaler)

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
                _write_history(run_dir, history)
                if epoch == epochs or stop.requested or time.monotonic() - plotted >= CURVES_EVERY_S:
                    plot_history(history, run_dir / CURVES_FILE)
                    plotted = time.monotonic()
            if quality > state.best:
                state.best, state.best_epoch = quality, epoch
                if world.is_main:
                    checkpoint.save(run_dir / checkpoint.BEST, model, meta={"epoch": epoch})
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
