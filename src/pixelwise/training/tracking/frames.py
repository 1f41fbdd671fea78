"""A fixed handful of validation frames as input | truth | prediction, one frame a row: the image
TensorBoard shows at each validation, so a user watches small classes appear."""

from __future__ import annotations

import numpy as np
import torch

from ...classes import ClassSet
from ...data.transforms import to_input
from ...device import autocast
from ...evaluation.metrics import class_ids
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


@torch.no_grad()
def frames_image(model: torch.nn.Module, images: np.ndarray, masks: np.ndarray, index: np.ndarray,
                 device: torch.device, dtype: torch.dtype | None, classes: ClassSet) -> np.ndarray:
    """Input | truth | prediction of the frames at ``index``, one frame a row.

    Args:
        model: the network validated, in eval mode.
        images, masks: the run's decoded uint8 arrays (N, H, W, 3) and (N, H, W).
        index: the frames to show.
        device, dtype: where and in which precision the network runs (as validation does).
        classes: the colours of the classes; pixels of no class (an ignored 255) are black.

    Returns:
        one (rows x H', 3 W', 3) uint8 image, panels subsampled to at most ``FRAME_WIDTH`` wide.
    """
    model.eval()
    with autocast(device, dtype):
        logits = model(to_input(images[index], device))
    predicted = class_ids(logits).cpu().numpy()
    size = predicted.shape[-2:]  # an unpadded network predicts the centre of its input
    inputs = center_crop(torch.from_numpy(np.asarray(images[index])).permute(0, 3, 1, 2), size)
    truths = center_crop(torch.from_numpy(np.asarray(masks[index])), size).numpy()
    every = max(1, -(-size[1] // FRAME_WIDTH))
    rows = [np.concatenate([panel[::every, ::every] for panel in
                            (image.permute(1, 2, 0).numpy(), colorize(truth, classes), colorize(pred, classes))], axis=1)
            for image, truth, pred in zip(inputs, truths, predicted)]
    return np.ascontiguousarray(np.concatenate(rows, axis=0))
