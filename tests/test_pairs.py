"""data/pairs.py and data/problems.py: locating the folders, pairing by stem, problems naming files."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from pixelwise.data import pairs as pairs_module
from pixelwise.data.pairs import find_pairs, locate
from pixelwise.data.problems import DataError, Problem

H, W = 12, 16  # original size of the synthetic frames
from data_files import decode, frame, make_dataset, problem_for, save

# -------------------------------------------------------------------------------------- errors, locate


def test_data_error_lists_every_problem_and_pickles():
    one = DataError([Problem(Path("a.png"), "truncated PNG")])
    assert str(one) == "a.png: truncated PNG"
    two = DataError([Problem(Path("a.png"), "truncated PNG"), Problem(Path("b.png"), "empty file")])
    lines = str(two).splitlines()
    assert len(lines) == 3 and "2 problems" in lines[0] and lines[1:] == ["a.png: truncated PNG", "b.png: empty file"]
    again = pickle.loads(pickle.dumps(two))
    assert again.problems == two.problems and str(again) == str(two)


def test_locate_dataset_folder_and_explicit_overrides(tmp_path):
    images, masks = make_dataset(tmp_path / "set", ["1"])
    assert locate(tmp_path / "set") == (images, masks)
    other = tmp_path / "labels"
    other.mkdir()
    assert locate(tmp_path / "set", masks=other) == (images, other)
    assert locate(images=images, masks=other) == (images, other)


def test_locate_names_what_is_missing(tmp_path):
    with pytest.raises(DataError) as err:
        locate(tmp_path / "nope")
    assert err.value.problems[0].path == tmp_path / "nope" and "no such folder" in str(err.value)

    (tmp_path / "plain" / "images").mkdir(parents=True)
    with pytest.raises(DataError) as err:
        locate(tmp_path / "plain")
    message = str(err.value)
    assert "CameraRGB/" in message and "CameraMask/" in message and "images=FOLDER" in message and "images/" in message

    with pytest.raises(DataError) as err:
        locate(images=tmp_path / "plain" / "images", masks=tmp_path / "gone")
    assert [p.path for p in err.value.problems] == [tmp_path / "gone"]

    with pytest.raises(DataError, match="masks=FOLDER"):
        locate(images=tmp_path / "plain" / "images")
    with pytest.raises(ValueError):
        locate()


# --------------------------------------------------------------------------------------------- pairing


def test_pairs_match_by_stem_whatever_the_listing_order(tmp_path, monkeypatch):
    images, masks = make_dataset(tmp_path, ["b", "a", "c", "10", "2"])
    real_scandir = os.scandir

    def scandir_reversing_masks(path):  # the two folders list in different orders
        entries = list(real_scandir(path))
        entries.sort(key=lambda e: e.name, reverse=Path(path) == masks)
        return iter(entries)

    monkeypatch.setattr(pairs_module.os, "scandir", scandir_reversing_masks)
    pairs, problems = find_pairs(images, masks)
    assert problems == []
    assert [p.name for p in pairs] == ["2", "10", "a", "b", "c"]  # natural order
    assert all(p.image.stem == p.mask.stem == p.name for p in pairs)

    decoded = decode(images, masks, workers=1)
    for k in range(len(decoded.names)):  # image R = 10 * id + seed: the image belongs to this mask
        seed = (decoded.images[k, ..., 0].astype(int) - 10 * decoded.masks[k].astype(int))
        assert len(np.unique(seed)) == 1


def test_unmatched_files_are_problems_naming_the_file(tmp_path):
    images, masks = make_dataset(tmp_path, ["1", "2", "3"])
    (masks / "2.png").unlink()
    (images / "3.png").unlink()
    pairs, problems = find_pairs(images, masks)
    assert [p.name for p in pairs] == ["1"]
    assert len(problems) == 2
    assert "no mask" in problem_for(problems, images / "2.png").message
    assert "no image" in problem_for(problems, masks / "3.png").message


def test_hidden_and_non_image_files_are_ignored(tmp_path):
    images, masks = make_dataset(tmp_path, ["1"])
    (images / ".DS_Store").write_bytes(b"junk")
    (images / "._1.png").write_bytes(b"junk")  # macOS resource fork
    (masks / "notes.txt").write_text("hello")
    (images / "sub.png").mkdir()
    pairs, problems = find_pairs(images, masks)
    assert [p.name for p in pairs] == ["1"] and problems == []


def test_same_stem_twice_in_one_folder_is_a_problem(tmp_path):
    images, masks = make_dataset(tmp_path, ["1", "2"])
    save(images / "1.jpg", frame(0)[0][..., :3])
    pairs, problems = find_pairs(images, masks)
    assert [p.name for p in pairs] == ["2"]
    assert len(problems) == 1 and "1.jpg" in problems[0].message and "1.png" in problems[0].message


def test_empty_or_identical_folders(tmp_path):
    images, masks = make_dataset(tmp_path, ["1", "2"])
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "1.npy").write_bytes(b"x")
    pairs, problems = find_pairs(images, empty)
    assert pairs == [] and len(problems) == 1 and problems[0].path == empty and "1.npy" in problems[0].message
    pairs, problems = find_pairs(images, images)
    assert pairs == [] and "same folder" in problems[0].message


def test_prediction_only_images(tmp_path):
    images, _ = make_dataset(tmp_path, ["3", "1"])
    pairs, problems = find_pairs(images, None)
    assert problems == [] and [(p.name, p.mask) for p in pairs] == [("1", None), ("3", None)]
