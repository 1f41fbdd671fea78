"""Cross-validation folds and ensembles: the fold split, the Ensemble network, the ensemble run that
every tool takes like one run, and ``train --folds``."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from conftest import small_config, small_run

from pixelwise.cli.main import main
from pixelwise.config import DataConfig
from pixelwise.data.pairs import IMAGE_DIR, MASK_DIR
from pixelwise.data.split import frame_runs, split_by_folds
from pixelwise.inference.predictor import Predictor
from pixelwise.model.build import build_model
from pixelwise.model.ensemble import Ensemble
from pixelwise.rundir import load_config, load_model
from pixelwise.rundir_ensemble import ENSEMBLE_FILE, write_ensemble
from pixelwise.settings import SettingError
from pixelwise.training.folds import fold_dir, train_folds
from pixelwise.training.loop import train
from test_split import carla_like_names

QUIET = {"progress": False, "log": lambda _: None}


# ------------------------------------------------------------------------------------------ the split


@pytest.mark.parametrize("folds", [2, 3, 5])
def test_every_frame_validates_in_exactly_one_fold_and_drives_stay_whole(folds):
    names, _ = carla_like_names(np.random.default_rng(folds), n_runs=11)
    splits = [split_by_folds(names, folds, k, seed=3) for k in range(folds)]
    validated = sorted(i for s in splits for i in s.val)
    assert validated == list(range(len(names)))
    for s in splits:
        assert sorted(s.train + s.val) == list(range(len(names)))
        assert s.val and s.train
        val = set(s.val)
        for run in frame_runs(names):  # a drive validates whole or not at all
            assert all(i in val for i in run) or not any(i in val for i in run)
    sizes = [len(s.val) for s in splits]
    longest = max(len(r) for r in frame_runs(names))
    assert max(sizes) - min(sizes) <= longest  # dealt to the smallest group: no group a drive too large
    assert splits[0] == split_by_folds(names, folds, 0, seed=3)  # deterministic
    assert any(split_by_folds(names, folds, 0, seed=s) != splits[0] for s in range(4, 10))  # the seed deals


def test_one_run_of_frames_is_cut_into_contiguous_blocks():
    names = [f"{i:06d}" for i in range(10)]
    assert [split_by_folds(names, 3, k).val for k in range(3)] == [[0, 1, 2], [3, 4, 5, 6], [7, 8, 9]]


@pytest.mark.parametrize("folds, fold, message", [(1, 0, "at least 2"), (3, 3, "fold must be in 0-2"),
                                                  (4, 0, "3 runs of consecutive frames")])
def test_fold_split_refusals(folds, fold, message):
    names = ["000001", "000002", "000003", "000500", "000501", "000502", "009000", "009001"]
    with pytest.raises(ValueError, match=message):
        split_by_folds(names, folds, fold)


def test_fold_must_be_below_folds():
    with pytest.raises(SettingError, match="data.fold must be below data.folds"):
        DataConfig(folds=3, fold=3)


# --------------------------------------------------------------------------------------- the network


def test_ensemble_returns_the_log_of_the_members_mean_probabilities():
    torch.manual_seed(0)
    members = [torch.nn.Conv2d(3, 5, 3, padding=1) for _ in range(3)]
    x = torch.rand(2, 3, 8, 8)
    with torch.no_grad():
        got = Ensemble(members)(x)
        mean = torch.stack([torch.softmax(m(x), dim=1) for m in members]).mean(0)
    torch.testing.assert_close(torch.softmax(got, dim=1), mean)
    torch.testing.assert_close(got, mean.log())
    with pytest.raises(ValueError, match="at least 2 members"):
        Ensemble(members[:1])


def test_members_build_an_ensemble_and_stay_out_of_single_configs():
    config = small_config().model
    assert "members" not in config.to_dict()
    model = build_model(replace(config, members=3))
    assert isinstance(model, Ensemble) and len(model.members) == 3
    assert replace(config, members=3).to_dict()["members"] == 3


def test_an_ensemble_config_is_not_trained(scenes, tmp_path):
    config = small_config()
    config = replace(config, model=replace(config.model, members=2))
    with pytest.raises(ValueError, match="model.members is 2"):
        train(scenes / IMAGE_DIR, scenes / MASK_DIR, tmp_path / "run", config, **QUIET)


# ---------------------------------------------------------------------------------- the ensemble run


@pytest.fixture(scope="module")
def two_runs(scenes, tmp_path_factory):
    root = tmp_path_factory.mktemp("members")
    return [small_run(scenes, root / name, epochs=1) for name in ("a", "b")]


def test_an_ensemble_run_predicts_the_members_mean(two_runs, scenes, tmp_path):
    out = tmp_path / "ensemble"
    config = write_ensemble(two_runs, out)
    assert config.model.members == 2 and load_config(out) == config
    assert {p.name for p in out.iterdir()} >= {"config.json", "best.safetensors", "last.safetensors", ENSEMBLE_FILE}
    recorded = json.loads((out / ENSEMBLE_FILE).read_text())["members"]
    assert [m["run"] for m in recorded] == [str(r.resolve()) for r in two_runs] and recorded[0]["epochs"] == 1

    image = sorted((scenes / IMAGE_DIR).iterdir())[0]
    probabilities = [torch.softmax(Predictor(r, engine="torch", precision="fp32").logits(image), dim=0)
                     for r in two_runs]
    ensemble = Predictor(out, engine="torch", precision="fp32")
    torch.testing.assert_close(torch.softmax(ensemble.logits(image), dim=0), (probabilities[0] + probabilities[1]) / 2,
                               rtol=1e-4, atol=1e-5)
    # The ensemble's weights are the members' own, whichever file.
    for kind in ("best", "last"):
        net = load_model(out, config, kind)
        member = load_model(two_runs[1], load_config(two_runs[1]), kind)
        for key, value in member.state_dict().items():
            torch.testing.assert_close(net.state_dict()[f"members.1.{key}"], value)


def test_an_ensemble_exports_as_one_onnx_graph(two_runs, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    from pixelwise.inference.export import export_onnx

    out = tmp_path / "ensemble"
    write_ensemble(two_runs, out)
    path = export_onnx(out)
    x = torch.rand(1, 3, 48, 64)
    with torch.no_grad():
        expected = load_model(out, load_config(out)).eval()(x).numpy()
    (got,) = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"image": x.numpy()})
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-4)


def test_runs_of_different_models_are_refused(two_runs, scenes, tmp_path):
    other = small_config(epochs=1)
    other = replace(other, data=replace(other.data, size=(64, 96)))
    wider = tmp_path / "wider"
    train(scenes / IMAGE_DIR, scenes / MASK_DIR, wider, other, cache_dir=tmp_path / "cache", **QUIET)
    with pytest.raises(ValueError, match=r"wider: not the same model .*data.size"):
        write_ensemble([two_runs[0], wider], tmp_path / "e")
    with pytest.raises(ValueError, match="at least 2 member runs"):
        write_ensemble(two_runs[:1], tmp_path / "e")
    with pytest.raises(Exception, match="holds a single run"):
        write_ensemble(two_runs, two_runs[0])
    write_ensemble(two_runs, tmp_path / "pair")
    with pytest.raises(ValueError, match="pair: is an ensemble itself"):
        write_ensemble([tmp_path / "pair", two_runs[0]], tmp_path / "e")


# ----------------------------------------------------------------------------------- train --folds


def test_train_folds_trains_each_fold_then_their_ensemble(scenes, tmp_path):
    config = small_config(epochs=1)
    config = replace(config, data=replace(config.data, folds=2))
    run = tmp_path / "folds"
    result = train_folds(scenes / IMAGE_DIR, scenes / MASK_DIR, run, config, cache_dir=tmp_path / "cache", **QUIET)
    assert [r.run_dir for r in result.folds] == [fold_dir(run, 0), fold_dir(run, 1)]
    members = [load_config(fold_dir(run, k)) for k in range(2)]
    assert [(c.data.folds, c.data.fold) for c in members] == [(2, 0), (2, 1)]
    ensemble = load_config(run)
    assert ensemble.model.members == 2 and (ensemble.data.folds, ensemble.data.fold) == (1, 0)
    # Resuming finished folds trains nothing more and writes the same ensemble.
    before = (run / "best.safetensors").read_bytes()
    again = train_folds(scenes / IMAGE_DIR, scenes / MASK_DIR, run, config, resume=True, cache_dir=tmp_path / "cache",
                        **QUIET)
    assert [len(r.history) for r in again.folds] == [1, 1]
    assert (run / "best.safetensors").read_bytes() == before
    with pytest.raises(Exception, match="already holds folds"):
        train_folds(scenes / IMAGE_DIR, scenes / MASK_DIR, run, config, cache_dir=tmp_path / "cache", **QUIET)


def test_resuming_folds_keeps_the_finished_ones_and_trains_the_rest(scenes, tmp_path):
    config = small_config(epochs=1)
    config = replace(config, data=replace(config.data, folds=2))
    run, cache = tmp_path / "folds", tmp_path / "cache"
    train(scenes / IMAGE_DIR, scenes / MASK_DIR, fold_dir(run, 0), config.with_data(fold=0), cache_dir=cache, **QUIET)
    first = (fold_dir(run, 0) / "last.safetensors").read_bytes()  # as if stopped before fold 1 began
    result = train_folds(scenes / IMAGE_DIR, scenes / MASK_DIR, run, config, resume=True, cache_dir=cache, **QUIET)
    assert (fold_dir(run, 0) / "last.safetensors").read_bytes() == first
    assert [len(r.history) for r in result.folds] == [1, 1] and load_config(run).model.members == 2


def test_cli_trains_folds_and_evaluates_the_ensemble(scenes, tmp_path, capsys):
    run = tmp_path / "folds"
    common = ["--preset", "assignment", "--filters", "8", "--size", "48x64", "--batch-size", "4", "--epochs", "1",
              "--cache-dir", str(tmp_path / "cache"), "--no-progress"]
    assert main(["train", str(scenes), "--out", str(run), "--folds", "2", *common]) == 0
    out = capsys.readouterr().out
    assert "fold 0: best epoch 1, validation mIoU" in out and f"ensemble of 2 folds saved in {run}" in out
    assert main(["evaluate", str(run), str(scenes), "--engine", "torch", "--no-progress"]) == 0
    assert (run / "evaluation" / "report.json").is_file()
    # One fold alone (as a second machine would train it) is an ordinary run.
    single = tmp_path / "fold-1-alone"
    assert main(["train", str(scenes), "--out", str(single), "--folds", "2", "--fold", "1", *common]) == 0
    assert "ensemble" not in capsys.readouterr().out
    assert load_config(single).data.fold == 1 and load_config(single).model.members == 1
    assert main(["train", str(scenes), "--out", str(single), "--folds", "2", "--fold", "2", *common]) == 1
    assert "--fold must be below --folds (2), not 2" in capsys.readouterr().err
    assert main(["train", str(scenes), "--out", str(tmp_path / "x"), "--folds", "2", "--val", str(scenes), *common]) == 1
    assert "--folds splits the training data into folds by drive, but an official validation" in capsys.readouterr().err


def test_cli_ensemble_assembles_runs_trained_apart(two_runs, tmp_path, capsys):
    out = tmp_path / "together"
    assert main(["ensemble", *map(str, two_runs), "--out", str(out)]) == 0
    assert f"ensemble of 2 runs saved in {out}" in capsys.readouterr().out
    assert load_config(out).model.members == 2
    assert main(["ensemble", str(two_runs[0]), "--out", str(tmp_path / "one")]) == 1
    assert "at least 2 member runs" in capsys.readouterr().err
