"""Named training recipes: complete run configurations that command-line flags then adjust.

``seed`` is the assignment exactly (its model, Adam 1e-3, plain cross-entropy, batch 32, 40 epochs,
96x128 with nearest-neighbour resizing). ``default`` is the recipe that scores best on held-out CARLA
drives on a 2-core CPU (benchmarks/quality.py, docs/quality.md): the ImageNet EfficientNet-Lite0
encoder under a light U-Net decoder (128/96/64/48 channels: 16 at stride 2 lost the small classes),
class-weighted cross-entropy plus Dice, AdamW at 2e-3 for the decoder and three tenths of it for the
encoder (whose features already work: one rate for both shook the validation score in the first
epochs and ended 0.017 lower; a tenth scored 0.352, three tenths 0.364, three seeds each on a 2-core
Xeon), 5% warm-up then cosine decay, batch 8, 60 epochs of 256x320 crops
(half of each side, rounded to the encoder's stride of 32) of the full 480x640 frames, mirrored at
random, half of the crops placed on a class picked evenly among those in the frame, and every frame
given the small classes of another (``paste``: in a 40-epoch GPU sweep +0.007 mIoU over four seeds
for half the frames, +0.011 over two for all; on a 2-core Xeon without AMX 0.328 without, 0.345 for
half, three seeds each; docs/quality.md#pasting-small-classes), validated every 5th epoch (a fifth
of an epoch's time at 480x640 went to validation; with it and a faster loss that Xeon fits 52-53
epochs instead of 40-42). 60 epochs
instead of 30 lifted TrafficSign (0.19 to 0.43), Pedestrian, Pole and TrafficLight; random zoom (``--augment zoom``) lost
TrafficSign outright. The 60 epochs took 28-30 minutes on a 2-core EPYC with native bf16 but 49-58 s
each (bf16) on a 2-core Xeon without AMX, so the recipe stops at the epochs that fit in 28 minutes (``time_limit``),
its cosine decay fitted to them.

``scratch`` is the best recipe without pretrained weights (``default`` until EfficientNet-Lite came):
the assignment's U-Net with BatchNorm, the same loss and optimiser, 120 epochs of 128x160 crops out
of 240x320 frames (area-averaged), flipped and class-steered the same way. Crops cost a quarter of a
whole frame, so four times the steps fit the same time. Zoom and colour jitter (``--augment full``)
did not help it either. Precision is not part of a recipe: ``auto`` picks the fastest safe one for
the machine and model.
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
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; choose one of: {', '.join(RECIPES)}")
    return RECIPES[name]
