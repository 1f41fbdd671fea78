"""Peak memory of predicting one large image, by image size.

    .venv/bin/python benchmarks/predict_memory.py [--sizes 2000 4000 8000] [--out DIR]

Saves a run of an untrained narrow U-Net (``preset("assignment", n_filters=16)`` at 48x64, 23 classes:
what matters here is the image, not the model), then for each size predicts one random square image of
that side at the training size (the default: the logits are upsampled to the image's own size) in a
fresh Python process and prints that process's peak resident memory (``VmHWM`` in /proc/self/status),
before and after ``predict``. Each size runs in its own process because a high-water mark never goes
down; not ``ru_maxrss``, which on Linux also carries the peak of the process that started the child.
Linux only. Not part of the test run.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path


def make_run(run_dir: Path) -> Path:
    """An untrained run (config.json and best.safetensors) that the Predictor loads."""
    from pixelwise.config import DataConfig, RunConfig
    from pixelwise.model.build import build_model
    from pixelwise.model.unet import preset
    from pixelwise.rundir import BEST, save_config
    from pixelwise.training import checkpoint

    config = RunConfig(model=preset("assignment", n_filters=16), data=DataConfig(size=(48, 64)))
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(run_dir, config)
    checkpoint.save(run_dir / BEST, build_model(config.model))
    return run_dir


def peak_rss_mib() -> float:
    """This process's peak resident memory so far, in MiB."""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 1024


def child(run_dir: Path, side: int) -> None:
    """Predict one side x side image and print the peak RSS before and after, in MiB."""
    import numpy as np

    from pixelwise import Predictor

    predictor = Predictor(run_dir, precision="fp32")
    image = np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)
    before = peak_rss_mib()
    mask = predictor.predict(image)
    after = peak_rss_mib()
    assert mask.shape == (side, side)
    print(f"{side} {before:.0f} {after:.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 4000, 8000])
    parser.add_argument("--out", type=Path, help="where the run is saved (default: a temporary folder)")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(Path(args.child[0]), int(args.child[1]))
        return
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = make_run(args.out or Path(tmp) / "run")
        print("side  peak RSS before predict (MiB)  peak RSS after predict (MiB)")
        for side in args.sizes:
            line = subprocess.run([sys.executable, __file__, "--child", str(run_dir), str(side)], check=True,
                                  capture_output=True, text=True).stdout.split()
            print(f"{line[0]:>5} {line[1]:>30} {line[2]:>29}")


if __name__ == "__main__":
    main()
