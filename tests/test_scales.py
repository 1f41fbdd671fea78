"""Test-time scales: each scale's probabilities brought back to the input's size and averaged."""

import json

import numpy as np
import pytest
import torch
from conftest import small_run

import pixelwise as pw
from pixelwise.cli.main import main
from pixelwise.inference.scales import check_scales, multi_scale


def fit16(side: int) -> int:
    return -(-side // 16) * 16


def test_one_scale_of_one_gives_the_networks_own_probabilities():
    net = torch.nn.Conv2d(3, 5, 3, padding=1)
    x = torch.rand(2, 3, 32, 48)
    with torch.no_grad():
        got = multi_scale(net, (1.0,), fit16)(x)
        assert torch.allclose(got.softmax(1), net(x).softmax(1), atol=1e-6)


def test_each_scale_runs_at_a_size_the_network_takes_and_probabilities_are_averaged():
    seen = []

    def forward(x):  # class 0's logit is the input's height / 32: each scale gives another distribution
        seen.append(tuple(x.shape[-2:]))
        logits = torch.zeros(x.shape[0], 3, *x.shape[-2:])
        logits[:, 0] = x.shape[-2] / 32
        return logits

    x = torch.rand(1, 3, 96, 128)
    got = multi_scale(forward, (0.75, 1.0, 1.25), fit16)(x)
    assert seen == [(80, 96), (96, 128), (128, 160)]  # 72x96 → 80x96; 120x160 → 128x160
    expected = sum(torch.tensor([h / 32, 0.0, 0.0]).softmax(0) for h in (80, 96, 128)) / 3
    assert got.shape == (1, 3, 96, 128)
    assert torch.allclose(got.softmax(1)[0, :, 40, 60], expected, atol=1e-6)


@pytest.mark.parametrize("scales, message", [((), "at least one"), ((0.1,), "between"), ((1.0, 1.0), "repeats")])
def test_unusable_scales_are_refused_naming_the_parameter(scales, message):
    with pytest.raises(ValueError, match=f"scales.*{message}|{message}.*scales"):
        check_scales(scales)


@pytest.fixture(scope="module")
def run(scenes, tmp_path_factory):
    return small_run(scenes, tmp_path_factory.mktemp("scales") / "run", epochs=1)


def test_a_run_predicted_at_several_scales_averages_its_probabilities(run, scenes):
    plain = pw.load(run, engine="torch", precision="fp32")
    scaled = pw.load(run, engine="torch", precision="fp32", scales=(0.5, 1.0, 1.5))
    image = pw.read_image(sorted((scenes / "CameraRGB").iterdir())[0])
    seen = plain.resized(image, plain.seen_size(image, None))[None]
    got = scaled.batch_logits(seen)
    sizes = [(24, 32), (48, 64), (72, 96)]  # 48x64 at 0.5, 1, 1.5: each a multiple of 16 already
    probabilities = []
    for h, w in sizes:
        resized = plain.resized(image, (h, w))[None] if (h, w) != (48, 64) else seen
        p = plain.batch_logits(resized).softmax(1)
        probabilities.append(torch.nn.functional.interpolate(p, size=(48, 64), mode="bilinear", align_corners=False))
    # the scaled model resizes the normalised input tensor, the check the uint8 image: close, not equal
    assert torch.allclose(got.softmax(1), sum(probabilities) / 3, atol=0.05)
    assert not torch.allclose(got.softmax(1), plain.batch_logits(seen).softmax(1), atol=1e-4)
    assert np.array_equal(pw.load(run, engine="torch", precision="fp32", scales=(1.0,)).predict(image),
                          plain.predict(image))


def test_evaluate_records_its_scales_and_the_command_line_takes_them(run, scenes, tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["evaluate", str(run), str(scenes), "--scales", "0.75,1", "--engine", "torch", "--out", str(out),
                 "--no-progress"]) == 0
    assert json.loads((out / "report.json").read_text())["evaluated"]["scales"] == [0.75, 1.0]
    assert main(["evaluate", str(run), str(scenes), "--scales", "1,9", "--engine", "torch", "--out", str(out)]) == 1
    assert "--scales must lie between" in capsys.readouterr().err
