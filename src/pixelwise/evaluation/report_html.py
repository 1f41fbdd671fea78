"""report.html: an evaluation as one page a person reads in a browser, self-contained (every image
inlined as a base64 PNG, no script, no external file; its Content-Security-Policy allows nothing else):
the headline numbers, the per-class table sorted by IoU, the confusion matrix and the worst frames as
input | truth | prediction | error map."""

from __future__ import annotations

import base64
import io
import math
from html import escape
from pathlib import Path

import numpy as np
from PIL import Image

from ..classes import ClassSet
from ..inference.outputs import colorize
from .evaluate import Evaluation
from .frames import UNLABELLED, FramePictures

REPORT_HTML = "report.html"
ERROR_COLOR = (230, 25, 25)

STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 24px auto; max-width: 1120px; padding: 0 16px; color: #1d2330; }
h1 { font-size: 24px; margin-bottom: 4px; } h2 { font-size: 19px; margin-top: 32px; }
.meta { color: #5b6475; margin-top: 0; word-break: break-all; }
.cards { display: flex; gap: 12px; flex-wrap: wrap; }
.card { border: 1px solid #d8dce4; border-radius: 8px; padding: 10px 16px; min-width: 140px; }
.card b { display: block; font-size: 26px; } .card span { color: #5b6475; }
table { border-collapse: collapse; } td, th { padding: 3px 10px; text-align: right; border-bottom: 1px solid #eceef2; }
td.name, th.name { text-align: left; }
.swatch { display: inline-block; width: 12px; height: 12px; border: 1px solid #888; margin-right: 6px; vertical-align: -1px; }
.bar { background: #e8ebf1; width: 160px; height: 10px; display: inline-block; }
.bar i { background: #3a6fd8; height: 10px; display: block; }
.muted { color: #8a92a3; }
.frame { margin: 18px 0; } .frame figcaption { margin-bottom: 6px; }
.panels { display: flex; gap: 6px; flex-wrap: wrap; } .panels div { text-align: center; font-size: 13px; color: #5b6475; }
.panels img { display: block; image-rendering: pixelated; border: 1px solid #d8dce4; }
img.confusion { max-width: min(100%, 720px); }
"""


def png_data(array: np.ndarray) -> str:
    """A uint8 image array as a ``data:`` URL holding a PNG."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def error_map(frame: FramePictures) -> np.ndarray:
    """The input dimmed to grey with every wrongly predicted pixel in red; unlabelled pixels black."""
    grey = (frame.image.astype(np.float32).mean(axis=2) * 0.45).astype(np.uint8)
    picture = np.repeat(grey[..., None], 3, axis=2)
    picture[frame.prediction != frame.truth] = ERROR_COLOR
    picture[frame.truth == UNLABELLED] = 0
    return picture


def _number(value: float, digits: int = 3) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def _headline(evaluation: Evaluation) -> str:
    s = evaluation.scores
    cards = [(_number(s.miou), f"mIoU over {int(s.present.sum())} classes in the truth"),
             (_number(s.mean_dice), "mean Dice"), (_number(s.pixel_accuracy), "pixel accuracy"),
             (str(evaluation.n_images), "frames scored")]
    html = "".join(f'<div class="card"><b>{value}</b><span>{escape(label)}</span></div>' for value, label in cards)
    return f'<div class="cards">{html}</div>'


def _class_rows(evaluation: Evaluation) -> str:
    """One row per class in truth or prediction, highest IoU first; absent classes are left out."""
    s = evaluation.scores
    total = max(int(s.support.sum()), 1)
    shown = [i for i in range(len(evaluation.classes)) if evaluation.status(i) != "absent"]
    shown.sort(key=lambda i: (-s.iou[i], evaluation.classes.names[i]))
    rows = []
    for i in shown:
        r, g, b = evaluation.classes.colors[i]
        note = "" if evaluation.status(i) == "present" else ' <span class="muted">(predicted, not in truth)</span>'
        rows.append(
            f'<tr><td class="name"><span class="swatch" style="background:rgb({r},{g},{b})"></span>'
            f"{escape(evaluation.classes.names[i])}{note}</td><td>{_number(s.iou[i])}</td>"
            f'<td><span class="bar"><i style="width:{100 * s.iou[i]:.1f}%"></i></span></td>'
            f"<td>{_number(s.dice[i])}</td><td>{int(s.support[i]):,}</td>"
            f"<td>{100 * s.support[i] / total:.3f}%</td><td>{int(s.predicted[i]):,}</td></tr>")
    head = ('<tr><th class="name">class</th><th>IoU</th><th></th><th>Dice</th><th>true pixels</th><th>share</th>'
            "<th>predicted pixels</th></tr>")
    absent = len(evaluation.classes) - len(shown)
    note = f'<p class="muted">{absent} class(es) neither in the truth nor predicted are left out.</p>' if absent else ""
    return f"<table>{head}{''.join(rows)}</table>{note}"


def _frame(frame: FramePictures, classes: ClassSet) -> str:
    panels = [("input", frame.image), ("truth", colorize(frame.truth, classes)),
              ("prediction", colorize(frame.prediction, classes)), ("errors (red)", error_map(frame))]
    height, width = frame.truth.shape
    images = "".join(f'<div><img src="{png_data(picture)}" width="{width}" height="{height}" alt="{label}">{label}</div>'
                     for label, picture in panels)
    score = frame.score
    return (f'<figure class="frame"><figcaption><b>{escape(score.name)}</b>: mIoU {_number(score.miou)}, pixel '
            f"accuracy {_number(score.pixel_accuracy)}</figcaption><div class=\"panels\">{images}</div></figure>")


def report_page(evaluation: Evaluation, confusion_png: bytes) -> str:
    """The whole page as HTML text, titled after the run evaluated (``evaluation.inputs``).

    Args:
        evaluation: the scored evaluation (its ``worst`` frames are shown; none without thumbnails).
        confusion_png: the confusion matrix's heat map as PNG bytes (``confusion.png``).

    Returns:
        The HTML document.
    """
    inputs = evaluation.inputs
    title = f"evaluation of {Path(inputs['run']).name}" if "run" in inputs else "evaluation"
    meta = " · ".join(f"{key} {escape(str(value))}" for key, value in inputs.items())
    confusion = "data:image/png;base64," + base64.b64encode(confusion_png).decode("ascii")
    if evaluation.worst:
        frames = (f"<p>The {len(evaluation.worst)} frames with the lowest mIoU (over the classes in each frame's "
                  "own truth), worst first.</p>" + "".join(_frame(f, evaluation.classes) for f in evaluation.worst))
    else:
        frames = '<p class="muted">No frame pictures were kept (worst=0).</p>'
    skipped = "".join(f"<li>{escape(str(p))}</li>" for p in evaluation.skipped)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>pixelwise {escape(title)}</title><style>{STYLE}</style></head>
<body>
<h1>pixelwise {escape(title)}</h1>
<p class="meta">{meta}</p>
{_headline(evaluation)}
<h2>Per class</h2>
<p>Sorted by IoU, each scored at the masks' own resolution; share is the class's part of the true pixels.</p>
{_class_rows(evaluation)}
<h2>Confusion matrix</h2>
<img class="confusion" src="{confusion}" alt="confusion matrix, each row (true class) summing to 1">
<h2>Worst frames</h2>
{frames}
{f"<h2>Skipped</h2><ul>{skipped}</ul>" if skipped else ""}
</body></html>
"""
