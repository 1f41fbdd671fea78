"""The training loop: decode once, split by drive, train with the run's recipe, validate, checkpoint.

A run directory holds everything: ``config.json``, ``last``/``best`` checkpoints, ``history.csv``
and ``curves.png``. ``last`` is written after every epoch and when training is asked to stop
(Ctrl-C, SIGTERM), and holds everything needed to continue exactly: ``resume=True`` picks up at the
step where the run stopped. Under ``torchrun`` the same loop runs data-parallel (see distributed.py).
"""

from __future__ import annotations

import numpy as np
import torch


def to_batch(images: np.ndarray, masks: np.ndarray | None, index: np.ndarray, device: torch.device,
             ignore_index: int | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """uint8 NHWC arrays (in memory or memory-mapped) → float NCHW in [0, 1], channels-last in memory,
    and class ids with the run's ignored class marked IGNORE_INDEX. Only the batch is read, so a
    dataset larger than RAM trains in bounded memory."""
    x = torch.from_numpy(images[index]).to(device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255)
    if masks is None:
        return x, None
    y = torch.from_numpy(masks[index]).to(device, non_blocking=True).long()
    if ignore_index is not None:
        y[y == ignore_index] = IGNORE_INDEX
    return x, y


IGNORE_INDEX = -100  # pixels without a label: augmentation's padding and the run's ignored class
