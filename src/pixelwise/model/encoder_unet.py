"""A U-Net decoder over a pretrained encoder's feature maps (EfficientNet-Lite0/1/2).

The encoder gives maps at strides 2, 4, 8, 16 and 32. Each decoder block upsamples the deeper map
bilinearly to its skip's size, concatenates ``[up, skip]`` and applies two 3x3 conv + BatchNorm + ReLU;
the decoder stops at stride 2, where a 1x1 conv gives the class logits, upsampled bilinearly to the
input's size. Kept light on purpose: a decoder of 256-16 channels up to full resolution spent 5.5 of
6 GFLOP per 240x320 image, the encoder 0.6; this one has ``config.decoder_channels`` (128, 96, 64, 48)
and no full-size stage. Narrower still (16 at stride 2) starved the small classes (model/unet.py).

Input, like every pixelwise model's, is RGB scaled to [0, 1] by the preprocessing contract
(data/transforms.py). The network itself applies the affine map its pretrained weights expect
((pixel - 127) / 128), so training, validation, predict, tiling, the ONNX export and its int8
calibration cannot disagree on it: it is part of the exported graph (as Keras' EfficientNet keeps its
Rescaling layer inside the model).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .efficientnet import PIXEL_MEAN, PIXEL_STD, EfficientNetLite
from .unet import ENCODER_STEP, Concat, Conv, ModelConfig


class Upsample(nn.Module):
    """Bilinear resize to the skip's size (a module so the summary lists it as UpSampling2D)."""

    def forward(self, x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=False)


class DecoderBlock(nn.Module):
    def __init__(self, cin: int, skip_channels: int, cout: int):
        super().__init__()
        self.up = Upsample()
        self.concat = Concat()
        self.conv1 = Conv(cin + skip_channels, cout, 3, "same", batch_norm=True)
        self.conv2 = Conv(cout, cout, 3, "same", batch_norm=True)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(self.concat(self.up(x, skip), skip)))


class EncoderUNet(nn.Module):
    """EfficientNet-Lite encoder + light U-Net decoder; NCHW float input in [0, 1], logits out.

    Sides that are not multiples of 32 are padded (at the bottom and right, by reflection as the
    predictor pads) and the logits cropped back, so validation at any training size matches predict.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        if not config.encoder.startswith("efficientnet-"):
            raise ValueError(f"EncoderUNet builds EfficientNet-Lite encoders, not {config.encoder!r}")
        self.config = config
        self.encoder = EfficientNetLite(config.encoder).strip_classifier()
        channels = self.encoder.out_channels
        self.decoder = nn.ModuleList()
        cin = channels[-1]
        for skip, width in zip(reversed(channels[:-1]), config.decoder_channels):
            self.decoder.append(DecoderBlock(cin, skip, width))
            cin = width
        self.classifier = Conv(cin, config.n_classes, 1, "same", relu=False)
        self.upsample = Upsample()
        # (x - 127/255) * 255/128 == (255 x - 127) / 128 for every channel (the weights' mean and std are equal)
        self.input_mean = PIXEL_MEAN[0] / 255.0
        self.input_scale = 255.0 / PIXEL_STD[0]

    def encoder_parameters(self) -> list[nn.Parameter]:
        """The parameters pretrained weights initialise (the optimiser may give them a lower rate)."""
        return list(self.encoder.parameters())

    def check_input(self, height: int, width: int) -> None:
        if height < 1 or width < 1:
            raise ValueError(f"input {height}x{width} is empty")

    def _encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The encoder's maps; in fp32 on a CPU even under bf16 autocast, whose depthwise convolutions
        are slower than fp32 on every CPU measured (docs/benchmarks); the decoder keeps the autocast."""
        if x.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
            with torch.autocast("cpu", enabled=False):
                return self.encoder(x.float())
        return self.encoder(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"expected input of shape (N, 3, H, W), got {tuple(x.shape)}")
        h, w = x.shape[-2:]
        padded = x
        if not torch.compiler.is_compiling():  # exported graphs take multiples of 32 (the predictor pads)
            self.check_input(h, w)
            pad_h, pad_w = -h % ENCODER_STEP, -w % ENCODER_STEP
            if pad_h or pad_w:
                mode = "reflect" if pad_h < h and pad_w < w else "replicate"
                padded = F.pad(x, (0, pad_w, 0, pad_h), mode=mode)
        features = self._encode((padded - self.input_mean) * self.input_scale)
        y = features[-1]
        for block, skip in zip(self.decoder, reversed(features[:-1])):
            y = block(y, skip)
        logits = self.upsample(self.classifier(y), padded)
        return logits if logits.shape[-2:] == x.shape[-2:] else logits[..., :h, :w]
