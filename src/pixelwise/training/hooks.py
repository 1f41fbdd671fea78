"""Where a caller watches or steers a training run from outside the loop: the clock it times epochs
with, how it draws curves.png, and callbacks at each training batch and each validation. A notebook
shows progress with them; a test drives time, stops or crashes through them instead of patching the
loop's modules."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from .curves import CURVES_EVERY_S, plot_history


def _ignore(*_: object) -> None:
    return None


@dataclass(frozen=True)
class Hooks:
    """The seams of :func:`pixelwise.training.loop.train`; the defaults are what a run does anyway.

    Args:
        clock: seconds on a monotonic clock. Epochs are timed with it (history.csv's ``seconds``, and
            so how many epochs a ``time_limit`` plans) and it paces the drawing of the curves.
        plot: draws the history (a list of history.csv rows) into the given path after an epoch.
        curves_every_s: the least time between two drawings of the curves; the first epoch of a
            session and the last of the run are always drawn.
        on_batch: called with ``(epoch, step, x, y)`` for each training batch as the network gets it
            (augmented and cropped), before its step; ``step`` counts from 0 within the epoch. What it
            raises stops training there, as a crash would.
        on_validation: called with ``(epoch, scores)`` after each validation, ``scores`` holding the
            epoch's ``val_loss``, ``val_accuracy`` and ``val_miou``.
    """

    clock: Callable[[], float] = time.perf_counter
    plot: Callable[[list[dict], Path], None] = plot_history
    curves_every_s: float = CURVES_EVERY_S
    on_batch: Callable[[int, int, torch.Tensor, torch.Tensor], None] = _ignore
    on_validation: Callable[[int, dict], None] = _ignore
