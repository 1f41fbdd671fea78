"""What TensorBoard logging costs an epoch: the same short run with and without it, and its parts alone.

    .venv/bin/python benchmarks/tracking.py [--recipe default] [--count 48] [--epochs 2] [--repeats 2] [--out DIR]

Writes ``--count`` synthetic 480x640 scenes, then trains ``--recipe`` (validating every epoch, no time
limit) for ``--epochs`` epochs into fresh runs, alternately with TensorBoard logging and without it
(a child process where the tensorboard package cannot be imported), ``--repeats`` times each, and prints
each run's epoch times from history.csv (validation included). Then it times the logging alone: one
step's scalars, and one validation's frames (4 frames' predictions kept from validation's batches,
coloured, as one image) with its scalars and per-class IoU written, against the mean epoch. The
precision ``auto`` picks is measured once, in a warm-up run, before any timed run. Not part of the tests.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RUN = """
import sys
if {blocked}:
    sys.modules["torch.utils.tensorboard"] = None  # as if the tensorboard package were not installed
from pathlib import Path
from pixelwise.recipes import recipe
from pixelwise.training.loop import train
config = recipe({recipe!r})
config = config.with_train(epochs={epochs}, time_limit=0, val_every=1)
data = Path({data!r})
train(data / "CameraRGB", data / "CameraMask", Path({run!r}), config, cache_dir=Path({cache!r}), progress=False,
      log=lambda _: None)
"""


def _train(work: Path, name: str, recipe: str, epochs: int, tensorboard: bool) -> list[float]:
    """Train in a child process; the epochs' seconds from history.csv."""
    from pixelwise.rundir import read_history

    script = RUN.format(blocked=not tensorboard, recipe=recipe, epochs=epochs, data=str(work / "data"),
                        run=str(work / name), cache=str(work / "cache"))
    subprocess.run([sys.executable, "-c", script], check=True)
    return [row["seconds"] for row in read_history(work / name)]


def _parts(run: Path, repeats: int = 5) -> tuple[float, float]:
    """Seconds of one step's scalars and of one validation's frames image (kept from validation's own
    predictions, coloured, written), scalars and per-class IoU."""
    import torch

    from pixelwise.data.dataset import decode_dataset
    from pixelwise.data.pairs import IMAGE_DIR, MASK_DIR
    from pixelwise.rundir import load_config
    from pixelwise.training.tracking import Frames, open_tracking, pick_frames

    config = load_config(run)
    data = run.parent / "data"
    decoded = decode_dataset(data / IMAGE_DIR, data / MASK_DIR, config.data.size, config.model.n_classes,
                             image_resize=config.data.image_resize, cache_dir=run.parent / "cache", progress=False)
    index = np.arange(len(decoded.images) // 5)
    tracking = open_tracking(run.parent / "parts", config, 1, Frames(decoded.images, decoded.masks, pick_frames(index)))
    rates = {"decoder": 1e-3, "encoder": 3e-4}
    started = time.perf_counter()
    for step in range(1, 1001):
        tracking.step(step, 0.5, rates, 0.1)
    step_s = (time.perf_counter() - started) / 1000
    row = {"epoch": 1, "train_loss": 1.0, "train_accuracy": 0.5, "seconds": 1.0, "val_loss": 1.0,
           "val_accuracy": 0.5, "val_miou": 0.3}
    iou = np.linspace(0, 1, len(config.classes))
    ids = torch.randint(0, config.model.n_classes, (len(index), *config.data.size))  # as validation predicts them
    started = time.perf_counter()
    for epoch in range(repeats):
        for batch in np.array_split(index, max(1, len(index) // 8)):  # validation's batches
            tracking.predicted(batch, ids[batch])
        tracking.validated(iou)
        tracking.epoch(epoch, row)
    validation_s = (time.perf_counter() - started) / repeats
    tracking.close(True)
    return step_s, validation_s


def _steps(run: Path) -> list:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tb"), size_guidance={"scalars": 0})
    events.Reload()
    return events.Scalars("train/loss")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", default="default")
    parser.add_argument("--count", type=int, default=48)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None, help="work folder (default: a temporary one)")
    args = parser.parse_args()
    from pixelwise.synth import write_dataset

    with tempfile.TemporaryDirectory() as tmp:
        work = args.out or Path(tmp)
        if not (work / "data").exists():
            write_dataset(work / "data", args.count, seed=0, progress=False)
        if not (work / "warm-up" / "history.csv").exists():  # kept in --out for the next invocation
            _train(work, "warm-up", args.recipe, 1, True)  # decodes the data and measures the precision once
        times: dict[bool, list[float]] = {True: [], False: []}
        for repeat in range(args.repeats):
            for tensorboard in (True, False):
                name = f"{'tb' if tensorboard else 'none'}-{repeat}"
                shutil.rmtree(work / name, ignore_errors=True)
                seconds = _train(work, name, args.recipe, args.epochs, tensorboard)
                times[tensorboard] += seconds
                print(f"{name}: epochs {', '.join(f'{s:.1f}' for s in seconds)} s", flush=True)
        last = work / f"tb-{args.repeats - 1}"
        step_s, validation_s = _parts(last)
        steps = len(_steps(last)) // args.epochs
        mean = {k: float(np.mean(v)) for k, v in times.items()}
        print(f"\n| {args.recipe}, {args.count} frames | mean epoch with TensorBoard | without |\n|---|---|---|")
        print(f"| epoch (validation included) | {mean[True]:.1f} s | {mean[False]:.1f} s |")
        print(f"\none step's scalars: {1e3 * step_s:.2f} ms; one validation's frames image, scalars and per-class "
              f"IoU: {1e3 * validation_s:.0f} ms = {100 * validation_s / mean[False]:.2f}% of an epoch "
              f"({steps} steps' scalars: {100 * steps * step_s / mean[False]:.3f}%)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
