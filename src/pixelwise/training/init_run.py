"""``train.init``: a training that starts from another run's trained weights instead of ImageNet's or
fresh ones: fine-tuning a kept model on new labels, or training on real frames after pretraining on
other data (such as ``pixelwise synth`` scenes).

The run given must hold the same network (encoder, decoder, filters) but may have other classes: where
its class names differ from this run's, its classifier (the last 1x1 convolution) is left out and
starts fresh, and every other weight is taken. The run's ``best`` weights are used where it has them,
else its ``last``. Checked before any data is decoded, from the checkpoint's header alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from ..config import RunConfig
from ..model.build import meta_model
from ..rundir import BEST, LAST, load_config
from . import checkpoint

HEAD = "classifier."  # the last 1x1 convolution of both networks: one output channel per class


@dataclass(frozen=True)
class InitPlan:
    """Where a training's first weights come from.

    Attributes:
        weights: the checkpoint file read.
        keys: the tensors taken from it.
        fresh_head: whether the classifier starts fresh (the runs' classes differ).
    """

    weights: Path
    keys: tuple[str, ...]
    fresh_head: bool

    def describe(self) -> str:
        """One line for the training log."""
        head = "; its classifier starts fresh, as the classes differ" if self.fresh_head else ""
        return f"starting from the weights of {self.weights} (train.init){head}"


def plan_init(config: RunConfig) -> InitPlan:
    """Check that ``config.train.init`` names a trained run whose weights fit ``config``'s network.

    Args:
        config: the settings of the training that is to start; ``train.init`` must be set.

    Returns:
        The plan: which file and which of its tensors.

    Raises:
        ValueError: the run cannot be read, is an ensemble, has no weights yet, or holds another network
            (the first tensor that differs is named).
    """
    run_dir = Path(config.train.init)
    try:
        theirs = load_config(run_dir)
    except (FileNotFoundError, ValueError) as exc:
        raise ValueError(f"train.init: {exc}") from None  # the message names the folder
    if theirs.model.members > 1:
        raise ValueError(f"train.init {run_dir}: an ensemble of {theirs.model.members} runs; give one of its members")
    weights = next((run_dir / name for name in (BEST, LAST) if (run_dir / name).is_file()), None)
    if weights is None:
        raise ValueError(f"train.init {run_dir}: no {BEST} or {LAST}; has it finished an epoch?")
    try:
        found = checkpoint.tensor_shapes(weights)
    except ValueError as exc:
        raise ValueError(f"train.init: {exc}") from None
    wanted = {k: tuple(v.shape) for k, v in meta_model(config.model).state_dict().items()}
    fresh_head = theirs.classes.names != config.classes.names
    compared = [k for k in wanted.keys() | found.keys() if not (fresh_head and k.startswith(HEAD))]
    odd = sorted(k for k in compared if wanted.get(k) != found.get(k))
    if odd:
        raise ValueError(f"train.init {run_dir}: holds another network ({len(odd)} tensor(s) differ, such as "
                         f"{odd[0]}: {found.get(odd[0], 'missing')} there, {wanted.get(odd[0], 'missing')} here); "
                         "its model settings must be this run's")
    return InitPlan(weights, tuple(sorted(k for k in wanted if k in compared)), fresh_head)


def load_init(model: torch.nn.Module, plan: InitPlan) -> None:
    """Copy the planned tensors into ``model`` (every weight but a fresh classifier's).

    Raises:
        ValueError: the checkpoint cannot be read.
    """
    try:
        with safe_open(str(plan.weights), framework="pt") as f:
            state = {k: f.get_tensor(k) for k in plan.keys}
    except (OSError, SafetensorError, ValueError) as exc:
        raise ValueError(f"train.init {plan.weights}: unreadable checkpoint ({exc})") from None
    model.load_state_dict(state, strict=False)  # plan_init matched every key but a fresh classifier's
