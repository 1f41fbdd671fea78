"""Confusion matrix → pixel accuracy, IoU and Dice per class, and their means.

Everything derives from one (truth × prediction) count matrix, so scores add up exactly across
batches, images or processes: sum the matrices, then score once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


def class_ids(logits: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """The predicted class of every pixel: the index of the largest logit along ``dim``. Taken from
    ``max`` rather than ``argmax`` (same result, first index on ties): on the CPU, PyTorch's argmax over the
    class axis of NCHW logits ran several times slower (docs/benchmarks.md)."""
    return logits.max(dim).indices


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, n_classes: int) -> torch.Tensor:
    """(n_classes, n_classes) int64 counts, rows = true class, columns = predicted class. Unlabelled
    pixels (a target outside 0..n_classes-1, such as the ignore index) are not counted."""
    target, pred = target.reshape(-1).long(), pred.reshape(-1).long()
    labelled = (target >= 0) & (target < n_classes)
    if not labelled.all():
        target, pred = target[labelled], pred[labelled]
    index = target * n_classes + pred
    return torch.bincount(index, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


@dataclass(frozen=True)
class Scores:
    """Per-class arrays hold NaN for a class absent from both truth and prediction."""

    pixel_accuracy: float
    iou: np.ndarray
    dice: np.ndarray
    support: np.ndarray  # true pixels per class
    predicted: np.ndarray  # predicted pixels per class

    @property
    def present(self) -> np.ndarray:
        """Classes that occur in the truth: the ones the means are taken over."""
        return self.support > 0

    @property
    def miou(self) -> float:
        return float(self.iou[self.present].mean()) if self.present.any() else float("nan")

    @property
    def mean_dice(self) -> float:
        return float(self.dice[self.present].mean()) if self.present.any() else float("nan")


def scores(cm: np.ndarray | torch.Tensor) -> Scores:
    """Score a confusion matrix. A class in the prediction but not the truth gets IoU 0 (its false
    positives are real errors) but is left out of the means, which run over classes in the truth."""
    cm = np.asarray(cm.cpu() if isinstance(cm, torch.Tensor) else cm, dtype=np.float64)
    tp = np.diag(cm)
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    union = support + predicted - tp
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
        dice = np.where(union > 0, 2 * tp / (support + predicted), np.nan)
    total = cm.sum()
    accuracy = float(tp.sum() / total) if total else float("nan")
    return Scores(accuracy, iou, dice, support.astype(np.int64), predicted.astype(np.int64))
