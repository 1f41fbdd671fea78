"""One function per command: turn parsed arguments into Python API calls and print what they
return. Each returns the exit code (0 done, 1 unusable setting or run, 2 problems in the data, 130
interrupted)."""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from ..classes import class_set
from ..config import SETTINGS, RunConfig
from ..config_file import apply_config_file, config_text
from ..data.colors import unknown_color_summary
from ..data.dataset import check
from ..data.layouts import recognise
from ..data.pairs import locate
from ..data.problems import SkippableDataError
from ..files import files_in, replaced_note
from ..inference.onnx_engine import StaleExport
from ..model.unet import PRESETS, preset
from ..recipes import DEFAULT_RECIPE, recipe
from ..resume import resumed
from ..rundir import EVALUATION_DIR, INT8_FILE, load_config
from ..training.distributed import LaunchFailed, LaunchStopped, World, launch, launched_rank
from .data_flags import (
    check_inputs,
    evaluate_inputs,
    layout_folders,
    mask_notes,
    official_split,
    reading_given,
    use_export,
)
from .flags import as_flags, given, train_settings

if TYPE_CHECKING:
    from ..training.loop import TrainResult

EXIT_ERROR, EXIT_DATA, EXIT_INTERRUPTED = 1, 2, 130


def cmd_summary(args: argparse.Namespace) -> int:
    from ..model.build import build_model
    from ..model.keras import format_summary, summary

    base = PRESETS[args.preset]
    size = args.input or ((96, 128) if base.padding == "same" else (572, 572)) + (base.in_channels,)
    overrides = {k: v for k, v in (("n_classes", args.classes), ("n_filters", args.filters)) if v is not None}
    config = preset(args.preset, **overrides, in_channels=size[2])
    model = build_model(config)
    model.check_input(size[0], size[1])
    print(format_summary(summary(model, size), model))
    return 0


def cmd_synth(args: argparse.Namespace) -> int:
    from ..synth import write_dataset

    out = write_dataset(args.out, args.count, seed=args.seed, height=args.size[0], width=args.size[1],
                        progress=not args.no_progress)
    print(f"wrote {args.count} frames to {out}/CameraRGB and {out}/CameraMask")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    export = use_export(args)
    images, masks, classes, mask_format, naming, select = check_inputs(args)
    decoded = check(images, masks, classes, cache_dir=args.cache_dir, progress=not args.no_progress,
                    mask_format=mask_format, naming=naming, select=select, ignore_index=args.ignore_index)
    if export is not None:
        decoded.problems[:0] = export.problems
        for note in export.notes:
            print(f"pixelwise check: note: {note}", file=sys.stderr)
    total = int(decoded.histogram.sum())
    print(f"{images} + {masks}: {len(decoded.names)} valid pairs, {len(decoded.problems)} problem(s)")
    fits = recognise(args.data) if args.layout is None and args.data is not None else []
    if fits:
        print(f"layout: looks like {' or '.join(fits)} (--layout {fits[0]} sets its classes, masks and split)")
    sizes = sorted(set(decoded.original_sizes))
    if sizes:
        print("image sizes (height x width): " + ", ".join(f"{h}x{w}" for h, w in sizes))
    if total:
        print("\nclass histogram (pixels over all valid masks):")
        for i in sorted(range(len(decoded.histogram)), key=lambda i: -decoded.histogram[i]):
            count = int(decoded.histogram[i])
            if count:
                print(f"  {i:>3} {classes.names[i]:<14} {100 * count / total:8.3f}%  {count:>12,}")
        missing = [classes.names[i] for i in range(len(classes)) if decoded.histogram[i] == 0]
        if missing:
            print(f"  never occurs: {', '.join(missing)}")
    for problem in decoded.problems:
        print(f"pixelwise check: {as_flags(str(problem))}", file=sys.stderr)
    for note in mask_notes(masks, naming, decoded.problems):
        print(f"pixelwise check: warning: {note}", file=sys.stderr)
    unknown = unknown_color_summary(decoded.problems)
    if unknown:
        print(f"\ncolours no class has ({len(unknown)}; add them to the class file or pass --unknown-color ignore):")
        for line in unknown:
            print(f"  {line}")
    return EXIT_DATA if decoded.problems else 0


def train_config(args: argparse.Namespace, saved: RunConfig | None = None) -> RunConfig:
    """The settings ``train`` trains with, each layer changing the one before: the recipe (resuming
    without --recipe: the run's own settings ``saved``), --preset's network, the --config file,
    --layout's data settings and classes, then --classes and each setting's flag."""
    from ..data.layouts import layout

    config = saved if saved is not None and args.recipe is None else recipe(args.recipe or DEFAULT_RECIPE)
    if args.preset is not None:
        config = replace(config, model=preset(args.preset, batch_norm=config.model.batch_norm, in_channels=3,
                                              n_classes=config.model.n_classes))
    if args.config is not None:
        config = apply_config_file(config, args.config)
    if args.layout is not None:
        if args.classes is not None:
            raise ValueError(f"--layout {args.layout} sets the classes (its shipped class file); leave out --classes")
        config = layout(args.layout).apply(config)
    classes = config.classes if args.classes is None else class_set(args.classes)
    changes = given(args, train_settings())
    changes["model"]["n_classes"] = len(classes)
    if args.encoder is not None and args.encoder_weights is None:  # a backbone is chosen for its weights
        changes["model"]["encoder_weights"] = "none" if args.encoder == "unet" else "imagenet"
    # One replace per section: a half-changed model (a new encoder, the old weights) would be refused.
    sections = {name: replace(getattr(config, name), **changes[name]) for name in changes}
    unet_only = [SETTINGS[f"model.{name}"].flag for name in ("n_filters", "batch_norm") if name in changes["model"]]
    if unet_only and sections["model"].encoder != "unet":
        raise ValueError(f"{' and '.join(unet_only)}: only the assignment's U-Net has this setting; the "
                         f"{sections['model'].encoder} network has its own widths and BatchNorm "
                         "(--recipe scratch or --encoder unet trains a U-Net)")
    return RunConfig(classes=classes, **sections)


def resume_command(args: argparse.Namespace) -> str:
    """The command line the user typed, with --resume: what continues an interrupted run."""
    return shlex.join(["pixelwise", *args.argv, *([] if args.resume else ["--resume"])])


def _launch_torchrun(args: argparse.Namespace) -> int:
    """``pixelwise train --nproc N …`` = ``torchrun --standalone --nproc-per-node N -m pixelwise train …``."""
    rest, skip = [], False
    for token in args.argv:  # the same command line, less --nproc
        if skip:
            skip = False
        elif token == "--nproc":
            skip = True
        elif not token.startswith("--nproc="):
            rest.append(token)
    try:
        launch(args.nproc, rest)
    except LaunchStopped:
        print(f"pixelwise train: stopped; progress saved in {args.out}\ncontinue with: {resume_command(args)}",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    except LaunchFailed as exc:  # each process has already printed its own one-line error
        print(f"pixelwise train: {exc}", file=sys.stderr)
        return max(exc.codes) if all(c > 0 for c in exc.codes) else EXIT_ERROR
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from ..training.folds import resumable_config, train_folds, trains_folds
    from ..training.loop import train

    if args.nproc is not None and not args.print_config:
        return _launch_torchrun(args)
    saved = resumable_config(args.out) if args.resume else None
    _export_problems(use_export(args, saved.classes if saved is not None else None), args)
    config = train_config(args, saved)
    if args.print_config:
        print(config_text(config if saved is None else resumed(saved, config, args.out)), end="")
        return 0
    images, masks = layout_folders(args) or locate(args.data, args.images, args.masks)
    options = {"skip_invalid": args.skip_invalid, "cache_dir": args.cache_dir, "progress": not args.no_progress,
               "log": lambda line: print(as_flags(line)), "mlflow": args.mlflow, "official": official_split(args)}
    if trains_folds(args.out, config, fold_given=args.fold is not None):
        folds = train_folds(images, masks, args.out, config, resume=args.resume, **options)
        if launched_rank() in (None, 0):
            _report_folds(folds.folds, args.out)
        return 0
    result = train(images, masks, args.out, config, resume=args.resume, **options)
    if launched_rank() not in (None, 0):  # under torchrun, rank 0 alone reports
        return 0
    if result.best_miou is not None:
        print(f"best epoch {result.best_epoch}: validation mIoU {result.best_miou:.4f}; run saved in {args.out}")
    elif result.history:
        print(f"no validation split: best.safetensors is the epoch with the lowest training loss "
              f"({result.best_epoch}); run saved in {args.out}")
    return 0


def _report_folds(folds: list[TrainResult], out: Path) -> None:
    """Each fold's best validation, and where the ensemble is."""
    for k, result in enumerate(folds):
        score = f"validation mIoU {result.best_miou:.4f}" if result.best_miou is not None else "no validation"
        print(f"fold {k}: best epoch {result.best_epoch}, {score}")
    scores = [r.best_miou for r in folds if r.best_miou is not None]
    mean = f" (mean validation mIoU of the folds {sum(scores) / len(scores):.4f})" if scores else ""
    print(f"ensemble of {len(folds)} folds saved in {out}{mean}; each fold's run in {out}/fold-K")


def cmd_evaluate(args: argparse.Namespace) -> int:
    from ..evaluation.report import format_report, write_report

    _export_problems(use_export(args, load_config(args.run).classes), args)
    images, masks, only = evaluate_inputs(args)
    with _in_flags(args.run):
        model = _load(args)
        evaluation = model.evaluate(images, masks, skip_invalid=args.skip_invalid, cache_dir=args.cache_dir,
                                    progress=not args.no_progress, size=args.size, only=only, data=reading_given(args))
    out = args.out or Path(args.run) / EVALUATION_DIR
    before = files_in(out)
    written = write_report(evaluation, out)
    print(format_report(evaluation))
    for problem in evaluation.skipped:
        print(f"pixelwise evaluate: skipped {as_flags(str(problem))}", file=sys.stderr)
    print(f"\nreport (report.html for a browser, report.json), confusion matrix (CSV and PNG) and per-class IoU plot "
          f"in {out}")
    _say_replaced(before, written)
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from ..evaluation.compare import compare, write_comparison

    comparison = compare(args.runs)
    print(comparison.markdown(), end="")
    if args.out is not None:
        before = files_in(args.out)
        written = write_comparison(comparison, args.out)
        print(f"\nwrote {', '.join(p.name for p in written)} to {args.out}")
        _say_replaced(before, written)
    return 0


def cmd_ensemble(args: argparse.Namespace) -> int:
    from ..rundir_ensemble import write_ensemble

    config = write_ensemble(args.runs, args.out)
    print(f"ensemble of {config.model.members} runs saved in {args.out}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from ..inference.shard import join_launch
    from ..inference.video import VideoOptions

    if not args.images and not args.lists:
        raise ValueError("nothing to predict: give image files, folders or --list FILE")
    world = join_launch()  # before loading: the threads a torchrun process may use decide its arithmetic
    with _in_flags(args.run):
        video = VideoOptions(every=args.every, save_masks=args.save_masks, side_by_side=args.side_by_side,
                             batch_size=args.batch_size, progress=not args.no_progress)
        model = _load_in_turn(args, world)
    who = f"process {world.rank + 1} of {world.size}: " if world.distributed else ""
    bar = tqdm(desc=f"predict{f' ({who[:-2]})' if who else ''}", unit="image",
               disable=True if args.no_progress or not world.is_main else None)
    result = model.predict(args.images, args.size, out=args.out, masks=args.masks, on_file=lambda _: bar.update(),
                           video=video, data=reading_given(args), lists=args.lists, overwrite=args.overwrite,
                           on_start=lambda count: bar.reset(total=count),
                           confidence=args.confidence or args.format == "labelstudio")
    bar.close()
    for problem in result.problems:
        print(f"pixelwise predict: {as_flags(str(problem))}", file=sys.stderr)
    if result.skipped:
        print(f"{who}skipped {result.skipped} image(s) this model already predicted into {args.out} "
              "(--overwrite predicts them again)")
    print(f"{who}wrote {len(result.written)} files to {args.out}")
    _say_replaced(set(result.replaced), result.written)
    if result.manifest is not None:
        print(f"one row per image in {result.manifest}")
        if args.format != "png":
            from ..inference.prelabels import write_prelabels

            written = write_prelabels(args.out, args.format, model.classes, f"pixelwise {Path(args.run).resolve().name}")
            print(f"pre-labels for {'Label Studio' if args.format == 'labelstudio' else 'CVAT'} in {written}")
    return EXIT_DATA if result.problems else 0


def cmd_suggest(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from ..inference.suggest import suggest
    from ..inference.suggest_outputs import write_suggestion

    if not args.images and not args.lists:
        raise ValueError("nothing to rank: give image files, folders or --list FILE")
    with _in_flags(args.run):
        model = _load(args)
        with tqdm(desc="suggest", unit="image", disable=True if args.no_progress else None) as bar:
            found = suggest(model, args.images, args.count, lists=args.lists, batch_size=args.batch_size,
                            on_start=lambda count: bar.reset(total=count), on_frame=bar.update)
    for problem in found.problems:
        print(f"pixelwise suggest: {as_flags(str(problem))}", file=sys.stderr)
    written = write_suggestion(found, model, args.out)
    print(f"ranked {len(found.ranked)} frames; class weights from {found.weights_from}")
    for n, frame in enumerate(found.picks, 1):
        print(f"{n:4d}. {frame.path}  {frame.score:.4f}  {', '.join(frame.classes)}")
    short = f" (only {len(found.picks)}: the others are neighbours of picks)" if len(found.picks) < args.count else ""
    print(f"wrote {written[0]} ({len(found.picks)} frames{short}), {written[1]} and {written[2]}")
    return EXIT_DATA if found.problems else 0


def cmd_export(args: argparse.Namespace) -> int:
    from ..inference.export import export

    before = files_in(args.run)
    with _in_flags(args.run):
        written = export(args.run, int8=None if args.int8 is None else [args.int8],
                         calibration_count=args.calibration_count, weights=args.weights)
    print(f"wrote {written[0]} (fp32, any batch, height and width that are multiples of 16)")
    if len(written) > 1:
        print(f"wrote {written[1]} (int8, calibrated on up to {args.calibration_count} images)")
    _say_replaced(before, written)
    stale = Path(args.run) / INT8_FILE
    if stale in before and not stale.exists():
        print(f"removed {stale}: it was quantised from the model.onnx just replaced (export with --int8 to make "
              "a new one)")
    return 0


def _export_problems(export, args: argparse.Namespace) -> None:
    """The tasks of a labelling tool's export that were left out: a DataError unless --skip-invalid
    (then listed as skipped), and its notes."""
    if export is None:
        return
    if export.problems and not args.skip_invalid:
        raise SkippableDataError(export.problems)
    for problem in export.problems:
        print(f"pixelwise {args.command}: skipped {problem}", file=sys.stderr)
    for note in export.notes:
        print(f"pixelwise {args.command}: note: {note}", file=sys.stderr)


def _load_in_turn(args: argparse.Namespace, world: World):
    """Under torchrun, the first process of each machine loads the run before the others do: auto's
    ONNX export and its engine timing then happen once per machine, timed without the other processes
    loading beside it, and the others read that export and the remembered choice, so that every share
    is predicted by the same engine. Where the first process cannot load the run, the others stop with a
    line that says so."""
    if not world.distributed:
        return _load(args)
    if world.local_rank == 0:
        model = None
        try:
            model = _load(args)
        finally:  # the others wait for this collective, also when loading failed
            world.any(model is None)
        return model
    if world.any(False):
        raise ValueError(f"{args.run}: the first process on this machine could not load the run (its error says why)")
    return _load(args)


def _load(args: argparse.Namespace):
    """The run of ``args.run`` loaded with the inference flags its command has (serve has no --tile or
    --tta), saying which engine auto chose or which exported model the onnx engine runs."""
    from ..inference.model import load

    model = load(args.run, engine=args.engine, precision=args.precision, tile=getattr(args, "tile", None),
                 tta=getattr(args, "tta", False), weights=args.weights, onnx_model=args.onnx_model,
                 scales=getattr(args, "scales", (1.0,)))
    if model.engine_note is not None:
        print(model.engine_note)
    elif model.model_file is not None:
        print(f"onnx engine: running {model.model_file} ({'int8' if model.model_file.name == INT8_FILE else 'fp32'}; "
              "--onnx-model chooses)")
    return model


@contextmanager
def _in_flags(run: str | Path) -> Iterator[None]:
    """The library's errors name its parameters and functions; on the command line they are worded as
    the flags and commands that set them."""
    words = [("call export(int8=IMAGES) first", f"run `pixelwise export {run} --int8 IMAGES` first"),
             ("call export(weights='best') again", f"run `pixelwise export {run}` again"),
             ("call export(weights='last') again", f"run `pixelwise export {run} --weights last` again"),
             ("call export() first", f"run `pixelwise export {run}` first"),
             ("(onnx_model='fp32')", "(--onnx-model fp32)"), ("(onnx_model)", "(--onnx-model)"),
             ("onnx_model is the onnx engine's; pass engine='onnx'",
              "the ONNX model (--onnx-model) is chosen for the onnx engine only; add --engine onnx"),
             ("precision is the torch engine's", "--precision is the torch engine's"),
             ("calibration_count", "--calibration-count"), ("every must be", "--every must be"),
             ("(leave tile out)", "(leave out --tile)"), ("count (frames to pick)", "--count")]
    try:
        yield
    except (ValueError, FileNotFoundError) as exc:
        message = str(exc)
        for api, flag in words:
            message = message.replace(api, flag)
        if message == str(exc):
            raise
        raise (ValueError if isinstance(exc, StaleExport) else type(exc))(message) from None


def _say_replaced(before: set[Path], written: list[Path]) -> None:
    """The one output rule: evaluate, predict and export replace earlier outputs of the same name, and say so."""
    note = replaced_note(before, written)
    if note:
        print(note)


def cmd_demo(args: argparse.Namespace) -> int:
    from ..demo import run_demo

    run_demo(args.out, count=args.count, epochs=args.epochs, minutes=args.minutes, seed=args.seed,
             progress=not args.no_progress)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import os

    from ..inference.serve import ServeOptions

    options = ServeOptions(max_batch=args.max_batch, max_wait_ms=args.max_wait_ms, max_queue=args.max_queue,
                           max_upload_mb=args.max_upload_mb, max_pixels=args.max_pixels,
                           token=args.token or os.environ.get("PIXELWISE_TOKEN") or None)
    with _in_flags(args.run):
        model = _load(args)
    model.serve(host=args.host, port=args.port, options=options)
    return 0


COMMANDS = {"demo": cmd_demo, "summary": cmd_summary, "synth": cmd_synth, "check": cmd_check, "train": cmd_train,
            "ensemble": cmd_ensemble, "evaluate": cmd_evaluate, "compare": cmd_compare, "predict": cmd_predict,
            "suggest": cmd_suggest, "export": cmd_export, "serve": cmd_serve}
