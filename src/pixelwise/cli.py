"""The command line: parses arguments and calls the Python API, nothing more. Errors the user can
act on become one line per problem on stderr and a non-zero exit, never a traceback."""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from dataclasses import replace
from pathlib import Path

from . import __version__
from .augment import AUGMENTATIONS
from .checkpoint import LAST
from .classes import CARLA, ClassSet
from .config import CONFIG_FILE, OPTIMIZERS, PRECISIONS, SCHEDULES, DataConfig, RunConfig
from .data import RESIZE_MODES, DataError, decode_dataset, default_cache_dir, locate
from .distributed import launched_rank
from .losses import CLASS_WEIGHTS, LOSSES
from .model import PRESETS, preset
from .recipes import DEFAULT_RECIPE, RECIPES, recipe
from .tiling import AUTO_TILE

EXIT_ERROR, EXIT_DATA, EXIT_INTERRUPTED = 1, 2, 130


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
                   help="input HxWxC (default: 96x128x3 for 'assignment', 572x572x1 for 'original')")
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
    _cache_args(p)

    # No abbreviated flags: --resume checks the flags given by their full names.
    p = sub.add_parser("train", help="train a U-Net into a run directory", allow_abbrev=False)
    _add_data_args(p, required=False)
    p.add_argument("--out", type=Path, required=True, help="run directory to create (or continue with --resume)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--recipe", choices=sorted(RECIPES), default=DEFAULT_RECIPE,
                   help="default: BatchNorm, class-weighted CE + Dice, AdamW + cosine, batch 8, 120 epochs of "
                        "128x160 crops of 240x320 frames, flipped, half of them on a rare class (29 min on a "
                        "2-core Xeon with AMX for 205 frames); seed: the assignment exactly (Adam 1e-3, CE, batch 32, 40 "
                        "epochs, 96x128). The flags below change single settings of the recipe")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None, help="(peak) learning rate")
    p.add_argument("--optimizer", choices=OPTIMIZERS, default=None)
    p.add_argument("--weight-decay", type=float, default=None)
    p.add_argument("--schedule", choices=SCHEDULES, default=None, help="learning rate over the run")
    p.add_argument("--warmup", type=float, default=None, help="fraction of the steps spent warming up")
    p.add_argument("--loss", choices=LOSSES, default=None)
    p.add_argument("--class-weights", choices=CLASS_WEIGHTS, default=None)
    p.add_argument("--ignore-index", type=int, default=None, metavar="ID",
                   help="a class id whose pixels count as unlabelled: no loss, not scored")
    p.add_argument("--batch-norm", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--augment", choices=AUGMENTATIONS, default=None,
                   help="flip = random horizontal mirror (image and mask alike); full = also random zoom "
                        "0.75-1.5x, shift and colour jitter")
    p.add_argument("--crop", type=float, default=None,
                   help="train on random crops covering this fraction of each side of --size")
    p.add_argument("--class-crops", type=float, default=None, metavar="F",
                   help="place this share of the training crops (--crop below 1, or --augment full's zoom) to "
                        "hold a class picked evenly among those in the mask, so rare classes are seen often")
    p.add_argument("--precision", choices=PRECISIONS, default=None,
                   help="auto (the default) = bf16 where the CPU/GPU computes it natively, else fp32 (fp16 on older "
                        "GPUs)")
    p.add_argument("--seed", type=int, default=None, help="initial weights, batch order and augmentation draws")
    p.add_argument("--size", type=_size, default=None, help="training HEIGHTxWIDTH (the images are resized to it)")
    p.add_argument("--image-resize", choices=RESIZE_MODES, default=None,
                   help="how images are resized (masks always nearest)")
    p.add_argument("--val-fraction", type=float, default=None,
                   help="share of frames held out, whole runs of consecutive frames at a time (default: 0.2)")
    p.add_argument("--split-seed", type=int, default=None,
                   help="which runs of frames are held out (default: 0); --seed leaves the split alone")
    p.add_argument("--preset", choices=sorted(PRESETS), default=None, help="network (default: assignment)")
    p.add_argument("--filters", type=int, default=None,
                   help="base filters (default: the preset's: 32 for assignment, 64 for original)")
    p.add_argument("--classes", type=_classes, default=CARLA, help="number of classes or a file of names (default: CARLA's 23)")
    p.add_argument("--skip-invalid", action="store_true", help="train on the valid pairs, listing what was skipped")
    p.add_argument("--nproc", type=int, default=None, metavar="N",
                   help="train data-parallel in N processes on this machine (one per GPU; gloo on a CPU) through "
                        "torchrun; for several machines run torchrun yourself (see the README)")
    _cache_args(p)

    p = sub.add_parser("evaluate", help="score a run per class on a folder of pairs")
    p.add_argument("run", type=Path, help="run directory written by train")
    _add_data_args(p, required=False)
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
    _progress_arg(p)
    return parser


def cmd_summary(args: argparse.Namespace) -> int:
    from .keras_summary import format_summary, summary
    from .model import UNet

    base = PRESETS[args.preset]
    size = args.input or ((96, 128) if base.padding == "same" else (572, 572)) + (base.in_channels,)
    overrides = {k: v for k, v in (("n_classes", args.classes), ("n_filters", args.filters)) if v is not None}
    config = preset(args.preset, **overrides, in_channels=size[2])
    model = UNet(config)
    model.check_input(size[0], size[1])
    print(format_summary(summary(model, size), model))
    return 0


def cmd_synth(args: argparse.Namespace) -> int:
    from .synth import write_dataset

    out = write_dataset(args.out, args.count, seed=args.seed, height=args.size[0], width=args.size[1],
                        progress=not args.no_progress)
    print(f"wrote {args.count} frames to {out}/CameraRGB and {out}/CameraMask")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    images, masks = locate(args.data, args.images, args.masks)
    decoded = decode_dataset(images, masks, DataConfig.size, len(args.classes), cache_dir=args.cache_dir or default_cache_dir(),
                             progress=not args.no_progress)
    total = int(decoded.histogram.sum())
    print(f"{images} + {masks}: {len(decoded.names)} valid pairs, {len(decoded.problems)} problem(s)")
    sizes = sorted(set(decoded.original_sizes))
    if sizes:
        print("image sizes (height x width): " + ", ".join(f"{h}x{w}" for h, w in sizes))
    if total:
        print("\nclass histogram (pixels over all valid masks):")
        for i in sorted(range(len(decoded.histogram)), key=lambda i: -decoded.histogram[i]):
            count = int(decoded.histogram[i])
            if count:
                print(f"  {i:>3} {args.classes.names[i]:<14} {100 * count / total:8.3f}%  {count:>12,}")
        missing = [args.classes.names[i] for i in range(len(args.classes)) if decoded.histogram[i] == 0]
        if missing:
            print(f"  never occurs: {', '.join(missing)}")
    for problem in decoded.problems:
        print(f"pixelwise check: {problem}", file=sys.stderr)
    return EXIT_DATA if decoded.problems else 0


# Flags that replace one setting of the recipe: flag → (config section, field).
_SETTINGS = {
    "--epochs": ("train", "epochs"), "--batch-size": ("train", "batch_size"), "--lr": ("train", "lr"),
    "--optimizer": ("train", "optimizer"), "--weight-decay": ("train", "weight_decay"),
    "--schedule": ("train", "schedule"), "--warmup": ("train", "warmup"), "--loss": ("train", "loss"),
    "--class-weights": ("train", "class_weights"), "--ignore-index": ("train", "ignore_index"),
    "--precision": ("train", "precision"), "--seed": ("train", "seed"), "--size": ("data", "size"),
    "--image-resize": ("data", "image_resize"), "--val-fraction": ("data", "val_fraction"),
    "--split-seed": ("data", "split_seed"),
    "--augment": ("data", "augment"), "--crop": ("data", "crop"),
    "--class-crops": ("data", "class_crops"), "--batch-norm": ("model", "batch_norm"),
    "--filters": ("model", "n_filters"),
}


def _train_config(args: argparse.Namespace) -> RunConfig:
    base = recipe(args.recipe)
    model = base.model if args.preset is None else preset(args.preset, batch_norm=base.model.batch_norm)
    sections = {"model": replace(model, n_classes=len(args.classes), in_channels=3), "data": base.data,
                "train": base.train}
    for flag, (section, name) in _SETTINGS.items():
        value = getattr(args, flag[2:].replace("-", "_"))
        if value is not None:
            sections[section] = replace(sections[section], **{name: value})
    return RunConfig(classes=args.classes, **sections)


def _settings_changed(args: argparse.Namespace, config: RunConfig, saved: RunConfig) -> list[str]:
    """The flags given with --resume that would change the run's config.json (only --epochs may)."""
    def given(flag: str) -> bool:
        return any(t == flag or t.startswith(flag + "=") or t == "--no-" + flag[2:] for t in args.argv)

    def value(c: RunConfig, flag: str):
        section, name = _SETTINGS[flag]
        return getattr(getattr(c, section), name)

    changed = [flag for flag in _SETTINGS if flag != "--epochs" and given(flag) and value(config, flag) != value(saved, flag)]
    whole = {"--recipe": lambda c: c.with_train(epochs=1),
             "--preset": lambda c: {k: v for k, v in c.model.to_dict().items() if k != "n_filters"},
             "--classes": lambda c: c.classes}
    return changed + [flag for flag, part in whole.items() if given(flag) and part(config) != part(saved)]


def _resume_command(args: argparse.Namespace) -> str:
    """The command line the user typed, with --resume: what continues an interrupted run."""
    return shlex.join(["pixelwise", *args.argv, *([] if args.resume else ["--resume"])])


def _launch_torchrun(args: argparse.Namespace) -> int:
    """``pixelwise train --nproc N …`` = ``torchrun --standalone --nproc-per-node N -m pixelwise train …``."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    if args.nproc < 1:
        raise ValueError(f"--nproc must be at least 1, not {args.nproc}")
    rest, skip = [], False
    for token in args.argv:  # the same command line, less --nproc
        if skip:
            skip = False
        elif token == "--nproc":
            skip = True
        elif not token.startswith("--nproc="):
            rest.append(token)
    launch = get_args_parser().parse_args(["--standalone", "--nproc-per-node", str(args.nproc), "-m", "pixelwise",
                                           *rest])
    try:
        run(launch)
    except SignalException:  # Ctrl-C or SIGTERM: torchrun passed it on and each process saved its progress
        print(f"pixelwise train: stopped; progress saved in {args.out}\ncontinue with: {_resume_command(args)}",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    except ChildFailedError as exc:  # each process has already printed its own one-line error
        codes = [failure.exitcode for failure in exc.failures.values()]
        print(f"pixelwise train: {len(codes)} of {args.nproc} training processes failed (exit codes "
              f"{', '.join(map(str, codes))})", file=sys.stderr)
        return max(codes) if all(c > 0 for c in codes) else EXIT_ERROR
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from .train import train

    if args.nproc is not None:
        return _launch_torchrun(args)
    images, masks = locate(args.data, args.images, args.masks)
    config = _train_config(args)
    if args.resume and (args.out / CONFIG_FILE).exists():
        saved = RunConfig.load(args.out)
        changed = _settings_changed(args, config, saved)
        if changed:
            raise ValueError(f"{', '.join(changed)} cannot change when resuming: the run keeps the settings in "
                             f"{args.out / CONFIG_FILE} (only --epochs can be raised)")
    if args.resume and args.epochs is None:
        config = None  # keep the run's own epoch count
    result = train(images, masks, args.out, config, resume=args.resume, skip_invalid=args.skip_invalid,
                   cache_dir=args.cache_dir, progress=not args.no_progress)
    if launched_rank() not in (None, 0):  # under torchrun, rank 0 alone reports
        return 0
    if result.best_miou is not None:
        print(f"best epoch {result.best_epoch}: validation mIoU {result.best_miou:.4f}; run saved in {args.out}")
    elif result.history:
        print(f"no validation split: best.safetensors is the epoch with the lowest training loss "
              f"({result.best_epoch}); run saved in {args.out}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .evaluate import evaluate, format_report, write_report

    images, masks = locate(args.data, args.images, args.masks)
    evaluation = evaluate(args.run, images, masks, weights=args.weights, skip_invalid=args.skip_invalid,
                          cache_dir=args.cache_dir, progress=not args.no_progress, size=args.size, tile=args.tile,
                          tta=args.tta, engine=args.engine)
    out = args.out or Path(args.run) / "evaluation"
    write_report(evaluation, out)
    print(format_report(evaluation))
    for problem in evaluation.skipped:
        print(f"pixelwise evaluate: skipped {problem}", file=sys.stderr)
    print(f"\nreport, confusion matrix (CSV and PNG) and per-class IoU plot in {out}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from .predict import Predictor, predict_files

    predictor = Predictor(args.run, weights=args.weights, engine=args.engine, tile=args.tile, tta=args.tta)
    bar = tqdm(desc="predict", unit="image", disable=True if args.no_progress else None)
    result = predict_files(predictor, args.images, args.out, masks_dir=args.masks, size=args.size,
                           on_file=lambda _: bar.update())
    bar.close()
    for problem in result.problems:
        print(f"pixelwise predict: {problem}", file=sys.stderr)
    print(f"wrote {len(result.written)} files to {args.out}")
    return EXIT_DATA if result.problems else 0


def cmd_export(args: argparse.Namespace) -> int:
    from .export import export_onnx, quantize_int8
    from .predict import expand_images

    path = export_onnx(args.run, weights=args.weights)
    print(f"wrote {path} (fp32, any batch, height and width that are multiples of 16)")
    if args.int8 is not None:
        images, problems = expand_images([args.int8])
        if problems:
            raise DataError(problems)
        step = max(1, len(images) // max(1, args.calibration_count))
        path = quantize_int8(args.run, images[::step][: args.calibration_count], source=path)
        print(f"wrote {path} (int8, calibrated on {min(len(images[::step]), args.calibration_count)} images)")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(args.out, count=args.count, epochs=args.epochs, seed=args.seed, progress=not args.no_progress)
    return 0


COMMANDS = {"demo": cmd_demo, "summary": cmd_summary, "synth": cmd_synth, "check": cmd_check, "train": cmd_train,
            "evaluate": cmd_evaluate, "predict": cmd_predict, "export": cmd_export}


def main(argv: list[str] | None = None) -> int:
    from .train import RunDirError, TrainingStopped

    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    args.argv = argv
    started = time.perf_counter()
    try:
        return COMMANDS[args.command](args)
    except TrainingStopped as exc:
        rank = launched_rank()
        if rank is None:
            print(f"pixelwise train: {exc}\ncontinue with: {_resume_command(args)}", file=sys.stderr)
        elif rank == 0:  # under torchrun the launcher (or the user's own torchrun line) knows the full command
            print(f"pixelwise train: {exc}; rerun the same launch with --resume to continue", file=sys.stderr)
        return EXIT_INTERRUPTED
    except DataError as exc:
        if launched_rank() not in (None, 0):  # under torchrun every rank finds the same problems: list them once
            return EXIT_DATA
        for problem in exc.problems:
            print(f"pixelwise {args.command}: {problem}", file=sys.stderr)
        if args.command in ("train", "evaluate"):
            print(f"pixelwise {args.command}: {len(exc.problems)} problem(s) in the data; fix them or pass "
                  "--skip-invalid to use the valid pairs only", file=sys.stderr)
        return EXIT_DATA
    except (ValueError, FileNotFoundError, RunDirError, FloatingPointError, OSError) as exc:
        print(f"pixelwise {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except MemoryError:
        print(f"pixelwise {args.command}: error: out of memory; try a smaller --batch-size or --size", file=sys.stderr)
        return EXIT_ERROR
    except RuntimeError as exc:  # torch reports out-of-memory and backend failures this way
        print(f"pixelwise {args.command}: error: {str(exc).splitlines()[0]}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        hint = ""
        if args.command == "train" and (Path(args.out) / LAST).exists():
            hint = f"; finished epochs are saved in {args.out}: continue with {_resume_command(args)}"
        print(f"\npixelwise {args.command}: interrupted after {time.perf_counter() - started:.0f} s{hint}", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
