"""Folds and ensembles against one model, and every frame against a validation split, on held-out CARLA drives.

    .venv/bin/python benchmarks/folds.py [--data ../shared/carla] [--out /tmp/folds-bench]
        [--settings split all folds3 folds5] [--seeds 0 1 2] [--epochs 15] [--size 240x320] [--isa avx2]

The drives ``train`` holds out (its own split: validation fraction 0.2, split seed 0) are the test set
and are never trained on; the other drives are the training data. Each setting trains on them:

- ``split``: one model, validating on whole drives (``train``'s own split, a fifth of the frames);
- ``all``: one model on every training frame (no validation);
- ``foldsK``: ``train --folds K``, K models each validating on its own drives, and their ensemble.

The recipe is ``default`` made short, as in suggest.py: ``--size`` frames (128x160 crops at 240x320),
``--epochs`` epochs, no time limit; each of ``--seeds`` is the training seed and the split seed (which
drives validate, in ``split`` and the folds). Each model is scored with its ``best``
weights on the test drives at the frames' full 640x480 (torch, fp32): mIoU over the classes in the
test truth and the watched classes' IoU, with the training time (all folds together) and the
prediction time per frame. A folds setting also reports its folds' own scores (their mean). Prints
and writes ``--out``/folds.md and folds.json (per seed, and the means over the seeds); finished runs
are reused. Needs the CPU to itself for
meaningful times (not for the scores).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from heldout import VAL_FRACTION, WATCH, add_arguments, held_out, link_pairs, publish, short_recipe  # --isa first

import numpy as np  # noqa: E402

from pixelwise.classes import CARLA  # noqa: E402
from pixelwise.data.pairs import IMAGE_DIR, MASK_DIR  # noqa: E402
from pixelwise.evaluation.evaluate import evaluate  # noqa: E402
from pixelwise.training.folds import fold_dir, train_folds  # noqa: E402
from pixelwise.training.loop import train  # noqa: E402


def trained(setting: str, seed: int, data: Path, run_dir: Path, args, cache: Path) -> tuple[Path, list[Path]]:
    """The run of ``setting`` (reused when finished) and its fold runs (none for a single model)."""
    config = short_recipe(args.size, args.epochs, seed)
    folds = int(setting.removeprefix("folds")) if setting.startswith("folds") else 1
    config = config.with_data(val_fraction=VAL_FRACTION if setting == "split" else 0.0, folds=folds, split_seed=seed)
    members = [fold_dir(run_dir, k) for k in range(folds)] if folds > 1 else []
    if (run_dir / "done").exists():
        return run_dir, members
    options = {"cache_dir": cache, "progress": False, "log": lambda _: None}
    started = time.perf_counter()
    if folds > 1:
        train_folds(data / IMAGE_DIR, data / MASK_DIR, run_dir, config, resume=run_dir.exists(), **options)
    else:
        train(data / IMAGE_DIR, data / MASK_DIR, run_dir, config, resume=(run_dir / "last.safetensors").exists(),
              **options)
    (run_dir / "done").write_text(f"{time.perf_counter() - started:.1f}\n")
    return run_dir, members


def scored(run_dir: Path, test: Path, cache: Path) -> dict:
    """mIoU (classes in the test truth), the watched classes' IoU and seconds per frame of ``best``."""
    result_file = run_dir / "scores.json"
    if result_file.exists():
        return json.loads(result_file.read_text())
    started = time.perf_counter()
    evaluation = evaluate(run_dir, test / IMAGE_DIR, test / MASK_DIR, engine="torch", precision="fp32",
                          cache_dir=cache, progress=False)
    seconds = time.perf_counter() - started
    s = evaluation.scores
    per_class = {CARLA.names[i]: float(s.iou[i]) for i in np.flatnonzero(s.present)}
    result = {"miou": float(s.miou), "watched": {c: per_class.get(c) for c in WATCH},
              "s_per_frame": seconds / len(evaluation.frames)}
    result_file.write_text(json.dumps(result, indent=2))
    return result


def table(results: dict[int, dict[str, dict]]) -> str:
    """One row per seed and setting (and its folds' own mean), then the means over the seeds."""
    def row(label: str, rows: list[dict], costs: bool = True) -> str:
        watched = [np.mean([r["watched"][c] or 0.0 for r in rows]) for c in WATCH]
        cost = (f" {np.mean([r['train_seconds'] for r in rows]) / 60:.1f} | {np.mean([r['s_per_frame'] for r in rows]):.2f} |"
                if costs else " | |")
        return (f"| {label} | {np.mean([r['miou'] for r in rows]):.3f} | " + " | ".join(f"{w:.3f}" for w in watched)
                + " |" + cost)

    lines = ["| seed | setting | mIoU | " + " | ".join(WATCH) + " | training min | s/frame |",
             "|---|---|---|" + "---|" * len(WATCH) + "---|---|"]
    settings = list(next(iter(results.values())))
    for seed, by_setting in results.items():
        for setting, r in by_setting.items():
            lines.append(row(f"{seed} | {setting}", [r]))
            if r["folds"]:
                lines.append(row(f"{seed} | {setting}: its folds alone (mean)", r["folds"], costs=False))
    for setting in settings:
        rows = [by_setting[setting] for by_setting in results.values()]
        lines.append(row(f"mean | {setting}", rows))
        if rows[0]["folds"]:
            lines.append(row(f"mean | {setting}: its folds alone", [f for r in rows for f in r["folds"]], costs=False))
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_arguments(parser, "/tmp/folds-bench", epochs=15)
    parser.add_argument("--settings", nargs="+", default=["split", "all", "folds3", "folds5"],
                        help="split, all, or foldsK (K at least 2)")
    args = parser.parse_args()
    for setting in args.settings:
        if setting not in ("split", "all") and not (setting.startswith("folds") and setting[5:].isdigit()
                                                    and int(setting[5:]) >= 2):
            raise SystemExit(f"unknown setting {setting!r}: split, all or foldsK (K at least 2)")
    names, split, test = held_out(args)
    data = link_pairs(args.data, args.out / "train", [names[i] for i in split.train])
    cache = args.out / "cache"
    results: dict[int, dict[str, dict]] = {}
    for seed in args.seeds:
        results[seed] = {}
        for setting in args.settings:
            run_dir, members = trained(setting, seed, data, args.out / f"seed{seed}" / setting, args, cache)
            results[seed][setting] = {**scored(run_dir, test, cache), "folds": [scored(m, test, cache) for m in members],
                                      "train_seconds": float((run_dir / "done").read_text())}
            print(f"seed {seed}, {setting}: mIoU {results[seed][setting]['miou']:.3f}", flush=True)
    publish(args, "folds", f"{len(split.train)} training and {len(split.val)} test frames", table(results), results)


if __name__ == "__main__":
    main()
