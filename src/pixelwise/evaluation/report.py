"""The evaluation report: the printed table, report.json, the CSVs, the two plots and report.html."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np  # noqa: E402

from ..classes import ClassSet
from ..figures import plt, save_figure
from ..files import atomic_write_text, make_folder
from .evaluate import Evaluation
from .report_html import REPORT_HTML, report_page

REPORT_FILE = "report.json"


def write_report(evaluation: Evaluation, out_dir: str | Path) -> list[Path]:
    """report.json, per_class.csv, confusion.csv, confusion.png, per_class_iou.png and report.html in ``out_dir``.

    Args:
        evaluation: what :func:`~pixelwise.evaluation.evaluate.evaluate` returned.
        out_dir: the report folder (made if missing); files of the same names are replaced.

    Returns:
        The files written.

    Raises:
        WriteError: a file cannot be written (the earlier version of it is kept).
        ValueError: ``out_dir`` cannot be made.
    """
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
    atomic_write_text(out_dir / REPORT_HTML, report_page(evaluation, (out_dir / "confusion.png").read_bytes()))
    return [out_dir / n for n in (REPORT_FILE, "per_class.csv", "confusion.csv", "confusion.png", "per_class_iou.png",
                                  REPORT_HTML)]


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


def plot_confusion(cm: np.ndarray, classes: ClassSet, path: str | Path) -> None:
    """Row-normalised confusion heat-map over the classes that occur in truth or prediction."""
    cm = np.asarray(cm, dtype=np.float64)
    keep = np.flatnonzero((cm.sum(0) + cm.sum(1)) > 0)
    sub = cm[np.ix_(keep, keep)]
    norm = sub / np.maximum(sub.sum(axis=1, keepdims=True), 1)
    names = [classes.names[i] for i in keep]
    size = max(5.0, 0.45 * len(keep) + 2)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(keep)), names, rotation=90)
    ax.set_yticks(range(len(keep)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("confusion (each row sums to 1)")
    fig.colorbar(im, ax=ax, fraction=0.046)
    save_figure(fig, path)


def plot_per_class(names: list[str], values: list[float], path: str | Path, title: str) -> None:
    """Horizontal bars of a per-class score, so rare classes are as visible as common ones."""
    fig, ax = plt.subplots(figsize=(7, 0.3 * len(names) + 1.5))
    ax.barh(range(len(names)), values, color="tab:blue")
    ax.set_yticks(range(len(names)), names)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_title(title)
    ax.grid(axis="x", alpha=0.3)
    save_figure(fig, path)
