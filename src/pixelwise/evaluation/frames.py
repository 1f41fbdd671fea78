"""Per-frame scores while an evaluation streams, and small copies of the worst frames for the report.

Only the current worst ``k`` frames keep pictures, each a thumbnail of a few hundred pixels a side, so an
evaluation of any number of frames holds ``k`` thumbnails at most: a frame's pictures are made only when
it enters the worst ``k``, and dropped when a worse one pushes it out.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field

import numpy as np

from ..data.resize import resize_image, resize_mask
from .metrics import scores

UNLABELLED = 255  # a thumbnail truth pixel that is not scored (colorize paints it black)


@dataclass(frozen=True)
class FrameScore:
    """One frame's scores: ``miou`` over the classes in its own truth (NaN where none is labelled) and
    its pixel accuracy."""

    name: str
    miou: float
    pixel_accuracy: float


@dataclass(frozen=True)
class FramePictures:
    """A frame's thumbnails at one size: the ``image`` (H, W, 3), its ``truth`` and ``prediction``
    (H, W) uint8 class ids, unlabelled truth pixels :data:`UNLABELLED`."""

    score: FrameScore
    image: np.ndarray
    truth: np.ndarray
    prediction: np.ndarray


def frame_score(name: str, confusion: np.ndarray) -> FrameScore:
    """The scores of one frame's (n_classes, n_classes) confusion matrix."""
    s = scores(confusion)
    return FrameScore(name, s.miou, s.pixel_accuracy)


def thumbnail_size(shape: tuple[int, int], max_side: int) -> tuple[int, int]:
    """(H, W) scaled so that its longer side is at most ``max_side``, never enlarged."""
    scale = min(1.0, max_side / max(shape))
    return max(1, round(shape[0] * scale)), max(1, round(shape[1] * scale))


@dataclass
class WorstFrames:
    """The ``k`` frames with the lowest mIoU seen so far, with thumbnails whose longer side is at most
    ``max_side`` pixels. Frames without a labelled pixel (NaN mIoU) are never among them; ties keep the
    frame seen first."""

    k: int = 6
    max_side: int = 256
    _heap: list = field(default_factory=list, init=False, repr=False)  # (-miou, -order, pictures): the best of the worst on top
    _seen: int = field(default=0, init=False, repr=False)

    def offer(self, score: FrameScore, image: np.ndarray, truth: np.ndarray, prediction: np.ndarray) -> None:
        """Consider one frame: ``image`` (H, W, 3) uint8, ``truth`` (H, W) ids with unlabelled pixels
        outside 0..255, ``prediction`` (H, W) ids."""
        self._seen += 1
        if self.k < 1 or math.isnan(score.miou):
            return
        key = (-score.miou, -self._seen)
        if len(self._heap) == self.k and key <= self._heap[0][:2]:
            return  # no worse than any kept frame: no thumbnail is made
        size = thumbnail_size(truth.shape, self.max_side)
        labelled = np.where((truth >= 0) & (truth < UNLABELLED), truth, UNLABELLED).astype(np.uint8)
        pictures = FramePictures(score, resize_image(image, size, "area"), resize_mask(labelled, size),
                                 resize_mask(prediction.astype(np.uint8), size))
        entry = (*key, pictures)
        if len(self._heap) < self.k:
            heapq.heappush(self._heap, entry)
        else:
            heapq.heapreplace(self._heap, entry)

    def frames(self) -> list[FramePictures]:
        """The kept frames, worst first."""
        return [entry[2] for entry in sorted(self._heap, key=lambda e: (-e[0], -e[1]))]
