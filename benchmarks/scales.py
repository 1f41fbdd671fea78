"""What test-time flips and scales give and cost: each run evaluated on held-out pairs under each setting.

    .venv/bin/python benchmarks/scales.py RUN [RUN ...] --data HELD_OUT [--weights last]
        [--settings none flip 0.75,1,1.25 flip+0.75,1,1.25]

A setting is ``none``, ``flip`` (the mirror, ``--tta``), a list of scales (``--scales``) or
``flip+SCALES``. Prints mIoU (classes present in the truth) and the watched classes' IoU per run and
setting, the mean over the runs, and seconds per frame (prediction and scoring at the masks' size, the
torch engine in fp32 so that every setting runs the same arithmetic). ``HELD_OUT`` holds
CameraRGB/CameraMask; ``benchmarks/suggest.py`` leaves its test drives (the drives ``train`` holds out)
in ``OUT/test`` and short-recipe runs beside them.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import isa

isa.limit_isa()  # before torch loads: --isa avx2 limits its kernels

import numpy as np  # noqa: E402

from pixelwise.classes import CARLA  # noqa: E402
from pixelwise.data.pairs import IMAGE_DIR, MASK_DIR  # noqa: E402
from pixelwise.evaluation.evaluate import evaluate  # noqa: E402

WATCH = ("Vehicles", "Pole", "Pedestrian", "TrafficSign", "TrafficLight")


def parse_setting(text: str) -> tuple[bool, tuple[float, ...]]:
    """(flip, scales) of ``none``, ``flip``, ``0.75,1,1.25`` or ``flip+0.75,1,1.25``."""
    flip = text.startswith("flip")
    rest = text.removeprefix("flip").removeprefix("+")
    scales = tuple(float(s) for s in rest.split(",")) if rest and rest != "none" and text != "none" else (1.0,)
    return flip, scales


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--data", type=Path, required=True, help="held-out pairs (CameraRGB/, CameraMask/)")
    parser.add_argument("--weights", choices=("best", "last"), default="last")
    parser.add_argument("--settings", nargs="+", default=["none", "flip", "0.75,1,1.25", "flip+0.75,1,1.25"])
    isa.add_isa_argument(parser)
    args = parser.parse_args()
    print(isa.isa_line())
    rows: dict[str, list[tuple[float, list[float], float]]] = {s: [] for s in args.settings}
    for run in args.runs:
        for setting in args.settings:
            flip, scales = parse_setting(setting)
            started = time.perf_counter()
            evaluation = evaluate(run, args.data / IMAGE_DIR, args.data / MASK_DIR, weights=args.weights, tta=flip,
                                  scales=scales, engine="torch", precision="fp32", progress=False,
                                  cache_dir=args.data.parent / "cache")
            seconds = (time.perf_counter() - started) / evaluation.n_images
            s = evaluation.scores
            watched = [float(s.iou[CARLA.index(c)]) if s.present[CARLA.index(c)] else float("nan") for c in WATCH]
            rows[setting].append((s.miou, watched, seconds))
            print(f"{run.parent.name}/{run.name:10s} {setting:20s} mIoU {s.miou:.4f}  "
                  + " ".join(f"{c} {w:.3f}" for c, w in zip(WATCH, watched)) + f"  {seconds:.2f} s/frame", flush=True)
    base = np.mean([r[0] for r in rows[args.settings[0]]])
    print(f"\n| setting | mean mIoU ({len(args.runs)} runs) | vs {args.settings[0]} | "
          + " | ".join(WATCH) + " | s/frame |\n|---|---|---|" + "---|" * len(WATCH) + "---|")
    for setting, results in rows.items():
        miou = np.mean([r[0] for r in results])
        watched = np.nanmean([r[1] for r in results], axis=0)
        print(f"| {setting} | {miou:.4f} | {miou - base:+.4f} | " + " | ".join(f"{w:.3f}" for w in watched)
              + f" | {np.mean([r[2] for r in results]):.2f} |")


if __name__ == "__main__":
    main()
