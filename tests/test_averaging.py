"""The weight average: its arithmetic, and a training run validates, saves and resumes it."""

import numpy as np
import pytest
import torch
from conftest import small_config
from safetensors.torch import load_file
from torch import nn

from pixelwise.config import TrainConfig
from pixelwise.data.pairs import IMAGE_DIR, MASK_DIR
from pixelwise.evaluation.metrics import scores
from pixelwise.model.build import build_model
from pixelwise.training import checkpoint
from pixelwise.training.averaging import WeightAverage, decay_at
from pixelwise.training.loop import train
from pixelwise.training.prepare import prepare_data
from pixelwise.training.step import validate


def test_decay_ramps_up_over_the_first_steps_then_holds():
    assert decay_at(0.995, 0) == pytest.approx(0.1)
    assert decay_at(0.995, 90) == pytest.approx(0.91)
    assert decay_at(0.995, 10_000) == 0.995


def test_average_follows_weights_and_batchnorm_statistics_and_copies_counters():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    average = WeightAverage(net, decay=0.9)
    start = {k: v.clone() for k, v in net.state_dict().items()}
    net.train()
    net(torch.randn(2, 3, 8, 8))  # moves BatchNorm's running statistics and its counter
    with torch.no_grad():
        net[0].weight.add_(1.0)
    average.update(net, step=100)  # decay 0.9 (the ramp is past it)
    now = net.state_dict()
    for key, value in average.model.state_dict().items():
        if value.is_floating_point():
            torch.testing.assert_close(value, 0.9 * start[key] + 0.1 * now[key])
        else:
            assert torch.equal(value, now[key]), key
    assert not any(p.requires_grad for p in average.model.parameters())
    assert not torch.equal(average.model[0].weight, net[0].weight)


def test_decay_must_be_below_one():
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError, match=r"train.ema must be in \[0, 1\)"):
            TrainConfig(ema=bad)


def test_training_validates_and_saves_the_average_and_keeps_the_trained_weights_to_continue(scenes, tmp_path):
    config = small_config(epochs=2, precision="fp32", ema=0.9)
    run = tmp_path / "run"
    result = train(scenes / IMAGE_DIR, scenes / MASK_DIR, run, config, cache_dir=tmp_path / "cache",
                   progress=False, log=lambda _: None)
    tensors = load_file(str(run / "last.safetensors"))
    averaged = {k: v for k, v in tensors.items() if not k.startswith("_")}
    trained = {k.removeprefix("_trained."): v for k, v in tensors.items() if k.startswith("_trained.")}
    assert averaged.keys() == trained.keys()
    assert any(not torch.equal(averaged[k], trained[k]) for k in averaged)

    # The validation mIoU in the history is that of the saved (averaged) weights.
    decoded, split = prepare_data(scenes / IMAGE_DIR, scenes / MASK_DIR, config, skip_invalid=False,
                                  cache_dir=tmp_path / "cache", progress=False, log=lambda _: None)
    model = build_model(config.model)
    model.load_state_dict(averaged)
    _, cm = validate(model, decoded.images, decoded.masks, np.asarray(split.val), 4, torch.device("cpu"), None)
    assert scores(cm).miou == pytest.approx(result.history[-1]["val_miou"], abs=1e-9)

    with pytest.raises(ValueError, match="averaged weights only"):
        checkpoint.load(run / "best.safetensors", build_model(config.model), trained=build_model(config.model))
