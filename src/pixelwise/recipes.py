"""Named training recipes: complete run configurations that a config file and flags then adjust.

- ``seed``: the assignment exactly: its U-Net, Adam at 1e-3, plain cross-entropy, batch 32, 40 epochs
  at 96x128 with nearest-neighbour resizing.
- ``default``: the ImageNet EfficientNet-Lite0 encoder (learning at 0.3 of the decoder's rate) under
  a light U-Net decoder; class-weighted cross-entropy plus Dice; AdamW with a 5% warm-up and cosine
  decay; batch 8; up to 60 epochs, those that fit in 28 minutes (``time_limit``, the decay fitted to
  them), validated every 5th; 256x320 crops of the full 480x640 frames, mirrored at random, half of
  them placed on a class picked evenly among those in the frame, and every frame given another's small
  classes (``paste``).
- ``scratch``: the best recipe without pretrained weights: the assignment's U-Net with BatchNorm, the
  same loss, optimiser and augmentation as ``default``, 120 epochs of 128x160 crops of 240x320 frames
  (area-averaged).

Why each choice (scores on held-out CARLA drives, timings, what was tried and dropped):
docs/quality.md. Precision is not part of a recipe: ``auto`` picks it for the machine and model.
"""

from __future__ import annotations

from dataclasses import replace

from .config import DataConfig, RunConfig, TrainConfig
from .model.unet import PRESETS, preset

# What ``scratch`` and ``default`` share: the loss, optimiser and schedule, flips and class-steered crops.
_SCRATCH_DATA = DataConfig(size=(240, 320), image_resize="area", augment="flip", crop=0.5, class_crops=0.5)
_SCRATCH_TRAIN = TrainConfig(epochs=120, batch_size=8, lr=2e-3, optimizer="adamw", weight_decay=1e-4,
                             schedule="cosine", warmup=0.05, loss="ce+dice", class_weights="inverse-sqrt")

RECIPES: dict[str, RunConfig] = {
    "seed": RunConfig(),
    "default": RunConfig(model=preset("efficientnet-lite0"), data=replace(_SCRATCH_DATA, size=(480, 640), paste=1.0),
                         train=replace(_SCRATCH_TRAIN, epochs=60, encoder_lr=0.3, time_limit=28, val_every=5)),
    "scratch": RunConfig(model=replace(PRESETS["assignment"], batch_norm=True), data=_SCRATCH_DATA,
                         train=_SCRATCH_TRAIN),
}


DEFAULT_RECIPE = "default"


def recipe(name: str) -> RunConfig:
    """The recipe called ``name``.

    Raises:
        ValueError: no recipe has that name.
    """
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; choose one of: {', '.join(RECIPES)}")
    return RECIPES[name]
