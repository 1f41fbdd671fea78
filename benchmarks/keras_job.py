"""The seed recipe's whole training job against the assignment's own Keras code, as a user runs them.

    python benchmarks/keras_job.py [--isa avx2] [--data ../shared/carla] [--frames 160] [--epochs 5] [--rounds 1]

Each round times four whole commands, wall clock from start to exit, alternating:
``pixelwise train --recipe seed`` with a fresh decode cache (cold: it decodes the PNGs, and on CPUs
with native bf16 measures its precision), the Keras job (benchmarks/keras_unet.py: the assignment's
tf.data pipeline, U-Net and ``fit``), ``pixelwise train`` again with the cache now warm, and the Keras
job again (Keras keeps no cache between runs: its two runs differ by what the OS caches). Both train
``--epochs`` epochs on the first ``--frames`` frames of ``--data`` at 96x128, batch 32; pixelwise
holds whole drives out for validation and validates after each epoch, Keras trains on every frame.
The commands inherit ``--isa``'s limits. Prints each run and the median of each column.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import isa  # sets the --isa limits in the environment the timed commands inherit

isa.limit_isa()

HERE = Path(__file__).resolve().parent
CARLA = HERE.parents[1] / "shared" / "carla"


def subset(data: Path, frames: int, into: Path) -> Path:
    """The first ``frames`` pairs of ``data`` as symbolic links in ``into`` (CameraRGB/, CameraMask/)."""
    names = sorted(p.name for p in (data / "CameraRGB").iterdir())[:frames]
    for folder in ("CameraRGB", "CameraMask"):
        (into / folder).mkdir(parents=True)
        for name in names:
            (into / folder / name).symlink_to((data / folder / name).resolve())
    return into


def timed(command: list[str]) -> tuple[float, float]:
    """Wall seconds ``command`` takes from start to exit, and the CPU seconds (user + system) of its
    processes (its output is discarded; a failure stops the benchmark)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    result = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - start
    if result.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stderr[-2000:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=CARLA, help="CARLA frames (default: %(default)s)")
    parser.add_argument("--frames", type=int, default=160, help="frames to train on (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=5, help="epochs of each job (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=1, help="rounds of the four commands (default: %(default)s)")
    isa.add_isa_argument(parser)
    args = parser.parse_args()
    if not (args.data / "CameraRGB").is_dir():
        print(f"{args.data}: no CameraRGB/ folder of CARLA frames", file=sys.stderr)
        return 1
    print(isa.isa_line())
    rows: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        data = subset(args.data, args.frames, Path(tmp) / "data")
        keras = [sys.executable, str(HERE / "keras_unet.py"), str(data), str(args.epochs)]
        print(f"{args.frames} frames, {args.epochs} epochs; Keras: {' '.join(keras)}")
        print("| round | pixelwise cold | Keras 1st | ratio | pixelwise warm | Keras 2nd | ratio |\n|---|---|---|---|---|---|---|")
        for round_ in range(args.rounds):
            cache = Path(tmp) / f"cache-{round_}"

            def pixelwise(run: str) -> list[str]:
                return [sys.executable, "-m", "pixelwise", "train", str(data), "--recipe", "seed", "--epochs",
                        str(args.epochs), "--out", str(Path(tmp) / f"run-{round_}-{run}"), "--cache-dir", str(cache),
                        "--no-progress"]
            runs = {"pixelwise cold": timed(pixelwise("cold")), "Keras 1st": timed(keras),
                    "pixelwise warm": timed(pixelwise("warm")), "Keras 2nd": timed(keras)}
            row = {name: wall for name, (wall, _) in runs.items()}
            rows.append(row)
            cell = {name: f"{wall:.1f} s (CPU {cpu:.0f} s)" for name, (wall, cpu) in runs.items()}
            print(f"| {round_ + 1} | {cell['pixelwise cold']} | {cell['Keras 1st']} | "
                  f"{row['Keras 1st'] / row['pixelwise cold']:.2f}× | {cell['pixelwise warm']} | "
                  f"{cell['Keras 2nd']} | {row['Keras 2nd'] / row['pixelwise warm']:.2f}× |", flush=True)
    if len(rows) > 1:
        median = {key: statistics.median(row[key] for row in rows) for key in rows[0]}
        print(f"| median | {median['pixelwise cold']:.1f} s | {median['Keras 1st']:.1f} s | "
              f"{statistics.median(r['Keras 1st'] / r['pixelwise cold'] for r in rows):.2f}× | "
              f"{median['pixelwise warm']:.1f} s | {median['Keras 2nd']:.1f} s | "
              f"{statistics.median(r['Keras 2nd'] / r['pixelwise warm'] for r in rows):.2f}× |")
    print("(ratio: Keras's wall time over pixelwise's, above 1 pixelwise is faster; CPU: user + system seconds of the "
          "command's processes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
