"""Logits at the size the network saw → class ids at the image's own size, in memory bounded by the
model and a band of rows, not by the image: all classes' logits upsampled to a large image's full size
would need ``classes x height x width`` floats at once (5.9 GB for 23 classes at 8000x8000)."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
import torch.nn.functional as F


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
    return streamed_ids([(0, logits)], logits.shape[1:], shape, max_bytes)


def streamed_ids(bands: Iterable[tuple[int, torch.Tensor]], size: tuple[int, int], shape: tuple[int, int],
                 max_bytes: int = BAND_BYTES, confidence: np.ndarray | None = None) -> np.ndarray:
    """(H, W) uint8 class ids of (n_classes, h, w) logits that arrive as bands of rows, upsampled to
    ``shape`` as :func:`upsampled_ids` does: the logits need never be whole (tiled prediction hands out
    its rows as they are finished). Logits that come whole and whose upsampled size fits ``max_bytes``
    go through one ``F.interpolate``; others a band of output rows at a time, once their source rows
    have come.

    Args:
        bands: ``(first row, (n_classes, rows, w) logits)``, top to bottom, covering all ``h`` rows; a
            band need only last until the next is asked for.
        size: (h, w), the size of the logits.
        shape: (H, W), the size of the ids wanted.
        max_bytes: the most memory the upsampled logits of one call may take.
        confidence: an (H, W) uint8 array to fill with each pixel's confidence: the softmax probability
            of its class, 0-255.

    Returns:
        (H, W) uint8 class ids.

    Raises:
        ValueError: ``max_bytes`` too small for one row of the upsampled logits.
    """
    height, width = shape
    ids = np.empty(shape, dtype=np.uint8)
    if tuple(size) == tuple(shape):
        for start, rows in bands:
            _label(rows, slice(start, start + rows.shape[1]), ids, confidence)
        return ids
    top, bottom, weight = source_rows(size[0], height)
    held, held_top, done = None, 0, 0  # source rows held_top.. (those output rows still to come need)
    for start, rows in bands:
        if rows.shape[1] == size[0] and rows.shape[0] * height * width * 4 <= max_bytes:
            _label(_interpolate(rows, shape), slice(0, height), ids, confidence)  # all at once, small enough
            return ids
        held = rows if held is None or held.shape[1] == 0 else torch.cat([held, rows], 1)
        row_bytes = rows.shape[0] * width * 4
        step = max_bytes // row_bytes
        if step < 1:
            raise ValueError(f"max_bytes must allow one row of upsampled logits ({row_bytes} bytes), not {max_bytes}")
        ready = int(torch.searchsorted(bottom, start + rows.shape[1]))  # output rows whose sources have all come
        for first in range(done, ready, step):
            band = slice(first, min(ready, first + step))
            # Rows first, at the network's width (cheap), then the band widened: an interpolation whose
            # height does not change keeps each row as it is.
            blended = torch.lerp(held.index_select(1, (top[band] - held_top).to(held.device)),
                                 held.index_select(1, (bottom[band] - held_top).to(held.device)),
                                 weight[band, None].to(held.device))
            _label(_interpolate(blended, (blended.shape[1], width)), band, ids, confidence)
        done = ready
        keep = min(int(top[done]), start + rows.shape[1]) if done < height else start + rows.shape[1]
        held, held_top = held[:, keep - held_top :].clone(), keep
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


def _label(logits: torch.Tensor, rows: slice, ids: np.ndarray, confidence: np.ndarray | None) -> None:
    """The ids (and confidence) of ``rows`` from their (n_classes, rows, W) logits."""
    best = logits.max(0)  # class_ids' rule: the first of equal logits
    ids[rows] = best.indices.to(torch.uint8).cpu().numpy()
    if confidence is not None:  # the top softmax probability, 1 / sum(exp(logit - top)), without the softmax
        top = torch.exp(logits - best.values).sum(0).reciprocal()
        confidence[rows] = (top * 255).round().to(torch.uint8).cpu().numpy()


def _interpolate(logits: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    # A fresh (1, C, h, w) channels-last copy: a view of one image of a channels-last batch, batch stride
    # C, sends interpolate down a generic path about 9x slower on CPU (torch 2.13).
    one = logits[None].clone(memory_format=torch.channels_last)
    return F.interpolate(one, size=shape, mode="bilinear", align_corners=False)[0]
