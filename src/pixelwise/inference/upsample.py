"""Logits at the size the network saw → class ids at the image's own size, in memory bounded by the
model and a band of rows, not by the image: all classes' logits upsampled to a large image's full size
would need ``classes x height x width`` floats at once (5.9 GB for 23 classes at 8000x8000)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..evaluation.metrics import class_ids

BAND_BYTES = 256 << 20  # upsampled logits held at once; below this the whole image goes in one call


def upsampled_ids(logits: torch.Tensor, shape: tuple[int, int], max_bytes: int = BAND_BYTES) -> np.ndarray:
    """(H, W) uint8 class ids of (n_classes, h, w) logits upsampled bilinearly (half-pixel centres, as
    ``F.interpolate(..., align_corners=False)``) to ``shape``, then arg-maxed.

    Where the upsampled logits would take more than ``max_bytes``, they are made a band of rows at a
    time and dropped once the band's ids are kept: each band's rows are blended from their two source
    rows, then widened by ``F.interpolate`` alone. The logits equal the whole-image call's to float
    rounding (the sums run in another order), so an id can differ only where two classes tie to that
    precision.

    Args:
        logits: (n_classes, h, w) float logits.
        shape: (H, W), the size of the ids wanted.
        max_bytes: the most memory the upsampled logits of one call may take.

    Returns:
        (H, W) uint8 class ids.

    Raises:
        ValueError: ``max_bytes`` too small for one row of the upsampled logits.
    """
    n, h, w = logits.shape
    height, width = shape
    if (h, w) == (height, width):
        return class_ids(logits, 0).to(torch.uint8).cpu().numpy()
    if n * height * width * 4 <= max_bytes:
        return _ids(_interpolate(logits, shape))
    row_bytes = n * width * 4
    rows = max_bytes // row_bytes
    if rows < 1:
        raise ValueError(f"max_bytes must allow one row of upsampled logits ({row_bytes} bytes), not {max_bytes}")
    top, bottom, weight = (t.to(logits.device) for t in source_rows(h, height))
    ids = np.empty(shape, dtype=np.uint8)
    for start in range(0, height, rows):
        band = slice(start, min(height, start + rows))
        # Rows first, at the network's width (cheap), then the band widened: an interpolation whose
        # height does not change keeps each row as it is.
        blended = torch.lerp(logits.index_select(1, top[band]), logits.index_select(1, bottom[band]),
                             weight[band, None])
        ids[band] = _ids(_interpolate(blended, (blended.shape[1], width)))
    return ids


def source_rows(size: int, out_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For each of ``out_size`` output rows, the two source rows it blends and the weight of the second,
    as bilinear interpolation with half-pixel centres computes them (the coordinate clamped at 0, the
    last row repeated at the far edge)."""
    scale = size / out_size
    coordinate = np.maximum((np.arange(out_size, dtype=np.float64) + 0.5) * scale - 0.5, 0)
    top = np.minimum(np.floor(coordinate).astype(np.int64), size - 1)
    bottom = np.minimum(top + 1, size - 1)
    weight = (coordinate - top).clip(0, 1).astype(np.float32)
    return torch.from_numpy(top), torch.from_numpy(bottom), torch.from_numpy(weight)


def _ids(logits: torch.Tensor) -> np.ndarray:
    return class_ids(logits, 0).to(torch.uint8).cpu().numpy()


def _interpolate(logits: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    # A fresh (1, C, h, w) channels-last copy: a view of one image of a channels-last batch, batch stride
    # C, sends interpolate down a generic path about 9x slower on CPU (torch 2.13).
    one = logits[None].clone(memory_format=torch.channels_last)
    return F.interpolate(one, size=shape, mode="bilinear", align_corners=False)[0]
