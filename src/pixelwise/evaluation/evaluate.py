"""Score a run on a folder of pairs at each mask's own resolution: per-class IoU and Dice first,
pixel accuracy second, each frame's own mIoU, and thumbnails of the worst frames for the report."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..classes import ClassSet
from ..data.cache import default_cache_dir
from ..data.colors import MaskFormat, read_mask_as
from ..data.dataset import decode_dataset
from ..data.decode import read_image
from ..data.naming import Naming
from ..data.official import OfficialSplit, keep_listed
from ..data.pairs import Pair, find_pairs
from ..data.problems import DataError, Problem, SkippableDataError
from ..data.transforms import to_target
from ..inference.predictor import Predictor
from .frames import FramePictures, FrameScore, WorstFrames, frame_score
from .metrics import Scores, confusion_matrix, scores


@dataclass
class Evaluation:
    """A model scored on a dataset: ``confusion`` (true class × predicted class pixel counts, summed
    over ``n_images`` images), the run's ``classes``, the pairs ``skipped`` as invalid, each frame's
    scores in the order scored (``frames``), thumbnails of the ``worst`` frames, lowest mIoU first, and
    what was evaluated (``inputs``: the run, its weights and engine, the images and masks folders); ``scores`` gives
    per-class IoU and Dice, mIoU and pixel accuracy, ``to_dict()`` the report as JSON-able data."""

    confusion: np.ndarray
    classes: ClassSet
    n_images: int
    skipped: list[Problem]
    frames: list[FrameScore] = field(default_factory=list)
    worst: list[FramePictures] = field(default_factory=list)
    inputs: dict[str, str] = field(default_factory=dict)

    @cached_property
    def scores(self) -> Scores:
        return scores(self.confusion)

    def status(self, class_id: int) -> str:
        s = self.scores
        if s.support[class_id] > 0:
            return "present"
        return "predicted only" if s.predicted[class_id] > 0 else "absent"

    def to_dict(self) -> dict:
        s = self.scores

        def number(x: float) -> float | None:
            return None if math.isnan(x) else round(float(x), 6)

        return {
            **({"evaluated": self.inputs} if self.inputs else {}),
            "images": self.n_images,
            "pixel_accuracy": number(s.pixel_accuracy),
            "miou": number(s.miou),
            "mean_dice": number(s.mean_dice),
            "miou_over": "classes present in the truth",
            "per_class": [{"id": i, "name": name, "status": self.status(i), "iou": number(s.iou[i]),
                           "dice": number(s.dice[i]), "true_pixels": int(s.support[i]),
                           "predicted_pixels": int(s.predicted[i])}
                          for i, name in enumerate(self.classes.names)],
            "confusion_matrix": self.confusion.tolist(),
            "per_frame": [{"name": f.name, "miou": number(f.miou), "pixel_accuracy": number(f.pixel_accuracy)}
                          for f in self.frames],
            "skipped": [str(p) for p in self.skipped],
        }


def evaluate(run_dir: str | Path, images_dir: str | Path, masks_dir: str | Path, *, weights: str = "best",
             skip_invalid: bool = False, cache_dir: Path | None = None, progress: bool = True,
             size: tuple[int, int] | str | None = None, tile: tuple[int, int] | None = None, tta: bool = False,
             scales: tuple[float, ...] = (1.0,), engine: str = "torch", onnx_model: str | None = None, precision: str = "auto",
             only: str | Path | None = None, data: dict | None = None, worst: int = 6) -> Evaluation:
    """``load(run_dir, ...).evaluate(images_dir, masks_dir, ...)``: the run loaded with ``weights``,
    ``tile``, ``tta``, ``scales``, ``engine``, ``onnx_model`` and ``precision`` (see :class:`Predictor`), then
    scored by :func:`evaluate_predictor` with the other arguments.

    Raises:
        DataError: problems in the data. FileNotFoundError, ValueError: as :class:`Predictor` raises.
    """
    predictor = Predictor(run_dir, weights=weights, tile=tile, tta=tta, engine=engine, onnx_model=onnx_model,
                          precision=precision, scales=scales)
    return evaluate_predictor(predictor, images_dir, masks_dir, skip_invalid=skip_invalid, cache_dir=cache_dir,
                              progress=progress, size=size, only=only, data=data, worst=worst)


def evaluate_predictor(predictor: Predictor, images_dir: str | Path, masks_dir: str | Path, *,
                       skip_invalid: bool = False, cache_dir: Path | None = None, progress: bool = True,
                       size: tuple[int, int] | str | None = None, only: str | Path | None = None,
                       data: dict | None = None, worst: int = 6) -> Evaluation:
    """Predict every valid pair and sum one confusion matrix over them all, scored at each mask's own
    size, with the predictor's settings (engine, weights, tile, TTA, precision); each frame is also
    scored alone, and the ``worst`` keep thumbnails.

    Args:
        predictor: the loaded run (``pw.load``).
        images_dir, masks_dir: the folders of pairs, named as the run's data were.
        skip_invalid: score the valid pairs when some are not, instead of refusing.
        cache_dir: where decoded data are cached (default: the user's cache).
        progress: show a progress bar.
        size: what the model sees (``Predictor.predict``'s: the training size by default, ``"native"``
            for each image's own).
        only: a split list file (one name per line, as VOC's val.txt): just the frames it names are scored.
        data: data settings that replace the run's own for reading these files (``mask_suffix="_L"``,
            ``mask_format="colors"`` …); the run's settings are the defaults.
        worst: how many of the lowest-mIoU frames keep thumbnails for the report (0: none).

    Returns:
        The :class:`Evaluation`.

    Raises:
        DataError: problems in the data (SkippableDataError where valid pairs remain), or no pairs.
    """
    n_classes = len(predictor.classes)
    # Validate everything first (cheap, and cached): never report on half a dataset by accident.
    reading = predictor.config.with_data(**(data or {}))
    mask_format, naming = MaskFormat.for_run(reading), Naming.for_run(reading)
    checked = decode_dataset(Path(images_dir), Path(masks_dir), predictor.config.data.size, n_classes,
                             image_resize=predictor.config.data.image_resize,
                             cache_dir=default_cache_dir() if cache_dir is None else cache_dir, progress=progress,
                             mask_format=mask_format, naming=naming, ignore_index=predictor.config.train.ignore_index,
                             select=None if only is None else keep_listed(OfficialSplit(train_list=Path(only),
                                                                                        val_list=Path(only)),
                                                                          Path(images_dir), Path(masks_dir), naming))
    if checked.problems and not skip_invalid:
        raise (SkippableDataError if checked.names else DataError)(checked.problems)
    if not checked.names:
        raise DataError(checked.problems or [Problem(Path(images_dir), "no image/mask pairs to evaluate")])
    paths = {p.name: p for p in find_pairs(Path(images_dir), Path(masks_dir), naming)[0]}
    pairs = [paths[name] for name in checked.names]
    confusion, frames, kept = score_pairs(predictor, pairs, mask_format, size=size, worst=worst, progress=progress)
    inputs = {"run": str(predictor.run_dir), "weights": predictor.weights, "engine": predictor.engine,
              "tta": predictor.tta, "scales": list(predictor.scales), "images": str(images_dir), "masks": str(masks_dir)}
    return Evaluation(confusion, predictor.classes, len(pairs), checked.problems, frames, kept, inputs)


def score_pairs(predictor: Predictor, pairs: list[Pair], mask_format: MaskFormat, *, size: tuple[int, int] | str | None,
                worst: int, progress: bool) -> tuple[np.ndarray, list[FrameScore], list[FramePictures]]:
    """Predict each pair and score it at its mask's size, one frame at a time.

    Returns:
        The summed confusion matrix, each frame's scores, and thumbnails of the ``worst`` frames (lowest
        mIoU first), the only pictures kept while streaming.
    """
    n_classes = len(predictor.classes)
    cm = torch.zeros(n_classes, n_classes, dtype=torch.int64)
    ignore = predictor.config.train.ignore_index
    frames, kept = [], WorstFrames(worst)
    for pair in tqdm(pairs, desc="evaluate", unit="image", disable=None if progress else True):
        image = read_image(pair.image)
        truth = to_target(read_mask_as(pair.mask, mask_format), ignore_index=ignore)  # unlabelled pixels are not scored
        pred = torch.from_numpy(predictor.predict(image, size))
        frame = confusion_matrix(pred, truth, n_classes)
        cm += frame
        frames.append(frame_score(pair.name, frame.numpy()))
        kept.offer(frames[-1], image, truth.numpy(), pred.numpy())
    return cm.numpy(), frames, kept.frames()
