"""Score a run on a folder of pairs at each mask's own resolution: per-class IoU and Dice first,
pixel accuracy second, plus the confusion matrix as CSV, heat-map and JSON."""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .classes import ClassSet
from .data import DataError, Problem, decode_dataset, default_cache_dir, find_pairs, read_image, read_mask
from .files import atomic_write_text, make_folder
from .metrics import Scores, confusion_matrix, scores
from .predict import Predictor
from .viz import plot_confusion, plot_per_class

REPORT_FILE = "report.json"


@dataclass
class Evaluation:
    confusion: np.ndarray
    classes: ClassSet
    n_images: int
    skipped: list[Problem]

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
            "skipped": [str(p) for p in self.skipped],
        }


def evaluate(run_dir: str | Path, images_dir: str | Path, masks_dir: str | Path, *, weights: str = "best",
             skip_invalid: bool = False, cache_dir: Path | None = None, progress: bool = True,
             size: tuple[int, int] | str | None = None, tile: tuple[int, int] | None = None, tta: bool = False,
             engine: str = "torch") -> Evaluation:
    """Predict every valid pair and sum one confusion matrix over them all, scored at each mask's own
    size. ``size`` is what the model sees (``Predictor.predict``'s: the training size by default,
    ``"native"`` for each image's own); ``tile``, ``tta`` and ``engine`` are the Predictor's."""
    predictor = Predictor(run_dir, weights=weights, tile=tile, tta=tta, engine=engine)
    n_classes = len(predictor.classes)
    # Validate everything first (cheap, and cached): never report on half a dataset by accident.
    checked = decode_dataset(Path(images_dir), Path(masks_dir), predictor.config.data.size, n_classes,
                             image_resize=predictor.config.data.image_resize,
                             cache_dir=default_cache_dir() if cache_dir is None else cache_dir, progress=progress)
    if checked.problems and not skip_invalid:
        raise DataError(checked.problems)
    if not checked.names:
        raise DataError(checked.problems or [Problem(Path(images_dir), "no image/mask pairs to evaluate")])
    paths = {p.name: p for p in find_pairs(Path(images_dir), Path(masks_dir))[0]}
    cm = torch.zeros(n_classes, n_classes, dtype=torch.int64)
    ignore = predictor.config.train.ignore_index
    for name in tqdm(checked.names, desc="evaluate", unit="image", disable=None if progress else True):
        pair = paths[name]
        truth = torch.from_numpy(read_mask(pair.mask)).long()
        if ignore is not None:
            truth[truth == ignore] = -1  # unlabelled: not scored
        pred = torch.from_numpy(predictor.predict(read_image(pair.image), size))
        cm += confusion_matrix(pred, truth, n_classes)
    return Evaluation(cm.numpy(), predictor.classes, len(checked.names), checked.problems)


def write_report(evaluation: Evaluation, out_dir: str | Path) -> list[Path]:
    """report.json, per_class.csv, confusion.csv, confusion.png and per_class_iou.png in ``out_dir``."""
    out_dir = make_folder(out_dir, "report folder")
    report = evaluation.to_dict()
    atomic_write_text(out_dir / REPORT_FILE, json.dumps(report, indent=2) + "\n")
    columns = ("id", "name", "status", "iou", "dice", "true_pixels", "predicted_pixels")
    rows = [columns] + [["" if c[k] is None else c[k] for k in columns] for c in report["per_class"]]
    atomic_write_text(out_dir / "per_class.csv", _csv(rows))
    names = evaluation.classes.names
    rows = [["true\\predicted", *names]] + [[names[i], *row] for i, row in enumerate(evaluation.confusion.tolist())]
    atomic_write_text(out_dir / "confusion.csv", _csv(rows))
    plot_confusion(evaluation.confusion, evaluation.classes, out_dir / "confusion.png")
    present = [c for c in report["per_class"] if c["status"] == "present"]
    miou = "n/a" if report["miou"] is None else f"{report['miou']:.3f}"
    plot_per_class([c["name"] for c in present], [c["iou"] for c in present], out_dir / "per_class_iou.png",
                   f"IoU per class (mIoU {miou})")
    return [out_dir / n for n in (REPORT_FILE, "per_class.csv", "confusion.csv", "confusion.png", "per_class_iou.png")]


def _csv(rows: list) -> str:
    """CSV text, quoting where needed: class names come from users and may hold commas or quotes."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    return buffer.getvalue()


def format_report(evaluation: Evaluation) -> str:
    """A terminal table: headline numbers, then each class with IoU, Dice and its share of true pixels."""
    s = evaluation.scores
    total = max(int(s.support.sum()), 1)
    lines = [f"images {evaluation.n_images}   mIoU {s.miou:.4f}   mean Dice {s.mean_dice:.4f}   "
             f"pixel accuracy {s.pixel_accuracy:.4f}", "",
             f"{'id':>3}  {'class':<14} {'IoU':>7} {'Dice':>7} {'share':>8}"]
    for i, name in enumerate(evaluation.classes.names):
        status = evaluation.status(i)
        if status == "absent":
            lines.append(f"{i:>3}  {name:<14} {'absent':>7}")
            continue
        note = "" if status == "present" else "  (predicted, not in truth)"
        lines.append(f"{i:>3}  {name:<14} {s.iou[i]:>7.4f} {s.dice[i]:>7.4f} {100 * s.support[i] / total:>7.3f}%{note}")
    return "\n".join(lines)
