"""The assignment's own checks on the blocks and the whole model, and the 2015 paper's network."""

import math

import pytest
import torch

from pixelwise import count_parameters, summary
from pixelwise.model.keras import conv_block, unet_model, upsampling_block
from pixelwise.model.unet import (
    PRESETS,
    ConvBlock,
    ModelConfig,
    SubPixelUpConv,
    UNet,
    UpConv,
    preset,
    subpixel_copy,
)


def test_conv_block_table_matches_assignment():
    assert summary(conv_block(3, 32), (96, 128, 3)) == [
        ["InputLayer", [(None, 96, 128, 3)], 0],
        ["Conv2D", (None, 96, 128, 32), 896, "same", "relu", "HeNormal"],
        ["Conv2D", (None, 96, 128, 32), 9248, "same", "relu", "HeNormal"],
        ["MaxPooling2D", (None, 48, 64, 32), 0, (2, 2)],
    ]


def test_wide_conv_block_with_dropout_matches_assignment():
    assert summary(conv_block(3, 1024, dropout_prob=0.1), (96, 128, 3)) == [
        ["InputLayer", [(None, 96, 128, 3)], 0],
        ["Conv2D", (None, 96, 128, 1024), 28672, "same", "relu", "HeNormal"],
        ["Conv2D", (None, 96, 128, 1024), 9438208, "same", "relu", "HeNormal"],
        ["Dropout", (None, 96, 128, 1024), 0, 0.1],
        ["MaxPooling2D", (None, 48, 64, 1024), 0, (2, 2)],
    ]


def test_upsampling_block_table_matches_assignment():
    assert summary(upsampling_block(256, 128, 32), [(12, 16, 256), (24, 32, 128)]) == [
        ["InputLayer", [(None, 12, 16, 256)], 0],
        ["InputLayer", [(None, 24, 32, 128)], 0],
        ["Conv2DTranspose", (None, 24, 32, 32), 73760],
        ["Concatenate", (None, 24, 32, 160), 0],
        ["Conv2D", (None, 24, 32, 32), 46112, "same", "relu", "HeNormal"],
        ["Conv2D", (None, 24, 32, 32), 9248, "same", "relu", "HeNormal"],
    ]


def test_conv_block_returns_pooled_next_and_unpooled_skip():
    nxt, skip = conv_block(3, 8)(torch.rand(2, 3, 32, 48))
    assert nxt.shape == (2, 8, 16, 24) and skip.shape == (2, 8, 32, 48)
    nxt, skip = conv_block(3, 8, max_pooling=False)(torch.rand(1, 3, 32, 48))
    assert nxt.shape == skip.shape == (1, 8, 32, 48)


def test_whole_assignment_model():
    model = unet_model((96, 128, 3), n_filters=32, n_classes=23)
    assert count_parameters(model) == 8_640_471
    rows = summary(model, (96, 128, 3))
    assert rows[0] == ["InputLayer", [(None, 96, 128, 3)], 0]
    assert rows[-1] == ["Conv2D", (None, 96, 128, 23), 759, "same", "linear", "GlorotUniform"]
    assert ["Dropout", (None, 12, 16, 256), 0, 0.3] in rows
    assert ["Conv2DTranspose", (None, 24, 32, 128), 295040] in rows
    assert sum(r[2] for r in rows) == 8_640_471
    assert model(torch.rand(2, 3, 96, 128)).shape == (2, 23, 96, 128)


def test_original_paper_network():
    model = UNet(PRESETS["original"])
    assert count_parameters(model) == 31_030_658
    rows = summary(model, (572, 572, 1))
    assert sum(r[0] in ("Conv2D", "Conv2DTranspose") for r in rows) == 23
    assert rows[-1][:2] == ["Conv2D", (None, 388, 388, 2)]
    assert ["Cropping2D", (None, 56, 56, 512), 0] in rows  # 64x64 skip cropped to the 56x56 up-conv output
    assert ["Conv2DTranspose", (None, 56, 56, 512), 2_097_664] in rows
    assert PRESETS["original"].output_size(572) == 388


def test_original_runs_forward_on_a_small_valid_size():
    cfg = preset("original", n_filters=4)
    n = cfg.input_size_for(20)
    out = UNet(cfg)(torch.rand(1, 1, n, n))
    assert out.shape == (1, 2, cfg.output_size(n), cfg.output_size(n))


@pytest.mark.parametrize("h,w", [(100, 128), (96, 130), (95, 95)])
def test_bad_size_names_sizes_that_work(h, w):
    with pytest.raises(ValueError, match=r"multiple of 16.*try \d+ or \d+"):
        unet_model()(torch.rand(1, 3, h, w))


def test_original_bad_size_suggests_valid_sizes():
    with pytest.raises(ValueError, match="try 556 or 572"):
        UNet(PRESETS["original"]).check_input(570, 572)


def test_initialisation_follows_keras():
    torch.manual_seed(0)
    block = ConvBlock(256, 256)
    w = block.conv2.weight
    fan_in = 256 * 9
    assert w.std().item() == pytest.approx(math.sqrt(2 / fan_in), rel=0.05)  # He-normal
    assert w.abs().max().item() <= 2 * math.sqrt(2 / fan_in) / 0.8796 + 1e-6  # truncated at 2 std
    assert torch.count_nonzero(block.conv1.bias) == 0
    head = unet_model().classifier.weight
    limit = math.sqrt(6 / (32 + 23))  # Glorot-uniform bound for a 1x1 conv 32 → 23
    assert head.abs().max().item() <= limit and head.abs().max().item() > 0.8 * limit


def test_config_round_trip_and_validation():
    cfg = preset("assignment", n_classes=5)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown preset"):
        preset("resnet")
    with pytest.raises(ValueError, match="unknown model settings"):
        ModelConfig.from_dict({"n_clases": 3})
    with pytest.raises(ValueError, match="one rate per encoder block"):
        ModelConfig(depth=4)


@pytest.mark.parametrize("kernel", [2, 3])
@pytest.mark.parametrize("shape", [(2, 5, 6, 8), (1, 3, 1, 1), (1, 4, 3, 5)])
def test_subpixel_upconv_computes_the_transposed_conv_exactly(kernel, shape):
    torch.manual_seed(0)
    up = UpConv(shape[1], 7, kernel)
    torch.nn.init.normal_(up.bias)
    x = torch.randn(shape)
    torch.testing.assert_close(SubPixelUpConv(up)(x), up(x), atol=1e-5, rtol=1e-5)


def test_subpixel_copy_keeps_the_network_and_leaves_the_original_alone():
    torch.manual_seed(0)
    model = UNet(preset("assignment", n_filters=4)).eval()
    copy = subpixel_copy(model)
    assert not any(isinstance(m, UpConv) for m in copy.modules())
    assert sum(isinstance(m, UpConv) for m in model.modules()) == 4
    x = torch.rand(2, 3, 32, 48)
    with torch.no_grad():
        torch.testing.assert_close(copy(x), model(x), atol=1e-5, rtol=1e-5)
