"""Named training recipes: complete run configurations that command-line flags then adjust.

``seed`` is the assignment exactly (its model, Adam 1e-3, plain cross-entropy, batch 32, 40 epochs,
96x128 with nearest-neighbour resizing). ``default`` is the best recipe measured on held-out CARLA
drives on a 2-core CPU (benchmarks/quality.py): BatchNorm, class-weighted cross-entropy plus Dice,
AdamW with warm-up and cosine decay, batch 8, 120 epochs of 128x160 crops out of 240x320 frames
(area-averaged), mirrored at random, half of the crops placed on a class picked evenly among those in
the frame. Crops cost a quarter of a whole frame, so four times the steps fit the same time, and
steering them puts rare classes in front of the network. Zoom and colour jitter (``--augment full``)
did not help on those drives. Precision is not part of a recipe: ``auto`` picks the fastest safe one
for the machine either way.

``pretrained`` fine-tunes the ImageNet EfficientNet-Lite0 encoder (``pixelwise[pretrained]``) under a
light U-Net decoder (128/96/64/48 channels: 16 at stride 2 lost the small classes): the same loss,
flips and class-steered crops as ``default``, but 256x320 crops (half of each side, rounded to the
encoder's stride of 32) of the full 480x640 frames (128x160 crops of 240x320 frames for 12 epochs
scored 0.24 against 0.31), AdamW at 2e-3 for the decoder and a
tenth of it for the encoder (whose features already work: one rate for both shook the validation
score in the first epochs and ended 0.017 lower), 5% warm-up then cosine, 30 epochs: validation mIoU
was flat over the last third. Random zoom (``--augment zoom``) lost TrafficSign outright (docs/quality.md
has what each scores).
"""

from __future__ import annotations

from dataclasses import replace

from .config import DataConfig, RunConfig, TrainConfig
from .model.unet import PRESETS, preset

RECIPES: dict[str, RunConfig] = {
    "seed": RunConfig(),
    "default": RunConfig(
        model=replace(PRESETS["assignment"], batch_norm=True),
        data=DataConfig(size=(240, 320), image_resize="area", augment="flip", crop=0.5, class_crops=0.5),
        train=TrainConfig(epochs=120, batch_size=8, lr=2e-3, optimizer="adamw", weight_decay=1e-4, schedule="cosine",
                          warmup=0.05, loss="ce+dice", class_weights="inverse-sqrt"),
    ),
    "pretrained": RunConfig(
        model=preset("efficientnet-lite0"),
        data=DataConfig(size=(480, 640), image_resize="area", augment="flip", crop=0.5, class_crops=0.5),
        train=TrainConfig(epochs=30, batch_size=8, lr=2e-3, encoder_lr=0.1, optimizer="adamw", weight_decay=1e-4,
                          schedule="cosine", warmup=0.05, loss="ce+dice", class_weights="inverse-sqrt"),
    ),
}


DEFAULT_RECIPE = "default"


def recipe(name: str) -> RunConfig:
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; choose one of: {', '.join(RECIPES)}")
    return RECIPES[name]
