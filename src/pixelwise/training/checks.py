"""Refusals before any decoding or allocation: a size the network cannot take, a network too large
for memory, weights that are no longer finite."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from ..config import ZOOMING, RunConfig
from ..device import available_memory
from ..model.build import encoder_state, meta_model
from ..model.unet import count_parameters


def check_trainable(config: RunConfig, pretrained: bool = True) -> None:
    """Refuse, before any decoding, a training size the network cannot take, non-RGB input, or
    encoder weights that are not there or do not fit (only when the run starts from them: a resumed
    run's checkpoint holds every weight; a ``train.init`` run is checked by its own plan)."""
    model, (h, w) = config.model, config.data.size
    if model.members > 1:
        raise ValueError(f"model.members is {model.members}: an ensemble is assembled from trained runs (train with "
                         "data.folds, or write_ensemble), not trained itself")
    if model.in_channels != 3:
        raise ValueError(f"training reads RGB images, so the model needs in_channels=3, not {model.in_channels}")
    if pretrained and model.encoder_weights != "none" and not config.train.init:  # init's weights replace them
        encoder_state(model)
    # A pretrained encoder pads any size to its multiple of 32 itself; its crops are multiples of 32.
    hints = model.size_hints(h, w) if model.encoder == "unet" else []
    if hints:
        raise ValueError(f"data.size {h}x{w} does not fit this U-Net: {'; '.join(hints)}")
    ch, cw = config.data.crop_size(model.step)
    if config.data.crop < 1 and (ch, cw) == (h, w):
        raise ValueError(f"data.crop {config.data.crop} rounds to the whole {h}x{w} image (crops are multiples of "
                         f"{model.step}); choose a smaller data.crop")
    if config.data.class_crops > 0 and config.data.crop == 1 and config.data.augment not in ZOOMING:
        raise ValueError("data.class_crops places crops smaller than the image, so it needs data.crop below 1 "
                         "or data.augment zoom or full (whose zoom crops)")
    hints = model.size_hints(ch, cw)
    if hints:
        raise ValueError(f"data.crop {config.data.crop} gives {ch}x{cw} crops, which do not fit this U-Net: "
                         f"{'; '.join(hints)}; choose another data.crop")


def check_memory(config: RunConfig, device: torch.device,
                 available: Callable[[torch.device], int | None] = available_memory) -> None:
    """Refuse, before any allocation, a network whose weights, gradients and Adam state alone exceed
    the memory free on ``device``: a typo in model.n_filters would otherwise get the process killed without
    a word. ``available`` says how many bytes are free on a device, or None where the system does not say.

    Raises:
        ValueError: the network cannot be built, or does not fit."""
    try:
        parameters = count_parameters(meta_model(config.model))
    except ValueError as exc:
        raise ValueError(f"this network cannot be built ({exc})") from None
    need, free = 16 * parameters, available(device)  # four fp32 copies: weights, gradients, 2 moments
    if free is not None and need > free:
        raise ValueError(f"a U-Net of {config.model.n_filters} base filters has {parameters:,} parameters, whose "
                         f"weights, gradients and optimiser state need {need / 2**30:,.1f} GiB, more than the "
                         f"{free / 2**30:,.1f} GiB free on {device.type}; choose fewer model.n_filters")


def check_finite(model: torch.nn.Module, epoch: int, run_dir: Path) -> None:
    """Refuse to save weights that are no longer finite (a loss can stay finite for the step that broke them)."""
    if not all(torch.isfinite(p).all() for p in model.parameters()):
        raise FloatingPointError(f"training diverged in epoch {epoch} (the weights are no longer finite); "
                                 f"the last good checkpoint in {run_dir} is intact. Try a lower train.lr.")
