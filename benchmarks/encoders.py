"""Speed of the pretrained-encoder networks against the scratch recipe's U-Net, side by side in one run.

    .venv/bin/python benchmarks/encoders.py [--models scratch lite0 lite1 lite2] [--steps 4]
        [--precisions fp32 bf16] [--no-onnx] [--decoder-channels 128 96 64 48]

Training: images/s of one optimiser step (forward, backward, AdamW) at batch 8, on the scratch
recipe's 128x160 crops and on whole 240x320 frames, in fp32 and under bf16 autocast. Inference: a
480x640 frame at batch 1 through ``Predictor`` (torch, each precision) and through the ``onnx``
engine with the exported fp32 and int8 models (int8 calibrated on a few synthetic 480x640 scenes;
needs the ``onnx`` extra). The numbers decide which precision ``auto`` picks for each model on
each CPU kind (``device.py``), and check issue 14's target: inference at 480x640 at least 2x the
assignment U-Net's. Measurements alternate between models, so load drifts touch all of them alike;
read the ratios. Prints a markdown table naming the CPU. Not part of the test run.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import isa  # sets the --isa limits, which torch reads when it loads: before any import of it

isa.limit_isa()

import numpy as np
import torch

from pixelwise.config import RunConfig, TrainConfig
from pixelwise.data.decode import read_image
from pixelwise.model.build import build_model
from pixelwise.model.unet import PRESETS, ModelConfig, preset
from pixelwise.recipes import recipe
from pixelwise.rundir import BEST, save_config
from pixelwise.training import checkpoint
from pixelwise.training.step import make_optimizer

MODELS = {
    "scratch": recipe("scratch").model,  # the assignment's U-Net with BatchNorm
    "assignment": PRESETS["assignment"],
    **{f"lite{i}": replace(preset(f"efficientnet-lite{i}"), encoder_weights="none") for i in range(3)},
}
DTYPES = {"fp32": None, "bf16": torch.bfloat16}


def train_rate(config: ModelConfig, size: tuple[int, int], dtype: torch.dtype | None, steps: int) -> float:
    """Images/s of full optimiser steps at batch 8 (after two untimed warm-up steps)."""
    torch.manual_seed(0)
    model = build_model(config).to(memory_format=torch.channels_last).train()
    optimizer = make_optimizer(model, TrainConfig(optimizer="adamw", lr=1e-3, encoder_lr=0.1))
    images = torch.rand(8, 3, *size).contiguous(memory_format=torch.channels_last)
    target = torch.randint(0, config.n_classes, (8, *size))
    elapsed = 0.0
    for i in range(steps + 2):
        started = time.perf_counter()
        with torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = torch.nn.functional.cross_entropy(model(images).float(), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if i >= 2:
            elapsed += time.perf_counter() - started
    return 8 * steps / elapsed


def write_run(config: ModelConfig, folder: Path) -> Path:
    torch.manual_seed(0)
    folder.mkdir(parents=True)
    save_config(folder, RunConfig(model=config))
    checkpoint.save(folder / BEST, build_model(config))
    return folder


def infer_rate(run: Path, frame: np.ndarray, steps: int, **engine) -> float:
    """Frames/s of ``Predictor.predict`` on one 480x640 frame at its own size."""
    from pixelwise.inference.predictor import Predictor

    predictor = Predictor(run, **engine)
    for _ in range(2):
        predictor.predict(frame, size="native")
    started = time.perf_counter()
    for _ in range(steps):
        predictor.predict(frame, size="native")
    return steps / (time.perf_counter() - started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS), default=["scratch", "lite0", "lite1", "lite2"])
    parser.add_argument("--precisions", nargs="+", choices=sorted(DTYPES), default=["fp32", "bf16"])
    parser.add_argument("--steps", type=int, default=4, help="timed steps per measurement (default: %(default)s)")
    parser.add_argument("--no-onnx", action="store_true", help="skip the ONNX Runtime inference columns")
    parser.add_argument("--decoder-channels", nargs=4, type=int, metavar="C",
                        help="the Lite networks' decoder widths at strides 16/8/4/2 (default: ModelConfig's)")
    isa.add_isa_argument(parser)
    args = parser.parse_args()
    models = {name: (replace(MODELS[name], decoder_channels=tuple(args.decoder_channels))
                     if args.decoder_channels and MODELS[name].encoder != "unet" else MODELS[name]) for name in args.models}
    print(f"{isa.isa_line()}; {torch.get_num_threads()} threads, torch {torch.__version__}\n")

    rates: dict[tuple[str, str], float] = {}
    for size in ((128, 160), (240, 320)):  # models alternate inside each column
        for precision in args.precisions:
            for name in args.models:
                column = f"train {size[0]}x{size[1]} {precision}"
                rates[name, column] = train_rate(models[name], size, DTYPES[precision], args.steps)
                print(f"  {name} {column}: {rates[name, column]:.2f} img/s", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        from pixelwise.synth import write_dataset

        scenes = write_dataset(Path(tmp) / "scenes", 8, seed=0, progress=False)
        frame = read_image(sorted((scenes / "CameraRGB").iterdir())[0])
        runs = {name: write_run(config, Path(tmp) / name) for name, config in models.items()}
        if not args.no_onnx:
            from pixelwise.inference.export import export

            for run in runs.values():
                export(run, int8=[scenes], calibration_count=8)
        for precision in args.precisions:
            for name, run in runs.items():
                rates[name, f"predict torch {precision}"] = infer_rate(run, frame, args.steps, precision=precision)
        if not args.no_onnx:
            for model in ("fp32", "int8"):
                for name, run in runs.items():
                    rates[name, f"predict onnx {model}"] = infer_rate(run, frame, args.steps, engine="onnx",
                                                                      onnx_model=model)

    columns = list(dict.fromkeys(column for _, column in rates))
    print("\n| model | " + " | ".join(columns) + " |\n|---|" + "---|" * len(columns))
    for name in args.models:
        print(f"| {name} | " + " | ".join(f"{rates[name, c]:.2f}" for c in columns) + " |")
    print("\n(train: images/s at batch 8; predict: 480x640 frames/s at batch 1)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
