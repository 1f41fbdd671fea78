"""The settings table: its checks, the train command's flags and help, config files (--config,
--print-config), the one resume rule, the data flags every dataset-reading command takes, and
errors worded in the API's terms (parameters, settings) with flags only at the command line."""

import ast
import json
import shutil
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

import pixelwise as pw
from pixelwise.classes import CARLA
from pixelwise.cli.main import main
from pixelwise.cli.parser import build_parser
from pixelwise.config import SETTINGS, DataConfig, RunConfig, TrainConfig
from pixelwise.config_file import ConfigFileError, apply_config_file
from pixelwise.recipes import recipe
from pixelwise.resume import RunExists, SettingsChanged

from conftest import small_run

TINY = ["--recipe", "scratch", "--size", "48x64", "--filters", "8", "--batch-size", "8", "--epochs", "1"]


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


def test_every_data_and_train_field_is_a_declared_setting_with_a_flag_or_a_reason():
    declared = {name for name in SETTINGS}
    for section, cls in (("data", DataConfig), ("train", TrainConfig)):
        assert {f"{section}.{f.name}" for f in fields(cls)} <= declared
    help_text = build_parser()._subparsers._group_actions[0].choices["train"].format_help()
    for setting in SETTINGS.values():
        assert setting.flag is None or setting.flag in help_text
    assert [s.name for s in SETTINGS.values() if s.flag is None] == ["data.id_map"]  # set by a --layout
    assert [s.field for s in SETTINGS.values() if s.resumable] == ["epochs", "time_limit", "patience"]


def test_train_help_prints_each_recipes_values_from_the_recipes(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(≥ 1; recipes: seed 40, default 60, scratch 120)" in text  # --epochs
    assert "(≥ 0; recipes: seed 0, default 28, scratch 0)" in text  # --time-limit
    assert "--label-smoothing" in text and "(in [0, 1); every recipe: 0)" in text


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_print_config_then_config_gives_a_bit_identical_config_json(scenes, tmp_path, capsys, suffix):
    flags = [*TINY, "--lr", "0.004", "--label-smoothing", "0.05", "--cache-dir", tmp_path / "cache"]
    code, printed, _ = run_cli(capsys, "train", scenes, "--out", tmp_path / "run", *flags, "--print-config")
    assert code == 0 and json.loads(printed)["train"]["lr"] == 0.004
    assert not (tmp_path / "run").exists()  # printing trains nothing
    config_file = tmp_path / f"settings{suffix}"
    config_file.write_text(printed if suffix == ".json" else yaml.safe_dump(json.loads(printed)))
    code, _, err = run_cli(capsys, "train", scenes, "--out", tmp_path / "run", "--config", config_file,
                           "--cache-dir", tmp_path / "cache", "--no-progress")
    assert code == 0, err
    assert (tmp_path / "run" / "config.json").read_text() == printed


def test_flags_beside_a_config_file_win_and_the_file_changes_the_recipe(tmp_path, capsys):
    config_file = tmp_path / "c.yaml"
    config_file.write_text("train:\n  lr: 1e-3\n  epochs: 7\ndata:\n  size: [64, 96]\n")
    code, printed, _ = run_cli(capsys, "train", "data", "--out", tmp_path / "r", "--recipe", "scratch",
                               "--config", config_file, "--epochs", 9, "--print-config")
    settings = json.loads(printed)
    assert code == 0 and settings["train"]["epochs"] == 9 and settings["train"]["lr"] == 0.001
    assert settings["data"]["size"] == [64, 96] and settings["model"]["batch_norm"]  # scratch's, kept


@pytest.mark.parametrize("body, message", [
    ("train:\n  lrr: 0.1\n", "unknown setting train.lrr (did you mean lr?)"),
    ("train:\n  epochs: three\n", "train.epochs must be a whole number, not 'three'"),
    ("data:\n  crop: 1.5\n", "data.crop must be in (0, 1], not 1.5"),
    ("model:\n  n_filters: 0\n", "model.n_filters must be ≥ 1, not 0"),
    ("optimiser:\n  lr: 1\n", "unknown section 'optimiser'; a config file has model, data, train, classes"),
])
def test_a_bad_config_file_is_one_line_naming_the_file_and_the_key(tmp_path, capsys, body, message):
    config_file = tmp_path / "bad.yaml"
    config_file.write_text(body)
    code, _, err = run_cli(capsys, "train", "data", "--out", tmp_path / "r", "--config", config_file)
    assert code == 1 and err == f"pixelwise train: error: {config_file}: {message}\n"
    with pytest.raises(ConfigFileError, match="bad.yaml"):
        apply_config_file(recipe("seed"), config_file)


def test_resume_refusal_is_one_rule_named_by_setting_in_python_and_by_flag_on_the_command_line(
        scenes, tmp_path, capsys):
    run = small_run(scenes, tmp_path / "run", epochs=1)
    saved = pw.load_config(run)
    with pytest.raises(SettingsChanged, match=r"train\.lr cannot change when resuming") as refused:
        pw.train(scenes / "CameraRGB", scenes / "CameraMask", run, saved.with_train(lr=0.5, epochs=2), resume=True,
                 progress=False, log=lambda _: None)
    assert refused.value.changed == ["train.lr"] and "--" not in str(refused.value)
    with pytest.raises(RunExists, match="pass resume=True to continue it") as exists:
        pw.train(scenes / "CameraRGB", scenes / "CameraMask", run, saved, progress=False, log=lambda _: None)
    assert "--" not in str(exists.value)
    code, _, err = run_cli(capsys, "train", scenes, "--out", run, "--resume", "--lr", "0.5")
    assert code == 1 and err.startswith("pixelwise train: error: --lr cannot change when resuming")
    assert "(only --epochs, --time-limit and --patience can change)" in err
    config_file = tmp_path / "c.json"
    config_file.write_text('{"train": {"seed": 3}}')
    code, _, err = run_cli(capsys, "train", scenes, "--out", run, "--resume", "--config", config_file)
    assert code == 1 and "--seed cannot change when resuming" in err
    code, printed, _ = run_cli(capsys, "train", scenes, "--out", run, "--resume", "--epochs", 5, "--print-config")
    assert code == 0 and RunConfig.from_dict(json.loads(printed)) == saved.with_train(epochs=5)


def test_an_old_run_resumes_with_its_own_settings(tmp_path, capsys):
    old = Path(__file__).parent / "fixtures" / "run-0.1.0"
    run = shutil.copytree(old, tmp_path / "run")
    code, printed, _ = run_cli(capsys, "train", "data", "--out", run, "--resume", "--epochs", 3, "--print-config")
    assert code == 0 and RunConfig.from_dict(json.loads(printed)) == pw.load_config(old).with_train(epochs=3)
    assert json.loads(printed)["data"]["mask_format"] == "ids"  # runs before mask formats read every mask as ids


def _colour_coded_copy(scenes: Path, root: Path, count: int) -> tuple[Path, Path]:
    """The first ``count`` scenes, their masks as CARLA's colours in NAME_L.png."""
    images, masks = root / "images", root / "masks"
    images.mkdir(parents=True)
    masks.mkdir()
    for image in sorted((scenes / "CameraRGB").iterdir())[:count]:
        shutil.copy(image, images / image.name)
        ids = np.asarray(Image.open(scenes / "CameraMask" / image.name))[..., 0]
        Image.fromarray(CARLA.palette()[ids]).save(masks / f"{image.stem}_L.png")
    return images, masks


def test_evaluate_and_predict_take_the_data_flags_with_the_runs_as_defaults(scenes, tmp_path, capsys):
    run = small_run(scenes, tmp_path / "run", epochs=1)
    images, masks = _colour_coded_copy(scenes, tmp_path / "copy", 4)
    cache = ["--cache-dir", tmp_path / "cache", "--no-progress"]
    code, _, err = run_cli(capsys, "evaluate", run, "--images", images, "--masks", masks, "--out", tmp_path / "a",
                           *cache)
    assert code == 2  # the run's own settings: no suffix, so no mask pairs with the images
    code, _, err = run_cli(capsys, "evaluate", run, "--images", images, "--masks", masks, "--mask-suffix", "_L",
                           "--mask-format", "colors", "--out", tmp_path / "b", *cache)
    assert code == 0, err
    ids = shutil.copytree(scenes / "CameraMask", tmp_path / "ids", ignore=lambda _, names: [
        n for n in names if n not in {p.name for p in images.iterdir()}])
    assert run_cli(capsys, "evaluate", run, "--images", images, "--masks", ids, "--out", tmp_path / "c", *cache)[0] == 0
    colour, by_ids = (json.loads((tmp_path / folder / "report.json").read_text()) for folder in "bc")
    assert colour.pop("evaluated")["masks"] == str(masks) and by_ids.pop("evaluated")["masks"] == str(ids)
    assert colour["images"] == 4 and colour == by_ids
    code, out, err = run_cli(capsys, "predict", run, images, "--masks", masks, "--mask-suffix", "_L", "--mask-format",
                             "colors", "--out", tmp_path / "pred", "--no-progress")
    assert code == 0 and len(list((tmp_path / "pred").glob("*_figure.png"))) == 4, err


def test_a_bad_classes_file_is_one_line_and_exit_1_naming_the_repeated_line(tmp_path, capsys):
    classes = tmp_path / "classes.txt"
    classes.write_text("road\nsky\n# a comment\nroad 1 2 3\n")
    for command in (["check", tmp_path], ["train", tmp_path, "--out", tmp_path / "r"]):
        code, _, err = run_cli(capsys, *command, "--classes", classes)
        assert code == 1 and err == f"pixelwise {command[0]}: error: {classes}:4: class name 'road' repeats line 1\n"


def test_export_has_no_format_flag_and_no_cli_function_is_over_60_lines():
    export = build_parser()._subparsers._group_actions[0].choices["export"].format_help()
    assert "--format" not in export
    cli = Path(pw.__file__).parent / "cli"
    for path in [*cli.glob("*.py"), cli.parent / "settings.py", cli.parent / "config.py", cli.parent / "config_file.py"]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef):
                assert node.end_lineno - node.lineno < 60, f"{path.name}: {node.name}"
