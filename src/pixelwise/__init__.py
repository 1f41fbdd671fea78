"""pixelwise: U-Net semantic segmentation — train on a folder of image/mask pairs, score per class,
predict masks for new images. The Python API is the product; the CLI is a thin layer over it."""

__version__ = "0.1.0"

from .classes import CARLA, ClassSet
from .model.keras import (
           conv_block,
           format_summary,
           summary,
           unet_model,
           upsampling_block,
)
from .model.unet import PRESETS, ModelConfig, UNet, count_parameters, preset

__all__ = ["CARLA", "ClassSet", "PRESETS", "ModelConfig", "UNet", "conv_block", "count_parameters", "format_summary",
           "preset", "summary", "unet_model", "upsampling_block"]
