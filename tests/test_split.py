"""data/split.py: the train/validation split keeps drives (runs of consecutive frames) whole."""

from __future__ import annotations

import numpy as np
import pytest

from pixelwise.data.split import Split, frame_runs, split_by_runs

H, W = 12, 16  # original size of the synthetic frames


# ----------------------------------------------------------------------------------------------- split


def carla_like_names(rng: np.random.Generator, n_runs: int = 6) -> tuple[list[str], list[set[str]]]:
    """Every-third-frame drives: steps of 3-22 inside a drive, >= 39 between drives."""
    names, runs, number = [], [], 26
    for _ in range(n_runs):
        run = set()
        for _ in range(rng.integers(1, 15)):
            names.append(f"{number:06d}")
            run.add(names[-1])
            number += int(rng.choice([3, 3, 3, 4, 6, 9, 22]))
        runs.append(run)
        number += int(rng.integers(39, 5000))
    return names, runs


def test_frame_runs_finds_drives():
    rng = np.random.default_rng(0)
    for _ in range(20):
        names, runs = carla_like_names(rng)
        order = rng.permutation(len(names))
        shuffled = [names[i] for i in order]
        found = frame_runs(shuffled)
        assert sorted(sorted(shuffled[i] for i in run) for run in found) == sorted(sorted(r) for r in runs)
        for run in found:  # each run in frame order
            assert [int(shuffled[i]) for i in run] == sorted(int(shuffled[i]) for i in run)


def test_frame_runs_prefixes_and_unnumbered_names():
    names = ["town2_0001", "town1_0002", "town1_0001", "town2_0002"]
    assert frame_runs(names) == [[2, 1], [0, 3]]  # a prefix is its own sequence
    assert frame_runs(["b", "a", "c10", "c2x"]) == [[2], [1, 0, 3]]  # unnumbered names: one run, natural order
    unnumbered = ["zeta", "alpha", "mid"]
    assert frame_runs(unnumbered) == [[1, 2, 0]]
    assert frame_runs([]) == [] and frame_runs(["7"]) == [[0]]


def test_split_keeps_runs_whole_and_is_deterministic():
    names, runs = carla_like_names(np.random.default_rng(3), n_runs=12)
    splits = {seed: split_by_runs(names, 0.25, seed) for seed in range(6)}
    for split in splits.values():
        assert sorted(split.train + split.val) == list(range(len(names))) and not set(split.train) & set(split.val)
        val = {names[i] for i in split.val}
        for run in runs:
            assert run <= val or not run & val, "a run was split between train and val"
        assert abs(len(split.val) - 0.25 * len(names)) <= max(len(r) for r in runs)
    assert split_by_runs(names, 0.25, 0) == splits[0]
    assert len({tuple(s.val) for s in splits.values()}) > 1  # the seed matters


def test_split_fractions_and_edges():
    names, _ = carla_like_names(np.random.default_rng(5), n_runs=30)
    n = len(names)
    for fraction in (0.1, 0.2, 0.5):
        share = len(split_by_runs(names, fraction).val) / n
        assert abs(share - fraction) < 0.05
    assert split_by_runs(names, 0.0) == Split(list(range(n)), [])
    assert split_by_runs(["5"], 0.5) == Split([0], [])
    assert split_by_runs(["1", "2"], 0.01) == Split([0], [1])
    assert split_by_runs(["1", "2"], 0.99) == Split([0], [1])
    tiny = split_by_runs(names, 0.001)
    assert len(tiny.val) >= 1 and len(tiny.train) >= 1
    for bad in (-0.1, 1.0, 1.5, float("nan")):
        with pytest.raises(ValueError):
            split_by_runs(names, bad)


def test_single_run_splits_into_contiguous_blocks():
    names = [f"{i:04d}" for i in range(0, 300, 3)][::-1]  # one drive, listed backwards
    split = split_by_runs(names, 0.2, seed=7)
    assert len(split.val) == 20
    frames = sorted(int(names[i]) for i in split.val)
    assert frames == list(range(240, 300, 3))  # the last block of the drive, never interleaved
    assert split_by_runs(names, 0.2, seed=8) == split

    words = ["delta", "alpha", "charlie", "bravo", "echo"]
    split = split_by_runs(words, 0.4)
    assert sorted(words[i] for i in split.val) == ["delta", "echo"]
