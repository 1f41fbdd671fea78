"""The precisions a run trains and validates in, chosen so that the same run gives the same weights:
by name, by rule, as recorded in the run (a resumed run), or measured once per machine and network
and remembered (``auto`` on CPUs with native bf16)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..config import RunConfig
from ..device import (PRECISION_DTYPES, PrecisionStore, forward_timer, measured_precision, measures_precision,
                      precision_name, resolve_precision)
from .distributed import World
from .losses import Criterion
from .step import step_timer


@dataclass(frozen=True)
class Precisions:
    """The autocast dtypes (None: fp32) of the training steps and of validation, and how they were chosen."""

    train: torch.dtype | None
    validate: torch.dtype | None
    how: str = ""  # for the run's log line: "" (by name or by rule), or where the choice came from

    def record(self, device: torch.device) -> dict:
        """What a run keeps in its checkpoint, for :func:`choose_precisions`'s ``recorded``."""
        return {"device": device.type, "train": precision_name(self.train), "validate": precision_name(self.validate)}

    def describe(self) -> str:
        """``bfloat16`` or ``fp32 (validation in bfloat16, measured …)`` for the run's log line."""
        both = precision_name(self.train)
        if self.validate != self.train:
            both += f", validation in {precision_name(self.validate)}"
        return both + (f"; {self.how}" if self.how else "")


def choose_precisions(config: RunConfig, model: torch.nn.Module, criterion: Criterion, device: torch.device,
                      world: World, n_val: int, store: Path, recorded: dict | None = None) -> Precisions:
    """The precisions a run computes in.

    A named precision (``config.train.precision``) is used as named. ``auto`` follows
    :func:`~pixelwise.device.resolve_precision`'s rule, except on CPUs with native bf16: there a
    training step and a validation batch of this run's network and shapes are timed in fp32 and bf16
    once per machine, the choices kept in ``store`` and reused by every later run of the same network
    here, so that a rerun gives the same weights however busy the machine is.

    Args:
        config: the run's settings.
        model: the run's network (copied for the timed training steps; its weights do not change).
        criterion: the run's loss.
        device: where the run computes.
        world: the run's processes; all of them take the choice of the first.
        n_val: the number of validation pairs (0: validation is not timed).
        store: the JSON file that keeps measured choices (see :class:`~pixelwise.device.PrecisionStore`).
        recorded: what a resumed run's checkpoint recorded (:meth:`Precisions.record`); used as it is
            where it was recorded on the same kind of device, so a resumed run continues as it started.

    Returns:
        The training and validation precisions, and how they were chosen.

    Raises:
        ValueError: fp16 asked for on a device without CUDA.
    """
    ruled = resolve_precision(config.train.precision, device, depthwise=config.model.encoder != "unet")
    names = recorded and (recorded.get("train"), recorded.get("validate"))
    if names and recorded.get("device") == device.type and set(names) <= PRECISION_DTYPES.keys():
        return Precisions(*(PRECISION_DTYPES[name] for name in names), "as recorded when this run started")
    if not measures_precision(config.train.precision, device):
        return Precisions(ruled, ruled)
    kept = PrecisionStore(store)
    shapes = {"model": config.model.to_dict(), "processes": world.size}
    batch = len(world.shard(np.arange(config.train.batch_size)))
    crop = config.data.crop_size(config.model.step)

    def train_timer() -> Callable[[torch.dtype | None], float]:
        x = torch.rand(batch, config.model.in_channels, *crop).contiguous(memory_format=torch.channels_last)
        y = torch.randint(0, config.model.n_classes, (batch, *crop))
        return step_timer(model, config.train, criterion, x, y, device, world)

    train, train_seconds = _agreed(kept, {"task": "train", **shapes, "batch": batch, "input": list(crop),
                                          "loss": config.train.loss}, train_timer, world)
    if not n_val:
        return Precisions(train, train, _origin([train_seconds], kept.path))
    val_batch = min(config.train.batch_size, max(1, n_val // world.size))

    def validation_timer() -> Callable[[torch.dtype | None], float]:
        x = torch.rand(val_batch, config.model.in_channels, *config.data.size)
        time_forward = forward_timer(model, x.contiguous(memory_format=torch.channels_last), device)
        return lambda dtype: world.sum(time_forward(dtype))[0]

    validate, val_seconds = _agreed(kept, {"task": "validate", **shapes, "batch": val_batch,
                                           "input": list(config.data.size)}, validation_timer, world)
    return Precisions(train, validate, _origin([train_seconds, val_seconds], kept.path))


def _agreed(store: PrecisionStore, what: dict, timer: Callable[[], Callable[[torch.dtype | None], float]],
            world: World) -> tuple[torch.dtype | None, dict[str, float] | None]:
    """The kept or newly measured choice for ``what``, the same on every rank: where any rank lacks it
    all of them time it together (the timers sum over the ranks), and the first rank's choice holds."""
    known, dtype = store.recall(what)
    if not world.any(not known):
        return _first_ranks(dtype, world), None
    dtype, seconds = measured_precision(timer())
    dtype = _first_ranks(dtype, world)
    if world.is_main:
        store.remember(what, dtype, seconds)
    return dtype, seconds


def _first_ranks(dtype: torch.dtype | None, world: World) -> torch.dtype | None:
    return torch.bfloat16 if world.sum(int(world.is_main and dtype is torch.bfloat16))[0] else None


def _origin(seconds: list[dict[str, float] | None], store: Path) -> str:
    """How ``auto`` chose: measured now (with the times) or kept from an earlier measurement."""
    timed = [s for s in seconds if s is not None]
    if not timed:
        return f"auto: as measured before on this machine, kept in {store}"
    what = ("a training step", "a validation batch")
    times = "; ".join(f"{name} {' against '.join(f'{t:.2f} s in {p}' for p, t in s.items())}"
                      for name, s in zip(what, seconds) if s is not None)
    return f"auto: measured on this machine ({times}), kept in {store} for later runs"
