"""``suggest``: which unlabelled frames a label would help most, so that labelling time goes where the
run is weakest.

Each frame is predicted once, at the size the run was trained on, in batches. A pixel's uncertainty is
one minus the margin between its two most probable classes (0 where the model is sure, 1 where two
classes tie); it is shared between those two classes. A frame's score is the mean over its pixels of
that uncertainty, each share weighted by how badly the run does on the class: ``1 - IoU`` from the
run's own ``evaluation/report.json`` when ``evaluate`` wrote one, else ``1 - `` the class's mean
confidence over the frames given (the run's own estimate of where it is weak). Classes the run never
predicts get the highest weight. The weights are scaled so that the largest is 1.

The picks are then spread over the drives (runs of consecutive frames,
:func:`~pixelwise.data.split.frame_runs`) in proportion to each drive's frames, as a random sample
spreads them on average: each pick goes to the drive furthest below its share so far (ties to the drive
whose best remaining frame scores highest) and takes that drive's best frame, never an immediate
neighbour of a frame already taken (neighbouring frames are near duplicates). The uncertainty thus
chooses the frames within each drive; it does not crowd the picks into the drives the run finds
hardest, which left the classes of the others short.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..data.decode import read_image
from ..data.problems import DataError, Problem
from ..data.split import frame_runs
from ..evaluation.report import REPORT_FILE
from ..rundir import EVALUATION_DIR
from .inputs import list_inputs
from .predictor import Predictor

TOP_CLASSES = 3  # classes named per frame: those its weighted uncertainty comes from most


@dataclass(frozen=True)
class FrameScore:
    """One frame's expected value as a label.

    Attributes:
        path: the image file.
        score: the mean class-weighted uncertainty of its pixels (0 to 1).
        classes: the names of the classes most of that uncertainty falls on, most first.
    """

    path: Path
    score: float
    classes: tuple[str, ...]


@dataclass
class Suggestion:
    """What :func:`suggest` found.

    Attributes:
        picks: the frames to label next, in the order they were picked.
        ranked: every frame read, best score first.
        weights: each class's weight (by class id), the largest 1.
        weights_from: where the weights came from: the report file, or the frames' confidence.
        problems: inputs that could not be read (the others were still scored).
    """

    picks: list[FrameScore] = field(default_factory=list)
    ranked: list[FrameScore] = field(default_factory=list)
    weights: np.ndarray = field(default_factory=lambda: np.zeros(0))
    weights_from: str = ""
    problems: list[Problem] = field(default_factory=list)


def uncertainty(probabilities: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per pixel of (N, C, H, W) class probabilities: ``(1 - margin, most probable class, second class)``,
    each (N, H, W); the margin is the gap between the two largest probabilities."""
    top = probabilities.topk(2, dim=1)
    return 1 - (top.values[:, 0] - top.values[:, 1]), top.indices[:, 0], top.indices[:, 1]


def weighted_uncertainty(probabilities: torch.Tensor, weights: np.ndarray) -> np.ndarray:
    """(N, H, W) float32 maps of each pixel's uncertainty, half weighted by its most probable class's weight
    and half by the second's: what a frame's score is the mean of."""
    unsure, first, second = uncertainty(probabilities)
    w = torch.as_tensor(weights, dtype=unsure.dtype)
    return (unsure / 2 * (w[first] + w[second])).numpy()


@dataclass
class _Tally:
    """What the frames' pixels add up to, per frame and class, before the weights are known."""

    n_classes: int
    mass: list[np.ndarray] = field(default_factory=list)  # per frame: (C,) uncertainty share per class / pixels
    confidence_sum: np.ndarray = field(init=False)  # per class: summed top probability where it is the top class
    pixel_count: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.confidence_sum = np.zeros(self.n_classes)
        self.pixel_count = np.zeros(self.n_classes)

    def add(self, probabilities: torch.Tensor) -> None:
        """Add a batch of (N, C, H, W) probabilities."""
        unsure, first, second = uncertainty(probabilities)
        n, c = probabilities.shape[:2]
        pixels = unsure[0].numel()
        for i in range(n):
            half = (unsure[i] / 2).flatten()
            mass = torch.bincount(first[i].flatten(), half, c) + torch.bincount(second[i].flatten(), half, c)
            self.mass.append((mass / pixels).double().numpy())
        top = probabilities.max(dim=1)
        self.confidence_sum += torch.bincount(top.indices.flatten(), top.values.flatten(), c).double().numpy()
        self.pixel_count += torch.bincount(top.indices.flatten(), minlength=c).double().numpy()

    def confidence_weights(self) -> np.ndarray:
        """``1 - mean confidence`` of each class where the run predicts it; the top weight where it never does."""
        predicted = self.pixel_count > 0
        weights = np.ones(self.n_classes)
        weights[predicted] = 1 - self.confidence_sum[predicted] / self.pixel_count[predicted]
        weights[~predicted] = weights[predicted].max() if predicted.any() else 1.0
        return weights


def report_weights(run_dir: Path, n_classes: int) -> np.ndarray | None:
    """``1 - IoU`` per class from the run's ``evaluation/report.json`` (classes it does not score get the
    largest weight), or None where there is no such report.

    Raises:
        DataError: the report exists but cannot be read.
    """
    path = run_dir / EVALUATION_DIR / REPORT_FILE
    if not path.is_file():
        return None
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))["per_class"]
        scored = {int(row["id"]): float(row["iou"]) for row in rows if row.get("iou") is not None}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError([Problem(path, f"cannot read the evaluation report ({exc})")]) from None
    scored = {i: iou for i, iou in scored.items() if 0 <= i < n_classes}
    if not scored:
        return None
    weights = np.full(n_classes, max(1 - iou for iou in scored.values()))
    for i, iou in scored.items():
        weights[i] = 1 - iou
    return weights


def spread(names: list[str], scores: np.ndarray, count: int) -> list[int]:
    """Indices of ``count`` frames (fewer if there are not enough), spread over runs of consecutive frames
    in proportion to their sizes: each pick goes to the run furthest below ``count * run size / frames``
    (ties to the run whose best remaining frame scores highest) and is that run's best remaining frame;
    an immediate neighbour of a pick is never picked.

    Args:
        names: the frames' names (file stems), which :func:`~pixelwise.data.split.frame_runs` groups.
        scores: each frame's score.
        count: how many to pick.

    Returns:
        The picked indices in pick order.
    """
    groups = frame_runs(names)
    neighbours = {i: set(run[max(place - 1, 0):place + 2]) for run in groups for place, i in enumerate(run)}
    runs = [sorted(run, key=lambda i: (-float(scores[i]), i)) for run in groups]  # best first
    # Shares in units of 1/len(names), so that how far a run is below its share is an exact integer and
    # equal shortfalls tie exactly, leaving the choice to the scores rather than to float rounding.
    share = [count * len(run) for run in runs]
    taken = [0] * len(runs)
    blocked: set[int] = set()
    picks: list[int] = []
    while len(picks) < count:
        open_runs = []  # (how far below its share, its best open frame's score, run, that frame)
        for r, run in enumerate(runs):
            best = next((i for i in run if i not in blocked), None)
            if best is not None:
                open_runs.append((share[r] - taken[r] * len(names), float(scores[best]), r, best))
        if not open_runs:
            break
        *_, r, best = max(open_runs)
        picks.append(best)
        taken[r] += 1
        blocked |= neighbours[best]
    return picks


def suggest(predictor: Predictor, inputs: Iterable[str | Path], count: int, *, lists: Iterable[str | Path] = (),
            batch_size: int = 8, on_start: Callable[[int], None] | None = None,
            on_frame: Callable[[], None] | None = None) -> Suggestion:
    """Rank unlabelled frames by how much a label is expected to help the run, and pick ``count`` of them.

    Args:
        predictor: the run, loaded.
        inputs: image files, folders of images and glob patterns (as ``predict`` takes them).
        count: how many frames to pick.
        lists: text files of image paths, one a line, relative to the list file.
        batch_size: frames predicted together.
        on_start: called once with the number of inputs listed.
        on_frame: called after each input is read (for a progress bar).

    Returns:
        The :class:`Suggestion`.

    Raises:
        ValueError: ``count`` or ``batch_size`` below 1.
        DataError: no frame could be read, or a list file cannot be read.
    """
    if count < 1:
        raise ValueError(f"count (frames to pick) must be at least 1, not {count}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, not {batch_size}")
    listing = list_inputs(inputs, lists)
    problems = list(listing.problems)
    if on_start is not None:
        on_start(len(listing))
    tally = _Tally(len(predictor.classes))
    paths: list[Path] = []
    batch: list[np.ndarray] = []
    for position in range(len(listing)):
        path = listing.path(position)
        try:
            image = read_image(path)
        except DataError as exc:
            problems.extend(exc.problems)
            continue
        paths.append(path)
        batch.append(predictor.resized(image, predictor.seen_size(image, None)))
        if len(batch) == batch_size:
            tally.add(_probabilities(predictor, batch))
            batch = []
        if on_frame is not None:
            on_frame()
    if batch:
        tally.add(_probabilities(predictor, batch))
    if not paths:
        raise DataError(problems or [Problem(Path("."), "no images given")])
    return _ranked(predictor, tally, paths, count, problems)


def _probabilities(predictor: Predictor, frames: list[np.ndarray]) -> torch.Tensor:
    return predictor.batch_logits(np.stack(frames)).softmax(dim=1)


def _ranked(predictor: Predictor, tally: _Tally, paths: list[Path], count: int, problems: list[Problem]) -> Suggestion:
    weights = report_weights(predictor.run_dir, tally.n_classes)
    source = f"{EVALUATION_DIR}/{REPORT_FILE} (1 - IoU per class)"
    if weights is None:
        weights, source = tally.confidence_weights(), "the frames' own confidence (1 - mean confidence per class)"
    weights = weights / weights.max() if weights.max() > 0 else np.ones_like(weights)
    weighted = np.stack(tally.mass) * weights
    names = [p.stem for p in paths]
    scores = weighted.sum(axis=1)
    frames = [FrameScore(path, float(scores[i]), tuple(predictor.classes.names[c] for c in
                                                       np.argsort(-weighted[i])[:TOP_CLASSES] if weighted[i, c] > 0))
              for i, path in enumerate(paths)]
    order = np.argsort(-scores, kind="stable")
    return Suggestion(picks=[frames[i] for i in spread(names, scores, count)], ranked=[frames[i] for i in order],
                      weights=weights, weights_from=source, problems=problems)
