"""train.init: a training that starts from another run's weights (fine-tuning, pretraining elsewhere)."""

import json
from dataclasses import replace
from pathlib import Path

import pytest
from safetensors.torch import load_file

from conftest import small_config, small_run
from pixelwise.classes import ClassSet
from pixelwise.data.pairs import IMAGE_DIR, MASK_DIR
from pixelwise.model.unet import preset
from pixelwise.training.loop import train


def weights(path: Path) -> dict:
    return {k: v for k, v in load_file(str(path)).items() if not k.startswith("_")}


@pytest.fixture(scope="module")
def source(scenes, tmp_path_factory) -> Path:
    return small_run(scenes, tmp_path_factory.mktemp("init") / "source", epochs=1)


def barely_trained(scenes: Path, run_dir: Path, config) -> Path:
    """One epoch at a learning rate too small to move a weight measurably, so the weights saved are the
    ones training started from."""
    config = config.with_train(epochs=1, lr=1e-12, seed=5)  # another seed: fresh weights would differ
    log: list[str] = []
    train(scenes / IMAGE_DIR, scenes / MASK_DIR, run_dir, config, cache_dir=run_dir.parent / "cache", progress=False,
          log=log.append)
    return run_dir, log


def test_training_starts_from_the_runs_best_weights(scenes, source, tmp_path):
    run, log = barely_trained(scenes, tmp_path / "tuned", small_config().with_train(init=str(source)))
    start, started = weights(source / "best.safetensors"), weights(run / "last.safetensors")
    assert start.keys() == started.keys()
    for key, value in start.items():
        assert (started[key] - value).abs().max() < 1e-6, key
    assert any(f"starting from the weights of {source / 'best.safetensors'}" in line for line in log)

    fresh, _ = barely_trained(scenes, tmp_path / "fresh", small_config())
    assert (weights(fresh / "last.safetensors")["classifier.weight"] - start["classifier.weight"]).abs().max() > 1e-3


def test_other_classes_take_every_weight_but_the_classifier(scenes, source, tmp_path):
    names = tuple(f"c{i}" for i in range(23))  # as many classes, other names: the outputs mean other things
    config = replace(small_config(), classes=ClassSet(names, tuple((i, i, i) for i in range(23))))
    run, log = barely_trained(scenes, tmp_path / "other", config.with_train(init=str(source)))
    start, started = weights(source / "best.safetensors"), weights(run / "last.safetensors")
    for key, value in start.items():
        moved = (started[key] - value).abs().max()
        assert (moved > 1e-3) if key.startswith("classifier.") else (moved < 1e-6), key
    assert any("its classifier starts fresh, as the classes differ" in line for line in log)


def test_a_run_that_does_not_fit_is_refused_before_decoding(scenes, source, tmp_path):
    cases = {
        str(tmp_path / "nowhere"): "not a pixelwise run directory",
        str(source): "holds another network (",  # with a wider network below
    }
    for init, message in cases.items():
        config = replace(small_config(), model=preset("assignment", n_filters=8)).with_train(init=init)
        with pytest.raises(ValueError, match=r"^train\.init") as caught:
            train(scenes / IMAGE_DIR, scenes / MASK_DIR, tmp_path / "run", config, cache_dir=tmp_path / "cache",
                  progress=False, log=lambda _: None)
        assert message in str(caught.value)
    assert not (tmp_path / "cache").exists()
    saved = json.loads((source / "config.json").read_text())
    empty, ensemble = tmp_path / "empty", tmp_path / "ensemble"
    for folder, members in ((empty, 1), (ensemble, 2)):
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps({**saved, "model": {**saved["model"], "members": members}}))
    for folder, message in ((empty, "no best.safetensors or last.safetensors"), (ensemble, "an ensemble of 2 runs")):
        with pytest.raises(ValueError, match=message):
            train(scenes / IMAGE_DIR, scenes / MASK_DIR, tmp_path / "run", small_config().with_train(init=str(folder)),
                  cache_dir=tmp_path / "cache", progress=False, log=lambda _: None)


def test_the_command_line_takes_init_and_words_its_errors_as_the_flag(scenes, source, tmp_path, capsys):
    from pixelwise.cli.main import main

    common = [str(scenes), "--recipe", "seed", "--filters", "16", "--size", "48x64", "--batch-size", "4",
              "--val-fraction", "0.25", "--epochs", "1", "--cache-dir", str(tmp_path / "cache"), "--no-progress"]
    assert main(["train", *common, "--out", str(tmp_path / "run"), "--init", str(source)]) == 0
    assert "starting from the weights of" in capsys.readouterr().out
    assert main(["train", *common, "--out", str(tmp_path / "bad"), "--init", str(tmp_path / "nowhere")]) == 1
    err = capsys.readouterr().err
    assert "--init" in err and "nowhere" in err and "Traceback" not in err
