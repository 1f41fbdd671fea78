"""An exponential moving average of the weights (``--ema DECAY``): validated, kept as ``best`` and
``last`` and used by every tool that loads a run, while training continues from the raw weights.

Meant to smooth the noise of batch-8 steps on a few hundred frames; what it did on CARLA's held-out
drives, too little to tell from the seeds' spread so far, and what an update costs are in
docs/quality.md and docs/benchmarks.md; no recipe uses it. The decay ramps up as (1 + t) / (10 + t) over the first steps so the average does not remember the
random decoder it started from. BatchNorm's running statistics are averaged like the weights, and
its step counters copied. A function of the step count alone, so a resumed run averages exactly as
an uninterrupted one.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def decay_at(decay: float, step: int) -> float:
    """The decay applied after global step ``step`` (0-based): ``decay``, lowered for the first steps."""
    return min(decay, (1 + step) / (10 + step))


class WeightAverage:
    """A copy of ``model`` whose floating-point weights and buffers follow its training by an EMA."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay = decay

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        """Move the average towards ``model``'s weights after global step ``step`` (0-based)."""
        weight = 1 - decay_at(self.decay, step)
        for mine, theirs in zip(self.model.state_dict().values(), model.state_dict().values()):
            if mine.is_floating_point():
                mine.lerp_(theirs, weight)
            else:
                mine.copy_(theirs)
