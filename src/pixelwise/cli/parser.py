"""The argument parser: every command, flag, default and help text (``pixelwise COMMAND --help``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from .. import __version__
from ..config import PRECISIONS, SETTINGS
from ..demo import DEMO_MINUTES
from ..inference.tiling import AUTO_TILE
from ..model.unet import PRESETS
from ..recipes import DEFAULT_RECIPE, RECIPES
from ..settings import shown
from .data_flags import (
    add_data_format_args,
    add_evaluate_args,
    add_layout_arg,
    add_split_args,
)
from .flags import add_setting, recipe_values, train_settings


def _dims(text: str, n: int, example: str) -> tuple[int, ...]:
    try:
        dims = tuple(int(v) for v in text.lower().split("x"))
    except ValueError:
        dims = ()
    if len(dims) != n or min(dims) < 1:
        raise argparse.ArgumentTypeError(f"expected {example}, got {text!r}")
    return dims


def _size(text: str) -> tuple[int, int]:
    """'96x128' → (96, 128): height x width, as the assignment writes its input size."""
    return _dims(text, 2, "HEIGHTxWIDTH of positive numbers such as 96x128")


def _input_size(text: str) -> tuple[int, int, int]:
    return _dims(text, 3, "HEIGHTxWIDTHxCHANNELS of positive numbers such as 96x128x3")


def _predict_size(text: str) -> tuple[int, int] | str:
    return "native" if text == "native" else _size(text)


CLASSES_HELP = "number of classes or a file of names (default: CARLA's 23)"


def _add_data_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("data", nargs="?" if not required else None, type=Path,
                   help="dataset folder holding CameraRGB/ and CameraMask/")
    p.add_argument("--images", type=Path, help="folder of images (instead of DATA/CameraRGB)")
    p.add_argument("--masks", type=Path, help="folder of masks, matched to images by file name (instead of DATA/CameraMask)")


def _progress_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bars (they are off anyway when stderr is not a terminal)")


def _cache_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cache-dir", type=Path, default=None,
                   help="where decoded, resized arrays are kept (default: $PIXELWISE_CACHE or ~/.cache/pixelwise)")
    _progress_arg(p)


def _scales(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected factors such as 0.75,1,1.25, not {text!r}") from None


def _scales_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--scales", type=_scales, default=(1.0,), metavar="S,S,…",
                   help="test-time scales: also predict at these factors of the size the model sees and average the "
                        "class probabilities (one pass per scale, two with --tta; e.g. 0.75,1,1.25; default: 1)")


def _engine_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--engine", choices=("auto", "torch", "onnx"), default="auto",
                   help="auto (default): on a CPU with onnxruntime, the run's ONNX export (int8 when exported with "
                        "--int8; an fp32 one is written into the run on first use and whenever the weights change) "
                        "where it runs this network at least 1.2x torch's speed, measured on the first load on the "
                        "machine and remembered in the cache folder; torch otherwise (CUDA, --precision given, a run "
                        "folder that cannot be written); the choice is printed. torch: PyTorch (CPU or CUDA). onnx: "
                        "ONNX Runtime on the CPU with the model written by `pixelwise export`")
    p.add_argument("--onnx-model", choices=("fp32", "int8"), default=None,
                   help="which exported model --engine onnx runs (default: int8 where `pixelwise export --int8` "
                        "wrote it, else fp32)")
    p.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="the torch engine's arithmetic (default: auto = on GPUs bf16 where native, else fp16; on "
                        "CPUs with native bf16 the faster of fp32 and bf16 for this network, measured on its first "
                        "load on the machine and remembered in the cache folder; fp32 on other CPUs)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pixelwise", description="U-Net semantic segmentation: train on a folder of "
                                     "image/mask pairs, score it per class, predict masks for new images.")
    parser.add_argument("--version", action="version", version=f"pixelwise {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_demo, _summary, _synth, _check, _train, _ensemble, _evaluate, _compare, _export, _predict, _suggest, _serve):
        add(sub)
    return parser


def _demo(sub) -> None:
    p = sub.add_parser("demo", help="synthesise data, train briefly, evaluate and predict: no downloads, a few minutes")
    p.add_argument("--out", type=Path, default=Path("pixelwise-demo"), help="folder for everything (default: %(default)s)")
    p.add_argument("--count", type=int, default=300, help="synthetic training frames (default: %(default)s)")
    p.add_argument("--epochs", type=int, default=16, help="training epochs at most (default: %(default)s)")
    p.add_argument("--minutes", type=float, default=DEMO_MINUTES,
                   help="train only the epochs that fit in this many minutes, so that a slower CPU finishes the demo "
                        "in about as long (default: %(default)s; 0: every epoch)")
    p.add_argument("--seed", type=int, default=0)
    _progress_arg(p)


def _summary(sub) -> None:
    p = sub.add_parser("summary", help="print the Keras-style layer table of a model")
    p.add_argument("--preset", choices=sorted(PRESETS), default="assignment")
    p.add_argument("--input", type=_input_size, default=None,
                   help="input HxWxC (default: 572x572x1 for 'original', else 96x128x3)")
    p.add_argument("--classes", type=int, default=None, help="number of classes (default: the preset's)")
    p.add_argument("--filters", type=int, default=None, help="base filters (default: the preset's)")


def _synth(sub) -> None:
    p = sub.add_parser("synth", help="write procedural CARLA-like street scenes in the CameraRGB/CameraMask layout")
    p.add_argument("out", type=Path)
    p.add_argument("--count", type=int, default=100, help="frames to write (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=_size, default=(480, 640), help="HEIGHTxWIDTH (default: 480x640, CARLA's)")
    _progress_arg(p)


def _check(sub) -> None:
    p = sub.add_parser("check", help="validate a dataset: every problem, one line each, and the class histogram")
    _add_data_args(p, required=False)
    p.add_argument("--classes", default=None, help=CLASSES_HELP)
    add_layout_arg(p)
    add_data_format_args(p, lambda s: f"default: {shown(s.default)}")
    add_setting(p, SETTINGS["train.ignore_index"], "")
    _cache_args(p)


def _train(sub) -> None:
    # No abbreviated flags: a flag is a setting by its full name (and --resume refuses changed ones).
    p = sub.add_parser("train", help="train a U-Net into a run directory", allow_abbrev=False)
    _add_data_args(p, required=False)
    p.add_argument("--out", type=Path, required=True, help="run directory to create (or continue with --resume)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--recipe", choices=sorted(RECIPES), default=None, help=RECIPE_HELP)
    p.add_argument("--config", type=Path, default=None, metavar="FILE",
                   help="a YAML or JSON file of settings, with config.json's keys (train: {lr: 0.002}, ...): they "
                        "change the recipe's, and the flags given beside it change the file's")
    p.add_argument("--print-config", action="store_true",
                   help="print the complete settings this command would train with, as a file --config takes, and "
                        "exit without training")
    p.add_argument("--preset", choices=sorted(PRESETS), default=None, help="network (default: the recipe's)")
    for setting in train_settings():
        add_setting(p, setting, recipe_values(setting))
    p.add_argument("--classes", default=None, help=CLASSES_HELP)
    p.add_argument("--skip-invalid", action="store_true", help="train on the valid pairs, listing what was skipped")
    add_layout_arg(p)
    add_split_args(p)
    p.add_argument("--mlflow", default=None, metavar="URI",
                   help="also log the run to MLflow: a local store (file:./mlruns) or a tracking server "
                        "(http://HOST:5000), in the experiment $MLFLOW_EXPERIMENT_NAME or pixelwise; needs "
                        "pip install 'pixelwise[mlflow]'. TensorBoard logs go to OUT/tb/ in every run")
    p.add_argument("--nproc", type=int, default=None, metavar="N",
                   help="train data-parallel in N processes on this machine (one per GPU; gloo on a CPU) through "
                        "torchrun; for several machines run torchrun yourself (see the README)")
    _cache_args(p)


RECIPE_HELP = ("default: the ImageNet EfficientNet-Lite0 encoder under a light U-Net decoder, class-weighted CE + Dice, "
               "AdamW + cosine, of full frames cropped, flipped, half of the crops on a rare class; scratch: the "
               "assignment's U-Net with BatchNorm, no pretrained weights, the same loss; seed: the assignment exactly "
               "(Adam, CE). Each recipe's values are listed with the flags below, which change single settings of it "
               f"(without this flag: {DEFAULT_RECIPE}). Scores and timings: docs/quality.md")


def _evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="score a run per class on a folder of pairs")
    p.add_argument("run", type=Path, help="run directory written by train")
    _add_data_args(p, required=False)
    add_evaluate_args(p)
    add_data_format_args(p, lambda _: "default: the run's")
    p.add_argument("--out", type=Path, default=None, help="report folder (default: RUN/evaluation)")
    p.add_argument("--weights", choices=("best", "last"), default="best")
    p.add_argument("--skip-invalid", action="store_true", help="score the valid pairs, listing what was skipped")
    p.add_argument("--size", type=_predict_size, default=None,
                   help="HEIGHTxWIDTH the model sees, or 'native' for each image's own size (default: the training "
                        "size); scores are always taken at each mask's own size")
    p.add_argument("--tile", type=_size, default=None, metavar="HxW",
                   help="predict in overlapping tiles of this size, blended (this matters only where it is smaller "
                        "than --size); each side a size the network takes")
    p.add_argument("--tta", action="store_true",
                   help="average each prediction with that of the mirrored image (two passes per image)")
    _scales_arg(p)
    _engine_arg(p)
    _cache_args(p)


def _compare(sub) -> None:
    p = sub.add_parser("compare", help="runs side by side: the settings that differ, training, evaluation and "
                                       "per-class IoU")
    p.add_argument("runs", nargs="+", type=Path, metavar="RUN",
                   help="run directories written by train (with their evaluation where `pixelwise evaluate` wrote "
                        "it into the run)")
    p.add_argument("--out", type=Path, default=None, metavar="DIR",
                   help="also write compare.csv, compare.md and a per-class IoU chart (compare_per_class.png) here")


def _ensemble(sub) -> None:
    p = sub.add_parser("ensemble", help="average trained runs of one model (such as folds trained apart with --fold) "
                                        "into one run that every command takes")
    p.add_argument("runs", nargs="+", type=Path, metavar="RUN", help="two or more run directories written by train")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="the ensemble run directory to write")


def _export(sub) -> None:
    p = sub.add_parser("export", help="export a run's model to ONNX (dynamic size), optionally quantised to int8")
    p.add_argument("run", type=Path, help="run directory written by train")
    p.add_argument("--int8", type=Path, default=None, metavar="IMAGES",
                   help="also write an int8 model (RUN/model.int8.onnx), calibrated on the images in this folder")
    p.add_argument("--calibration-count", type=int, default=64,
                   help="how many of those images calibrate the int8 model (default: %(default)s)")
    p.add_argument("--weights", choices=("best", "last"), default="best")


def _run_and_inputs(p: argparse.ArgumentParser, what: str) -> None:
    """RUN, then the inputs as predict and suggest take them: files, folders, globs and --list files."""
    p.add_argument("run", type=Path, help="run directory written by train")
    p.add_argument("images", nargs="*", type=Path,
                   help=f"{what}, folders of images, or quoted glob patterns ('frames/*.png', '**' recursive)")
    p.add_argument("--list", type=Path, action="append", default=[], metavar="FILE", dest="lists",
                   help="a text file of image paths, one a line, relative to the file's folder (may be repeated)")


def _predict(sub) -> None:
    p = sub.add_parser("predict", help="write class-id masks, colour masks and overlays for images (started by "
                       "torchrun, each process predicts its share: see docs/scaling.md)")
    _run_and_inputs(p, "image files")
    p.add_argument("--out", type=Path, required=True,
                   help="folder for the outputs and predictions.csv (one row per image: its outputs, size, classes "
                        "present with their pixel shares, seconds); images this model already predicted there are "
                        "skipped, so the same command continues a killed run")
    p.add_argument("--overwrite", action="store_true",
                   help="predict every image again, even those predictions.csv says are done")
    p.add_argument("--masks", type=Path, default=None,
                   help="folder of true masks (same file names): also write Input | True | Predicted figures")
    p.add_argument("--confidence", action="store_true",
                   help="also write NAME_confidence.png: each pixel's confidence, the softmax probability of its class "
                        "as 0-255")
    p.add_argument("--format", choices=("png", "labelstudio", "cvat"), default="png",
                   help="png: the masks and pictures only; labelstudio: also OUT/labelstudio.json, tasks with the "
                        "masks as pre-labels (scored by mean confidence) for Label Studio to import; cvat: also "
                        "OUT/cvat.zip, a Segmentation mask 1.1 archive CVAT imports as annotations (docs/labelling.md)")
    add_data_format_args(p, lambda _: "default: the run's")
    p.add_argument("--size", type=_predict_size, default=None,
                   help="HEIGHTxWIDTH the model sees, or 'native' for each image's own size (default: the training size)")
    p.add_argument("--weights", choices=("best", "last"), default="best")
    _engine_arg(p)
    p.add_argument("--tile", type=_size, default=None, metavar="HxW",
                   help="where the size the model sees is larger than this on a side, predict in tiles of this size "
                        "overlapping by at least 25%%, Gaussian-blended, so the network's memory depends on the tile; each "
                        f"side a size the network takes, e.g. a multiple of 16 (default: {AUTO_TILE}x{AUTO_TILE} tiles for "
                        f"sides above {AUTO_TILE}, as with --size native on large images)")
    p.add_argument("--tta", action="store_true",
                   help="test-time augmentation: average the logits of each image and of its horizontal mirror "
                        "(two passes per image)")
    _scales_arg(p)
    _video_args(p)
    _progress_arg(p)


def _suggest(sub) -> None:
    p = sub.add_parser("suggest", help="which unlabelled frames to label next: the ones the run is least sure of, "
                                       "weighted toward its worst classes, spread over drives")
    _run_and_inputs(p, "unlabelled image files")
    p.add_argument("--count", type=int, required=True, metavar="N", help="how many frames to pick")
    p.add_argument("--out", type=Path, default=Path("suggested.txt"), metavar="LIST",
                   help="the list of picks, one image file name a line, which --train-list reads; beside it "
                        "NAME.csv (every frame's score) and NAME.png (the picks beside their uncertainty maps) "
                        "(default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=8, help="frames predicted together (default: %(default)s)")
    p.add_argument("--weights", choices=("best", "last"), default="best")
    _engine_arg(p)
    _progress_arg(p)


def _video_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--save-masks", action="store_true",
                   help="videos: also write one 8-bit class-id PNG per predicted frame, in OUT/NAME_masks/")
    p.add_argument("--every", type=int, default=1, metavar="N",
                   help="videos: predict every Nth frame (the output video then runs at 1/N of the frame rate)")
    p.add_argument("--side-by-side", action="store_true", help="videos: write input | overlay, side by side")
    p.add_argument("--batch-size", type=int, default=8, help="video frames per forward pass (default: %(default)s)")


def _serve(sub) -> None:
    p = sub.add_parser("serve", help="serve a run over HTTP: POST /predict, a page to try it at /, /health, /info")
    p.add_argument("run", type=Path, help="run directory written by train")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default: %(default)s, this machine only; 0.0.0.0 for every interface)")
    p.add_argument("--port", type=int, default=8000, help="(default: %(default)s)")
    p.add_argument("--weights", choices=("best", "last"), default="best")
    _engine_arg(p)
    p.add_argument("--max-batch", type=int, default=8,
                   help="requests predicted together at most (default: %(default)s; 1 turns batching off)")
    p.add_argument("--max-wait-ms", type=float, default=5.0,
                   help="how long a request may wait for others to share its batch (default: %(default)s)")
    p.add_argument("--max-queue", type=int, default=64,
                   help="requests that may wait; the next gets 503 (default: %(default)s)")
    p.add_argument("--max-upload-mb", type=float, default=20.0, help="larger uploads get 413 (default: %(default)s)")
    p.add_argument("--max-pixels", type=int, default=4096 * 4096,
                   help="larger images get 400, however small the file (default: %(default)s)")
    p.add_argument("--token", default=None,
                   help="require Authorization: Bearer TOKEN on /info and /predict (default: $PIXELWISE_TOKEN if set)")
