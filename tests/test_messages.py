"""The library's messages name Python parameters and settings (``data.crop``, ``run_dir``), never
command-line flags; the CLI alone words them as flags (``--crop``, ``--out``). One test per family
of messages calls the Python API, and its twin runs the command that meets the same refusal."""

import ast
import re
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

import pixelwise as pw
from pixelwise.cli.flags import as_flags
from pixelwise.cli.main import main
from pixelwise.config import DataConfig, RunConfig
from pixelwise.data.colors import MaskFormat
from pixelwise.data.official import OfficialSplit
from pixelwise.data.pairs import IMAGE_DIR, MASK_DIR, locate
from pixelwise.data.problems import DataError
from pixelwise.demo import run_demo
from pixelwise.model.build import encoder_state
from pixelwise.model.unet import ModelConfig, preset
from pixelwise.rundir import BEST
from pixelwise.rundir_lock import RunLocked, hold_run
from pixelwise.training.checks import check_trainable
from pixelwise.training.distributed import launch

SOURCE = Path(pw.__file__).parent
FIXTURE_RUN = Path(__file__).parent / "fixtures" / "run-0.1.0"
FLAG = re.compile(r"--[a-z]")

# The string literals outside cli/ that may hold a flag, each for its reason:
ALLOWED = {
    # the argument list handed to PyTorch's own launcher (torchrun's flags, not pixelwise's)
    ("training/distributed.py", "--standalone"), ("training/distributed.py", "--nproc-per-node"),
    # a whole shell command line the demo suggests trying next, printed as one
    ("demo.py", " YOUR_IMAGES --out predictions"),
}


def _literals(tree: ast.Module):
    """The module's string literals but its docstrings and the settings table's ``flag=`` declarations
    (those are the CLI's own words, declared beside each setting by design)."""
    skipped = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                skipped.add(id(first.value))
        if isinstance(node, ast.keyword) and node.arg == "flag":
            skipped.add(id(node.value))
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skipped:
            yield node


def test_no_string_outside_the_cli_names_a_flag():
    found = []
    for path in sorted(SOURCE.rglob("*.py")):
        relative = path.relative_to(SOURCE).as_posix()
        if relative.startswith("cli/"):
            continue
        for node in _literals(ast.parse(path.read_text(encoding="utf-8"))):
            if FLAG.search(node.value) and (relative, node.value) not in ALLOWED:
                found.append(f"{relative}:{node.lineno}: {node.value!r}")
    assert not found, "messages outside cli/ name flags:\n" + "\n".join(found)


def test_the_cli_words_settings_and_parameters_as_flags_but_not_inside_paths():
    assert as_flags("choose another data.crop or train.lr.") == "choose another --crop or --lr."
    assert as_flags("pass resume=True to continue it, or another run_dir") == "pass --resume to continue it, or another --out"
    untouched = "/runs/run_dir/data.size: train.json, my_nproc, --nproc"
    assert as_flags(untouched) == untouched


def run_cli(capsys, *argv) -> tuple[int, str]:
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


def api_message(error: type[BaseException], call, *args, **kwargs) -> str:
    """The message ``call`` raises, checked to name no flag."""
    with pytest.raises(error) as caught:
        call(*args, **kwargs)
    message = "\n".join(str(p) for p in caught.value.problems) if isinstance(caught.value, DataError) \
        else str(caught.value)
    assert not FLAG.search(message), message
    return message


# ------------------------------------------------------------------------------------ training sizes

def test_training_size_refusals_name_settings(scenes, tmp_path, capsys):
    config = RunConfig(model=preset("assignment", n_filters=4), data=DataConfig(size=(96, 128), class_crops=0.5))
    message = api_message(ValueError, check_trainable, config)
    assert "data.class_crops" in message and "data.crop below 1" in message and "data.augment" in message
    code, err = run_cli(capsys, "train", scenes, "--out", tmp_path / "run", "--recipe", "seed", "--filters", 4,
                        "--class-crops", 0.5, "--cache-dir", tmp_path / "cache", "--no-progress")
    assert code == 1 and "--class-crops places crops" in err and "--crop below 1" in err and "--augment" in err


# ------------------------------------------------------------------------------------ encoder weights

def test_encoder_weight_refusals_name_the_setting(tmp_path, capsys):
    message = api_message(ValueError, ModelConfig, encoder="unet", encoder_weights="imagenet")
    assert "model.encoder_weights" in message
    message = api_message(ValueError, encoder_state,
                          replace(preset("efficientnet-lite0"), encoder_weights=str(tmp_path / "no.pth")))
    assert f"model.encoder_weights {tmp_path / 'no.pth'}: no such file" in message
    code, err = run_cli(capsys, "train", "data", "--out", tmp_path / "run", "--recipe", "seed",
                        "--encoder-weights", "imagenet")
    assert code == 1 and "set --encoder-weights to none" in err


# ------------------------------------------------------------------------------------ mask formats

def test_unknown_colour_refusal_names_the_settings(scenes, tmp_path, capsys):
    message = api_message(ValueError, MaskFormat, "colors", ((0, 0, 0), (1, 1, 1)), "ignore")
    assert message.startswith("data.unknown_color ignore") and "train.ignore_index" in message
    code, err = run_cli(capsys, "train", scenes, "--out", tmp_path / "run", "--mask-format", "colors",
                        "--unknown-color", "ignore", "--cache-dir", tmp_path / "cache", "--no-progress")
    assert code == 1 and "--unknown-color ignore marks" in err and "--ignore-index" in err


# ------------------------------------------------------------------------------------ folders and splits

def test_folder_refusals_name_the_parameters(scenes, tmp_path, capsys):
    message = api_message(DataError, locate, images=scenes / IMAGE_DIR)
    assert "pass masks=FOLDER too" in message
    message = api_message(ValueError, OfficialSplit, train_list=tmp_path / "train.txt")
    assert "train_list and val_list" in message
    message = api_message(ValueError, OfficialSplit, val_images=scenes / IMAGE_DIR)
    assert "val_images and val_masks" in message
    code, err = run_cli(capsys, "train", "--images", scenes / IMAGE_DIR, "--out", tmp_path / "run")
    assert code == 2 and "pass --masks FOLDER too" in err
    code, err = run_cli(capsys, "train", scenes, "--out", tmp_path / "run", "--train-list", tmp_path / "train.txt")
    assert code == 1 and "--train-list and --val-list" in err


# ------------------------------------------------------------------------------------ run folders

def test_run_folder_refusals_name_the_parameters(scenes, tmp_path, capsys):
    run = Path(shutil.copytree(FIXTURE_RUN, tmp_path / "run"))
    (run / BEST).unlink()
    message = api_message(FileNotFoundError, pw.Predictor, run)
    assert "weights='last' uses the latest" in message
    code, err = run_cli(capsys, "predict", run, scenes / IMAGE_DIR, "--out", tmp_path / "out", "--no-progress")
    assert code == 1 and "--weights last uses the latest" in err

    busy = tmp_path / "busy"
    with hold_run(busy):  # a second holder, as another process training this run would be
        message = api_message(RunLocked, pw.train, scenes / IMAGE_DIR, scenes / MASK_DIR, busy, progress=False)
        assert message.endswith("or choose another run_dir")
        code, err = run_cli(capsys, "train", scenes, "--out", busy, "--no-progress")
        assert code == 1 and err.rstrip().endswith("or choose another --out")


def test_demo_and_launch_refusals_name_the_parameters(tmp_path, capsys):
    taken = tmp_path / "taken"
    taken.mkdir()
    assert "pass another out=FOLDER" in api_message(ValueError, run_demo, taken, progress=False, log=lambda _: None)
    code, err = run_cli(capsys, "demo", "--out", taken, "--no-progress")
    assert code == 1 and "pass another --out FOLDER" in err
    assert api_message(ValueError, launch, 0, []).startswith("nproc must be at least 1")
    code, err = run_cli(capsys, "train", "data", "--out", tmp_path / "run", "--nproc", 0)
    assert code == 1 and "--nproc must be at least 1" in err


def test_half_a_validation_pair_names_the_flag_that_is_missing(scenes, tmp_path, capsys):
    from pixelwise.cli.main import main

    code = main(["train", str(scenes), "--out", str(tmp_path / "run"), "--val-images", str(tmp_path)])
    assert code == 1 and "--val-images and --val-masks go together" in capsys.readouterr().err
