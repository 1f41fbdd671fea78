"""Peak memory of predicting one large image, by image size.

    .venv/bin/python benchmarks/predict_memory.py [--sizes 2000 4000 8000] [--size native] [--tile 512]
                                                  [--filters 16] [--out DIR]

Saves a run of an untrained narrow U-Net (``preset("assignment", n_filters=FILTERS)`` at 48x64, 23 classes:
what matters here is the image, not the model), then for each size predicts one random square image of
that side in a fresh Python process and prints that process's peak resident memory (``VmHWM`` in
/proc/self/status), before and after ``predict``. ``--size train`` (the default) predicts at the training
size, whose logits are upsampled to the image's own size; ``--size native`` at the image's own size, in
tiles of ``--tile`` pixels a side (the Predictor's default tile without it). A narrow network
(``--filters 4``) keeps native-size runs of large images short; its activations are a small part of
the peak. Each size runs in its own process because a high-water mark never goes
down; not ``ru_maxrss``, which on Linux also carries the peak of the process that started the child.
Linux only. Not part of the test run.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path


def make_run(run_dir: Path, filters: int) -> Path:
    """An untrained run (config.json and best.safetensors) of ``filters`` base filters that the Predictor
    loads."""
    from pixelwise.config import DataConfig, RunConfig
    from pixelwise.model.build import build_model
    from pixelwise.model.unet import preset
    from pixelwise.rundir import BEST, save_config
    from pixelwise.training import checkpoint

    config = RunConfig(model=preset("assignment", n_filters=filters), data=DataConfig(size=(48, 64)))
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(run_dir, config)
    checkpoint.save(run_dir / BEST, build_model(config.model))
    return run_dir


def peak_rss_mib() -> float:
    """This process's peak resident memory so far, in MiB."""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 1024


def child(run_dir: Path, side: int, size: str, tile: int) -> None:
    """Predict one side x side image at ``size`` ("train" or "native") in tiles of ``tile`` (0: the
    default) and print the peak RSS before and after, in MiB."""
    import numpy as np

    from pixelwise import Predictor

    predictor = Predictor(run_dir, precision="fp32", tile=(tile, tile) if tile else None)
    image = np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)
    before = peak_rss_mib()
    mask = predictor.predict(image, "native" if size == "native" else None)
    after = peak_rss_mib()
    assert mask.shape == (side, side)
    print(f"{side} {before:.0f} {after:.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 4000, 8000])
    parser.add_argument("--size", choices=("train", "native"), default="train", help="what the model sees")
    parser.add_argument("--tile", type=int, default=0, help="tile side for --size native (default: the Predictor's)")
    parser.add_argument("--filters", type=int, default=16, help="the U-Net's base filters")
    parser.add_argument("--out", type=Path, help="where the run is saved (default: a temporary folder)")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(Path(args.child[0]), int(args.child[1]), args.size, args.tile)
        return
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = make_run(args.out or Path(tmp) / "run", args.filters)
        print("side  peak RSS before predict (MiB)  peak RSS after predict (MiB)")
        for side in args.sizes:
            command = [sys.executable, __file__, "--child", str(run_dir), str(side), "--size", args.size,
                       "--tile", str(args.tile)]
            line = subprocess.run(command, check=True, capture_output=True, text=True).stdout.split()
            print(f"{line[0]:>5} {line[1]:>30} {line[2]:>29}")


if __name__ == "__main__":
    main()
