"""Training really learns, checkpoints and history are complete, resume continues exactly."""

import csv
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import small_config
from safetensors.torch import load_file

from pixelwise.config import RunConfig, TrainConfig
from pixelwise.data.pairs import IMAGE_DIR, MASK_DIR
from pixelwise.data.problems import DataError
from pixelwise.device import PrecisionStore, measured_precision, measures_precision, native_bf16, resolve_precision
from pixelwise.model.unet import UNet
from pixelwise.rundir import LAST, RunDirError, load_config
from pixelwise.training import checkpoint
from pixelwise.training.checks import check_memory
from pixelwise.training.hooks import Hooks
from pixelwise.training.loop import train
from pixelwise.training.prepare import prepare_data
from pixelwise.training.step import epoch_order, planned_epochs


def _train(scenes, run_dir, config, tmp_path, **kw):
    return train(scenes / IMAGE_DIR, scenes / MASK_DIR, run_dir, config, cache_dir=tmp_path / "cache",
                 progress=False, log=lambda _: None, **kw)


def test_short_training_really_learns(scenes, tmp_path):
    result = _train(scenes, tmp_path / "run", small_config(epochs=8), tmp_path)
    h = result.history
    assert h[-1]["train_loss"] < 0.7 * h[0]["train_loss"]
    # The most frequent class (Road) covers well under half the pixels: beating it needs real learning.
    masks = np.concatenate([np.asarray(m) for m in _masks(scenes)])
    majority = np.bincount(masks.ravel()).max() / masks.size
    assert majority < 0.5
    assert h[-1]["train_accuracy"] > majority + 0.15
    assert h[-1]["val_accuracy"] > majority + 0.1
    assert h[-1]["val_miou"] > h[0]["val_miou"]


def _masks(scenes):
    from pixelwise.data.decode import read_mask

    return [read_mask(p) for p in sorted((scenes / MASK_DIR).iterdir())]


def test_run_directory_holds_everything(scenes, tmp_path):
    run = tmp_path / "run"
    _train(scenes, run, small_config(epochs=2), tmp_path)
    assert {"config.json", "last.safetensors", "best.safetensors", "history.csv", "curves.png"} <= {
        p.name for p in run.iterdir()}
    rows = list(csv.DictReader(open(run / "history.csv")))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert all(float(r["val_miou"]) >= 0 and float(r["train_loss"]) > 0 for r in rows)
    config = load_config(run)
    assert config == small_config(epochs=2)
    model = UNet(config.model)
    meta = checkpoint.load(run / "best.safetensors", model)
    assert meta["epoch"] in (1, 2)
    assert not any(p.name.endswith(".tmp") or p.name.startswith(".") for p in run.iterdir())


def test_curves_are_drawn_first_last_and_when_due(scenes, tmp_path):
    drawn = []
    frozen = Hooks(clock=lambda: 0.0, plot=lambda history, path: drawn.append((len(history), path.name)))
    _train(scenes, tmp_path / "run", small_config(epochs=4), tmp_path, hooks=frozen)
    assert drawn == [(1, "curves.png"), (4, "curves.png")]  # no time passes in between: first and last only
    drawn.clear()
    _train(scenes, tmp_path / "due", small_config(epochs=3), tmp_path, hooks=replace(frozen, curves_every_s=0.0))
    assert [n for n, _ in drawn] == [1, 2, 3]


def test_training_batches_go_through_the_runs_augmentation(scenes, tmp_path):
    seen = []
    config = small_config(epochs=1)
    config = replace(config, data=replace(config.data, augment="flip", crop=0.5, class_crops=0.25, paste=0.5))
    _train(scenes, tmp_path / "run", config, tmp_path,
           hooks=Hooks(on_batch=lambda epoch, step, x, y: seen.append((epoch, step, x.shape[-2:], y.shape[-2:]))))
    assert len(seen) > 1 and [(e, s) for e, s, _, _ in seen] == [(1, s) for s in range(len(seen))]
    assert all(tuple(xs) == tuple(ys) == (32, 32) for _, _, xs, ys in seen)  # the run's crops of its 48x64


def test_the_logged_loss_is_the_loss_being_optimised(scenes, tmp_path):
    """With ce+dice and class weights, history.csv's train_loss is the criterion's value on the batch
    the step took (one batch per epoch here), not plain cross-entropy; val_loss is the same objective
    on the validation pairs."""
    from pixelwise.data.transforms import IGNORE_INDEX, to_batch
    from pixelwise.model.build import build_model
    from pixelwise.training.losses import make_criterion

    config = small_config(epochs=1, precision="fp32", loss="ce+dice", class_weights="inverse-sqrt").with_train(
        batch_size=64)  # one step an epoch
    config = replace(config, model=replace(config.model, dropout=(0.0,) * 5))  # a forward pass this test can repeat
    batches = []
    result = _train(scenes, tmp_path / "run", config, tmp_path,
                    hooks=Hooks(on_batch=lambda epoch, step, x, y: batches.append((x.clone(), y.clone()))))
    decoded, split = prepare_data(scenes / IMAGE_DIR, scenes / MASK_DIR, config, skip_invalid=False,
                                  cache_dir=tmp_path / "cache", progress=False, log=lambda _: None)
    criterion = make_criterion(config, decoded.masks, np.asarray(split.train))
    assert criterion.loss == "ce+dice" and criterion.weights is not None
    torch.manual_seed(config.train.seed)
    initial = build_model(config.model).to(memory_format=torch.channels_last)  # the weights the step started from
    (x, y), = batches
    with torch.no_grad():
        logits = initial(x)
        expected = criterion(logits, y, y.numel()).item()
        plain = torch.nn.functional.cross_entropy(logits, y, ignore_index=IGNORE_INDEX).item()
    logged = result.history[0]["train_loss"]
    assert logged == pytest.approx(expected, rel=1e-4)
    assert abs(logged - plain) > 0.05  # what history.csv held before: another number
    with open(tmp_path / "run" / "history.csv", newline="") as f:
        assert float(next(csv.DictReader(f))["train_loss"]) == pytest.approx(logged, rel=1e-5)

    trained = build_model(config.model)
    checkpoint.load(tmp_path / "run" / "best.safetensors", trained)
    x, y = to_batch(decoded.images, decoded.masks, np.asarray(split.val), torch.device("cpu"), config.train.ignore_index)
    with torch.no_grad():
        val_expected = criterion(trained.eval()(x), y, y.numel()).item()
    assert result.history[0]["val_loss"] == pytest.approx(val_expected, rel=1e-4)


def test_resume_continues_exactly(scenes, tmp_path):
    config4 = small_config(epochs=4, precision="fp32")
    straight = _train(scenes, tmp_path / "straight", config4, tmp_path)

    _train(scenes, tmp_path / "resumed", small_config(epochs=2, precision="fp32"), tmp_path)
    resumed = _train(scenes, tmp_path / "resumed", config4, tmp_path, resume=True)
    assert [r["epoch"] for r in resumed.history] == [1, 2, 3, 4]
    for a, b in zip(straight.history, resumed.history):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
    w1 = UNet(config4.model)
    w2 = UNet(config4.model)
    checkpoint.load(tmp_path / "straight" / "last.safetensors", w1)
    checkpoint.load(tmp_path / "resumed" / "last.safetensors", w2)
    for p1, p2 in zip(w1.parameters(), w2.parameters()):
        torch.testing.assert_close(p1, p2, rtol=1e-5, atol=1e-6)


def test_time_limit_plans_the_epochs_that_fit_at_the_pace_so_far():
    rows = [{"seconds": 30.0}, {"seconds": 50.0}]  # 40 s an epoch
    assert planned_epochs(TrainConfig(epochs=60), rows) == 60  # no limit
    assert planned_epochs(TrainConfig(epochs=60, time_limit=10), []) == 60  # nothing measured yet
    assert planned_epochs(TrainConfig(epochs=60, time_limit=10), rows) == 15
    assert planned_epochs(TrainConfig(epochs=12, time_limit=10), rows) == 12  # the epochs stay the most
    assert planned_epochs(TrainConfig(epochs=60, time_limit=0.5), rows) == 2  # never fewer than are done


def _clock(step: float):
    """A training clock whose every reading is ``step`` seconds after the last."""
    readings = iter(range(1, 1 << 30))
    return lambda: step * next(readings)


def test_time_limited_run_decays_over_the_epochs_that_fit_and_resumes_without_the_limit(scenes, tmp_path):
    config = small_config(epochs=5, schedule="cosine", time_limit=1.0)  # 2 epochs fit
    lines = []
    limited = train(scenes / IMAGE_DIR, scenes / MASK_DIR, tmp_path / "run", config, cache_dir=tmp_path / "cache",
                    progress=False, log=lines.append, hooks=Hooks(clock=_clock(30.0)))  # every epoch takes 30 s
    assert [r["epoch"] for r in limited.history] == [1, 2]
    assert limited.history[-1]["lr"] < 0.05 * config.train.lr  # the cosine ended with the last epoch that fit
    assert any(line.startswith("time limit: 2 of 5 epochs fit in 1 minutes") for line in lines)
    plan = [line for line in lines if line.startswith("time limit: at")]  # said once, after the first epoch
    assert plan == ["time limit: at 30 s an epoch, 2 of 5 epochs fit in 1 minutes and the schedule is fitted to "
                    "them (planned again after every epoch); train.time_limit 0 would train all 5 in about 2 minutes"]
    assert lines.index(plan[0]) == 1 + next(i for i, line in enumerate(lines) if line.startswith("epoch   1/"))
    unlimited = _train(scenes, tmp_path / "full", small_config(epochs=5, schedule="cosine"), tmp_path)
    assert unlimited.history[1]["lr"] > 0.5 * config.train.lr  # without the limit: still high after 2 of 5

    lines.clear()
    train(scenes / IMAGE_DIR, scenes / MASK_DIR, tmp_path / "run", config, resume=True, cache_dir=tmp_path / "cache",
          progress=False, log=lines.append)
    assert any("all 2 epochs that fit its train.time_limit already done" in line for line in lines)
    resumed = _train(scenes, tmp_path / "run", config.with_train(time_limit=0), tmp_path, resume=True)
    assert [r["epoch"] for r in resumed.history] == [1, 2, 3, 4, 5]
    assert load_config(tmp_path / "run").train.time_limit == 0


def test_validation_every_nth_epoch_and_the_last_chooses_best_among_those(scenes, tmp_path):
    scored = []
    result = _train(scenes, tmp_path / "run", small_config(epochs=7, val_every=3), tmp_path,
                    hooks=Hooks(on_validation=lambda epoch, scores: scored.append((epoch, scores["val_miou"]))))
    validated = [row["epoch"] for row in result.history if row["val_miou"] is not None]
    assert validated == [3, 6, 7] and scored == [(row["epoch"], row["val_miou"]) for row in result.history
                                                 if row["val_miou"] is not None]
    assert result.best_epoch in validated
    with open(tmp_path / "run" / "history.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["val_miou"] != "" for r in rows] == [e in validated for e in range(1, 8)]
    assert (tmp_path / "run" / "curves.png").stat().st_size > 0


def test_the_epoch_a_time_limit_makes_last_is_validated(scenes, tmp_path):
    result = _train(scenes, tmp_path / "run", small_config(epochs=5, time_limit=1.0, val_every=4), tmp_path,
                    hooks=Hooks(clock=_clock(45.0)))  # after the first epoch the plan shrinks from 5 to 1
    assert [row["val_miou"] is not None for row in result.history] == [True]
    assert result.best_epoch == 1 and (tmp_path / "run" / "best.safetensors").exists()
    assert result.history[0]["seconds"] == 90.0  # the validation that came after the plan counts too


def test_validation_interval_must_be_positive():
    with pytest.raises(ValueError, match="train.val_every must be ≥ 1"):
        TrainConfig(val_every=0)


def test_refuses_to_overwrite_a_run_and_to_resume_nothing(scenes, tmp_path):
    run = tmp_path / "run"
    _train(scenes, run, small_config(epochs=1), tmp_path)
    with pytest.raises(RunDirError, match="already holds a run"):
        _train(scenes, run, small_config(epochs=1), tmp_path)
    with pytest.raises(RunDirError, match="nothing to resume"):
        _train(scenes, tmp_path / "empty", small_config(epochs=1), tmp_path, resume=True)


def test_bad_data_refused_up_front_or_skipped(scenes, tmp_path):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(scenes, data)
    first = sorted((data / IMAGE_DIR).iterdir())[0]
    first.write_bytes(first.read_bytes()[:100])  # truncated
    (data / MASK_DIR / sorted((data / MASK_DIR).iterdir())[1].name).unlink()  # image without mask
    with pytest.raises(DataError) as err:
        _train(data, tmp_path / "run", small_config(epochs=1), tmp_path)
    assert len(err.value.problems) == 2
    assert not (tmp_path / "run").exists()  # refused before anything was written
    result = _train(data, tmp_path / "run", small_config(epochs=1), tmp_path, skip_invalid=True)
    assert len(result.history) == 1


def test_epoch_order_depends_on_seed_and_epoch_only():
    assert np.array_equal(epoch_order(10, 3, 2), epoch_order(10, 3, 2))
    assert not np.array_equal(epoch_order(10, 3, 2), epoch_order(10, 3, 3))
    assert sorted(epoch_order(10, 3, 2)) == list(range(10))


def test_training_seed_leaves_the_split_alone(scenes, tmp_path):
    """Runs that differ only in --seed must be scored on the same held-out drives."""
    def split(config):
        return prepare_data(scenes / IMAGE_DIR, scenes / MASK_DIR, config, skip_invalid=False,
                            cache_dir=tmp_path / "cache", progress=False, log=lambda _: None)[1]

    base = small_config()
    held_out = split(base)
    assert split(base.with_train(seed=5)) == held_out
    assert any(split(replace(base, data=replace(base.data, split_seed=s))).val != held_out.val for s in range(1, 6))


def test_runs_from_before_the_split_seed_keep_their_split():
    legacy = small_config(seed=3).to_dict()
    del legacy["data"]["split_seed"]
    assert RunConfig.from_dict(legacy).data.split_seed == 3
    assert RunConfig.from_dict(small_config(seed=3).to_dict()).data.split_seed == 0


def test_precision_choice():
    cpu = torch.device("cpu")
    assert resolve_precision("fp32", cpu) is None
    assert resolve_precision("bf16", cpu) is torch.bfloat16
    assert resolve_precision("auto", cpu) in (torch.bfloat16, None)
    with pytest.raises(ValueError, match="fp16 needs a CUDA GPU"):
        resolve_precision("fp16", cpu)


def test_auto_precision_for_depthwise_encoders_follows_the_cpu_kind(monkeypatch):
    """EfficientNet-Lite's decoder gains from bf16 on AVX512-BF16 (its encoder stays fp32 on CPUs);
    on AMX bf16 measured slower for it, and without native bf16 nothing gains."""
    cpu = torch.device("cpu")
    # The CPU kinds this machine is not: torch's own probes of the chip are answered for each, the one
    # way to run the rule for hardware a test cannot choose.
    for avx512_bf16, amx, lite in ((True, False, torch.bfloat16), (True, True, None), (False, False, None)):
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda v=avx512_bf16: v, raising=False)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda v=amx: v, raising=False)
        assert resolve_precision("auto", cpu, depthwise=True) is lite
        assert resolve_precision("auto", cpu) is (torch.bfloat16 if avx512_bf16 or amx else None)  # the U-Net
        assert resolve_precision("bf16", cpu, depthwise=True) is torch.bfloat16  # asked for by name: given


def test_measured_precision_takes_bf16_only_where_it_ran_clearly_faster():
    def timer(fp32: float, bf16: float):
        calls = []

        def time_step(dtype):
            calls.append(dtype)
            first = len(calls) <= 2  # the untimed calls that build the kernels: slow, and not counted
            return 100.0 if first else (bf16 if dtype is torch.bfloat16 else fp32)
        return time_step, calls

    time_step, calls = timer(fp32=1.0, bf16=0.7)
    assert measured_precision(time_step) == (torch.bfloat16, {"fp32": 1.0, "bfloat16": 0.7})
    assert calls == [None, torch.bfloat16] * 3  # warm-up, then alternated pairs
    assert measured_precision(timer(fp32=1.0, bf16=0.97)[0])[0] is None  # within 5%: fp32, the more precise
    assert measured_precision(timer(fp32=0.8, bf16=1.0)[0])[0] is None


def test_a_precision_far_slower_on_its_first_call_is_dropped_without_timing_it_further():
    calls = []

    def emulated_bf16(dtype):  # bf16 computed in software: 20-30x fp32
        calls.append(dtype)
        return 25.0 if dtype is torch.bfloat16 else 1.0

    assert measured_precision(emulated_bf16) == (None, {"fp32": 1.0, "bfloat16": 25.0})
    assert calls == [None, torch.bfloat16]  # one call of each, not the rounds after


def test_kernels_limited_to_avx2_have_no_native_bf16_whatever_the_chip(monkeypatch):
    """ATEN_CPU_CAPABILITY=avx2 or ONEDNN_MAX_CPU_ISA=AVX2 leave bf16 emulated on any CPU: auto is fp32 there,
    with nothing measured."""
    from pixelwise.device import kernels_allow_bf16

    cpu = torch.device("cpu")
    # A chip with AVX512-BF16 whatever this one is (torch's probes answered), then its kernels limited by the
    # user's settings: ONEDNN_MAX_CPU_ISA really, ATEN_CPU_CAPABILITY as torch reports it (read at start-up only).
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True, raising=False)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    for limit, allowed in (("AVX2", False), ("avx512_core", False), ("AVX512_CORE_BF16", True),
                           ("AVX512_CORE_AMX", True), ("ALL", True)):
        monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", limit)
        assert kernels_allow_bf16() is allowed and native_bf16(cpu) is allowed
        assert measures_precision("auto", cpu) is allowed
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA")
    assert native_bf16(cpu)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    assert not native_bf16(cpu) and resolve_precision("auto", cpu) is None


def test_precision_store_measures_once_per_machine_and_network(tmp_path):
    calls = []

    def time_step(fast):
        def step(dtype):
            calls.append(dtype)
            return 0.5 if (dtype is torch.bfloat16) == (fast == "bf16") else 1.0
        return step

    store = PrecisionStore(tmp_path / "cache" / "precision.json")
    lite = {"model": {"encoder": "efficientnet-lite0"}, "input": [480, 640]}
    assert store.recall(lite) == (False, None)
    assert store.choose(lite, time_step("bf16")) == (torch.bfloat16, {"fp32": 1.0, "bfloat16": 0.5})
    assert len(calls) == 6 and store.path.exists() and store.recall(lite) == (True, torch.bfloat16)
    # Kept: timings that would now choose fp32 are not even taken, so runs and masks stay the same.
    assert store.choose(lite, time_step("fp32")) == (torch.bfloat16, None) and len(calls) == 6
    unet = {"model": {"encoder": "unet"}, "input": [480, 640]}
    assert store.choose(unet, time_step("fp32"))[0] is None and len(calls) == 12  # another network
    assert store.choose(lite, time_step("fp32"))[0] is torch.bfloat16  # both kept
    store.path.write_text("{not json")
    assert store.choose(lite, time_step("fp32"))[0] is None and len(calls) == 18  # measured over
    assert store.choose(lite, time_step("bf16"))[0] is None and len(calls) == 18  # and rewritten
    blocked = tmp_path / "file"
    blocked.write_text("")
    unwritable = PrecisionStore(blocked / "precision.json")
    assert unwritable.choose(lite, time_step("bf16"))[0] is torch.bfloat16  # measured, kept nowhere


def _set_kept_choices(store: Path, train: str, validate: str) -> None:
    """Overwrite the training and validation choices a store keeps, as if measured so on a busy machine."""
    kept = json.loads(store.read_text())
    for entry in kept.values():
        entry["choice"] = {"train": train, "validate": validate}[entry["measured"]["task"]]
    store.write_text(json.dumps(kept))


@pytest.mark.skipif(not native_bf16(torch.device("cpu")), reason="auto is measured on CPUs with native bf16 only")
def test_auto_precision_on_a_bf16_cpu_is_measured_once_so_the_same_run_twice_gives_the_same_weights(scenes, tmp_path):
    cache = tmp_path / "cache"
    store = cache / "precision.json"

    def run(name: str, epochs: int = 1, resume: bool = False, **train_settings) -> tuple[str, dict]:
        lines = []
        train(scenes / IMAGE_DIR, scenes / MASK_DIR, tmp_path / name, small_config(epochs=epochs, **train_settings),
              cache_dir=cache, progress=False, log=lines.append, resume=resume)
        setup = next(line for line in lines if "training and" in line)
        return setup, load_file(str(tmp_path / name / LAST))

    setup, _ = run("first")
    assert "auto: measured on this machine (a training step " in setup and "a validation batch" in setup, setup
    assert {entry["measured"]["task"] for entry in json.loads(store.read_text()).values()} == {"train", "validate"}
    # A busy machine would now time the other way round: the kept choice holds, measured or not.
    _set_kept_choices(store, train="bfloat16", validate="fp32")
    setup, again = run("again")
    assert setup.endswith("(bfloat16, validation in fp32; auto: as measured before on this machine, "
                          f"kept in {store})"), setup
    assert checkpoint.read_meta(tmp_path / "again" / LAST)["precision"] == \
        {"device": "cpu", "train": "bfloat16", "validate": "fp32"}  # recorded in the run
    _, third = run("third")
    assert all(torch.equal(again[k], third[k]) for k in again if not k.startswith("_rng"))
    _, fp32 = run("fp32", precision="fp32")  # the precision does change the weights: the equality above means something
    assert not all(torch.equal(again[k], fp32[k]) for k in again if k.endswith(".weight"))
    # A resumed run continues in the precision it recorded, whatever the store says by then.
    _set_kept_choices(store, train="fp32", validate="fp32")
    setup, _ = run("again", epochs=2, resume=True)
    assert setup.endswith("(bfloat16, validation in fp32; as recorded when this run started)"), setup


def test_auto_precision_is_not_measured_without_native_bf16_or_when_named(scenes, tmp_path, monkeypatch):
    # Without native bf16 (here: the kernels limited to AVX2, as a user limits them), and by name on any CPU.
    for limit, precision in (("AVX2", "auto"), ("ALL", "fp32"), ("ALL", "bf16")):
        monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", limit)
        lines = []
        train(scenes / IMAGE_DIR, scenes / MASK_DIR, tmp_path / f"{limit}{precision}",
              small_config(epochs=1, precision=precision), cache_dir=tmp_path / "cache", progress=False,
              log=lines.append)
        setup = next(line for line in lines if "training and" in line)
        assert setup.endswith("(bfloat16)" if precision == "bf16" else "(fp32)"), setup
        assert not (tmp_path / "cache" / "precision.json").exists()  # nothing timed, nothing kept


def test_original_preset_trains_on_rgb_with_cropped_masks(scenes, tmp_path):
    from dataclasses import replace

    from pixelwise.model.unet import preset

    cfg = small_config(epochs=1)
    size = preset("original").input_size_for(40)  # an unpadded U-Net predicts only the centre
    cfg = replace(cfg, model=preset("original", n_filters=4, in_channels=3, n_classes=23),
                  data=replace(cfg.data, size=(size, size)))
    result = _train(scenes, tmp_path / "run", cfg, tmp_path)
    assert result.history[0]["val_miou"] is not None


def test_size_the_network_cannot_take_is_refused_before_decoding(scenes, tmp_path):
    from dataclasses import replace

    cfg = small_config(epochs=1)
    cfg = replace(cfg, data=replace(cfg.data, size=(40, 40)))
    with pytest.raises(ValueError, match=r"data.size 40x40 does not fit.*try 32 or 48"):
        _train(scenes, tmp_path / "run", cfg, tmp_path)
    assert not (tmp_path / "cache").exists() and not (tmp_path / "run").exists()


def test_without_validation_split_best_is_lowest_training_loss(scenes, tmp_path):
    from dataclasses import replace

    cfg = small_config(epochs=2)
    cfg = replace(cfg, data=replace(cfg.data, val_fraction=0.0))
    result = _train(scenes, tmp_path / "run", cfg, tmp_path)
    assert result.best_miou is None and result.best_epoch in (1, 2)
    assert all(row["val_miou"] is None for row in result.history)


def test_a_network_too_large_for_memory_is_refused_before_anything_is_allocated(scenes, tmp_path, capsys):
    from pixelwise.cli.main import main

    code = main(["train", str(scenes), "--out", str(tmp_path / "huge"), "--recipe", "scratch", "--filters", "200000",
                 "--no-progress", "--cache-dir", str(tmp_path / "cache")])  # ~3.4e14 parameters: petabytes of weights
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and "choose fewer --filters" in err and "Traceback" not in err
    assert not (tmp_path / "huge").exists() and not (tmp_path / "cache").exists()  # refused before decoding

    config = small_config()
    need = 16 * sum(p.numel() for p in UNet(config.model).parameters())
    cpu = torch.device("cpu")
    with pytest.raises(ValueError, match=r"base filters has [\d,]+ parameters"):
        check_memory(config, cpu, available=lambda device: need - 1)
    check_memory(config, cpu, available=lambda device: need)
    check_memory(replace(config, model=replace(config.model, n_filters=8)), cpu, available=lambda device: None)
