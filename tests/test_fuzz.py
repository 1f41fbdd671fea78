"""Bad input, fuzzed (issue 5): hypothesis throws broken, odd and hostile files at the four commands
a user runs on data (``check``, ``train``, ``evaluate``, ``predict``).

Every case must end either in success (the input was valid after all: a palette mask with valid ids,
a PNG cut only inside its IEND chunk) or in a non-zero exit whose error lines each name the offending
file; never a Python traceback, never a Python warning, and never a partly written output:
no temporary or hidden files left behind, every PNG written loads fully, every JSON written parses.

Each example builds its own dataset in a fresh folder: a small synthetic base plus one crafted pair
named by the strategy (unicode, spaces, dots …), in which the image, the mask or both are replaced.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from pixelwise.cli.main import main
from pixelwise.synth import write_dataset

SIZE = 64  # height and width of every base frame and of the crafted valid files
N_CLASSES = 23  # CARLA's, the default of check and train
BASE_COUNT = 4
TRAIN_ARGS = ["--recipe", "scratch", "--epochs", "1", "--size", "32x32", "--filters", "4", "--batch-size", "4", "--no-progress"]
# The one line that train and evaluate add after the problems; it names no file, by design.
SUMMARY_LINE = "problem(s) in the data; fix them or pass --skip-invalid"


# PIXELWISE_FUZZ_SCALE=20 tries 20 times as many examples: a deeper hunt than the default quick run.
SCALE = float(os.environ.get("PIXELWISE_FUZZ_SCALE", "1"))


def fuzz(max_examples: int) -> settings:
    # database=None: no .hypothesis/ folder in the checkout; a failure prints the example to reproduce it.
    return settings(max_examples=max(1, round(max_examples * SCALE)), deadline=None, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


# ---------------------------------------------------------------------------------------- crafting PNGs

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png(picture: np.ndarray | Image.Image) -> bytes:
    im = picture if isinstance(picture, Image.Image) else Image.fromarray(picture)
    buffer = io.BytesIO()
    im.save(buffer, format="PNG")
    return buffer.getvalue()


def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def header_only_png(width: int, height: int) -> bytes:
    """A PNG whose (correct, CRC-checked) IHDR claims any size, with no pixel data at all: what a
    decompression bomb looks like before anything is decoded."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)  # 8-bit RGBA
    return PNG_SIGNATURE + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def png16(values: np.ndarray) -> bytes:
    """A 16-bit grey (H, W) or RGB (H, W, 3) PNG, written by hand (Pillow cannot write 16-bit RGB)."""
    values = np.asarray(values, dtype=">u2")
    colour_type = 2 if values.ndim == 3 else 0
    h, w = values.shape[:2]
    raw = b"".join(b"\x00" + values[y].tobytes() for y in range(h))
    ihdr = struct.pack(">IIBBBBB", w, h, 16, colour_type, 0, 0, 0)
    return PNG_SIGNATURE + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def palette_png(ids: np.ndarray) -> bytes:
    im = Image.frombytes("P", (ids.shape[1], ids.shape[0]), np.ascontiguousarray(ids, dtype=np.uint8).tobytes())
    im.putpalette(np.random.default_rng(0).integers(0, 256, 768, dtype=np.uint8).tobytes())
    return png(im)


def _valid_pair(h: int = SIZE, w: int = SIZE) -> tuple[bytes, bytes]:
    """A structured RGBA image and a CARLA-style RGBA mask (class id in R, alpha 255)."""
    rng = np.random.default_rng(5)
    yy, xx = np.indices((h, w))
    image = np.stack([(xx * 4) % 256, (yy * 4) % 256, rng.integers(0, 256, (h, w)), np.full((h, w), 255)], axis=2)
    ids = ((yy // 8 + xx // 8) % N_CLASSES).astype(np.uint8)
    mask = np.stack([ids, np.zeros_like(ids), np.zeros_like(ids), np.full_like(ids, 255)], axis=2)
    return png(image.astype(np.uint8)), png(mask)


VALID_IMAGE, VALID_MASK = _valid_pair()
VALID = {"image": VALID_IMAGE, "mask": VALID_MASK}


def pillow_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) if Pillow decodes ``data`` completely, else None: the oracle for fuzzed bytes."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as im:
                im.load()
                return im.size
    except Exception:  # noqa: BLE001 - any failure at all means "Pillow cannot decode it"
        return None


# ------------------------------------------------------------------------------------------ bad inputs


@dataclass(frozen=True)
class Bad:
    """One crafted pair. ``valid``: True = every command must accept it, False = refuse it, None = the
    oracle (:func:`pillow_size`) decides."""

    what: str
    image: bytes = VALID_IMAGE
    mask: bytes = VALID_MASK
    valid: bool | None = False

    def expected(self) -> bool | None:
        valid = self.valid
        if valid is None:  # fuzzed bytes: Pillow failing to decode them means pixelwise must refuse them
            sizes = {pillow_size(self.image), pillow_size(self.mask)}
            return False if None in sizes or len(sizes) > 1 else None
        return valid

    def __repr__(self) -> str:  # hypothesis prints this for a failing example; the bytes would be noise
        return f"Bad({self.what!r}, valid={self.valid})"


def _replace(role: str, data: bytes) -> dict:
    return {role: data}


roles = st.sampled_from(["image", "mask"])

truncated = roles.flatmap(lambda role: st.integers(0, len(VALID[role]) - 1).map(
    lambda cut: Bad(f"{role} cut at byte {cut} of {len(VALID[role])}", **_replace(role, VALID[role][:cut]),
                    valid=None)))



def _xor(data: bytes, at: int, value: int) -> bytes:
    return data[:at] + bytes([data[at] ^ value]) + data[at + 1:]


flipped = roles.flatmap(lambda role: st.tuples(st.integers(0, len(VALID[role]) - 1), st.integers(1, 255)).map(
    lambda t: Bad(f"{role} with byte {t[0]} xor {t[1]}", **_replace(role, _xor(VALID[role], *t)), valid=None)))


random_bytes = st.tuples(roles, st.booleans(), st.binary(min_size=1, max_size=2048)).map(
    lambda t: Bad(f"{t[0]}: {len(t[2])} random bytes{' after a PNG signature' if t[1] else ''}",
                  **_replace(t[0], (PNG_SIGNATURE if t[1] else b"") + t[2]), valid=None))

empty = roles.map(lambda role: Bad(f"empty {role} (0 bytes)", **_replace(role, b"")))

# Header-only PNGs: over Pillow's MAX_IMAGE_PIXELS (a decompression bomb) or small but without pixel data.
PNG_MAX_SIDE = 2**31 - 1
huge = st.integers(1, PNG_MAX_SIDE).flatmap(
    lambda w: st.tuples(st.just(w), st.integers(Image.MAX_IMAGE_PIXELS // w + 1, PNG_MAX_SIDE)))
header_only = st.tuples(roles, st.one_of(huge, st.tuples(st.integers(1, 2048), st.integers(1, 2048)))).map(
    lambda t: Bad(f"{t[0]} header claims {t[1][0]}x{t[1][1]}, no pixel data",
                  **_replace(t[0], header_only_png(*t[1]))))

image16 = st.tuples(st.booleans(), st.integers(0, 65535)).map(
    lambda t: Bad(f"16-bit {'RGB' if t[0] else 'grey'} image up to {t[1]}",
                  image=png16(_ramp16(t[1], rgb=t[0])), valid=True))


def _ramp16(top: int, rgb: bool) -> np.ndarray:
    values = (np.arange(SIZE * SIZE, dtype=np.int64) * (top + 1) // (SIZE * SIZE)).reshape(SIZE, SIZE)
    return np.stack([values, values[::-1], values.T], axis=2) if rgb else values


# Masks whose largest id is drawn: valid only below the number of classes.
mask_ids = st.tuples(st.sampled_from(["grey", "palette", "16-bit grey"]), st.integers(0, 65535)).map(
    lambda t: _mask_with_top_id(*t))


def _mask_with_top_id(kind: str, top: int) -> Bad:
    top = top if kind == "16-bit grey" else top % 256
    ids = (np.arange(SIZE * SIZE, dtype=np.int64) * (top + 1) // (SIZE * SIZE)).reshape(SIZE, SIZE)
    data = png16(ids) if kind == "16-bit grey" else palette_png(ids) if kind == "palette" else png(ids.astype(np.uint8))
    return Bad(f"{kind} mask with ids 0-{top}", mask=data, valid=top < N_CLASSES)


mask16_rgb = st.integers(0, 22).map(
    lambda v: Bad(f"16-bit RGB mask of id {v}", mask=png16(np.full((SIZE, SIZE, 3), v)), valid=False))

palette_image = st.integers(2, 256).map(
    lambda n: Bad(f"palette image of {n} colours",
                  image=png(Image.open(io.BytesIO(VALID_IMAGE)).convert("RGB").quantize(n)), valid=True))

one_by_one = st.tuples(st.integers(0, 255), st.integers(0, N_CLASSES - 1)).map(
    lambda t: Bad(f"1x1 image of grey {t[0]} with a 1x1 mask of id {t[1]}",
                  image=png(np.full((1, 1, 3), t[0], np.uint8)), mask=png(np.full((1, 1), t[1], np.uint8)), valid=True))

mismatched = st.tuples(roles, st.integers(1, 96), st.integers(1, 96)).filter(lambda t: t[1:] != (SIZE, SIZE)).map(
    lambda t: Bad(f"{t[0]} of {t[2]}x{t[1]} against a {SIZE}x{SIZE} partner",
                  **_replace(t[0], png(np.full((t[1], t[2], 3) if t[0] == "image" else (t[1], t[2]), 3, np.uint8)))))

BAD = st.one_of(truncated, flipped, random_bytes, empty, header_only, image16, mask_ids, mask16_rgb, palette_image,
                one_by_one, mismatched)

# The cases the issue names, always tried, whatever hypothesis draws.
BOMB = Bad("image header claims 100000x100000 (decompression bomb)", image=header_only_png(100_000, 100_000))
PALETTE_MASK = Bad("palette mask with valid ids", mask=palette_png(np.indices((SIZE, SIZE)).sum(0) % N_CLASSES),
                   valid=True)
TRUNCATED = Bad("image cut in half", image=VALID_IMAGE[: len(VALID_IMAGE) // 2])
OUT_OF_RANGE = Bad("mask with id 200", mask=png(np.full((SIZE, SIZE), 200, np.uint8)))

# File stems: the examples, then anything printable that a file system takes as a plain,
# visible file name (no '/', no NUL, no leading '.', no line breaks, at most 120 bytes).
names = st.one_of(
    st.sampled_from(["ñandú_图像_😀", "with space", " padded ", "a.b.c", "UPPER", "000100", "-starts-with-dash"]),
    st.text(st.characters(exclude_categories=("Cc", "Cs", "Zl", "Zp"), exclude_characters="/"), min_size=1, max_size=30)
    .filter(lambda s: not s.startswith(".") and len(s.encode()) <= 120),
)


# ------------------------------------------------------------------------------------------- harness


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@pytest.fixture(scope="module")
def base(root) -> Path:
    return write_dataset(root / "base", BASE_COUNT, seed=11, height=SIZE, width=SIZE, progress=False)


@pytest.fixture(scope="module")
def run(root, base) -> Path:
    """One tiny trained run shared by the evaluate and predict tests (read-only for them)."""
    run = root / "run"
    code = main(["train", str(base), "--out", str(run), "--cache-dir", str(root / "cache"), *TRAIN_ARGS])
    assert code == 0 and (run / "best.safetensors").exists()
    return run


def new_name(base: Path, name: str) -> None:
    assume(not (base / "CameraRGB" / f"{name}.png").exists())  # a base frame's own name would replace it


def fresh(root: Path) -> Path:
    """A new folder per hypothesis example (tmp_path would be shared by all examples of a test)."""
    return Path(tempfile.mkdtemp(dir=root))


def dataset_with(base: Path, folder: Path, name: str, bad: Bad) -> Path:
    """A copy of the base dataset plus the crafted pair ``name``.png."""
    data = folder / "data"
    shutil.copytree(base, data)
    (data / "CameraRGB" / f"{name}.png").write_bytes(bad.image)
    (data / "CameraMask" / f"{name}.png").write_bytes(bad.mask)
    return data


def run_cli(capfd, *argv) -> tuple[int, str, str]:
    """``pixelwise ARGV`` in-process: (exit code, stdout, stderr), with no traceback and no warning a
    user would see (Python shows UserWarnings and the like by default)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code = main([str(a) for a in argv])
    out, err = capfd.readouterr()
    assert "Traceback" not in out + err
    hidden = (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning)  # Python's defaults
    shown = [f"{w.category.__name__}: {w.message}" for w in caught if not issubclass(w.category, hidden)]
    assert not shown, f"warnings reach the user: {shown}"
    return code, out, err


def assert_names_file(code: int, err: str, filename: str) -> list[str]:
    """A refusal: non-zero exit, and every error line names the file."""
    lines = [line for line in err.split("\n") if line.strip()]
    assert code != 0 and lines, err
    for line in lines:
        assert filename in line or SUMMARY_LINE in line, f"error line does not name {filename!r}: {line!r}"
    return lines


def assert_outcome(bad: Bad, code: int, err: str, filename: str, expected: bool | None = None) -> bool:
    """Check the exit against what the case expects; True if the command succeeded."""
    expected = bad.expected() if expected is None else expected
    if expected is True:
        assert code == 0, f"{bad.what}: valid input refused:\n{err}"
    elif expected is False:
        assert code != 0, f"{bad.what}: invalid input accepted"
    if code != 0:
        assert_names_file(code, err, filename)
    return code == 0


def assert_no_partial_files(*folders: Path) -> None:
    """Nothing half-written: no temporary or hidden files, and every output parses or loads in full."""
    for folder in folders:
        if not folder.exists():
            continue
        for path in folder.rglob("*"):
            assert not path.name.startswith("."), f"hidden leftover {path}"
            assert ".tmp" not in path.name, f"temporary leftover {path}"
            if path.is_dir():
                continue
            suffix = path.suffix.lower()
            if suffix == ".png":
                with Image.open(path) as im:
                    im.load()
            elif suffix == ".json":
                json.loads(path.read_text(encoding="utf-8"))
            elif suffix == ".csv":
                with open(path, newline="", encoding="utf-8") as f:
                    rows = list(csv.reader(f))
                assert rows and len({len(r) for r in rows}) == 1, f"ragged CSV {path}"
            elif suffix == ".npz":
                with np.load(path, allow_pickle=False) as z:
                    for key in z.files:
                        z[key]
            elif suffix == ".safetensors":
                from safetensors.torch import load_file

                load_file(str(path))


# --------------------------------------------------------------------------------------------- check


@fuzz(50)
@given(bad=BAD, name=names)
@example(bad=BOMB, name="ñandú_图像_😀").via("the issue's example")
@example(bad=PALETTE_MASK, name="with space").via("the issue's example")
@example(bad=OUT_OF_RANGE, name="000100").via("the issue's example")
def test_check(root, base, capfd, bad, name):
    new_name(base, name)
    folder = fresh(root)
    data, cache = dataset_with(base, folder, name, bad), folder / "cache"
    code, out, err = run_cli(capfd, "check", data, "--cache-dir", cache, "--no-progress")
    if assert_outcome(bad, code, err, f"{name}.png"):
        assert f"{BASE_COUNT + 1} valid pairs, 0 problem(s)" in out
    else:
        assert code == 2 and f"{BASE_COUNT} valid pairs" in out
    assert_no_partial_files(cache)


# --------------------------------------------------------------------------------------------- train


@fuzz(8)
@given(bad=BAD, name=names, skip_invalid=st.booleans())
@example(bad=BOMB, name="ñandú_图像_😀", skip_invalid=False).via("the issue's example")
@example(bad=PALETTE_MASK, name="with space", skip_invalid=False).via("the issue's example")
def test_train(root, base, capfd, bad, name, skip_invalid):
    new_name(base, name)
    folder = fresh(root)
    data, run, cache = dataset_with(base, folder, name, bad), folder / "run", folder / "cache"
    skip = ["--skip-invalid"] if skip_invalid else []
    code, out, err = run_cli(capfd, "train", data, "--out", run, "--cache-dir", cache, *TRAIN_ARGS, *skip)
    expected = bad.expected()
    if skip_invalid:  # the bad pair is left out, named on stdout, and the run trains on the others
        assert code == 0, err
        if expected is False:
            assert "skipping 1 invalid pair" in out and f"{name}.png" in out
    elif assert_outcome(bad, code, err, f"{name}.png") is False:
        assert code == 2
        assert not run.exists() or not any(run.iterdir()), "a refused run left files behind"
    if code == 0:
        for file in ("config.json", "best.safetensors", "last.safetensors", "history.csv"):
            assert (run / file).is_file(), file
    assert_no_partial_files(run, cache)


# ------------------------------------------------------------------------------------------ evaluate


@fuzz(10)
@given(bad=BAD, name=names, skip_invalid=st.booleans())
@example(bad=TRUNCATED, name="ñandú_图像_😀", skip_invalid=False).via("the issue's example")
@example(bad=OUT_OF_RANGE, name="with space", skip_invalid=True).via("the issue's example")
def test_evaluate(root, base, run, capfd, bad, name, skip_invalid):
    new_name(base, name)
    folder = fresh(root)
    data, out_dir, cache = dataset_with(base, folder, name, bad), folder / "report", folder / "cache"
    skip = ["--skip-invalid"] if skip_invalid else []
    code, _, err = run_cli(capfd, "evaluate", run, data, "--out", out_dir, "--cache-dir", cache, "--no-progress", *skip)
    expected = bad.expected()
    if skip_invalid:
        assert code == 0, err
        report = json.loads((out_dir / "report.json").read_text(encoding="utf-8"))
        if expected is False:
            assert report["images"] == BASE_COUNT
            assert any(f"{name}.png" in line for line in report["skipped"])
            assert all(f"{name}.png" in line for line in err.split("\n") if line.startswith("skipped:"))
        if report["images"] == BASE_COUNT + 1:
            assert report["skipped"] == [] and expected is not False
    elif assert_outcome(bad, code, err, f"{name}.png"):
        report = json.loads((out_dir / "report.json").read_text(encoding="utf-8"))
        assert report["images"] == BASE_COUNT + 1 and report["skipped"] == []
    else:
        assert code == 2 and not out_dir.exists(), "a refused evaluation wrote a report"
    assert_no_partial_files(out_dir, cache)


# ------------------------------------------------------------------------------------------- predict

OUTPUTS = ("_mask.png", "_color.png", "_overlay.png", "_figure.png")


@fuzz(20)
@given(bad=BAD, name=names, by_folder=st.booleans(), with_masks=st.sampled_from([False, False, True]))
@example(bad=BOMB, name="ñandú_图像_😀", by_folder=True, with_masks=False).via("the issue's example")
@example(bad=OUT_OF_RANGE, name="with space", by_folder=False, with_masks=True).via("the issue's example")
def test_predict(root, run, capfd, bad, name, by_folder, with_masks):
    """A bad image (or true mask) is reported and skipped; the good image beside it is still predicted.
    Without --masks only the image matters: predict must take exactly the images Pillow decodes.
    (--masks one time in three: the matplotlib figures it adds cost more than all the rest.)"""
    assume(name != "good")
    folder = fresh(root)
    images, masks, out_dir = folder / "images", folder / "masks", folder / "out"
    images.mkdir()
    masks.mkdir()
    (images / f"{name}.png").write_bytes(bad.image)
    (masks / f"{name}.png").write_bytes(bad.mask)
    (images / "good.png").write_bytes(VALID_IMAGE)
    (masks / "good.png").write_bytes(VALID_MASK)
    inputs = [images] if by_folder else [images / f"{name}.png", images / "good.png"]
    with_masks_args = ["--masks", masks] if with_masks else []
    code, out, err = run_cli(capfd, "predict", run, *inputs, *with_masks_args, "--out", out_dir, "--no-progress")
    outputs = OUTPUTS if with_masks else OUTPUTS[:3]
    for suffix in outputs:
        assert (out_dir / f"good{suffix}").is_file(), f"the good image lost its {suffix}"
    expected = None if with_masks else pillow_size(bad.image) is not None
    if assert_outcome(bad, code, err, f"{name}.png", expected):
        assert f"wrote {2 * len(outputs)} files" in out
        with Image.open(out_dir / f"{name}_mask.png") as predicted:
            ids = np.asarray(predicted)
        assert (ids.shape[1], ids.shape[0]) == pillow_size(bad.image) and ids.max() < N_CLASSES
    else:
        assert code == 2 and f"wrote {len(outputs)} files" in out
        assert not any((out_dir / f"{name}{suffix}").exists() for suffix in OUTPUTS), "outputs of a refused image"
    stems = ("good", name) if code == 0 else ("good",)
    assert sorted(p.name for p in out_dir.iterdir()) == sorted(
        ["predictions.csv"] + [stem + suffix for stem in stems for suffix in outputs])  # + one row per image
    assert_no_partial_files(out_dir)


# ------------------------------------------------------------------------------- a damaged run folder

MODEL_INTS = ("in_channels", "n_classes", "n_filters", "depth", "up_kernel")


def _damage_config(text: str, field: str, value: int) -> bytes:
    config = json.loads(text)
    config["model"][field] = value
    return json.dumps(config, indent=2).encode()


@st.composite
def run_damage(draw, config: bytes, weights: bytes) -> tuple[str, str, bytes, bool | None]:
    """(what, which file, its new bytes, valid?) for config.json or best.safetensors."""
    file = draw(st.sampled_from(["config.json", "best.safetensors"]))
    original = config if file == "config.json" else weights
    how = draw(st.sampled_from(["cut", "random", "flip"] + (["field"] if file == "config.json" else [])))
    if how == "cut":
        cut = draw(st.integers(0, len(original) - 1))
        # Only trailing whitespace gone leaves a valid config; a checkpoint must be complete.
        return f"{file} cut at byte {cut}", file, original[:cut], None if file == "config.json" else False
    if how == "random":
        return f"{file} replaced by random bytes", file, draw(st.binary(max_size=1024)), False
    if how == "flip":
        at, value = draw(st.integers(0, len(original) - 1)), draw(st.integers(1, 255))
        return f"{file} with byte {at} xor {value}", file, _xor(original, at, value), None
    field = draw(st.sampled_from(MODEL_INTS))
    value = draw(st.one_of(st.integers(-2, 300), st.integers(-(2**62), 2**62)))
    # Any change to these makes the weights not fit, or the model impossible: never an attempt to build
    # a model far larger than memory (n_filters 10**8 once got the process OOM-killed).
    unchanged = json.loads(config)["model"][field] == value
    return (f"config.json with model.{field} = {value}", file, _damage_config(config.decode(), field, value),
            None if unchanged else False)


@fuzz(20)
@given(data=st.data(), command=st.sampled_from(["predict", "evaluate"]))
def test_damaged_run(root, base, run, capfd, data, command):
    """evaluate and predict need nothing but the run folder: a damaged config.json or checkpoint is one
    error line naming it, before any image is read."""
    weights_bytes, config_bytes = (run / "best.safetensors").read_bytes(), (run / "config.json").read_bytes()
    what, file, damaged, valid = data.draw(run_damage(config_bytes, weights_bytes), label="damage")
    assume(damaged != (config_bytes if file == "config.json" else weights_bytes))
    folder = fresh(root)
    broken = folder / "run ñ"
    shutil.copytree(run, broken)
    (broken / file).write_bytes(damaged)
    out_dir = folder / "out"
    if command == "predict":
        argv = ["predict", broken, base / "CameraRGB", "--out", out_dir, "--no-progress"]
    else:
        argv = ["evaluate", broken, base, "--out", out_dir, "--cache-dir", folder / "cache", "--no-progress"]
    code, _, err = run_cli(capfd, *argv)
    if valid is False:
        assert code != 0, f"{what}: accepted"
    if code != 0:
        lines = assert_names_file(code, err, str(broken / file))
        assert code == 1 and len(lines) == 1
        assert not out_dir.exists(), "outputs written from a damaged run"
    assert_no_partial_files(out_dir)


# ---------------------------------------------------------------------------- crafted, one at a time


def test_predict_names_too_long_for_the_outputs(root, run, capfd):
    """A 234-byte name takes its outputs (the temporary files beside them must fit NAME_MAX too); a
    245-byte one cannot have "_overlay.png" appended, so it is reported, not half written."""
    folder = fresh(root)
    images, out_dir = folder / "images", folder / "out"
    images.mkdir()
    fits, too_long = "é" * 115, "x" * 245
    for stem in (fits, too_long, "good"):
        (images / f"{stem}.png").write_bytes(VALID_IMAGE)
    code, out, err = run_cli(capfd, "predict", run, images, "--out", out_dir, "--no-progress")
    assert_names_file(code, err, f"{too_long}.png")
    assert code == 2 and f"{too_long}_overlay.png" in err and len(err.strip().split("\n")) == 1
    assert "wrote 6 files" in out
    written = sorted(p.name for p in out_dir.iterdir())
    assert written == sorted(["predictions.csv"] + [f"{stem}{suffix}" for stem in (fits, "good") for suffix in OUTPUTS[:3]])
    assert_no_partial_files(out_dir)


def test_output_folder_that_is_a_file(root, base, run, capfd):
    """--out naming a file: one error naming it, for predict and for evaluate's report."""
    folder = fresh(root)
    (folder / "a.png").write_bytes(VALID_IMAGE)
    (folder / "out").write_text("not a folder")
    for argv in (["predict", run, folder / "a.png"], ["evaluate", run, base, "--cache-dir", folder / "cache"]):
        code, _, err = run_cli(capfd, *argv, "--out", folder / "out", "--no-progress")
        what = "output" if argv[0] == "predict" else "report"
        expected = (f"pixelwise {argv[0]}: error: {folder / 'out'}: a file has this name, so it cannot be the "
                    f"{what} folder")
        assert code == 1 and err.strip().split("\n") == [expected]


def test_classes_file_too_long_or_not_text(root, base, capfd):
    """--classes FILE: more classes than an 8-bit mask can hold, or a file that is not text."""
    folder = fresh(root)
    many, binary = folder / "many.json", folder / "binary.txt"
    many.write_text(json.dumps([f"c{i}" for i in range(300)]))
    binary.write_bytes(b"road\n\xff\xfe\n")
    for classes, message in ((many, "more than 256"), (binary, "not UTF-8")):
        code, _, err = run_cli(capfd, "check", base, "--classes", classes, "--no-progress")
        assert code == 1 and message in err and str(classes) in err and len(err.strip().splitlines()) == 1


# ---------------------------------------------------------------------------------- real processes


def _cli(*argv: object, script: bool = False) -> subprocess.CompletedProcess:
    exe = shutil.which("pixelwise") or str(Path(sys.executable).parent / "pixelwise")
    command = [exe] if script else [sys.executable, "-m", "pixelwise"]
    done = subprocess.run([*command, *map(str, argv)], capture_output=True, timeout=120, check=False)
    done.stdout, done.stderr = (s.decode("utf-8", "replace") for s in (done.stdout, done.stderr))
    return done


def test_process_check_truncated_unicode_name(root, base):
    """``python -m pixelwise check``: the one problem is one line on stderr, exit 2."""
    folder = fresh(root)
    name = "ñandú_图像_😀 with space"
    data = dataset_with(base, folder, name, TRUNCATED)
    done = _cli("check", data, "--cache-dir", folder / "cache", "--no-progress")
    assert done.returncode == 2 and "Traceback" not in done.stdout + done.stderr
    expected = (f"pixelwise check: {data / 'CameraRGB' / name}.png: truncated PNG: the file ends before its image "
                "data does (an interrupted download or copy?)")
    assert done.stderr.strip().split("\n") == [expected]


def test_process_predict_bomb_header(root, run):
    """The ``pixelwise`` console script on a decompression-bomb header (and a file of random bytes):
    one line each, no Pillow warning (a real process shows warnings, unlike pytest)."""
    folder = fresh(root)
    bomb, noise = folder / "bömb 😀.png", folder / "noise.png"
    bomb.write_bytes(header_only_png(100_000, 100_000))
    noise.write_bytes(os.urandom(1000))
    done = _cli("predict", run, bomb, noise, "--out", folder / "out", "--no-progress", script=True)
    assert done.returncode == 2 and "Traceback" not in done.stdout + done.stderr
    lines = done.stderr.strip().split("\n")
    assert len(lines) == 2 and str(bomb) in lines[0] and "100000 x 100000" in lines[0] and str(noise) in lines[1]
    assert "wrote 0 files" in done.stdout
    assert_no_partial_files(folder / "out")


# ------------------------------------------------------------------------- odd names


def test_name_with_a_line_break(root, base, capfd):
    folder = fresh(root)
    data = dataset_with(base, folder, "two\nlines", TRUNCATED)
    code, _, err = run_cli(capfd, "check", data, "--cache-dir", folder / "cache", "--no-progress")
    assert code == 2 and len(err.strip().split("\n")) == 1


def test_train_on_a_name_that_is_not_utf8(root, base, capfd):
    folder = fresh(root)
    data = dataset_with(base, folder, "placeholder", PALETTE_MASK)
    for sub in ("CameraRGB", "CameraMask"):
        os.rename(data / sub / "placeholder.png", os.path.join(os.fsencode(data / sub), b"caf\xe9.png"))
    code, _, err = run_cli(capfd, "train", data, "--out", folder / "run", "--cache-dir", folder / "cache", *TRAIN_ARGS)
    assert code == 0, err


# ------------------------------------------------------------------------- the Python API's array input

@pytest.fixture(scope="module")
def fixture_predictor():
    from pixelwise import Predictor

    return Predictor(Path(__file__).parent / "fixtures" / "run-0.1.0")


@st.composite
def image_arrays(draw) -> np.ndarray:
    """Any dtype numpy has a strategy for, any shape up to 4-D (sides 0-9, channels-first included),
    any values (NaN, infinities, negatives and extremes among them)."""
    from hypothesis.extra import numpy as hnp

    dtype = draw(st.one_of(hnp.scalar_dtypes(), hnp.byte_string_dtypes(max_len=2), hnp.unicode_string_dtypes(max_len=2)))
    shape = draw(st.one_of(hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=9),
                           st.tuples(st.sampled_from([1, 3, 4]), st.integers(5, 9), st.integers(5, 9))))
    return draw(hnp.arrays(dtype, shape))


@fuzz(150)
@given(array=image_arrays(), native=st.booleans())
@example(array=np.zeros((64, 96, 4), np.uint8), native=False).via("the issue's RGBA CARLA frame")
@example(array=np.zeros((64, 96), np.uint8), native=False).via("the issue's grey array")
def test_predictor_predict_any_array(fixture_predictor, array, native):
    """Every dtype, shape and channel count ends in a mask of the image's size or a one-line ValueError."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            mask = fixture_predictor.predict(array, "native" if native else None)
        except ValueError as exc:
            assert str(exc) and "\n" not in str(exc), repr(str(exc))
            return
    assert mask.dtype == np.uint8 and mask.shape == array.shape[:2]
    assert int(mask.max()) < len(fixture_predictor.classes)
