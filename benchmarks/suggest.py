"""Does ``pixelwise suggest`` pick better frames to label than chance? Measured on held-out CARLA drives.

    .venv/bin/python benchmarks/suggest.py [--data ../shared/carla] [--out /tmp/suggest-bench]
        [--seeds 0 1 2] [--labelled 40] [--count 40] [--epochs 30] [--size 240x320]

For each seed: the drives ``train`` holds out (its own split: validation fraction 0.2, split seed 0) are
the test set and are never trained on. Of the other drives, whole drives are drawn at random (by the
seed) until they hold ``--labelled`` frames: the labelled set. The rest of the training drives are the
unlabelled pool. A first model trains on the labelled set; ``suggest`` (that model, its last weights)
picks ``--count`` frames of the pool, and the same number are drawn from the pool at random (by the
seed). Two models then train from the labelled set plus each set of picks, with the same recipe and
training seed, and their last weights are scored on the test drives at the frames' full 640x480.

The recipe is ``default`` (ImageNet Lite0 encoder, the same loss, augmentation and schedule) made
short: ``--size`` frames (default 240x320, so 128x160 crops), ``--epochs`` epochs, no validation split
and no time limit. Prints and writes (``--out``/suggest.md, suggest.json) mIoU over the classes present
in the test truth and the IoU of the watched classes, per seed and as means, with the difference.
It also counts the labelled pixels of the watched classes that each set of picks brings, beside an
oracle's 40: the pool frames that hold most of the pool's Pedestrian, TrafficSign and TrafficLight
pixels by the truth (each class counted as its share of the pool's), spread over drives as ``suggest``
spreads its picks: how far the picks are from the frames that would teach the rare classes most.
Finished runs are reused. Needs the CPU to itself for meaningful wall times (not for the scores).
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

from heldout import WATCH, add_arguments, held_out, link_pairs, publish, short_recipe  # sets the --isa limits first

import numpy as np  # noqa: E402

from pixelwise.classes import CARLA  # noqa: E402
from pixelwise.data.pairs import IMAGE_DIR, MASK_DIR, find_pairs  # noqa: E402
from pixelwise.data.split import frame_runs  # noqa: E402
from pixelwise.evaluation.evaluate import evaluate  # noqa: E402
from pixelwise.inference.predictor import Predictor  # noqa: E402
from pixelwise.data.decode import read_mask  # noqa: E402
from pixelwise.inference.suggest import spread, suggest  # noqa: E402
from pixelwise.training.loop import train  # noqa: E402


def trained(data: Path, run_dir: Path, names: list[str], size, epochs: int, seed: int, cache: Path) -> Path:
    """A run trained on the pairs ``names`` (reused when finished)."""
    if (run_dir / "done").exists():
        return run_dir
    folder = link_pairs(data, run_dir.parent / f"{run_dir.name}-data", names)
    started = time.perf_counter()
    train(folder / IMAGE_DIR, folder / MASK_DIR, run_dir, short_recipe(size, epochs, seed), cache_dir=cache,
          progress=False, log=lambda _: None, resume=(run_dir / "last.safetensors").exists())
    (run_dir / "done").write_text(f"{time.perf_counter() - started:.1f}\n")
    return run_dir


def scored(run_dir: Path, test: Path, cache: Path) -> dict:
    """mIoU (classes present in the test truth) and the watched classes' IoU of the run's last weights."""
    result_file = run_dir / "scores.json"
    if result_file.exists():
        return json.loads(result_file.read_text())
    evaluation = evaluate(run_dir, test / IMAGE_DIR, test / MASK_DIR, weights="last", cache_dir=cache, progress=False)
    s = evaluation.scores
    per_class = {CARLA.names[i]: float(s.iou[i]) for i in np.flatnonzero(s.present)}
    result = {"miou": float(s.miou), "watched": {c: per_class.get(c) for c in WATCH},
              "seconds": float((run_dir / "done").read_text())}
    result_file.write_text(json.dumps(result, indent=2))
    return result


RARE = ("Pedestrian", "TrafficSign", "TrafficLight")  # the classes every short model scores 0 on


def watched_pixels(data: Path, names: list[str]) -> np.ndarray:
    """(frames, watched classes) counts of each frame's labelled pixels of the watched classes."""
    ids = [CARLA.names.index(c) for c in WATCH]
    masks = {p.name: p.mask for p in find_pairs(data / IMAGE_DIR, data / MASK_DIR)[0]}
    counts = np.zeros((len(names), len(ids)), dtype=np.int64)
    for row, name in enumerate(names):
        mask = np.asarray(read_mask(masks[name]))
        counts[row] = [(mask == i).sum() for i in ids]
    return counts


def oracle_picks(pool: list[str], counts: np.ndarray, count: int) -> list[str]:
    """The ``count`` pool frames richest in the rare classes by the truth, spread as suggest spreads."""
    rare = [WATCH.index(c) for c in RARE]
    share = counts[:, rare] / np.maximum(counts[:, rare].sum(axis=0), 1)
    return [pool[i] for i in spread(pool, share.sum(axis=1), count)]


def one_seed(seed: int, args, names: list[str], train_names: list[str], test: Path, cache: Path) -> dict:
    rng = random.Random(seed)
    drives = [[train_names[i] for i in run] for run in frame_runs(train_names)]
    rng.shuffle(drives)
    labelled: list[str] = []
    while len(labelled) < args.labelled:
        labelled += drives.pop()
    pool = sorted(n for d in drives for n in d)
    seed_dir = args.out / f"seed{seed}"
    first = trained(args.data, seed_dir / "labelled", labelled, args.size, args.epochs, seed, cache)
    image_of = {p.name: p.image for p in find_pairs(args.data / IMAGE_DIR, args.data / MASK_DIR)[0]}
    started = time.perf_counter()
    picks = suggest(Predictor(first, weights="last"), [str(image_of[n]) for n in pool], args.count).picks
    suggest_seconds = time.perf_counter() - started
    suggested = [p.path.stem for p in picks]
    chance = random.Random(1000 + seed).sample(pool, args.count)
    (seed_dir / "picks.json").write_text(json.dumps({"labelled": labelled, "suggested": suggested, "random": chance}))
    rows = {"labelled": scored(first, test, cache)}
    for kind, extra in (("suggest", suggested), ("random", chance)):
        run_dir = trained(args.data, seed_dir / kind, labelled + extra, args.size, args.epochs, seed, cache)
        rows[kind] = scored(run_dir, test, cache)
    counts = watched_pixels(args.data, pool)
    row_of = {name: i for i, name in enumerate(pool)}
    picked = {"suggest": suggested, "random": chance, "oracle": oracle_picks(pool, counts, args.count)}
    rows["pixels"] = {kind: dict(zip(WATCH, counts[[row_of[n] for n in kind_names]].sum(axis=0).tolist()))
                      for kind, kind_names in picked.items()}
    rows["pixels"]["pool"] = dict(zip(WATCH, counts.sum(axis=0).tolist()))
    rows.update(labelled_frames=len(labelled), pool=len(pool), suggest_seconds=suggest_seconds)
    print(f"seed {seed}: {len(labelled)} labelled, pool {len(pool)}: mIoU labelled only "
          f"{rows['labelled']['miou']:.3f}, +suggest {rows['suggest']['miou']:.3f}, +random {rows['random']['miou']:.3f}",
          flush=True)
    return rows


def table(results: dict[int, dict]) -> str:
    def cell(v):
        return "–" if v is None else f"{v:.3f}"

    head = "| seed | set | mIoU | " + " | ".join(WATCH) + " |\n|---|---|---|" + "---|" * len(WATCH) + "\n"
    lines = []
    for seed, rows in results.items():
        for kind in ("labelled", "suggest", "random"):
            r = rows[kind]
            lines.append(f"| {seed} | {kind} | {r['miou']:.3f} | " + " | ".join(cell(r['watched'][c]) for c in WATCH) + " |")
    for kind in ("labelled", "suggest", "random"):
        mean = np.mean([rows[kind]["miou"] for rows in results.values()])
        watched = [np.mean([rows[kind]["watched"][c] or 0.0 for rows in results.values()]) for c in WATCH]
        lines.append(f"| mean | {kind} | {mean:.3f} | " + " | ".join(f"{w:.3f}" for w in watched) + " |")
    gaps = [rows["suggest"]["miou"] - rows["random"]["miou"] for rows in results.values()]
    return head + "\n".join(lines) + (f"\n\nsuggest − random, mIoU per seed: {', '.join(f'{g:+.3f}' for g in gaps)}; "
                                      f"mean {np.mean(gaps):+.3f}\n\n" + pixel_table(results))


def pixel_table(results: dict[int, dict]) -> str:
    """Thousands of labelled pixels of each watched class in each set of picks and in the whole pool,
    means over the seeds."""
    head = ("thousands of labelled pixels each set of picks brings (mean over seeds)\n\n| picks | "
            + " | ".join(WATCH) + " |\n|---|" + "---|" * len(WATCH) + "\n")
    lines = []
    for kind in ("suggest", "random", "oracle", "pool"):
        means = [np.mean([rows["pixels"][kind][c] for rows in results.values()]) / 1000 for c in WATCH]
        lines.append(f"| {kind} | " + " | ".join(f"{m:.1f}" for m in means) + " |")
    return head + "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_arguments(parser, "/tmp/suggest-bench", epochs=30)
    parser.add_argument("--labelled", type=int, default=40, help="frames in the labelled set (whole drives)")
    parser.add_argument("--count", type=int, default=40, help="frames added by suggest and at random")
    args = parser.parse_args()
    names, split, test = held_out(args)
    train_names = [names[i] for i in split.train]
    results = {seed: one_seed(seed, args, names, train_names, test, args.out / "cache") for seed in args.seeds}
    publish(args, "suggest", f"{len(split.val)} test frames", table(results), results)


if __name__ == "__main__":
    main()
