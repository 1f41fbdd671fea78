"""``predict`` over files and folders: every image through a Predictor, its outputs written, and
unreadable or clashing inputs listed as problems while the rest are still written."""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..data.colors import MaskFormat, read_mask_as
from ..data.decode import ids_out_of_range, quiet_bomb_warnings, read_image
from ..data.links import broken_link
from ..data.naming import Naming
from ..data.pairs import is_image_file
from ..data.problems import DataError, Problem
from ..files import make_folder
from ..training.distributed import World, close_world
from .inputs import InputList, list_inputs
from .manifest import ManifestPart, done_in_share, manifest_row, merge_manifest, model_key
from .outputs import output_paths, remove_unfinished_outputs, write_outputs
from .predictor import Predictor
from .shard import join_launch
from .video import VideoOptions, is_video_file, predict_video_reporting


def expand_images(inputs: Iterable[str | Path]) -> tuple[list[Path], list[Problem]]:
    """Files as given, folders expanded to the images they hold; missing paths become problems."""
    files, problems = [], []
    for item in map(Path, inputs):
        if item.is_dir():
            found = sorted(p for p in item.iterdir() if is_image_file(p))
            if not found:
                problems.append(Problem(item, "folder holds no images"))
            files.extend(found)
        elif item.is_file():
            files.append(item)
        else:
            problems.append(Problem(item, broken_link(item) or "no such file or folder"))
    return files, problems


@dataclass
class PredictResult:
    """What one process's ``predict`` did.

    Attributes:
        written: the files written.
        problems: the inputs that were not predicted, each naming the file and why.
        skipped: inputs left as they were because ``predictions.csv`` and their files say that this
            model already predicted them.
        replaced: earlier files that outputs replaced.
        manifest: ``OUT/predictions.csv`` once merged (by the main process), else None.
    """

    written: list[Path] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    skipped: int = 0
    replaced: list[Path] = field(default_factory=list)
    manifest: Path | None = None


def predict(predictor: Predictor, inputs: Iterable[str | Path], out_dir: str | Path, *,
            masks_dir: str | Path | None = None, size: tuple[int, int] | str | None = None,
            on_file: Callable[[Path], None] | None = None, video: VideoOptions | None = None,
            data: dict | None = None, lists: Iterable[str | Path] = (), overwrite: bool = False,
            on_start: Callable[[int], None] | None = None, confidence: bool = False) -> PredictResult:
    """For each image: ``NAME_mask.png`` (class ids, original size), ``NAME_color.png``,
    ``NAME_overlay.png``, with ``masks_dir`` the Input | True | Predicted ``NAME_figure.png`` and with
    ``confidence`` ``NAME_confidence.png``, plus a row in ``OUT/predictions.csv``. Video files go to ``predict_video`` (with ``video``'s options). A
    bad file is reported and skipped; the others are still written.

    Started by ``torchrun``, each process predicts every N-th input of the sorted list from its rank on
    and the main process merges the rows into ``predictions.csv`` once all are done.

    Args:
        predictor: the model.
        inputs: image and video files, folders of images and glob patterns (see
            :func:`~pixelwise.inference.inputs.list_inputs`).
        out_dir: the output folder.
        masks_dir: a folder of true masks for the figures.
        size: what the model sees: the training size by default, ``"native"`` for each image's own.
        on_file: called with each image file once its outputs are written.
        video: the options for video files.
        data: data settings that replace some of the run's for reading the masks (``mask_suffix="_L"``,
            ``mask_format="colors"`` …).
        lists: text files of input paths, one a line, relative to the list file.
        overwrite: predict images again even where ``predictions.csv`` says this model already did and
            their files are all there (by default those are skipped, so a killed run can be restarted).
        on_start: called once with the number of images this process will predict.
        confidence: also write each pixel's confidence (the softmax probability of its class, 0-255).

    Returns:
        The :class:`PredictResult` of this process.

    Raises:
        DataError: a list file cannot be read, or ``masks_dir`` is not a folder.
        ValueError: ``out_dir`` cannot be created.
    """
    out_dir = Path(out_dir)
    listing = list_inputs(inputs, lists)
    reading = predictor.config.with_data(**(data or {}))
    naming, mask_format = Naming.for_run(reading), MaskFormat.for_run(reading)
    masks = _masks_by_stem(Path(masks_dir), naming) if masks_dir is not None else {}
    make_folder(out_dir)  # a bad --out fails once here, not once per image
    world = join_launch()
    together = False
    try:
        job = _Job(predictor, out_dir, size, naming, mask_format, masks, figure=masks_dir is not None,
                   video=video or VideoOptions(), key=model_key(predictor, size), confidence=confidence)
        result = _predict_share(job, listing, world, overwrite, on_start, on_file)
        together = True
    finally:
        close_world(world, together)
    return result


@dataclass
class _Job:
    """What every input of one ``predict`` call is predicted with."""

    predictor: Predictor
    out_dir: Path
    size: tuple[int, int] | str | None
    naming: Naming
    mask_format: MaskFormat
    masks: dict[str, Path]
    figure: bool
    video: VideoOptions
    key: str
    confidence: bool = False


def _predict_share(job: _Job, listing: InputList, world: World, overwrite: bool,
                   on_start: Callable[[int], None] | None, on_file: Callable[[Path], None] | None) -> PredictResult:
    """This process's share of ``listing``, in order; the manifest merged by the main process before
    (rows a killed run left in parts) and after (every process's rows), each time with the others waiting."""
    result = PredictResult(problems=listing.problems if world.is_main else [])  # every process lists the same
    if world.local_rank == 0:  # one process per machine, for an output folder on each machine's own disk
        remove_unfinished_outputs(job.out_dir)
    if world.is_main:
        merge_manifest(job.out_dir)
    world.barrier()
    share = listing.share(world.rank, world.size)
    done = bytearray(len(share)) if overwrite else done_in_share(job.out_dir, listing, share, job.key)
    for i, position in enumerate(share):
        if done[i] and not _outputs_there(job, listing.stem(position)):  # deleted since: predict it again
            done[i] = 0
    result.skipped = done.count(1)
    if on_start is not None:
        on_start(len(share) - result.skipped)
    part = ManifestPart(job.out_dir, world.rank)
    try:
        for i, position in enumerate(share):
            if done[i]:
                continue
            row = _predict_one(job, listing, position, result)
            if row is not None:
                part.add(row)
                if on_file is not None:
                    on_file(listing.path(position))
    finally:
        part.close()
    world.barrier()
    if world.is_main:
        result.manifest = merge_manifest(job.out_dir)
    return result


def _outputs_there(job: _Job, stem: str) -> bool:
    return all(os.path.isfile(p) for p in output_paths(job.out_dir / stem, job.figure, job.confidence))  # False for a name too long


def _predict_one(job: _Job, listing: InputList, position: int, result: PredictResult) -> list[str] | None:
    """Predict one input into ``result``; its manifest row once its outputs are all written, else None."""
    path, started = listing.path(position), time.perf_counter()
    first = listing.clash(position)
    if first is not None:
        result.problems.append(Problem(path, f"same name as {first}: its outputs would overwrite those; "
                                             "predict them into separate output folders"))
        return None
    if is_video_file(path):
        done = predict_video_reporting(job.predictor, path, job.out_dir, job.video, job.size)
        result.written, result.problems = result.written + done.written, result.problems + done.problems
        return None
    try:
        with warnings.catch_warnings():
            quiet_bomb_warnings()
            image = read_image(path)
            name = job.naming.pair_name(path.parent, path, "image") or path.stem
            true = read_mask_as(job.masks[name], job.mask_format) if name in job.masks else None
        if true is not None:
            _check_true_mask(true, job.masks[name], path, image, len(job.predictor.classes),
                             job.predictor.config.train.ignore_index)
    except DataError as exc:
        result.problems.extend(exc.problems)
        return None
    try:
        mask, sure = job.predictor.predict(image, job.size, confidence=True) if job.confidence else \
            (job.predictor.predict(image, job.size), None)
    except (RuntimeError, MemoryError) as exc:  # out of memory on a large --size native image, say
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        result.problems.append(Problem(path, f"cannot predict this image ({message})"))
        return None
    stem = job.out_dir / listing.stem(position)
    replacing = [p for p in output_paths(stem, job.figure, job.confidence) if os.path.exists(p)]  # False for a name too long
    try:
        written = write_outputs(path, stem, image, mask, job.predictor.classes, true=true, figure=job.figure,
                                confidence=sure)
    except DataError as exc:
        result.problems.extend(exc.problems)
        return None
    result.written += written
    result.replaced += replacing
    return manifest_row(path, written, mask, job.predictor.classes, time.perf_counter() - started, job.key)


def _check_true_mask(true: np.ndarray, mask_path: Path, image_path: Path, image: np.ndarray, n_classes: int,
                     ignore_index: int | None = None) -> None:
    """A true mask must fit its image and the run's classes, or its figure would show something false."""
    if true.shape != image.shape[:2]:
        raise DataError([Problem(mask_path, f"mask is {true.shape[0]}x{true.shape[1]} (height x width) but its image "
                                            f"{image_path.name} is {image.shape[0]}x{image.shape[1]}")])
    ids = ids_out_of_range(np.bincount(true.ravel(), minlength=256), n_classes, ignore_index)
    if ids:
        raise DataError([Problem(mask_path, f"mask has ids {ids} but the run has only {n_classes} classes "
                                            f"(0-{n_classes - 1})")])


def _masks_by_stem(masks_dir: Path, naming: Naming | None = None) -> dict[str, Path]:
    """Mask files by stem (less the run's mask suffix); an image without one still gets a figure, with no
    true-mask panel."""
    if not masks_dir.is_dir():
        raise DataError([Problem(masks_dir, "masks folder not found")])
    naming = naming or Naming()
    found = ((naming.pair_name(masks_dir, p, "mask"), p) for p in sorted(masks_dir.iterdir()) if is_image_file(p))
    return {name: p for name, p in found if name is not None}
