"""Never lose work: a stop request saves mid-epoch and resumes exactly; SIGKILL loses at most the
current epoch and the resumed run ends exactly where an uninterrupted one does; NaN stops cleanly."""

import csv
import os
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from conftest import small_config
from safetensors.torch import load_file

from pixelwise.config import RunConfig
from pixelwise.data.pairs import IMAGE_DIR, MASK_DIR
from pixelwise.recipes import recipe
from pixelwise.training.hooks import Hooks
from pixelwise.training.loop import train
from pixelwise.training.stop import TrainingStopped


def _weights(run: Path, name: str = "last.safetensors") -> dict:
    """The saved weights, and those training continues from where they are an average."""
    return {k: v for k, v in load_file(str(run / name)).items() if not k.startswith("_") or k.startswith("_trained.")}


def _assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key


def _history(run: Path) -> list[dict]:
    return list(csv.DictReader(open(run / "history.csv")))


def _same_history(a: Path, b: Path) -> None:
    drop = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    assert drop(_history(a)) == drop(_history(b))


def _train(scenes, run, tmp_path, epochs=3, config=None, **kw):
    config = config or small_config(epochs=epochs, precision="fp32")
    return train(scenes / IMAGE_DIR, scenes / MASK_DIR, run, config,
                 cache_dir=tmp_path / "cache", progress=False, log=lambda _: None, **kw)


def _scratch_like(epochs: int = 3) -> RunConfig:
    """small_config with every ingredient of the scratch recipe: augmentation and crops steered to
    classes (random draws), BatchNorm (running statistics), AdamW with warm-up and cosine decay,
    weighted CE + Dice."""
    base, scratch = small_config(epochs=epochs, precision="fp32"), recipe("scratch")
    return replace(base, model=replace(base.model, batch_norm=True),
                   data=replace(base.data, augment="full", crop=0.75, class_crops=0.5),
                   train=replace(scratch.train, epochs=epochs, batch_size=4, precision="fp32"))


@pytest.mark.parametrize("recipe_name", ["seed", "scratch", "scratch+ema"])
def test_sigterm_mid_epoch_saves_and_resumes_exactly(scenes, tmp_path, recipe_name):
    config = {"seed": None, "scratch": _scratch_like(), "scratch+ema": _scratch_like().with_train(ema=0.9)}[recipe_name]
    _train(scenes, tmp_path / "straight", tmp_path, config=config)

    batches = []

    def sigterm_at_the_ninth_batch(epoch, step, x, y):
        batches.append((epoch, step))
        if len(batches) == 9:  # early in epoch 2: as if `kill -TERM` arrived now
            os.kill(os.getpid(), signal.SIGTERM)

    with pytest.raises(TrainingStopped, match=r"after step \d+ of \d+ in epoch 2") as stopped:
        _train(scenes, tmp_path / "stopped", tmp_path, config=config, hooks=Hooks(on_batch=sigterm_at_the_ninth_batch))
    assert batches[-1] == (2, stopped.value.step - 1)  # the step it was in finished, then it stopped
    assert stopped.value.step == 9 - stopped.value.steps
    assert len(_history(tmp_path / "stopped")) == 1

    _train(scenes, tmp_path / "stopped", tmp_path, config=config, resume=True)
    _assert_same_weights(tmp_path / "straight", tmp_path / "stopped")
    _same_history(tmp_path / "straight", tmp_path / "stopped")


def test_a_checkpoint_from_when_the_logs_held_cross_entropy_resumes_mid_epoch(scenes, tmp_path):
    """Its partial sum is cross-entropy, not the loss logged now: the resumed epoch's loss counts the
    steps after the resume instead of mixing the two."""
    import json

    from safetensors import safe_open
    from safetensors.torch import save_file

    def stop_in_epoch_2(epoch, step, x, y):
        if (epoch, step) == (2, 1):
            os.kill(os.getpid(), signal.SIGTERM)

    run = tmp_path / "run"
    with pytest.raises(TrainingStopped):
        _train(scenes, run, tmp_path, epochs=2, hooks=Hooks(on_batch=stop_in_epoch_2))
    last = run / "last.safetensors"
    with safe_open(str(last), framework="pt") as f:
        metadata = f.metadata()
    meta = json.loads(metadata["meta"])
    del meta["progress"]["loss_images"]  # as an older version saved it, with a cross-entropy pixel sum
    meta["progress"]["loss_sum"] = 1e9
    save_file(load_file(str(last)), str(last), metadata={**metadata, "meta": json.dumps(meta)})
    history = _train(scenes, run, tmp_path, epochs=2, resume=True).history
    assert len(history) == 2 and 0 < history[1]["train_loss"] < 2 * history[0]["train_loss"]


def test_nan_loss_stops_with_message_and_keeps_last_good_checkpoint(scenes, tmp_path):
    _train(scenes, tmp_path / "run", tmp_path, epochs=1)
    good = _weights(tmp_path / "run")

    def poison(epoch, step, x, y):  # a batch whose pixels are NaN: the loss of its step is NaN
        x.fill_(float("nan"))

    with pytest.raises(FloatingPointError, match="diverged in epoch 2, step 1.*last good checkpoint"):
        _train(scenes, tmp_path / "run", tmp_path, epochs=2, resume=True, hooks=Hooks(on_batch=poison))
    after = _weights(tmp_path / "run")
    assert all(torch.equal(good[k], after[k]) for k in good)


def test_temporary_files_of_a_killed_save_are_removed_when_the_run_is_resumed(scenes, tmp_path):
    run = tmp_path / "run"
    _train(scenes, run, tmp_path, epochs=1)
    left = [".best.safetensors.k2a9_x0q.tmp.safetensors", ".history.csv.3bq8zz1m.tmp.csv",
            ".last.safetensors.abcdefgh.tmp.safetensors", ".curves.png.q1w2e3r4.tmp.png"]
    kept = [".best.safetensors.mine.tmp.safetensors", "notes.tmp.csv", ".history.csv.3bq8zz1m.tmp.csv.bak",
            ".other.csv.3bq8zz1m.tmp.csv"]  # a user's files, however alike: never touched
    for name in left + kept:
        (run / name).write_text("partial")
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file() and p.name not in left}
    lines = []
    train(scenes / IMAGE_DIR, scenes / MASK_DIR, run, small_config(epochs=2, precision="fp32"), resume=True,
          cache_dir=tmp_path / "cache", progress=False, log=lines.append)
    names = {p.name for p in run.iterdir()}
    assert not names & set(left) and set(kept) <= names
    assert all((run / name).read_text() == "partial" for name in kept)
    assert set(before) <= names
    assert any(line.startswith(f"{run}: removed 4 temporary file(s) left by an interrupted save") for line in lines)
    assert len(_history(run)) == 2


def _cli_train(data: Path, run: Path, cache: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "pixelwise", "train", str(data), "--out", str(run), "--recipe", "scratch", "--epochs", "3",
            "--size", "48x64", "--filters", "16", "--batch-size", "1", "--precision", "fp32",
            "--cache-dir", str(cache), "--no-progress", *extra]


def test_sigkill_mid_epoch_then_resume_matches_an_uninterrupted_run(scenes, tmp_path):
    """A real process killed without warning: everything up to the last finished epoch survives,
    and the resumed run repeats the lost steps exactly (same batches, same RNG, same optimiser).
    The process kills itself at the 6th batch of epoch 2, so where it dies does not depend on how
    fast the machine is."""
    cache = tmp_path / "cache"
    subprocess.run(_cli_train(scenes, tmp_path / "straight", cache), check=True, capture_output=True)

    killed = tmp_path / "killed"
    script = f"""
import os, signal
from pathlib import Path
from pixelwise.rundir import load_config
from pixelwise.training.hooks import Hooks
from pixelwise.training.loop import train

def die_in_epoch_2(epoch, step, x, y):
    if (epoch, step) == (2, 5):
        os.kill(os.getpid(), signal.SIGKILL)

train(Path({str(scenes / IMAGE_DIR)!r}), Path({str(scenes / MASK_DIR)!r}), Path({str(killed)!r}),
      load_config(Path({str(tmp_path / "straight")!r})), cache_dir=Path({str(cache)!r}), progress=False,
      hooks=Hooks(on_batch=die_in_epoch_2))
"""
    died = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert died.returncode == -signal.SIGKILL, died.stderr
    assert len(_history(killed)) == 1  # epoch 2 was cut short
    assert not any(p.name.endswith(".tmp") for p in killed.iterdir())

    resumed = subprocess.run(_cli_train(scenes, killed, cache, "--resume"), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    _assert_same_weights(tmp_path / "straight", killed)
    _same_history(tmp_path / "straight", killed)


@pytest.mark.parametrize("lr", ["1e308", "inf"])
def test_a_learning_rate_that_destroys_the_weights_stops_without_saving_them(scenes, tmp_path, capsys, lr):
    from pixelwise.cli.main import main

    code = main(["train", str(scenes), "--out", str(tmp_path / "run"), "--epochs", "1", "--lr", lr, "--size", "48x64",
                 "--recipe", "scratch", "--filters", "8", "--cache-dir", str(tmp_path / "cache"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1 and ("diverged" in err or "finite number" in err)
    last = tmp_path / "run" / "last.safetensors"
    if last.exists():  # only the checkpoint written at the start: finite weights, no step taken
        from safetensors import safe_open

        with safe_open(str(last), framework="pt") as f:
            assert '"epoch": 1, "step": 0' in f.metadata()["meta"]
        assert all(torch.isfinite(w).all() for w in _weights(tmp_path / "run").values())


def test_a_run_that_dies_before_its_first_epoch_ends_can_be_resumed(scenes, tmp_path):
    """`last` exists from the start: a crash in epoch 1 leaves a run that --resume continues exactly."""
    _train(scenes, tmp_path / "straight", tmp_path, epochs=2)

    def crash(epoch, step, x, y):
        raise RuntimeError("simulated crash in the first step")

    with pytest.raises(RuntimeError, match="simulated crash"):
        _train(scenes, tmp_path / "crashed", tmp_path, epochs=2, hooks=Hooks(on_batch=crash))
    assert (tmp_path / "crashed" / "last.safetensors").exists() and not (tmp_path / "crashed" / "history.csv").exists()
    _train(scenes, tmp_path / "crashed", tmp_path, epochs=2, resume=True)
    _assert_same_weights(tmp_path / "straight", tmp_path / "crashed")
    _same_history(tmp_path / "straight", tmp_path / "crashed")
