"""Sharded prediction: files/s of one process against torchrun's two, and the cost of listing a folder of
a million files.

    .venv/bin/python benchmarks/shard.py [--frames 32] [--precision fp32] [--list-count 1000000] [--work DIR]

1. Throughput: saves an untrained run of the ``default`` recipe (its network, EfficientNet-Lite0 under
   the light U-Net decoder, with random weights: the speed does not depend on them), writes
   ``--frames`` synthetic 640x480 frames and predicts them with ``pixelwise predict`` as one process
   (with every core's thread, then with one thread), then as ``torchrun --standalone --nproc-per-node 2``
   (one core each). It prints the wall-clock files/s of each
   command (start-up and model loading included) and the steady files/s from ``predictions.csv``
   (images over the busiest process's summed seconds).
2. Listing: creates ``--list-count`` empty ``.png`` files in one folder and, in a fresh process each,
   lists them as ``predict`` does (``list_inputs`` and this process's share) and, for comparison, as a
   sorted list of ``Path`` objects (``expand_images``, which ``export`` still uses): seconds and the
   process's peak resident memory (``VmHWM`` in /proc/self/status) before and after.

Linux only; needs the machine to itself for honest numbers. Not part of the test run.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LISTING = r"""
import json, sys, time

def peak_mib():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 1024

how, folder = sys.argv[1], sys.argv[2]
from pixelwise.inference.inputs import list_inputs
from pixelwise.inference.predict import expand_images
before = peak_mib()
start = time.perf_counter()
if how == "list_inputs":
    listing = list_inputs([folder])
    count = sum(1 for _ in listing.share(0, 1))
else:
    files, _ = expand_images([folder])
    count = len(files)
seconds = time.perf_counter() - start
print(json.dumps({"how": how, "files": count, "seconds": seconds, "peak_before_mib": before, "peak_after_mib": peak_mib()}))
"""


def make_run(run_dir: Path) -> Path:
    """An untrained run of the default recipe (no pretrained weights to download)."""
    from dataclasses import replace

    from pixelwise.model.build import build_model
    from pixelwise.recipes import DEFAULT_RECIPE, recipe
    from pixelwise.rundir import BEST, save_config
    from pixelwise.training import checkpoint

    config = recipe(DEFAULT_RECIPE)
    config = replace(config, model=replace(config.model, encoder_weights="none"))
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(run_dir, config)
    checkpoint.save(run_dir / BEST, build_model(config.model))
    return run_dir


def steady_files_per_second(manifest: Path, processes: int) -> float:
    """Images over the busiest process's seconds; the rows do not say which process wrote them, but each
    took every ``processes``-th image of the sorted list."""
    with open(manifest, newline="") as f:
        seconds = [float(row["seconds"]) for row in csv.DictReader(f)]
    return len(seconds) / max(sum(seconds[rank::processes]) for rank in range(processes))


def throughput(work: Path, frames: int, precision: str) -> list[dict]:
    from pixelwise.synth import write_dataset

    run = make_run(work / "run")
    images = write_dataset(work / "frames", frames, seed=0, height=480, width=640, progress=False) / "CameraRGB"
    predict = ["-m", "pixelwise", "predict", str(run), str(images), "--precision", precision, "--no-progress"]
    torchrun = ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    results = []
    for processes, threads, launcher in ((1, None, []), (1, 1, []), (2, 1, torchrun)):
        out = work / f"out-{processes}-{threads}"
        command = [sys.executable, *launcher, *predict, "--out", str(out)]
        env = {**os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads and not launcher else {})}
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True, env=env)
        wall = time.perf_counter() - start
        results.append({"processes": processes, "threads_each": threads or os.cpu_count(), "frames": frames,
                        "wall_s": round(wall, 1),
                        "files_per_s_wall": round(frames / wall, 3),
                        "files_per_s_steady": round(steady_files_per_second(out / "predictions.csv", processes), 3)})
        print(json.dumps(results[-1]), flush=True)
    return results


def listing(work: Path, count: int) -> list[dict]:
    folder = work / "empty"
    folder.mkdir()
    start = time.perf_counter()
    for i in range(count):
        open(folder / f"{i:07d}.png", "wb").close()
    print(f"created {count} empty files in {time.perf_counter() - start:.0f} s", flush=True)
    results = []
    for how in ("list_inputs", "expand_images"):
        done = subprocess.run([sys.executable, "-c", LISTING, how, str(folder)], check=True, capture_output=True,
                              text=True)
        results.append(json.loads(done.stdout))
        print(json.dumps(results[-1]), flush=True)
    shutil.rmtree(folder)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=32, help="frames to predict (0: skip this part)")
    parser.add_argument("--precision", default="fp32",
                        help="the torch engine's arithmetic (default: fp32; auto measures on its first load per thread count)")
    parser.add_argument("--list-count", type=int, default=1_000_000, help="empty files to list (0: skip this part)")
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="pixelwise-shard-"))
    os.environ.setdefault("PIXELWISE_CACHE", str(work / "cache"))
    try:
        if args.frames:
            throughput(work, args.frames, args.precision)
        if args.list_count:
            listing(work, args.list_count)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
