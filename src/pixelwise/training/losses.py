"""Training objectives: cross-entropy (optionally class-weighted) and soft Dice, over labelled pixels.

CARLA's pixels are 75% road and sky; plain cross-entropy lets Pedestrian (0.05%) or TrafficSign
(0.01%) vanish while the loss looks fine. Inverse-frequency weights and Dice (which scores each class
on its own, whatever its size) give rare classes a voice.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..config import LOSSES, RunConfig
from ..data.transforms import IGNORE_INDEX


def class_weights(counts: np.ndarray, max_ratio: float = 50.0) -> torch.Tensor:
    """Weights ∝ 1/sqrt(class frequency) from the training masks' pixel counts, scaled so that the
    average pixel weighs 1 (the loss keeps plain cross-entropy's scale, and so its learning rate).

    The square root and the cap (largest/smallest ≤ ``max_ratio``) keep a class seen in a handful of
    pixels from dominating. Classes absent from the training data weigh 0: nothing to learn from."""
    counts = np.asarray(counts, dtype=np.float64)
    weights = np.zeros_like(counts)
    present = counts > 0
    if not present.any():
        return torch.ones(len(counts))
    weights[present] = 1.0 / np.sqrt(counts[present] / counts.sum())
    smallest = weights[present].min()
    weights[present] = np.minimum(weights[present], smallest * max_ratio)
    weights /= (weights * counts).sum() / counts.sum()
    return torch.tensor(weights, dtype=torch.float32)


def _log_probs(logits: torch.Tensor, target: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """[pixels, classes] log-probabilities, each pixel's class (0 where unlabelled), whether it is
    labelled, and its log-probability of its own class: what cross-entropy and Dice are both made of.
    The matrix is a view of the network's channels-last logits, so every op runs along contiguous rows;
    on the [N, C, H, W] tensor, broadcasting a mask across classes and scattering a one-hot fall onto
    strided slow paths (docs/benchmarks.md, "Where a `default` epoch goes")."""
    rows = logits.float().permute(0, 2, 3, 1).reshape(-1, logits.shape[1])
    target = target.reshape(-1)
    labelled = target != IGNORE_INDEX
    target = target.clamp(min=0)
    log_probs = torch.log_softmax(rows, dim=1)
    return log_probs, target, labelled, log_probs.gather(1, target.unsqueeze(1)).squeeze(1)


def _dice(log_probs: torch.Tensor, target: torch.Tensor, labelled: torch.Tensor, true_log_prob: torch.Tensor
          ) -> torch.Tensor:
    """1 - mean soft Dice over the classes present in the labelled pixels, from [pixels, classes]
    log-probabilities: a class's overlap is the sum of its own pixels' probabilities of it, so no
    one-hot tensor is built."""
    n_classes = log_probs.shape[1]
    truth = torch.bincount(target[labelled], minlength=n_classes).to(log_probs.dtype)
    present = truth > 0  # so no smoothing term is needed: each denominator is at least 1 pixel
    if not present.any():
        return log_probs.sum() * 0.0  # nothing labelled: no gradient, but still part of the graph
    overlap = torch.zeros(n_classes, dtype=log_probs.dtype, device=log_probs.device).index_add(
        0, target, true_log_prob.exp() * labelled)
    predicted = (log_probs.exp() * labelled.unsqueeze(1)).sum(0)
    return 1.0 - (2 * overlap[present] / (truth[present] + predicted[present])).mean()


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - mean soft Dice over the classes present in this batch's labelled pixels."""
    return _dice(*_log_probs(logits, target))


@dataclass(frozen=True)
class Criterion:
    """The objective of a run: ``loss`` is ``"ce"`` or ``"ce+dice"``, ``weights`` per class or None,
    ``label_smoothing`` the share of each pixel's target spread over all classes (as in
    ``torch.nn.functional.cross_entropy``)."""

    loss: str = "ce"
    weights: torch.Tensor | None = None
    label_smoothing: float = 0.0

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {', '.join(LOSSES)}, not {self.loss!r}")

    def __call__(self, logits: torch.Tensor, target: torch.Tensor, pixels: float) -> torch.Tensor:
        """The objective to minimise, and the loss history.csv logs for training and validation alike.

        ``pixels`` normalises the (weighted) cross-entropy sum: under DDP it is the global batch's pixel
        count divided by the number of processes, so DDP's gradient mean is the mean over the global batch.
        It counts unlabelled pixels too (a fixed normaliser keeps DDP exact); Dice is a mean over this
        process's classes, so with several processes it is averaged per rank, not over the global batch.
        Cross-entropy and Dice share one log-softmax."""
        log_probs, target, labelled, true_log_prob = _log_probs(logits, target)
        per_pixel = -true_log_prob * labelled
        weights = None if self.weights is None else self.weights.to(logits.device)
        objective = per_pixel if weights is None else per_pixel * weights[target]
        if self.label_smoothing:
            spread = -(log_probs if weights is None else log_probs * weights).mean(1) * labelled
            objective = (1 - self.label_smoothing) * objective + self.label_smoothing * spread
        objective = objective.sum() * (1.0 / pixels)
        if self.loss == "ce+dice":
            objective = objective + _dice(log_probs, target, labelled, true_log_prob)
        return objective


def pixel_counts(masks: np.ndarray, index: np.ndarray, n_classes: int, chunk: int = 64) -> np.ndarray:
    """Pixels per class over the masks at ``index``, read a chunk at a time (masks may be memory-mapped)."""
    counts = np.zeros(n_classes, dtype=np.int64)
    for start in range(0, len(index), chunk):
        counts += np.bincount(masks[np.sort(index[start:start + chunk])].ravel(), minlength=n_classes)[:n_classes]
    return counts


def make_criterion(config: RunConfig, masks: np.ndarray, train_idx: np.ndarray) -> Criterion:
    """The run's objective; class weights come from the training masks (never the validation ones)."""
    smoothing = config.train.label_smoothing
    if config.train.class_weights == "none":
        return Criterion(config.train.loss, label_smoothing=smoothing)
    counts = pixel_counts(masks, train_idx, config.model.n_classes)
    if config.train.ignore_index is not None and config.train.ignore_index < len(counts):
        counts[config.train.ignore_index] = 0
    return Criterion(config.train.loss, class_weights(counts), smoothing)
