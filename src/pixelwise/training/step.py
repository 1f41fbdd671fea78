"""One optimiser step and one validation pass, and the pure functions of (seed, epoch, step) that
make a resumed run repeat what it repeats: learning rate, batch order, per-step seeds."""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import replace

import numpy as np
import torch

from ..config import TrainConfig
from ..data.transforms import to_batch
from ..device import autocast
from ..evaluation.metrics import class_ids, confusion_matrix
from ..model.unet import UNet, center_crop
from .distributed import World
from .losses import Criterion


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


def planned_epochs(train: TrainConfig, history: list[dict]) -> int:
    """The epochs the schedule spans: ``train.epochs``, or under ``train.time_limit`` as many of them as
    fit at the mean pace of the epochs done (never fewer than those). Re-planned after every epoch, so a
    machine that slows down gets fewer, and the cosine still decays to 0 at the end; a function of the
    history alone, so a resumed run plans as the interrupted one did."""
    if not train.time_limit or not history:
        return train.epochs
    pace = sum(row["seconds"] for row in history) / len(history)
    return max(len(history), min(train.epochs, int(train.time_limit * 60 / pace)))


def time_limit_plan(train: TrainConfig, seconds: float, epochs: int) -> str:
    """What ``train.time_limit`` will cut, said once the first epoch took ``seconds`` and the plan is
    ``epochs``: on a slower CPU the user learns at the start, not after the limit, that the run gets
    fewer epochs and how long all of them would take."""
    return (f"time limit: at {seconds:.0f} s an epoch, {epochs} of {train.epochs} epochs fit in "
            f"{train.time_limit:g} minutes and the schedule is fitted to them (planned again after every epoch); "
            f"train.time_limit 0 would train all {train.epochs} in about {seconds * train.epochs / 60:.0f} minutes")


def make_optimizer(model: torch.nn.Module, train: TrainConfig) -> torch.optim.Optimizer:
    """Adam or AdamW over all parameters. A pretrained encoder's parameters form a second group whose
    ``lr_scale`` (``train.encoder_lr``) multiplies the rate the schedule sets, at each step: the
    encoder already knows images and moves slower than the decoder that is learnt from scratch."""
    kind = torch.optim.AdamW if train.optimizer == "adamw" else torch.optim.Adam
    pretrained = getattr(getattr(model, "config", None), "encoder_weights", "none") != "none"
    if not (pretrained and train.encoder_lr != 1 and hasattr(model, "encoder_parameters")):
        return kind(model.parameters(), lr=train.lr, weight_decay=train.weight_decay)
    encoder = model.encoder_parameters()
    ids = {id(p) for p in encoder}
    groups = [{"params": [p for p in model.parameters() if id(p) not in ids], "lr_scale": 1.0},  # first: logged
              {"params": encoder, "lr_scale": train.encoder_lr}]
    optimizer = kind(groups, lr=train.lr, weight_decay=train.weight_decay)
    optimizer.register_step_pre_hook(lambda opt, *_: _scale_lr(opt, up=True))
    optimizer.register_step_post_hook(lambda opt, *_: _scale_lr(opt, up=False))
    return optimizer


def _scale_lr(optimizer: torch.optim.Optimizer, up: bool) -> None:
    """Apply each group's ``lr_scale`` for the step only, so ``group["lr"]`` stays the schedule's rate."""
    for group in optimizer.param_groups:
        scale = group.get("lr_scale", 1.0)
        group["lr"] = group["lr"] * scale if up else group["lr"] / scale


def step_seed(seed: int, epoch: int, step: int, rank: int) -> int:
    """Seed of the random draws (dropout) of one step on one rank: each rank draws its own masks, and a
    resumed run, on any number of processes, repeats the draws of the steps it repeats."""
    return int(np.random.SeedSequence([seed, epoch, step, rank]).generate_state(1)[0])


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The shuffled order of one epoch, a function of (seed, epoch) alone so a resumed run repeats it."""
    return np.random.default_rng([seed, epoch]).permutation(n)


def in_batches(order: np.ndarray, batch_size: int) -> Iterator[np.ndarray]:
    """``order`` cut into consecutive batches of ``batch_size`` (the last one may be shorter)."""
    for start in range(0, len(order), batch_size):
        yield order[start:start + batch_size]


def step_timer(model: torch.nn.Module, train: TrainConfig, criterion: Criterion, x: torch.Tensor, y: torch.Tensor,
               device: torch.device, world: World) -> Callable[[torch.dtype | None], float]:
    """Seconds one training step on ``x, y`` takes in a given precision, summed over the ranks so that
    all of them choose alike. It steps a copy of ``model`` at a negligible learning rate: the run's
    weights and optimiser stay as they are, and a rate that would diverge is left for the run to report."""
    probe = copy.deepcopy(model)
    optimizer = make_optimizer(probe, replace(train, lr=1e-12))
    scaler = torch.amp.GradScaler(device.type, enabled=False)

    def time_step(dtype: torch.dtype | None) -> float:
        started = time.perf_counter()
        train_step(probe, optimizer, scaler, x, y, len(x), device, dtype, criterion=criterion)
        return world.sum(time.perf_counter() - started)[0]
    return time_step


@torch.no_grad()
def validate(model: UNet, images: np.ndarray, masks: np.ndarray, index: np.ndarray, batch_size: int,
             device: torch.device, dtype: torch.dtype | None, world: World = World(),
             ignore_index: int | None = None, criterion: Criterion = Criterion(),
             on_predicted: Callable[[np.ndarray, torch.Tensor], None] | None = None) -> tuple[float, torch.Tensor]:
    """The run's loss (``criterion``, as in training) and the confusion matrix over the pairs at
    ``index``, each rank scoring its share and the sums reduced over all ranks, so the mIoU is exact.
    ``on_predicted`` is given each batch's indices and predicted class ids (the frames TensorBoard shows).

    The loss is the mean over images of each batch's ``criterion`` value: the objective training
    optimises, measured on held-out pairs (its Dice term, a per-batch mean, depends on the batch)."""
    model.eval()
    n_classes = model.config.n_classes
    cm = torch.zeros(n_classes, n_classes, dtype=torch.int64, device=device)
    loss_sum, n_images = 0.0, 0
    for batch in in_batches(world.shard(index), batch_size):
        x, y = to_batch(images, masks, batch, device, ignore_index)
        with autocast(device, dtype):
            logits = model(x)
        y = center_crop(y, logits.shape[-2:])
        loss_sum += criterion(logits, y, len(batch) * logits.shape[-2] * logits.shape[-1]).item() * len(batch)
        n_images += len(batch)
        predicted = class_ids(logits)
        cm += confusion_matrix(predicted, y, n_classes)
        if on_predicted is not None:
            on_predicted(batch, predicted)
    loss_sum, n_images = world.sum(loss_sum, n_images)
    return loss_sum / max(n_images, 1), world.sum_tensor(cm).cpu()


def train_step(net: torch.nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
               x: torch.Tensor, y: torch.Tensor, global_batch: int, device: torch.device, dtype: torch.dtype | None,
               world: World = World(), criterion: Criterion = Criterion()) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One optimiser step on this rank's share ``x, y`` of a global batch of ``global_batch`` images.
    Returns (this rank's ``criterion`` value, the objective minimised; logits; masks cropped to the
    logits): DDP's gradient is that of the ranks' mean value. A non-finite loss raises
    FloatingPointError on every rank before any weight changes."""
    with autocast(device, dtype):
        logits = net(x)
    y = center_crop(y, logits.shape[-2:])
    # Normalised so that DDP's mean over ranks is the mean over the whole global batch (a rank whose
    # share of a short last batch is empty still takes part, with a zero gradient).
    loss = criterion(logits, y, global_batch * logits.shape[-2] * logits.shape[-1] / world.size)
    if world.any(not torch.isfinite(loss).item()):
        raise FloatingPointError("the loss is not finite")
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return loss.detach(), logits.detach(), y
