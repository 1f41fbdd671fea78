"""THE preprocessing contract, written once: what training, validation, prediction, export and the
ONNX engine all feed the network, and how unlabelled pixels are marked.

Images are stored as uint8 (N, H, W, 3) and become float (N, 3, H, W) in [0, 1] only at batch
time (4x less memory and disk than float); the permuted view keeps channels-last strides, the
layout oneDNN convolutions run fastest in. Masks are uint8 class ids; a run's ignored class and
augmentation's padding become IGNORE_INDEX, which no loss or score counts.
"""

from __future__ import annotations

import numpy as np
import torch

IGNORE_INDEX = -100  # pixels without a label: augmentation's padding and the run's ignored class


def to_input(images: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 (N, H, W, 3) → float (N, 3, H, W) in [0, 1] on ``device``, channels-last in memory."""
    return torch.from_numpy(np.ascontiguousarray(images)).to(device, non_blocking=True) \
        .permute(0, 3, 1, 2).float().div_(255)


def to_target(masks: np.ndarray, device: torch.device | str = "cpu", ignore_index: int | None = None) -> torch.Tensor:
    """uint8 class ids → int64, with the run's ignored class marked IGNORE_INDEX."""
    y = torch.from_numpy(np.ascontiguousarray(masks)).to(device, non_blocking=True).long()
    if ignore_index is not None:
        y[y == ignore_index] = IGNORE_INDEX
    return y


def to_batch(images: np.ndarray, masks: np.ndarray | None, index: np.ndarray, device: torch.device,
             ignore_index: int | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The pairs at ``index`` of uint8 arrays (in memory or memory-mapped) as network input and
    targets. Only the batch is read, so a dataset larger than RAM trains in bounded memory."""
    x = to_input(images[index], device)
    return x, None if masks is None else to_target(masks[index], device, ignore_index)
