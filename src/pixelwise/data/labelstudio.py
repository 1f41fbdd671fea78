"""Label Studio's JSON export read as a dataset, and predictions written back as its pre-labels.

An export is a list of tasks. Each names its image (``data.image``, as Label Studio stores it: an
upload path such as ``/data/upload/3/1a2b3c4d-frame.png``, a local-storage URL ``/data/local-files/?d=
dir/frame.png``, or a cloud URL) and holds annotations whose results are brush strokes (``brushlabels``,
in Label Studio's bit-packed RLE of an RGBA canvas) or polygons (``polygonlabels``, points in percent
of the image's width and height). A task's mask is its results drawn in order, a later result over an
earlier one (as Label Studio draws them); pixels no result covers are the first class, ``background``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

import numpy as np
from matplotlib.path import Path as MplPath

from ..classes import ClassSet
from .problems import Problem

BACKGROUND = "background"  # the class of pixels that no stroke or polygon covers
UPLOAD_PREFIX = re.compile(r"^[0-9a-f]{8}-")  # what Label Studio puts before an uploaded file's own name
RUN_BITS = (3, 4, 8, 16)  # the run-length field widths this module writes (Label Studio's own choice)


# --- the brush RLE --------------------------------------------------------------------------------

class _Bits:
    """Reads big-endian bit fields from bytes, one after another."""

    def __init__(self, data: bytes) -> None:
        self.data, self.position = data + bytes(8), 0  # padding: a field may reach past the last byte

    def read(self, width: int) -> int:
        start, offset = divmod(self.position, 8)
        chunk = int.from_bytes(self.data[start : start + 8], "big")
        self.position += width
        return (chunk >> (64 - offset - width)) & ((1 << width) - 1)


def decode_rle(rle: Iterable[int]) -> np.ndarray:
    """The flat uint8 values of Label Studio's brush RLE (an RGBA canvas: 4 values a pixel).

    The stream: 32 bits = the number of values, 5 bits = word size - 1, four 4-bit run-length field
    widths - 1; then runs, each 1 bit (1 = one word repeated, 0 = literal words), 2 bits choosing a
    width and that many bits = run length - 1, then the word(s).

    Raises:
        ValueError: values outside 0-255, or a stream that ends before its runs do.
    """
    raw = np.asarray(list(rle), dtype=np.int64)
    if raw.size < 7 or raw.min() < 0 or raw.max() > 255:
        raise ValueError("brush RLE must be a list of byte values (0-255) with its 7-byte header")
    bits = _Bits(raw.astype(np.uint8).tobytes())
    total, word = bits.read(32), bits.read(5) + 1
    widths = [bits.read(4) + 1 for _ in range(4)]
    end_bits = raw.size * 8
    out = np.zeros(total, dtype=np.uint8)
    i = 0
    while i < total:
        repeated = bits.read(1)
        j = min(total, i + 1 + bits.read(widths[bits.read(2)]))
        if repeated:
            out[i:j] = bits.read(word)
        else:
            out[i:j] = [bits.read(word) for _ in range(j - i)]
        if bits.position > end_bits:
            raise ValueError(f"brush RLE ends after {i} of its {total} values")
        i = j
    return out


def encode_rle(values: np.ndarray) -> list[int]:
    """Label Studio's brush RLE of flat uint8 ``values`` (every run written as one repeated word)."""
    values = np.asarray(values, dtype=np.uint8).ravel()
    starts = np.flatnonzero(np.r_[True, values[1:] != values[:-1]]) if values.size else np.array([], int)
    lengths = np.diff(np.r_[starts, values.size])
    # Runs longer than the widest field are cut into pieces of at most 2**16.
    pieces = -(-lengths // (1 << RUN_BITS[-1]))
    run_values = np.repeat(values[starts], pieces)
    run_lengths = np.full(int(pieces.sum()), 1 << RUN_BITS[-1])
    last = np.cumsum(pieces) - 1
    run_lengths[last] = lengths - (pieces - 1) * (1 << RUN_BITS[-1])
    choice = np.searchsorted(np.array([1 << b for b in RUN_BITS]), run_lengths)
    header = [(values.size, 32), (8 - 1, 5)] + [(b - 1, 4) for b in RUN_BITS]
    fields = np.array([v for v, _ in header] + list(np.column_stack(
        [np.ones_like(choice), choice, run_lengths - 1, run_values]).ravel()), dtype=np.int64)
    widths = np.array([w for _, w in header] + list(np.column_stack(
        [np.ones_like(choice), np.full_like(choice, 2), np.array(RUN_BITS)[choice], np.full_like(choice, 8)]).ravel()),
        dtype=np.int64)
    return _pack(fields, widths)


def _pack(fields: np.ndarray, widths: np.ndarray) -> list[int]:
    """The bytes of ``fields`` written big-endian in ``widths`` bits each, zero-padded to a whole byte."""
    offsets = np.repeat(np.cumsum(widths) - widths, widths)
    shifts = np.repeat(widths, widths) - 1 - (np.arange(int(widths.sum())) - offsets)
    bits = (np.repeat(fields, widths) >> shifts) & 1
    return np.packbits(bits.astype(np.uint8)).tolist()


def mask_rle(mask: np.ndarray) -> list[int]:
    """The brush RLE of a boolean (H, W) mask: an RGBA canvas, 255 where the mask is set."""
    return encode_rle(np.repeat(np.asarray(mask, dtype=bool).ravel() * np.uint8(255), 4))


# --- reading an export ----------------------------------------------------------------------------

@dataclass
class Task:
    """One annotated image of an export: where Label Studio said it was, and its mask as ids."""

    number: int  # the task's place in the export, from 1 (for messages)
    image: str  # data.image as the export has it
    ids: np.ndarray | None = None
    problems: list[Problem] = field(default_factory=list)
    overlaps: int = 0  # pixels a later result of another class painted over


def image_name(reference: str) -> str:
    """The file name of a task's image from what Label Studio stored: the last part of an upload path
    or URL, the ``d`` parameter of a local-storage URL, percent-escapes undone."""
    parsed = urlparse(reference)
    local = parse_qs(parsed.query).get("d")
    path = local[0] if local else unquote(parsed.path)
    return Path(path).name


def find_image(reference: str, images: Path, by_name: dict[str, Path]) -> Path | None:
    """The image file in ``images`` that a task names: by its name, or its name without the upload prefix."""
    name = image_name(reference)
    return by_name.get(name) or by_name.get(UPLOAD_PREFIX.sub("", name))


def export_tasks(path: Path) -> list[dict]:
    """The tasks of a Label Studio JSON export; ValueError naming the file if it is not one."""
    try:
        tasks = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"{path}: cannot read the Label Studio export ({exc.strerror or exc})") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not a Label Studio JSON export ({exc})") from None
    if isinstance(tasks, dict):
        tasks = [tasks]
    if not isinstance(tasks, list) or not all(isinstance(t, dict) and isinstance(t.get("data"), dict) for t in tasks):
        raise ValueError(f"{path}: not a Label Studio JSON export (expected a list of tasks, each with 'data')")
    return tasks


def task_image(task: dict) -> str | None:
    """The image reference of a task: ``data.image``, or its one string value that names a file."""
    data = task["data"]
    if isinstance(data.get("image"), str):
        return data["image"]
    strings = [v for v in data.values() if isinstance(v, str) and Path(image_name(v)).suffix]
    return strings[0] if len(strings) == 1 else None


def labels_in(tasks: list[dict]) -> list[str]:
    """Every label name that the tasks' brush and polygon results use, sorted."""
    names = set()
    for task in tasks:
        for result in _results(task):
            names.update(_labels(result))
    return sorted(names)


def export_classes(tasks: list[dict]) -> ClassSet:
    """``background`` and then the export's labels in name order (colours from the default palette)."""
    return ClassSet.from_names([BACKGROUND] + [n for n in labels_in(tasks) if n != BACKGROUND])


def _results(task: dict) -> list[dict]:
    """The results of the task's last annotation that was not cancelled (Label Studio's latest)."""
    annotations = [a for a in task.get("annotations") or [] if isinstance(a, dict) and not a.get("was_cancelled")]
    results = annotations[-1].get("result") if annotations else []
    return [r for r in results or [] if isinstance(r, dict) and r.get("type") in ("brushlabels", "polygonlabels")]


def _labels(result: dict) -> list[str]:
    value = result.get("value") or {}
    return [str(n) for n in value.get(result["type"]) or []]


def task_mask(task: dict, number: int, source: Path, classes: ClassSet) -> Task:
    """A task's ids: its results drawn in order onto ``background``; problems name the export and task."""
    out = Task(number, task_image(task) or "")
    where = Path(f"{source} (task {number}{', ' + image_name(out.image) if out.image else ''})")
    results = _results(task)
    if not results:
        out.problems.append(Problem(where, "has no brush or polygon labels"))
        return out
    sizes = {(r.get("original_height"), r.get("original_width")) for r in results}
    if len(sizes) != 1 or not all(isinstance(s, int) and s > 0 for s in next(iter(sizes))):
        out.problems.append(Problem(where, f"results disagree on the image size or lack it: {sorted(map(str, sizes))}"))
        return out
    height, width = next(iter(sizes))
    ids = np.zeros((height, width), dtype=np.uint8)
    painted = np.zeros((height, width), dtype=bool)
    for result in results:
        names = _labels(result)
        unknown = [n for n in names if n not in classes.names]
        if unknown or len(names) != 1:
            what = f"label {unknown[0]!r}, which the classes lack" if unknown else f"{len(names)} labels on one result"
            out.problems.append(Problem(where, f"has {what} ({', '.join(classes.names)})"))
            continue
        try:
            area = _area(result, height, width)
        except ValueError as exc:
            out.problems.append(Problem(where, str(exc)))
            continue
        class_id = classes.index(names[0])
        out.overlaps += int((area & painted & (ids != class_id)).sum())
        ids[area], painted[area] = class_id, True
    out.ids = None if out.problems else ids
    return out


def _area(result: dict, height: int, width: int) -> np.ndarray:
    """The (H, W) boolean pixels a brush or polygon result covers."""
    value = result["value"]
    if result["type"] == "brushlabels":
        if value.get("format", "rle") != "rle" or not isinstance(value.get("rle"), list):
            raise ValueError("a brush result without its RLE")
        flat = decode_rle(value["rle"])
        if flat.size != height * width * 4:
            raise ValueError(f"a brush RLE of {flat.size} values for a {height}x{width} image (needs {height * width * 4})")
        return flat.reshape(height, width, 4)[:, :, 3] >= 128  # the alpha channel; a half-covered pixel is in
    points = value.get("points")
    if not isinstance(points, list) or len(points) < 3:
        raise ValueError("a polygon with fewer than 3 points")
    corners = np.array([(float(x) * width / 100, float(y) * height / 100) for x, y in points])
    area = np.zeros((height, width), dtype=bool)
    # A pixel is in where its centre is: tested on the pixels of the polygon's bounding box only.
    left, top = np.clip(np.floor(corners.min(0)).astype(int), 0, None)
    right, bottom = np.minimum(np.ceil(corners.max(0)).astype(int), (width, height))
    if right <= left or bottom <= top:
        return area
    ys, xs = np.mgrid[top:bottom, left:right]
    inside = MplPath(corners).contains_points(np.column_stack([xs.ravel() + 0.5, ys.ravel() + 0.5]))
    area[top:bottom, left:right] = inside.reshape(ys.shape)
    return area


# --- pre-labels -----------------------------------------------------------------------------------

def prelabel_task(image: str, ids: np.ndarray, classes: ClassSet, *, model_version: str, score: float,
                  from_name: str = "tag", to_name: str = "image") -> dict:
    """A Label Studio task holding ``ids`` as pre-labels: one brush result per class present.

    Args:
        image: what the task's ``data.image`` is (a path or URL that Label Studio can open).
        ids: (H, W) class ids predicted for the image.
        classes: the run's classes (the names Label Studio's brush labels must use).
        model_version: shown in Label Studio beside the predictions.
        score: the prediction's score (mean confidence, 0-1).
        from_name, to_name: the names of the labelling config's BrushLabels and Image tags (Label
            Studio's brush template calls them ``tag`` and ``image``).

    Returns:
        The task as a dict, ready for ``json.dump`` in a list that Label Studio imports.
    """
    height, width = ids.shape
    results = [{"from_name": from_name, "to_name": to_name, "type": "brushlabels", "original_width": width,
                "original_height": height, "image_rotation": 0,
                "value": {"format": "rle", "rle": mask_rle(ids == c), "brushlabels": [classes.names[c]]}}
               for c in np.unique(ids).tolist() if classes.names[c] != BACKGROUND]
    return {"data": {"image": image},
            "predictions": [{"model_version": model_version, "score": float(score), "result": results}]}
