"""The auto engine: exports on first use, keeps the export fresh, falls back to torch where ONNX cannot
run, and follows the measured timing, remembered per machine and network."""

import shutil

import numpy as np
import pytest
from conftest import small_run
from safetensors.torch import load_file, save_file

from pixelwise.cli.main import main
from pixelwise.data.decode import read_image
from pixelwise.data.pairs import IMAGE_DIR
from pixelwise.inference.model import load
from pixelwise.inference.predictor import Predictor

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")


@pytest.fixture(scope="module")
def trained(scenes, tmp_path_factory):
    return small_run(scenes, tmp_path_factory.mktemp("engine") / "run", epochs=1)


@pytest.fixture
def run(trained, tmp_path, monkeypatch):
    """A copy of the trained run without exports, and a cache folder of its own (no remembered choices)."""
    monkeypatch.setenv("PIXELWISE_CACHE", str(tmp_path / "cache"))
    copy = tmp_path / "run"
    shutil.copytree(trained, copy, ignore=shutil.ignore_patterns("*.onnx"))
    return copy


def timer(torch_seconds: float, onnx_seconds: float, calls: list | None = None):
    """An engine timer that answers fixed seconds per engine (and records which it was asked for)."""
    def time_engine(engine, call):
        call()
        if calls is not None:
            calls.append(engine)
        return onnx_seconds if engine == "onnx" else torch_seconds
    return time_engine


def test_auto_exports_on_first_use_and_reuses_the_export(run):
    model = load(run, engine_timer=timer(2.0, 1.0))
    assert model.engine == "onnx" and model.model_file == run / "model.onnx" and (run / "model.onnx").exists()
    assert model.engine_note.startswith("engine: onnx fp32 (2.0x torch's speed on this CPU; exported ")
    written = (run / "model.onnx").stat().st_mtime_ns
    again = load(run, engine_timer=timer(2.0, 1.0))
    assert again.engine == "onnx" and (run / "model.onnx").stat().st_mtime_ns == written
    assert again.engine_note == "engine: onnx fp32 (2.0x torch's speed on this CPU)"


def test_changed_weights_make_auto_export_again(run):
    from pixelwise.inference.onnx_engine import check_fresh

    load(run, engine_timer=timer(2.0, 1.0))
    weights = load_file(run / "best.safetensors")
    name = next(iter(weights))
    weights[name] = weights[name] + 0.01
    save_file(weights, run / "best.safetensors")
    model = load(run, engine_timer=timer(2.0, 1.0))
    assert model.engine == "onnx" and "exported" in model.engine_note
    check_fresh(run / "model.onnx", run / "best.safetensors")  # made from the weights as they are now


def test_auto_prefers_a_fresh_int8_export_and_passes_over_a_stale_one(run, scenes):
    from pixelwise.inference.export import export

    export(run, int8=[scenes / IMAGE_DIR], calibration_count=4)
    model = load(run, engine_timer=timer(2.0, 1.0))
    assert model.engine == "onnx" and model.model_file == run / "model.int8.onnx"
    assert model.engine_note.startswith("engine: onnx int8")
    shutil.copy(run / "last.safetensors", run / "best.safetensors")
    weights = load_file(run / "best.safetensors")  # last may equal best after one epoch: change it for sure
    name = next(iter(weights))
    save_file({**weights, name: weights[name] * 1.01}, run / "best.safetensors")
    stale = load(run, engine_timer=timer(2.0, 1.0))
    assert stale.model_file == run / "model.onnx"
    assert "model.int8.onnx passed over, it was made from other weights" in stale.engine_note


def test_a_run_folder_the_export_cannot_be_written_into_falls_back_to_torch_with_a_note(run, scenes, capsys):
    (run / "model.onnx").mkdir()  # something in the way of the export, as a read-only folder would be
    model = load(run, engine_timer=timer(2.0, 1.0))
    assert model.engine == "torch" and model.model_file is None
    assert model.engine_note.startswith(f"engine: torch (could not export {run / 'model.onnx'} (")
    image = sorted((scenes / IMAGE_DIR).iterdir())[0]  # the command says the same in one line, then predicts
    assert main(["predict", str(run), str(image), "--out", str(run.parent / "out"), "--no-progress"]) == 0
    out = capsys.readouterr()
    assert "engine: torch (could not export" in out.out and not out.err


def test_the_choice_follows_the_timing_and_is_remembered(run, tmp_path, monkeypatch):
    calls: list = []
    slower = load(run, engine_timer=timer(1.0, 0.9, calls))  # 1.1x: not worth a switch
    assert slower.engine == "torch" and slower.model_file is None and calls == ["torch", "onnx"] * 3
    assert "under the 1.2x a switch needs" in slower.engine_note
    calls.clear()
    kept = load(run, engine_timer=timer(1.0, 0.1, calls))  # remembered: not timed again
    assert kept.engine == "torch" and calls == []
    monkeypatch.setenv("PIXELWISE_CACHE", str(tmp_path / "other-machine"))
    assert load(run, engine_timer=timer(1.0, 0.5)).engine == "onnx"
    monkeypatch.setenv("PIXELWISE_CACHE", str(tmp_path / "slow-onnx"))
    calls.clear()
    assert load(run, engine_timer=timer(1.0, 4.0, calls)).engine == "torch"
    assert calls == ["torch", "onnx"]  # several times slower on its first call: dropped without more rounds


def test_torch_only_settings_stay_on_torch_under_auto(run):
    model = load(run, precision="fp32", engine_timer=timer(2.0, 1.0))
    assert model.engine == "torch" and not (run / "model.onnx").exists()
    assert model.engine_note == "engine: torch (precision fp32 asked for, a torch setting)"
    assert load(run, engine="torch").engine_note is None and not (run / "model.onnx").exists()


def test_ids_from_auto_equal_ids_from_torch(run, scenes):
    picture = read_image(sorted((scenes / IMAGE_DIR).iterdir())[0])
    auto = load(run, tta=True, engine_timer=timer(2.0, 1.0))
    assert auto.engine == "onnx"
    torch_ids = Predictor(run, precision="fp32", tta=True).predict(picture)
    assert (auto.predict(picture) == torch_ids).mean() > 0.999


def test_predict_prints_the_engine_chosen_once(run, scenes, capsys):
    image = sorted((scenes / IMAGE_DIR).iterdir())[0]
    assert main(["predict", str(run), str(image), "--out", str(run.parent / "out"), "--no-progress"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert len([line for line in printed if line.startswith("engine: ")]) == 1
    assert np.asarray(read_image(run.parent / "out" / f"{image.stem}_color.png")).shape[:2] == (96, 128)
