"""``predict`` over files and folders: every image through a Predictor, its outputs written, and
unreadable or clashing inputs listed as problems while the rest are still written."""

from __future__ import annotations

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
from .outputs import write_outputs
from .predictor import Predictor
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
    written: list[Path] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


def predict(predictor: Predictor, inputs: Iterable[str | Path], out_dir: str | Path, *,
                  masks_dir: str | Path | None = None, size: tuple[int, int] | str | None = None,
                  on_file: Callable[[Path], None] | None = None, video: VideoOptions | None = None,
                  data: dict | None = None) -> PredictResult:
    """For each image: ``NAME_mask.png`` (class ids, original size), ``NAME_color.png``,
    ``NAME_overlay.png``, and with ``masks_dir`` the Input | True | Predicted ``NAME_figure.png``.
    Video files go to ``predict_video`` (with ``video``'s options). A bad file is reported and
    skipped; the others are still written. ``data`` replaces some of the run's data settings that say
    how the masks are read (``mask_suffix="_L"``, ``mask_format="colors"`` …)."""
    out_dir = Path(out_dir)
    files, problems = expand_images(inputs)
    result = PredictResult(problems=problems)
    reading = predictor.config.with_data(**(data or {}))
    naming, mask_format = Naming.for_run(reading), MaskFormat.for_run(reading)
    masks = _masks_by_stem(Path(masks_dir), naming) if masks_dir is not None else {}
    make_folder(out_dir)  # a bad --out fails once here, not once per image
    by_stem: dict[str, Path] = {}
    for path in dict.fromkeys(files):  # the same file given twice is predicted once
        if path.stem in by_stem:
            result.problems.append(Problem(path, f"same name as {by_stem[path.stem]}: its outputs would overwrite "
                                                 "those; predict them into separate output folders"))
            continue
        by_stem[path.stem] = path
    for path in by_stem.values():
        if is_video_file(path):
            done = predict_video_reporting(predictor, path, out_dir, video or VideoOptions(), size)
            result.written, result.problems = result.written + done.written, result.problems + done.problems
            continue
        try:
            with warnings.catch_warnings():
                quiet_bomb_warnings()
                image = read_image(path)
                name = naming.pair_name(path.parent, path, "image") or path.stem
                true = read_mask_as(masks[name], mask_format) if name in masks else None
            if true is not None:
                _check_true_mask(true, masks[name], path, image, len(predictor.classes),
                                 predictor.config.train.ignore_index)
        except DataError as exc:
            result.problems.extend(exc.problems)
            continue
        try:
            mask = predictor.predict(image, size)
        except (RuntimeError, MemoryError) as exc:  # out of memory on a large --size native image, say
            message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            result.problems.append(Problem(path, f"cannot predict this image ({message})"))
            continue
        try:
            result.written += write_outputs(path, out_dir / path.stem, image, mask, predictor.classes,
                                             true=true, figure=masks_dir is not None)
        except DataError as exc:
            result.problems.extend(exc.problems)
            continue
        if on_file is not None:
            on_file(path)
    return result


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
