"""A fixed handful of validation frames as input | truth | prediction, one frame a row: the image
TensorBoard shows at each validation, so a user watches small classes appear."""

from __future__ import annotations

import numpy as np
import torch

from ...classes import ClassSet
from ...inference.outputs import colorize
from ...model.unet import center_crop

FRAMES = 4  # validation frames shown
FRAME_WIDTH = 320  # each panel at most this wide: a 480x640 frame is shown at half size


def pick_frames(val_idx: np.ndarray, count: int = FRAMES) -> np.ndarray:
    """``count`` validation frames spread evenly over ``val_idx`` (all when there are fewer), the same
    at every validation and in a resumed run."""
    if len(val_idx) <= count:
        return np.asarray(val_idx)
    return np.asarray(val_idx)[np.linspace(0, len(val_idx) - 1, count).round().astype(np.int64)]


def frames_image(images: np.ndarray, masks: np.ndarray, predicted: dict[int, np.ndarray],
                 classes: ClassSet) -> np.ndarray:
    """Input | truth | prediction of the frames ``predicted`` holds, one frame a row.

    Args:
        images, masks: the run's decoded uint8 arrays (N, H, W, 3) and (N, H, W).
        predicted: frame index → its (H', W') predicted class ids, as validation predicted them (an
            unpadded network predicts the centre of its input, so H', W' may be smaller).
        classes: the colours of the classes; pixels of no class (an ignored 255) are black.

    Returns:
        one (rows x H', 3 W', 3) uint8 image, panels subsampled to at most ``FRAME_WIDTH`` wide.
    """
    rows = []
    for index, ids in sorted(predicted.items()):
        size = ids.shape
        image = center_crop(torch.from_numpy(np.asarray(images[index])).permute(2, 0, 1), size).permute(1, 2, 0)
        truth = center_crop(torch.from_numpy(np.asarray(masks[index])), size).numpy()
        every = max(1, -(-size[1] // FRAME_WIDTH))
        rows.append(np.concatenate([panel[::every, ::every] for panel in
                                    (image.numpy(), colorize(truth, classes), colorize(ids, classes))], axis=1))
    return np.ascontiguousarray(np.concatenate(rows, axis=0))
