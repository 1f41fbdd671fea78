"""pixelwise: U-Net semantic segmentation — train on a folder of image/mask pairs, score per class,
predict masks for new images. The Python API is the product; the CLI is a thin layer over it, so
every refusal and policy the command line applies is applied here too."""

__version__ = "0.1.0"

from .classes import CARLA, ClassSet
from .config import DataConfig, RunConfig, TrainConfig
from .data.dataset import Decoded, check
from .data.decode import read_image, read_mask
from .data.problems import DataError, Problem
from .evaluation.evaluate import Evaluation, evaluate
from .evaluation.report import format_report, write_report
from .inference.export import export
from .inference.predict import predict
from .inference.onnx_engine import StaleExport
from .inference.model import Model, load
from .inference.predictor import Predictor
from .model.build import build_model
from .model.keras import conv_block, format_summary, summary, unet_model, upsampling_block
from .model.unet import PRESETS, ModelConfig, UNet, count_parameters, preset
from .recipes import RECIPES, recipe
from .resume import RunExists, SettingsChanged
from .rundir import RunDirError, load_config
from .synth import write_dataset
from .training.loop import TrainResult, train
from .training.stop import TrainingStopped

__all__ = [
    "CARLA", "ClassSet", "DataConfig", "RunConfig", "TrainConfig", "Decoded", "check", "read_image", "read_mask",
    "DataError", "Problem", "Evaluation", "evaluate", "format_report", "write_report", "export", "predict",
    "Predictor", "Model", "load", "StaleExport", "RunExists", "SettingsChanged", "conv_block", "format_summary", "summary", "unet_model", "upsampling_block", "PRESETS",
    "ModelConfig", "UNet", "build_model", "count_parameters", "preset", "RECIPES", "recipe", "RunDirError", "load_config",
    "write_dataset", "TrainResult", "train", "TrainingStopped",
]
