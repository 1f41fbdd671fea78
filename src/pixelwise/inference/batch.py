"""Several images through the network in one forward pass: what video frames and concurrent server
requests need to keep the cores busy. The masks are those ``Predictor.predict`` gives one at a time
(same resize, padding, engine, TTA; tests compare them pixel for pixel); images that would be tiled
fall back to ``Predictor.predict``."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .predictor import Predictor


@torch.no_grad()
def predict_batch(predictor: Predictor, images: Sequence[np.ndarray], size: tuple[int, int] | str | None = None,
                  confidence: bool = False) -> list[np.ndarray] | list[tuple[np.ndarray, np.ndarray]]:
    """(H, W) uint8 class ids for each (H, W, 3) uint8 image, at its own size, in one forward pass at
    ``size`` as in ``Predictor.predict`` (default: the training size; each image is resized to it, so
    sizes may differ; ``"native"`` needs images of one size); with ``confidence``, ``(ids, confidence)``
    pairs as ``Predictor.predict`` gives them."""
    if not images:
        return []
    config = predictor.config
    if size == "native" and len({image.shape[:2] for image in images}) > 1:
        return [predictor.predict(image, size, confidence) for image in images]
    h, w = images[0].shape[:2] if size == "native" else (size or config.data.size)
    if predictor.tiled(h, w):
        return [predictor.predict(image, size, confidence) for image in images]  # tiled: one image at a time
    logits = predictor.batch_logits(np.stack([predictor.resized(image, (h, w)) for image in images]))
    return [predictor.mask(logits[i], image.shape[:2], confidence) for i, image in enumerate(images)]


def class_shares(mask: np.ndarray, n_classes: int) -> np.ndarray:
    """(n_classes,) share of the mask's pixels in each class, summing to 1."""
    counts = np.bincount(mask.ravel(), minlength=n_classes)[:n_classes]
    return counts / max(1, mask.size)
