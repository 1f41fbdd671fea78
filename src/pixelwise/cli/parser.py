"""The argument parser: every command, flag, default and help text (``pixelwise COMMAND --help``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from .. import __version__
from ..classes import CARLA, ClassSet
from ..config import (
    AUGMENTATIONS,
    CLASS_WEIGHTS,
    LOSSES,
    OPTIMIZERS,
    PRECISIONS,
    SCHEDULES,
)
from ..data.resize import RESIZE_MODES
from ..inference.tiling import AUTO_TILE
from ..model.build import WEIGHTS_HELP
from ..model.unet import ENCODERS, PRESETS
from ..recipes import DEFAULT_RECIPE, RECIPES
from .data_flags import (
    add_data_format_args,
    add_evaluate_args,
    add_layout_arg,
    add_split_args,
)


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


def _classes(text: str) -> ClassSet:
    """A number of classes (CARLA's names when it is 23) or a file with one name per line / JSON list."""
    if text.isdigit():
        n = int(text)
        if n == len(CARLA):
            return CARLA
        if not 2 <= n <= 256:
            raise argparse.ArgumentTypeError(f"number of classes must be in 2-256, got {n}")
        return ClassSet.from_names([f"class_{i}" for i in range(n)])
    try:
        return ClassSet.load(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


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


def _engine_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--engine", choices=("torch", "onnx"), default="torch",
                   help="torch (CPU or CUDA), or onnx: ONNX Runtime on the CPU with the model written by "
                        "`pixelwise export` (int8 when exported with --int8)")
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

    p = sub.add_parser("demo", help="synthesise data, train briefly, evaluate and predict: no downloads, a few minutes")
    p.add_argument("--out", type=Path, default=Path("pixelwise-demo"), help="folder for everything (default: %(default)s)")
    p.add_argument("--count", type=int, default=300, help="synthetic training frames (default: %(default)s)")
    p.add_argument("--epochs", type=int, default=16, help="training epochs (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    _progress_arg(p)

    p = sub.add_parser("summary", help="print the Keras-style layer table of a model")
    p.add_argument("--preset", choices=sorted(PRESETS), default="assignment")
    p.add_argument("--input", type=_input_size, default=None,
                   help="input HxWxC (default: 572x572x1 for 'original', else 96x128x3)")
    p.add_argument("--classes", type=int, default=None, help="number of classes (default: the preset's)")
    p.add_argument("--filters", type=int, default=None, help="base filters (default: the preset's)")

    p = sub.add_parser("synth", help="write procedural CARLA-like street scenes in the CameraRGB/CameraMask layout")
    p.add_argument("out", type=Path)
    p.add_argument("--count", type=int, default=100, help="frames to write (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=_size, default=(480, 640), help="HEIGHTxWIDTH (default: 480x640, CARLA's)")
    _progress_arg(p)

    p = sub.add_parser("check", help="validate a dataset: every problem, one line each, and the class histogram")
    _add_data_args(p, required=False)
    p.add_argument("--classes", type=_classes, default=CARLA, help="number of classes or a file of names (default: CARLA's 23)")
    add_layout_arg(p)
    add_data_format_args(p)
    p.add_argument("--ignore-index", type=int, default=None, metavar="ID",
                   help="a class id or other mask value (such as 255) that marks unlabelled pixels, and the id "
                        "unknown colours become with --unknown-color ignore")
    _cache_args(p)

    # No abbreviated flags: --resume checks the flags given by their full names.
    p = sub.add_parser("train", help="train a U-Net into a run directory", allow_abbrev=False)
    _add_data_args(p, required=False)
    p.add_argument("--out", type=Path, required=True, help="run directory to create (or continue with --resume)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--recipe", choices=sorted(RECIPES), default=DEFAULT_RECIPE,
                   help="default: the ImageNet EfficientNet-Lite0 encoder (learning at 0.3 of the rate) under a "
                        "light U-Net decoder, class-weighted CE + Dice, AdamW + cosine, batch 8, up to 60 epochs (those "
                        "that fit in 28 minutes) of 256x320 crops of 480x640 frames, flipped, half of them on a rare "
                        "class; scratch: the assignment's "
                        "U-Net with BatchNorm, no pretrained weights, the same loss, 120 epochs of 128x160 crops of "
                        "240x320 frames; seed: the assignment exactly (Adam 1e-3, CE, batch 32, 40 epochs, 96x128). "
                        "Scores and timings: docs/quality.md. The flags below change single settings of the recipe")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--time-limit", type=float, default=None, metavar="MINUTES",
                   help="stop after the epochs that fit in this many minutes of training and validation, with the "
                        "learning-rate schedule fitted to them (0: no limit; the default recipe has 28)")
    p.add_argument("--val-every", type=int, default=None, metavar="N",
                   help="validate after every Nth epoch and after the last (best.safetensors is the best of "
                        "those); the default recipe validates every 5th")
    p.add_argument("--ema", type=float, default=None, metavar="DECAY",
                   help="validate and save an exponential moving average of the weights that keeps this share of "
                        "itself at each step, such as 0.998 (0: none, as in every recipe)")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None, help="(peak) learning rate")
    p.add_argument("--optimizer", choices=OPTIMIZERS, default=None)
    p.add_argument("--weight-decay", type=float, default=None)
    p.add_argument("--schedule", choices=SCHEDULES, default=None, help="learning rate over the run")
    p.add_argument("--warmup", type=float, default=None, help="fraction of the steps spent warming up")
    p.add_argument("--loss", choices=LOSSES, default=None)
    p.add_argument("--class-weights", choices=CLASS_WEIGHTS, default=None)
    p.add_argument("--ignore-index", type=int, default=None, metavar="ID",
                   help="a class id, or another mask value such as 255, whose pixels are unlabelled: no loss, "
                        "not scored")
    p.add_argument("--batch-norm", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--augment", choices=AUGMENTATIONS, default=None,
                   help="flip = random horizontal mirror (image and mask alike); zoom = also random zoom "
                        "0.75-1.5x and shift; full = also colour jitter")
    p.add_argument("--crop", type=float, default=None,
                   help="train on random crops covering this fraction of each side of --size")
    p.add_argument("--class-crops", type=float, default=None, metavar="F",
                   help="place this share of the training crops (--crop below 1, or --augment zoom/full's zoom) to "
                        "hold a class picked evenly among those in the mask, so rare classes are seen often")
    p.add_argument("--paste", type=float, default=None, metavar="F",
                   help="give this share of the training frames the small classes (each under 5%% of a frame, "
                        "each with probability 1/2) of another frame of the batch, copied at the same place")
    p.add_argument("--precision", choices=PRECISIONS, default=None,
                   help="auto (the default): on a GPU bf16 where it computes it natively, else fp16; on a CPU with "
                        "native bf16 (AVX512-BF16, AMX) the faster of fp32 and bf16, timed on the first run of this "
                        "network on the machine and kept in the cache folder for every later run (--resume keeps "
                        "the run's own); fp32 on other CPUs")
    p.add_argument("--seed", type=int, default=None, help="initial weights, batch order and augmentation draws")
    p.add_argument("--size", type=_size, default=None, help="training HEIGHTxWIDTH (the images are resized to it)")
    p.add_argument("--image-resize", choices=RESIZE_MODES, default=None,
                   help="how images are resized (masks always nearest)")
    p.add_argument("--val-fraction", type=float, default=None,
                   help="share of frames held out, whole runs of consecutive frames at a time (default: 0.2)")
    p.add_argument("--split-seed", type=int, default=None,
                   help="which runs of frames are held out (default: 0); --seed leaves the split alone")
    p.add_argument("--preset", choices=sorted(PRESETS), default=None, help="network (default: the recipe's)")
    p.add_argument("--encoder", choices=ENCODERS, default=None,
                   help="unet = the assignment's own encoder; efficientnet-lite0/1/2 = that ImageNet backbone under "
                        "a light U-Net decoder (default: the recipe's)")
    p.add_argument("--encoder-weights", default=None, metavar="imagenet|none|FILE",
                   help=f"what the encoder starts from: {WEIGHTS_HELP} (default: imagenet for an efficientnet "
                        "encoder, none for unet)")
    p.add_argument("--encoder-lr", type=float, default=None, metavar="F",
                   help="a pretrained encoder's learning rate as a fraction of --lr (the decoder's), in (0, 1]")
    p.add_argument("--filters", type=int, default=None,
                   help="base filters of the unet encoder (default: the preset's: 32 for assignment, 64 for original; "
                        "refused with an efficientnet encoder, as is --batch-norm)")
    p.add_argument("--classes", type=_classes, default=CARLA, help="number of classes or a file of names (default: CARLA's 23)")
    p.add_argument("--skip-invalid", action="store_true", help="train on the valid pairs, listing what was skipped")
    add_layout_arg(p)
    add_data_format_args(p)
    add_split_args(p)
    p.add_argument("--nproc", type=int, default=None, metavar="N",
                   help="train data-parallel in N processes on this machine (one per GPU; gloo on a CPU) through "
                        "torchrun; for several machines run torchrun yourself (see the README)")
    _cache_args(p)

    p = sub.add_parser("evaluate", help="score a run per class on a folder of pairs")
    p.add_argument("run", type=Path, help="run directory written by train")
    _add_data_args(p, required=False)
    add_evaluate_args(p)
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
    _engine_arg(p)
    _cache_args(p)

    p = sub.add_parser("export", help="export a run's model to ONNX (dynamic size), optionally quantised to int8")
    p.add_argument("run", type=Path, help="run directory written by train")
    p.add_argument("--format", choices=("onnx",), default="onnx", help="only ONNX for now (default: %(default)s)")
    p.add_argument("--int8", type=Path, default=None, metavar="IMAGES",
                   help="also write an int8 model (RUN/model.int8.onnx), calibrated on the images in this folder")
    p.add_argument("--calibration-count", type=int, default=64,
                   help="how many of those images calibrate the int8 model (default: %(default)s)")
    p.add_argument("--weights", choices=("best", "last"), default="best")

    p = sub.add_parser("predict", help="write class-id masks, colour masks and overlays for images")
    p.add_argument("run", type=Path, help="run directory written by train")
    p.add_argument("images", nargs="+", type=Path, help="image files or folders of images")
    p.add_argument("--out", type=Path, required=True, help="folder for the outputs")
    p.add_argument("--masks", type=Path, default=None,
                   help="folder of true masks (same file names): also write Input | True | Predicted figures")
    p.add_argument("--size", type=_predict_size, default=None,
                   help="HEIGHTxWIDTH the model sees, or 'native' for each image's own size (default: the training size)")
    p.add_argument("--weights", choices=("best", "last"), default="best")
    _engine_arg(p)
    p.add_argument("--tile", type=_size, default=None, metavar="HxW",
                   help="where the size the model sees is larger than this on a side, predict in tiles of this size "
                        "overlapping by at least 25%%, Gaussian-blended, so the network's memory depends on the tile; each "
                        f"side a size the network takes, e.g. a multiple of 16 (default: {AUTO_TILE}x{AUTO_TILE} tiles for "
                        f"sides"
                        f" above {AUTO_TILE}, as with --size native on large images)")
    p.add_argument("--tta", action="store_true",
                   help="test-time augmentation: average the logits of each image and of its horizontal mirror "
                        "(two passes per image)")
    p.add_argument("--save-masks", action="store_true",
                   help="videos: also write one 8-bit class-id PNG per predicted frame, in OUT/NAME_masks/")
    p.add_argument("--every", type=int, default=1, metavar="N",
                   help="videos: predict every Nth frame (the output video then runs at 1/N of the frame rate)")
    p.add_argument("--side-by-side", action="store_true", help="videos: write input | overlay, side by side")
    p.add_argument("--batch-size", type=int, default=8, help="video frames per forward pass (default: %(default)s)")
    _progress_arg(p)

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
    return parser
