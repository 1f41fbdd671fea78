"""Peak memory while training on a large synthetic dataset through the memory-mapped decode cache.

    .venv/bin/python benchmarks/memory.py [--frames 20000] [--epochs 3] [--out DIR]

Generates ``--frames`` synthetic CARLA-layout frames (at 96x128 directly, the size the model trains at,
to keep generation to a few minutes; reused if ``--out`` already holds them), then trains a narrow
U-Net (``preset("assignment", n_filters=8)``: the data path is what is measured, not the model) with
the public API, ``pixelwise.train(...)``, while a background thread samples this process's
memory from /proc/self/status every 0.2 s. Prints per phase (decode, then each epoch) the peak of:

- VmRSS: everything resident, what the issue's "under ~2 GiB" refers to;
- RssAnon: memory the process itself allocated (torch, numpy, batches): must stay flat;
- RssFile: pages of mapped files, mostly the decode cache. The kernel drops these under memory
  pressure without any I/O (they are clean), so they do not limit the dataset size; they grow to
  at most the size of the cache files while the first epoch touches every row, then stay.

and each epoch's images/s (training pairs / the epoch's ``seconds`` in history.csv, which includes
the validation pass). Linux only (reads /proc). Not part of the test run.
"""

from __future__ import annotations

import argparse
import csv
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import isa  # sets the --isa limits, which torch reads when it loads: before any import of it

isa.limit_isa()

HEIGHT, WIDTH = 96, 128
FIELDS = ("VmRSS", "RssAnon", "RssFile")


def memory() -> dict[str, int]:
    """This process's VmRSS, RssAnon and RssFile in bytes."""
    values = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in FIELDS:
                values[key] = int(rest.split()[0]) * 1024
    return values


class Sampler(threading.Thread):
    """Samples memory every ``interval`` seconds into the current phase's peaks."""

    def __init__(self, interval: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.interval, self.phase = interval, "start"
        self.peaks: dict[str, dict[str, int]] = {}
        self.started: dict[str, float] = {}
        self.halt = threading.Event()

    def enter(self, phase: str) -> None:
        self.sample()  # the old phase's last sample
        self.phase = phase
        self.started[phase] = time.perf_counter()
        self.sample()

    def sample(self) -> None:
        peaks = self.peaks.setdefault(self.phase, dict.fromkeys(FIELDS, 0))
        for key, value in memory().items():
            peaks[key] = max(peaks[key], value)

    def run(self) -> None:
        while not self.halt.wait(self.interval):
            self.sample()

    def stop(self) -> None:
        self.halt.set()
        self.join()
        self.sample()


def frames_in(folder: Path) -> int:
    return len(list((folder / "CameraRGB").glob("*.png"))) if (folder / "CameraRGB").is_dir() else 0


def generate(data: Path, frames: int) -> None:
    """In a child process, so that generating leaves nothing behind in the process we measure."""
    have = frames_in(data)
    if have == frames:
        print(f"reusing the {frames} frames in {data}")
        return
    if data.exists():
        shutil.rmtree(data)
    print(f"generating {frames} synthetic frames at {HEIGHT}x{WIDTH} (directly at the training size, so that "
          f"generation takes minutes rather than an hour) into {data} …", flush=True)
    started = time.perf_counter()
    code = ("import sys; from pixelwise.synth import write_dataset; "
            "write_dataset(sys.argv[1], int(sys.argv[2]), seed=0, height=int(sys.argv[3]), width=int(sys.argv[4]))")
    subprocess.run([sys.executable, "-c", code, str(data), str(frames), str(HEIGHT), str(WIDTH)], check=True)
    print(f"generated in {time.perf_counter() - started:.0f} s")


def gib(n: int) -> str:
    return f"{n / 2**30:.2f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=20000, help="synthetic frames to train on (default 20000)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs to train (default 3)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--out", type=Path, default=None,
                        help="folder for the frames, the cache and the run (default: a new temporary folder, "
                             "deleted at the end); frames already there are reused")
    isa.add_isa_argument(parser)
    args = parser.parse_args(argv)
    if args.frames < 10 or args.epochs < 1:
        parser.error("need at least 10 frames and 1 epoch")
    print(isa.isa_line())

    import numpy as np
    import torch

    from pixelwise.config import DataConfig, RunConfig, TrainConfig
    from pixelwise.model.unet import preset
    from pixelwise.rundir import HISTORY_FILE
    from pixelwise.training.loop import train

    out = args.out or Path(tempfile.mkdtemp(prefix="pixelwise-memory-"))
    out.mkdir(parents=True, exist_ok=True)
    data, cache, run_dir = out / "data", out / "cache", out / "run"
    generate(data, args.frames)
    for old in (cache, run_dir):  # measure a cold cache build and a fresh run every time
        shutil.rmtree(old, ignore_errors=True)
    data_bytes = sum(p.stat().st_size for p in data.rglob("*.png"))

    config = RunConfig(model=preset("assignment", n_filters=8), data=DataConfig(size=(HEIGHT, WIDTH)),
                       train=TrainConfig(epochs=args.epochs, batch_size=args.batch_size))
    sampler = Sampler()
    pairs = {"train": 0, "val": 0}
    epoch_line = re.compile(r"^epoch\s+(\d+)/(\d+)")

    def log(message: str) -> None:
        """Phases from train()'s own log lines: decoding ends with the "N training and M validation pairs"
        line, and each epoch with its summary line."""
        found = re.match(r"^(\d+) training and (\d+) validation pairs", message)
        if found:
            pairs["train"], pairs["val"] = int(found.group(1)), int(found.group(2))
            sampler.enter("epoch 1")
        found = epoch_line.match(message)
        if found and int(found.group(1)) < args.epochs:
            sampler.enter(f"epoch {int(found.group(1)) + 1}")
        print(f"  | {message}", flush=True)

    print(f"training {config.model.n_filters}-filter U-Net for {args.epochs} epoch(s) on {args.frames} frames at "
          f"{HEIGHT}x{WIDTH}, batch {args.batch_size}, torch {torch.__version__} with {torch.get_num_threads()} "
          f"threads, numpy {np.__version__}", flush=True)
    sampler.enter("decode")
    baseline = memory()
    sampler.start()
    started = time.perf_counter()
    try:
        train(data / "CameraRGB", data / "CameraMask", run_dir, config, cache_dir=cache, progress=False, log=log)
    finally:
        sampler.stop()
    total = time.perf_counter() - started

    with open(run_dir / HISTORY_FILE, newline="") as f:
        history = {int(row["epoch"]): float(row["seconds"]) for row in csv.DictReader(f)}
    cache_bytes = sum(p.stat().st_size for p in cache.iterdir())
    decode_seconds = sampler.started.get("epoch 1", time.perf_counter()) - sampler.started["decode"]

    print()
    print(f"{args.frames} frames ({data_bytes / 2**20:.0f} MiB of PNG), cache {cache_bytes / 2**20:.0f} MiB, "
          f"{pairs['train']} training + {pairs['val']} validation pairs; before training: VmRSS "
          f"{gib(baseline['VmRSS'])} GiB (torch imported)")
    print(f"command: {sys.executable} benchmarks/memory.py --frames {args.frames} --epochs {args.epochs}"
          + (f" --batch-size {args.batch_size}" if args.batch_size != 32 else "")
          + (f" --out {args.out}" if args.out else ""))
    print()
    header = f"{'phase':<10} {'peak VmRSS':>11} {'peak RssAnon':>13} {'peak RssFile':>13} {'seconds':>8} {'images/s':>9}"
    print(header)
    print("-" * len(header))
    for phase, peaks in sampler.peaks.items():
        if phase == "start":
            continue
        if phase == "decode":
            seconds, rate = decode_seconds, args.frames / decode_seconds
        else:
            seconds = history.get(int(phase.split()[1]), float("nan"))
            rate = pairs["train"] / seconds
        print(f"{phase:<10} {gib(peaks['VmRSS']):>7} GiB {gib(peaks['RssAnon']):>9} GiB {gib(peaks['RssFile']):>9} GiB "
              f"{seconds:>8.1f} {rate:>9.1f}")
    print()
    print("decode: frames decoded (cold cache) per second; epochs: training pairs per second of the epoch "
          "(history.csv 'seconds', which includes validation).")
    print("RssFile is mostly decode-cache pages, clean and dropped by the kernel under memory pressure; "
          "RssAnon is what the process holds itself.")
    epochs = [p for p in sampler.peaks if p.startswith("epoch")]
    if len(epochs) > 1:
        first, last = sampler.peaks[epochs[0]]["VmRSS"], sampler.peaks[epochs[-1]]["VmRSS"]
        anon = [sampler.peaks[p]["RssAnon"] for p in epochs]
        print(f"peak VmRSS {epochs[0]} → {epochs[-1]}: {gib(first)} → {gib(last)} GiB "
              f"({(last - first) / 2**20:+.0f} MiB); RssAnon range across epochs "
              f"{(max(anon) - min(anon)) / 2**20:.0f} MiB; total {total:.0f} s")
    if args.out is None:
        shutil.rmtree(out, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
