"""The fixed cost of a run: from ``pixelwise train`` to its first training step, cold and warm cache.

    python benchmarks/first_run.py [--isa avx2] [--data ../shared/carla] [--frames 160] [--recipe seed] [--rounds 2]

Each measurement is a fresh process that runs what ``pixelwise train DATA --recipe RECIPE`` runs (the
CLI's imports, then ``train`` with the run's own settings) and stops at the first training batch (a
``Hooks.on_batch`` that raises). It reports the seconds from the process's start to: the package
imported, the run's first log line (pairs found and decoded, the model built, the precision chosen)
and the first batch (the run directory written, the logs opened), each with the CPU seconds of all
its threads so far, and the whole process's wall time from start to exit as its parent saw it.
Rounds alternate a fresh cache folder (cold: every PNG decoded) and the same folder again (warm).
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import isa  # sets the --isa limits in the environment the measured processes inherit

isa.limit_isa()

from keras_job import CARLA, subset  # noqa: E402

CHILD = r"""
import json, sys, time
started = time.perf_counter()
from pixelwise.cli import main  # what `pixelwise train` imports before it parses anything
imported = time.perf_counter()
from pathlib import Path
from pixelwise.recipes import recipe
from pixelwise.training.hooks import Hooks
from pixelwise.training.loop import train

data, cache, out, name = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4]
marks = {"imported": [imported - started, time.process_time()]}


class FirstStep(Exception):
    pass


def on_batch(*_):
    raise FirstStep


def log(line):
    if " training and " in line and "validation pairs" in line:
        marks["set up (decoded, model, precision)"] = [time.perf_counter() - started, time.process_time()]


try:
    train(data / "CameraRGB", data / "CameraMask", out, recipe(name), cache_dir=cache, progress=False, log=log,
          hooks=Hooks(on_batch=on_batch))
except FirstStep:
    marks["first step"] = [time.perf_counter() - started, time.process_time()]
print(json.dumps(marks))
"""


def measure(data: Path, cache: Path, out: Path, name: str) -> dict[str, list[float]]:
    """The child's marks (wall and CPU seconds), and its whole run as the parent saw it."""
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", CHILD, str(data), str(cache), str(out), name],
                            capture_output=True, text=True)
    wall = time.perf_counter() - start
    if result.returncode:
        raise SystemExit(result.stderr[-2000:])
    marks = json.loads(result.stdout.strip().splitlines()[-1])
    marks["whole process"] = [wall, float("nan")]
    return marks


def seconds(wall: float, cpu: float) -> str:
    return f"{wall:.2f} s" + ("" if math.isnan(cpu) else f" ({cpu:.2f})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=CARLA, help="CARLA frames (default: %(default)s)")
    parser.add_argument("--frames", type=int, default=160, help="frames (default: %(default)s)")
    parser.add_argument("--recipe", default="seed", help="recipe to start (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=2, help="cold and warm pairs (default: %(default)s)")
    isa.add_isa_argument(parser)
    args = parser.parse_args()
    print(isa.isa_line())
    columns = ("imported", "set up (decoded, model, precision)", "first step", "whole process")
    print("| round | cache | " + " | ".join(columns) + " |\n|---|---|" + "---|" * len(columns))
    with tempfile.TemporaryDirectory() as tmp:
        data = subset(args.data, args.frames, Path(tmp) / "data")
        for round_ in range(args.rounds):
            cache = Path(tmp) / f"cache-{round_}"
            for label in ("cold", "warm"):
                marks = measure(data, cache, Path(tmp) / f"run-{round_}-{label}", args.recipe)
                print(f"| {round_ + 1} | {label} | " + " | ".join(seconds(*marks.get(c, [math.nan] * 2)) for c in columns)
                      + " |", flush=True)
    print("(seconds from the process's start, with the CPU seconds of all its threads in brackets: on a busy machine\n"
          " the CPU time is what the same work takes with a core to itself; the whole process as timed from outside)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
