"""What suggest.py and folds.py share: the CARLA drives ``train`` holds out as a fixed test set, the
short ``default`` recipe they train, their common flags and how they write their reports."""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import replace
from pathlib import Path

import isa

isa.limit_isa()  # before torch loads: --isa avx2 limits its kernels

from pixelwise.classes import CARLA  # noqa: E402
from pixelwise.data.dataset import decode_dataset  # noqa: E402
from pixelwise.data.pairs import IMAGE_DIR, MASK_DIR, find_pairs  # noqa: E402
from pixelwise.data.split import Split, split_by_runs  # noqa: E402
from pixelwise.recipes import recipe  # noqa: E402

WATCH = ("Vehicles", "Pole", "Pedestrian", "TrafficSign", "TrafficLight")
SPLIT_SEED, VAL_FRACTION = 0, 0.2  # the test drives: train's own split with these settings


def add_arguments(parser: argparse.ArgumentParser, out: str, epochs: int) -> None:
    """--data, --out, --seeds, --epochs, --size and --isa."""
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "carla")
    parser.add_argument("--out", type=Path, default=Path(out))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=epochs)
    parser.add_argument("--size", type=lambda t: tuple(map(int, t.split("x"))), default=(240, 320))
    isa.add_isa_argument(parser)


def held_out(args: argparse.Namespace) -> tuple[list[str], Split, Path]:
    """The frames' names, train's own split of them, and a folder of links to the held-out (test) pairs."""
    if not (args.data / IMAGE_DIR).is_dir():
        raise SystemExit(f"{args.data} holds no {IMAGE_DIR}/: give the CARLA frames with --data")
    args.out.mkdir(parents=True, exist_ok=True)
    names = decode_dataset(args.data / IMAGE_DIR, args.data / MASK_DIR, (96, 128), len(CARLA),
                           cache_dir=args.out / "cache", progress=False).names
    split = split_by_runs(names, VAL_FRACTION, SPLIT_SEED)
    return names, split, link_pairs(args.data, args.out / "test", [names[i] for i in split.val])


def link_pairs(data: Path, folder: Path, names: list[str]) -> Path:
    """A CameraRGB/CameraMask folder of links to the pairs called ``names``."""
    pairs = {p.name: p for p in find_pairs(data / IMAGE_DIR, data / MASK_DIR)[0]}
    for sub in (IMAGE_DIR, MASK_DIR):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    for name in names:
        for source, sub in ((pairs[name].image, IMAGE_DIR), (pairs[name].mask, MASK_DIR)):
            link = folder / sub / source.name
            if not link.exists():
                os.symlink(source.resolve(), link)
    return folder


def short_recipe(size: tuple[int, int], epochs: int, seed: int):
    """``default`` at ``size`` for ``epochs`` epochs, no validation split and no time limit."""
    base = recipe("default")
    return replace(base, data=replace(base.data, size=size, val_fraction=0.0),
                   train=replace(base.train, epochs=epochs, time_limit=0.0, seed=seed))


def publish(args: argparse.Namespace, stem: str, what: str, table: str, results: dict) -> None:
    """Print the report (the ISA line, ``what`` was run, ``table``) and write it as ``--out``/STEM.md, with
    ``results`` as STEM.json."""
    report = (f"{isa.isa_line()}\n\nrecipe default at {args.size[0]}x{args.size[1]}, {args.epochs} epochs; {what}\n\n"
              + table)
    (args.out / f"{stem}.md").write_text(report)
    (args.out / f"{stem}.json").write_text(json.dumps(results, indent=2))
    print(report)
