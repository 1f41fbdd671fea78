"""The assignment's Keras-style API over the U-Net: ``unet_model``, ``conv_block``,
``upsampling_block``, and ``summary``, the Keras-style layer table (NHWC shapes, parameter counts)."""

from __future__ import annotations

import copy

import torch
from torch import nn

from .encoder_unet import Upsample
from .unet import CenterCrop, Concat, Conv, ConvBlock, UNet, UpBlock, UpConv, preset


def conv_block(in_channels: int, n_filters: int = 32, dropout_prob: float = 0.0, max_pooling: bool = True) -> ConvBlock:
    """The assignment's ``conv_block`` as a module: ``next, skip = conv_block(3, 32)(x)``."""
    return ConvBlock(in_channels, n_filters, dropout_prob, max_pooling)


def upsampling_block(in_channels: int, skip_channels: int, n_filters: int = 32) -> UpBlock:
    """The assignment's ``upsampling_block`` as a module: ``y = upsampling_block(256, 128, 32)(x, skip)``."""
    return UpBlock(in_channels, skip_channels, n_filters)


def unet_model(input_size: tuple[int, int, int] = (96, 128, 3), n_filters: int = 32, n_classes: int = 23) -> UNet:
    """The assignment's factory, same arguments (``input_size`` is H, W, C as in Keras)."""
    height, width, channels = input_size
    model = UNet(preset("assignment", in_channels=channels, n_filters=n_filters, n_classes=n_classes))
    model.check_input(height, width)
    return model


Row = list


def _nhwc(t: torch.Tensor) -> tuple:
    return (None, t.shape[2], t.shape[3], t.shape[1])


def _rows(module: nn.Module, out: torch.Tensor) -> list[Row]:
    """A Conv with BatchNorm is three Keras layers: Conv2D (linear, no bias), BatchNormalization, ReLU."""
    if isinstance(module, Conv):
        conv_params = module.weight.numel() + (module.bias.numel() if module.bias is not None else 0)
        init = "HeNormal" if module.relu else "GlorotUniform"
        if module.norm is None:
            return [["Conv2D", _nhwc(out), conv_params, module.padding_mode_name,
                     "relu" if module.relu else "linear", init]]
        return [["Conv2D", _nhwc(out), conv_params, module.padding_mode_name, "linear", init],
                ["BatchNormalization", _nhwc(out), 4 * module.norm.num_features],
                *([["Activation", _nhwc(out), 0, "relu"]] if module.relu else [])]
    row = _row(module, out)
    return [row] if row is not None else []


def _encoder_row(module: nn.Module, out: torch.Tensor, inside_conv: set[int]) -> Row | None:
    """A pretrained encoder's plain convolutions and BatchNorms, and the decoder's upsampling."""
    if isinstance(module, nn.Conv2d) and not isinstance(module, Conv):
        params = sum(p.numel() for p in module.parameters())
        if module.groups > 1:
            return ["DepthwiseConv2D", _nhwc(out), params, "same", "linear"]
        return ["Conv2D", _nhwc(out), params, "same", "linear"]
    if isinstance(module, nn.BatchNorm2d) and id(module) not in inside_conv:
        return ["BatchNormalization", _nhwc(out), 4 * module.num_features]
    if isinstance(module, Upsample):
        return ["UpSampling2D", _nhwc(out), 0, "bilinear"]
    return None


def _row(module: nn.Module, out: torch.Tensor) -> Row | None:
    params = sum(p.numel() for p in module.parameters())
    if isinstance(module, UpConv):
        return ["Conv2DTranspose", _nhwc(out), params]
    if isinstance(module, nn.MaxPool2d):
        return ["MaxPooling2D", _nhwc(out), 0, (module.kernel_size, module.kernel_size)]
    if isinstance(module, nn.Dropout):
        return ["Dropout", _nhwc(out), 0, module.p]
    if isinstance(module, Concat):
        return ["Concatenate", _nhwc(out), 0]
    if isinstance(module, CenterCrop):
        return ["Cropping2D", _nhwc(out), 0]
    return None


def summary(model: nn.Module, input_size: tuple[int, int, int] | list[tuple[int, int, int]]) -> list[Row]:
    """Rows like ``['Conv2D', (None, 96, 128, 32), 896, 'same', 'relu', 'HeNormal']``, one per layer.

    ``input_size`` is (H, W, C), or a list of them for a block with two inputs (an up block).
    Shapes are traced on the meta device, so even the 572x572 original network costs no compute.
    """
    sizes = input_size if isinstance(input_size, list) else [input_size]
    traced = copy.deepcopy(model).to("meta").eval()
    rows: list[Row] = [["InputLayer", [(None, *size)], 0] for size in sizes]
    inside_conv = {id(m.norm) for m in traced.modules() if isinstance(m, Conv) and m.norm is not None}

    def hook(module: nn.Module, _inputs, out) -> None:
        rows.extend(_rows(module, out))
        if (row := _encoder_row(module, out, inside_conv)) is not None:
            rows.append(row)

    handles = [m.register_forward_hook(hook) for m in traced.modules()]
    try:
        with torch.no_grad():
            traced(*[torch.empty(1, c, h, w, device="meta") for h, w, c in sizes])
    finally:
        for h in handles:
            h.remove()
    return rows


def format_summary(rows: list[Row], model: nn.Module) -> str:
    """The rows one per line, as the assignment prints them, then the parameter totals."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    # Keras counts BatchNorm's moving mean and variance as non-trainable parameters.
    moving = sum(m.running_mean.numel() + m.running_var.numel() for m in model.modules()
                 if isinstance(m, nn.BatchNorm2d) and m.running_mean is not None)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad) + moving
    lines = [repr(r) for r in rows]
    lines += ["", f"Total params: {trainable + frozen:,}", f"Trainable params: {trainable:,}",
              f"Non-trainable params: {frozen:,}"]
    return "\n".join(lines)
