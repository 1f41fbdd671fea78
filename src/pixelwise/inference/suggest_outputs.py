"""What ``suggest`` writes: the list of frames to label (one file name a line, which ``--train-list``
reads), a CSV of every frame's score, and a contact sheet of the picks beside their uncertainty maps."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from PIL import Image, ImageDraw

from ..data.decode import read_image
from ..evaluation.frames import thumbnail_size
from ..files import atomic_write, atomic_write_text
from .predictor import Predictor
from .suggest import FrameScore, Suggestion, weighted_uncertainty

THUMBNAIL_SIDE = 192
COLUMNS = 2  # picks per row of the sheet, each an image and its map
CAPTION = 16  # pixels of text above each pick


def suggestion_paths(list_path: str | Path) -> tuple[Path, Path, Path]:
    """The list, the scores CSV (``NAME.csv``) and the contact sheet (``NAME.png``) for ``list_path``."""
    path = Path(list_path)
    return path, path.with_suffix(".csv"), path.with_suffix(".png")


def write_suggestion(suggestion: Suggestion, predictor: Predictor, list_path: str | Path) -> list[Path]:
    """Write the picks' file names to ``list_path``, every frame's score to ``NAME.csv`` and the contact
    sheet to ``NAME.png`` beside it.

    Args:
        suggestion: what :func:`~pixelwise.inference.suggest.suggest` returned.
        predictor: the run it came from (the sheet's maps are predicted again for the picks only).
        list_path: the list file to write.

    Returns:
        The three files written.

    Raises:
        OSError: a file cannot be written.
    """
    listed, table, sheet = suggestion_paths(list_path)
    atomic_write_text(listed, "".join(f"{p.path.name}\n" for p in suggestion.picks))
    atomic_write_text(table, _scores_csv(suggestion))
    picture = contact_sheet(suggestion, predictor)
    atomic_write(sheet, lambda tmp: Image.fromarray(picture).save(tmp, format="PNG"))
    return [listed, table, sheet]


def _scores_csv(suggestion: Suggestion) -> str:
    order = {p.path: n for n, p in enumerate(suggestion.picks, 1)}
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(("rank", "file", "score", "picked", "uncertain_classes"))
    for rank, frame in enumerate(suggestion.ranked, 1):
        writer.writerow((rank, str(frame.path), f"{frame.score:.5f}", order.get(frame.path, ""), " ".join(frame.classes)))
    return out.getvalue()


def contact_sheet(suggestion: Suggestion, predictor: Predictor) -> np.ndarray:
    """uint8 (H, W, 3) picture: each pick's image beside its class-weighted uncertainty map (bright where a
    label would help most), captioned with its pick number, name, score and classes, ``COLUMNS`` a row."""
    cells = [_cell(n, frame, predictor, suggestion.weights) for n, frame in enumerate(suggestion.picks, 1)]
    height = max(c.shape[0] for c in cells)
    width = max(c.shape[1] for c in cells)
    rows = -(-len(cells) // COLUMNS)
    sheet = np.full((rows * height, COLUMNS * width, 3), 255, dtype=np.uint8)
    for k, cell in enumerate(cells):
        top, left = (k // COLUMNS) * height, (k % COLUMNS) * width
        sheet[top: top + cell.shape[0], left: left + cell.shape[1]] = cell
    return sheet


def _cell(number: int, frame: FrameScore, predictor: Predictor, weights: np.ndarray) -> np.ndarray:
    image = read_image(frame.path)
    seen = predictor.resized(image, predictor.seen_size(image, None))
    probabilities = predictor.batch_logits(seen[None]).softmax(dim=1)
    unsure = weighted_uncertainty(probabilities, weights)[0]
    h, w = thumbnail_size(image.shape[:2], THUMBNAIL_SIDE)
    thumb = np.asarray(Image.fromarray(image).resize((w, h), Image.Resampling.BILINEAR))
    heat = Image.fromarray((colormaps["magma"](unsure)[..., :3] * 255).astype(np.uint8))
    heat = np.asarray(heat.resize((w, h), Image.Resampling.BILINEAR))
    cell = Image.new("RGB", (2 * w + 8, h + CAPTION + 8), "white")
    cell.paste(Image.fromarray(thumb), (0, CAPTION))
    cell.paste(Image.fromarray(heat), (w + 4, CAPTION))
    caption = f"{number}. {frame.path.name}  {frame.score:.3f}  {', '.join(frame.classes)}"
    ImageDraw.Draw(cell).text((2, 2), caption, fill=(0, 0, 0))
    return np.asarray(cell)
