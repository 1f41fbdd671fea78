"""Pairing by name patterns: suffixes on either side (CamVid's _L, Cityscapes' _leftImg8bit and
_gtFine_labelIds), sub-folders with --recursive, ambiguity refused, every unpaired file named."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from data_files import decode, frame, rgba_mask, save

from pixelwise.data.naming import Naming
from pixelwise.data.pairs import find_pairs


def write_pair(images: Path, masks: Path, image_name: str, mask_name: str, seed: int) -> np.ndarray:
    image, ids = frame(seed)
    save(images / image_name, image)
    save(masks / mask_name, rgba_mask(ids))
    return ids


def test_camvid_style_mask_suffix(tmp_path):
    images, masks = tmp_path / "images", tmp_path / "labels"
    for seed, name in enumerate(["0001TP_006690", "0001TP_006720"]):
        write_pair(images, masks, f"{name}.png", f"{name}_L.png", seed)
    pairs, problems = find_pairs(images, masks, Naming(mask_suffix="_L"))
    assert not problems
    assert [(p.name, p.image.name, p.mask.name) for p in pairs] == [
        ("0001TP_006690", "0001TP_006690.png", "0001TP_006690_L.png"),
        ("0001TP_006720", "0001TP_006720.png", "0001TP_006720_L.png")]
    # Without the suffix nothing pairs, and each file is a named problem.
    pairs, problems = find_pairs(images, masks)
    assert not pairs and len(problems) == 4


def test_cityscapes_style_nested_folders_and_suffixes(tmp_path):
    images, masks = tmp_path / "leftImg8bit" / "train", tmp_path / "gtFine" / "train"
    expected = {}
    for seed, (city, frame_id) in enumerate([("aachen", "000000_000019"), ("aachen", "000001_000019"),
                                             ("bremen", "000000_000019")]):
        stem = f"{city}_{frame_id}"
        ids = write_pair(images / city, masks / city, f"{stem}_leftImg8bit.png", f"{stem}_gtFine_labelIds.png", seed)
        save(masks / city / f"{stem}_gtFine_color.png", np.zeros((4, 4, 3), np.uint8))  # not part of the dataset
        expected[f"{city}/{stem}"] = ids
    naming = Naming("_leftImg8bit", "_gtFine_labelIds", recursive=True)
    pairs, problems = find_pairs(images, masks, naming)
    assert not problems and [p.name for p in pairs] == sorted(expected)
    decoded = decode(images, masks, naming=naming, cache_dir=tmp_path / "cache", size=(12, 16))
    assert decoded.names == sorted(expected) and not decoded.problems
    for name, mask in zip(decoded.names, decoded.masks):
        assert np.array_equal(mask, expected[name])
    # Flat, the sub-folders hold nothing.
    assert find_pairs(images, masks, Naming("_leftImg8bit", "_gtFine_labelIds"))[0] == []


def test_same_file_name_in_two_sub_folders_are_two_pairs_even_in_the_cache(tmp_path):
    images, masks = tmp_path / "images", tmp_path / "masks"
    a = write_pair(images / "a", masks / "a", "0001.png", "0001.png", 1)
    b = write_pair(images / "b", masks / "b", "0001.png", "0001.png", 2)
    for path in list(images.rglob("*.png")) + list(masks.rglob("*.png")):
        os.utime(path, ns=(1_000_000_000, 1_000_000_000))  # same names, sizes and times: only the folder differs
    cache = tmp_path / "cache"
    for _ in range(2):  # built, then read back from the cache
        decoded = decode(images, masks, naming=Naming(recursive=True), cache_dir=cache, size=(12, 16))
        assert decoded.names == ["a/0001", "b/0001"]
        assert np.array_equal(decoded.masks[0], a) and np.array_equal(decoded.masks[1], b)


def test_two_masks_for_one_image_are_refused_not_guessed(tmp_path):
    images, masks = tmp_path / "images", tmp_path / "masks"
    write_pair(images, masks, "f1.png", "f1_L.png", 1)
    write_pair(images, masks, "f2.png", "f2_L.png", 2)
    save(masks / "f2_L.bmp", rgba_mask(frame(2)[1])[..., :3])
    pairs, problems = find_pairs(images, masks, Naming(mask_suffix="_L"))
    assert [p.name for p in pairs] == ["f1"]
    assert len(problems) == 1 and problems[0].path.parent == masks
    assert "2 mask files share the name 'f2' (f2_L.bmp, f2_L.png); keep one" in str(problems[0])


def test_unpaired_files_are_named_with_the_name_they_needed(tmp_path):
    images, masks = tmp_path / "leftImg8bit", tmp_path / "gtFine"
    write_pair(images / "ulm", masks / "ulm", "ulm_1_leftImg8bit.png", "ulm_1_gtFine_labelIds.png", 1)
    save(images / "ulm" / "ulm_2_leftImg8bit.png", frame(2)[0])
    save(masks / "ulm" / "ulm_3_gtFine_labelIds.png", rgba_mask(frame(3)[1]))
    pairs, problems = find_pairs(images, masks, Naming("_leftImg8bit", "_gtFine_labelIds", recursive=True))
    assert [p.name for p in pairs] == ["ulm/ulm_1"]
    assert [str(p) for p in problems] == [
        f"{images / 'ulm' / 'ulm_2_leftImg8bit.png'}: no mask named ulm/ulm_2_gtFine_labelIds.* in {masks}",
        f"{masks / 'ulm' / 'ulm_3_gtFine_labelIds.png'}: no image named ulm/ulm_3_leftImg8bit.* in {images}"]


def test_hidden_and_linked_folders_are_not_walked(tmp_path):
    images, masks = tmp_path / "images", tmp_path / "masks"
    write_pair(images / "x", masks / "x", "1.png", "1.png", 1)
    write_pair(images / ".hidden", masks / ".hidden", "2.png", "2.png", 2)
    (images / "loop").symlink_to(images, target_is_directory=True)
    pairs, problems = find_pairs(images, masks, Naming(recursive=True))
    assert [p.name for p in pairs] == ["x/1"] and not problems


@pytest.mark.parametrize("suffix", ["a/b", "..", "."])
def test_a_suffix_is_part_of_a_file_name(suffix):
    with pytest.raises(ValueError, match="suffix must be the end of a file name"):
        Naming(mask_suffix=suffix)


def test_the_cli_trains_on_suffixed_nested_pairs_and_evaluate_pairs_them_the_same_way(tmp_path):
    from pixelwise.cli import main

    images, masks = tmp_path / "data" / "img", tmp_path / "data" / "gt"
    for seed in range(8):
        city = "a" if seed < 4 else "b"
        write_pair(images / city, masks / city, f"{city}_{seed:03d}_img.png", f"{city}_{seed:03d}_gt.png", seed)
    flags = ["--images", str(images), "--masks", str(masks), "--cache-dir", str(tmp_path / "cache"), "--no-progress"]
    assert main(["check", *flags, "--classes", "5", "--image-suffix", "_img", "--mask-suffix", "_gt",
                 "--recursive"]) == 0
    run = tmp_path / "run"
    assert main(["train", *flags, "--out", str(run), "--classes", "5", "--recipe", "seed", "--epochs", "1",
                 "--batch-size", "4", "--size", "16x16", "--filters", "4", "--image-suffix", "_img",
                 "--mask-suffix", "_gt", "--recursive"]) == 0
    assert main(["evaluate", str(run), *flags]) == 0  # the run's config.json pairs them
