"""TensorBoard event files and MLflow runs of a training run, and early stopping (train.patience)."""

import csv
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import small_config

from pixelwise.config import RunConfig
from pixelwise.data.pairs import IMAGE_DIR, MASK_DIR
from pixelwise.recipes import RECIPES
from pixelwise.rundir import LAST
from pixelwise.training import checkpoint
from pixelwise.training.hooks import Hooks
from pixelwise.training.loop import train
from pixelwise.training.stop import TrainingStopped
from pixelwise.training.tracking.mlflow_run import flat_settings

STEPS = 7  # small_config's steps per epoch: 25 training frames (of 32, a quarter held out) in batches of 4


def _config(epochs: int, **train_settings) -> RunConfig:
    return small_config(epochs=epochs, precision="fp32", **train_settings)  # fp32: no precision timing


def _train(scenes, run_dir, config, tmp_path, **kw):
    kw.setdefault("log", lambda _: None)
    return train(scenes / IMAGE_DIR, scenes / MASK_DIR, run_dir, config, cache_dir=tmp_path / "cache", progress=False,
                 **kw)


def _history(run: Path) -> list[dict]:
    with open(run / "history.csv", newline="") as f:
        return list(csv.DictReader(f))


def _events(run: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tb"), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    return events


def test_event_files_hold_every_step_once_across_a_crash_and_a_sigterm_with_resumes(scenes, tmp_path):
    run, config = tmp_path / "run", _config(epochs=3)

    def crash_in_epoch_2(epoch, step, x, y):  # steps 1..8 are logged, `last` holds epoch 1 (7 steps)
        if (epoch, step) == (2, 1):
            raise RuntimeError("crashed")

    def sigterm_in_epoch_3(epoch, step, x, y):
        if (epoch, step) == (3, 2):  # finishes this step, saves `last` at step 3 of epoch 3, stops
            os.kill(os.getpid(), signal.SIGTERM)

    with pytest.raises(RuntimeError, match="crashed"):
        _train(scenes, run, config, tmp_path, hooks=Hooks(on_batch=crash_in_epoch_2))
    with pytest.raises(TrainingStopped):
        _train(scenes, run, config, tmp_path, resume=True, hooks=Hooks(on_batch=sigterm_in_epoch_3))
    _train(scenes, run, config, tmp_path, resume=True)

    events = _events(run)
    assert [e.step for e in events.Scalars("train/loss")] == list(range(1, 3 * STEPS + 1))  # the crash's step 8 purged
    for tag in ("lr/decoder", "lr/encoder", "train/step_seconds"):
        assert [e.step for e in events.Scalars(tag)] == list(range(1, 3 * STEPS + 1))
    assert all(e.value == pytest.approx(config.train.lr) for e in events.Scalars("lr/decoder"))
    history = _history(run)
    ends = [STEPS * int(row["epoch"]) for row in history]
    for tag, key in (("val/miou", "val_miou"), ("val/loss", "val_loss"), ("val/accuracy", "val_accuracy"),
                     ("train/epoch_loss", "train_loss")):
        scalars = events.Scalars(tag)
        assert [e.step for e in scalars] == ends
        assert [e.value for e in scalars] == pytest.approx([float(row[key]) for row in history], rel=1e-5)
    per_class = [tag for tag in events.Tags()["scalars"] if tag.startswith("val_iou/")]
    assert per_class and {t.removeprefix("val_iou/") for t in per_class} <= set(config.classes.names)
    assert all({e.step for e in events.Scalars(tag)} <= set(ends) for tag in per_class)  # none where absent
    assert [e.step for e in events.Scalars("val_iou/Road")] == ends  # in every frame
    images = events.Images("val/input_truth_prediction")
    assert [(i.step, i.width, i.height) for i in images] == [(end, 3 * 64, 4 * 48) for end in ends]  # 4 frames


def test_a_missing_tensorboard_package_is_one_line_and_no_writer(tmp_path):
    script = ("import sys; sys.modules['tensorboard'] = None\n"  # as if tensorboard were not installed
              "from pathlib import Path\n"
              "from pixelwise.config import RunConfig\n"
              "from pixelwise.training.tracking import open_tracking\n"
              f"tracking = open_tracking(Path({str(tmp_path)!r}), RunConfig(), 1, None)\n"
              "tracking.step(1, 0.5, {'decoder': 0.1}, 0.01)\n"
              "tracking.close(True)\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [f"TensorBoard logs off: the tensorboard package is not installed "
                                       f"(pip install 'pixelwise[tensorboard]' writes them to {tmp_path / 'tb'})"]
    assert not (tmp_path / "tb").exists()


def test_event_files_are_written_without_loading_tensorflow(tmp_path):
    # torch.utils.tensorboard imports TensorFlow wherever it is installed: seconds at every training start
    script = ("import sys\n"
              "from pathlib import Path\n"
              "from pixelwise.config import RunConfig\n"
              "from pixelwise.training.tracking import open_tracking\n"
              f"tracking = open_tracking(Path({str(tmp_path)!r}), RunConfig(), 1, None)\n"
              "tracking.step(1, 0.5, {'decoder': 0.1}, 0.01)\n"
              "tracking.close(True)\n"
              "print(sorted(m for m in ('tensorflow', 'torch.utils.tensorboard') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["[]"]
    assert [e.value for e in _events(tmp_path).Scalars("train/loss")] == [0.5]


def test_sessions_begun_within_one_second_are_read_in_the_order_they_ran(tmp_path):
    # Each session resumes 3 steps after the last one began and logs 5 steps, 2 of which the next one drops.
    # They begin within one second, as a crashed or stopped small run and its resume can: readers take the
    # files in name order, so the names alone must keep the sessions' order.
    from pixelwise.training.tracking import open_tracking

    for session in range(5):
        tracking = open_tracking(tmp_path, RunConfig(), 1 + 3 * session, None)
        for step in range(1 + 3 * session, 6 + 3 * session):
            tracking.step(step, float(session), {"decoder": 0.1}, 0.01)
        tracking.close(True)
    losses = _events(tmp_path).Scalars("train/loss")
    assert [e.step for e in losses] == list(range(1, 18))
    assert [e.value for e in losses] == [0.0] * 3 + [1.0] * 3 + [2.0] * 3 + [3.0] * 3 + [4.0] * 5


def test_a_failing_event_file_is_one_line_and_training_goes_on_without_it():
    from pixelwise.training.tracking import Tracking

    class FullDisk:  # a TensorBoard writer on a full disk
        calls = 0

        def step(self, *_):
            FullDisk.calls += 1
            raise OSError(28, "No space left on device")

        epoch = close = step

    lines = []
    tracking = Tracking(RunConfig(), tensorboard=FullDisk(), log=lines.append)
    tracking.step(1, 0.5, {"decoder": 0.1, "encoder": 0.1}, 0.01)
    tracking.step(2, 0.5, {"decoder": 0.1, "encoder": 0.1}, 0.01)
    tracking.epoch(2, {"epoch": 1, "train_loss": 0.5, "train_accuracy": 0.5, "seconds": 1.0, "val_miou": None})
    tracking.close(True)
    assert FullDisk.calls == 1 and tracking.tensorboard is None
    assert lines == ["tensorboard: [Errno 28] No space left on device; this run logs no more to it"]


def test_mlflow_file_store_holds_params_metrics_artifacts_and_the_model_and_a_resume_continues_it(scenes, tmp_path):
    from mlflow import MlflowClient

    run, store = tmp_path / "run", f"file:{tmp_path / 'mlruns'}"
    config = _config(epochs=3)
    with pytest.raises(TrainingStopped):  # a stop in epoch 2, then resumed to end there
        _train(scenes, run, config, tmp_path, mlflow=store,
               hooks=Hooks(on_batch=lambda e, s, x, y: os.kill(os.getpid(), signal.SIGTERM) if e == 2 else None))
    _train(scenes, run, config.with_train(epochs=2), tmp_path, mlflow=store, resume=True)

    client = MlflowClient(store)
    experiment = client.get_experiment_by_name("pixelwise")
    [logged] = client.search_runs([experiment.experiment_id])  # one MLflow run for the two sessions
    assert logged.info.status == "FINISHED" and logged.info.run_name == "run"
    assert logged.data.params == flat_settings(config)  # the settings it started with
    assert logged.data.params["train.lr"] == "0.001" and logged.data.tags["resumed.train.epochs"] == "2"
    history = _history(run)
    for key in ("val_miou", "train_loss", "lr", "stale"):
        metric = client.get_metric_history(logged.info.run_id, key)
        assert [(m.step, m.value) for m in metric] == [(int(r["epoch"]), pytest.approx(float(r[key]), rel=1e-5))
                                                       for r in history]
    assert any(key.startswith("val_iou/") for key in logged.data.metrics)
    files = {f.path for f in client.list_artifacts(logged.info.run_id)}
    assert {"config.json", "history.csv", "curves.png", "model"} <= files
    assert {f.path for f in client.list_artifacts(logged.info.run_id, "model")} == {"model/config.json",
                                                                                  "model/best.safetensors"}
    [model] = client.search_logged_models([experiment.experiment_id])
    assert model.name == "pixelwise" and model.source_run_id == logged.info.run_id

    import pixelwise as pw
    from mlflow.artifacts import download_artifacts

    folder = download_artifacts(f"runs:/{logged.info.run_id}/model", dst_path=str(tmp_path / "download"),
                                tracking_uri=store)
    image = np.zeros((48, 64, 3), np.uint8)
    assert pw.load(folder).predict(image).shape == (48, 64)  # the logged model is a run folder pixelwise loads


def test_an_unusable_mlflow_store_is_a_one_line_error_before_training(scenes, tmp_path):
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(ValueError, match=r"^MLflow at file:"):
        _train(scenes, tmp_path / "run", _config(epochs=1), tmp_path, mlflow=f"file:{tmp_path / 'file'}")


def _stale_counts(history: list[dict]) -> list[int]:
    """What train.patience counts, recomputed from the validation mIoUs: validations since the best."""
    best, stale, counts = float("-inf"), 0, []
    for row in history:
        miou = float(row["val_miou"])
        best, stale = (miou, 0) if miou > best else (best, stale + 1)
        counts.append(stale)
    return counts


def test_patience_stops_after_that_many_validations_without_a_better_miou(scenes, tmp_path):
    lines = []
    # A learning rate too small to move the weights: the validation mIoU stays where it is, never better.
    result = _train(scenes, tmp_path / "run", _config(epochs=8, patience=2, lr=1e-9), tmp_path, log=lines.append)
    history = _history(tmp_path / "run")
    counts = _stale_counts(history)
    assert [int(row["stale"]) for row in history] == counts
    assert len(history) < 8 and counts[-1] == 2 and 2 not in counts[:-1]  # stopped at the first count of 2
    assert result.best_epoch == max(range(len(history)), key=lambda i: (float(history[i]["val_miou"]), -i)) + 1
    assert f"early stop after epoch {len(history)}: no better validation in the last 2 (train.patience 2); " \
           f"best.safetensors is epoch {result.best_epoch}'s" in lines
    assert checkpoint.read_meta(tmp_path / "run" / "best.safetensors")["epoch"] == result.best_epoch


def test_a_resumed_run_keeps_its_patience_count(scenes, tmp_path):
    run, config = tmp_path / "run", _config(epochs=2, patience=3, lr=1e-9)
    _train(scenes, run, config, tmp_path)
    first = _history(run)
    assert checkpoint.read_meta(run / LAST)["progress"]["stale"] == int(first[-1]["stale"]) == _stale_counts(first)[-1]
    _train(scenes, run, config.with_train(epochs=8), tmp_path, resume=True)
    history = _history(run)
    counts = _stale_counts(history)
    assert [int(row["stale"]) for row in history] == counts  # counted on from the first session's count
    assert len(history) < 8 and counts[-1] == 3 and 3 not in counts[:-1]
    lines = []  # resumed again: patience has run out, nothing more is trained
    _train(scenes, run, config.with_train(epochs=8), tmp_path, resume=True, log=lines.append)
    assert _history(run) == history and any(line.startswith("early stop after epoch") for line in lines)


def test_patience_is_off_in_every_recipe_and_a_resumable_setting_with_a_flag():
    from pixelwise.cli.parser import build_parser
    from pixelwise.config import RESUMABLE

    assert all(config.train.patience == 0 for config in RECIPES.values())
    assert "patience" in RESUMABLE
    args = build_parser().parse_args(["train", "DATA", "--out", "RUN", "--patience", "3", "--mlflow", "file:./mlruns"])
    assert (args.patience, args.mlflow) == (3, "file:./mlruns")
