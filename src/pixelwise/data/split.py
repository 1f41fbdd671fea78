"""The train/validation split by drive: neighbouring frames of one drive are near duplicates, so
whole runs of consecutive frame numbers are held out together and nothing leaks."""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass

import numpy as np

from .pairs import natural_key


@dataclass(frozen=True)
class Split:
    """Indices into the decoded pairs: which train, which validate."""

    train: list[int]
    val: list[int]


_TRAILING_NUMBER = re.compile(r"^(.*?)([0-9]+)$")


def frame_runs(names: list[str], gap_factor: float = 10.0) -> list[list[int]]:
    """Indices of ``names`` grouped into runs of consecutive frames (one drive, one recording).

    Neighbouring frames are near duplicates, so a split must keep runs whole. Names ending in a
    number are sorted by it (separately per prefix, e.g. ``town1_…`` vs ``town2_…``); a new run
    starts where the step between numbers exceeds ``gap_factor`` × the median step. Names without a
    trailing number form one run in natural order.
    """
    numbered: dict[str, list[tuple[int, int]]] = {}
    plain: list[int] = []
    for i, name in enumerate(names):
        found = _TRAILING_NUMBER.match(name)
        if found:
            numbered.setdefault(found.group(1), []).append((int(found.group(2)), i))
        else:
            plain.append(i)
    groups = [sorted(members, key=lambda m: (m[0], natural_key(names[m[1]])))
              for _, members in sorted(numbered.items(), key=lambda kv: natural_key(kv[0]))]
    steps = [b[0] - a[0] for g in groups for a, b in zip(g, g[1:]) if b[0] > a[0]]
    threshold = gap_factor * float(np.median(steps)) if steps else math.inf
    runs: list[list[int]] = []
    for group in groups:
        run = [group[0][1]]
        for (prev, _), (number, i) in zip(group, group[1:]):
            if number - prev > threshold:
                runs.append(run)
                run = []
            run.append(i)
        runs.append(run)
    if plain:
        runs.append(sorted(plain, key=lambda i: natural_key(names[i])))
    return runs


def split_by_runs(names: list[str], val_fraction: float = 0.2, seed: int = 0) -> Split:
    """Split into train/val without leaking near-duplicate neighbours across the two.

    Whole runs (see :func:`frame_runs`) go to validation, chosen by a seeded shuffle so the val share
    comes as close to ``val_fraction`` as whole runs allow. A single run is cut into two contiguous
    blocks instead (its last ~``val_fraction`` validates). With two or more frames and a nonzero
    fraction, both sides get at least one frame. Deterministic for a given ``seed``.
    """
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), not {val_fraction}")
    n = len(names)
    if n < 2 or val_fraction == 0:
        return Split(list(range(n)), [])
    runs = frame_runs(names)
    if len(runs) == 1:
        run = runs[0]
        k = min(n - 1, max(1, round(n * val_fraction)))
        return Split(sorted(run[: n - k]), sorted(run[n - k:]))
    order = list(range(len(runs)))
    random.Random(seed).shuffle(order)
    target = n * val_fraction
    chosen: list[int] = []
    total = 0
    for r in order:  # runs in shuffled order, as long as they fit under the target …
        if total + len(runs[r]) <= target:
            chosen.append(r)
            total += len(runs[r])
    rest = [r for r in order if r not in chosen]
    best = min(rest, key=lambda r: abs(total + len(runs[r]) - target), default=None)
    if best is not None and abs(total + len(runs[best]) - target) < abs(total - target):
        chosen.append(best)  # … then the one run that brings the share closest, if any does
        total += len(runs[best])
    if not chosen:  # every run is far larger than the target: take the smallest
        chosen = [min(order, key=lambda r: len(runs[r]))]
    if len(chosen) == len(runs):  # keep something to train on
        chosen.pop()
    val = sorted(i for r in chosen for i in runs[r])
    in_val = set(val)
    return Split([i for i in range(n) if i not in in_val], val)


def split_by_folds(names: list[str], folds: int, fold: int, seed: int = 0) -> Split:
    """Fold ``fold`` of ``folds`` cross-validation folds, whole runs of frames at a time.

    The runs (see :func:`frame_runs`), in a seeded shuffle, each join the group with the fewest frames
    so far, so the groups are about equal; fold ``k`` validates on group ``k`` and trains on the
    others. Over ``k = 0 … folds-1`` every frame validates exactly once. A single run is cut into
    ``folds`` contiguous blocks instead. Deterministic for a given ``seed``.

    Raises:
        ValueError: ``folds`` below 2, ``fold`` outside ``0 … folds-1``, or fewer runs of frames (or,
            for one run, frames) than folds.
    """
    if folds < 2:
        raise ValueError(f"folds must be at least 2, not {folds}")
    if not 0 <= fold < folds:
        raise ValueError(f"fold must be in 0-{folds - 1} for {folds} folds, not {fold}")
    runs = frame_runs(names) if names else []
    if len(runs) == 1:
        run = runs[0]
        if len(run) < folds:
            raise ValueError(f"{len(run)} frames cannot make {folds} folds")
        bounds = [round(i * len(run) / folds) for i in range(folds + 1)]
        groups = [run[bounds[i]:bounds[i + 1]] for i in range(folds)]
    else:
        if len(runs) < folds:
            raise ValueError(f"{len(runs)} runs of consecutive frames (drives) cannot make {folds} folds: each fold "
                             "validates on whole runs")
        order = list(range(len(runs)))
        random.Random(seed).shuffle(order)
        groups = [[] for _ in range(folds)]
        for r in order:
            min(groups, key=len).extend(runs[r])  # the first of the smallest: ties go in order
    val = sorted(groups[fold])
    in_val = set(val)
    return Split([i for i in range(len(names)) if i not in in_val], val)
