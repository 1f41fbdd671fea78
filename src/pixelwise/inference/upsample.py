"""Logits at the size the network saw → class ids at the image's own size, in memory bounded by the
model and a band of rows, not by the image: all classes' logits upsampled to a large image's full size
would need ``classes x height x width`` floats at once (5.9 GB for 23 classes at 8000x8000)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..evaluation.metrics import class_ids

BAND_BYTES = 256 << 20  # logits upsampled at once; below this the whole image goes in one call
VECTOR = 8  # channels the CPU kernel computes at once (its float vector width)


def upsampled_ids(logits: torch.Tensor, shape: tuple[int, int], max_bytes: int = BAND_BYTES) -> np.ndarray:
    """(H, W) uint8 class ids of (n_classes, h, w) logits upsampled bilinearly (half-pixel centres, as
    ``F.interpolate(..., align_corners=False)``) to ``shape``, then arg-maxed.

    Where the upsampled logits would take more than ``max_bytes``, they are made a band of rows at a
    time, each band's logits dropped once its ids are kept. A band repeats the arithmetic of PyTorch's
    CPU kernel (its weights, its order of operations, its fused multiply-adds), so its logits are
    those of the whole-image call bit for bit where that was checked (torch 2.13 on x86 with fused
    multiply-adds; the tests compare them); elsewhere they could differ in the last bit, and ids only
    where two classes tie to that precision.

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
        return _whole(logits, shape)
    row_bytes = 10 * n * width * 4  # the four gathered corners, the fused sums and the band's logits
    rows = max_bytes // row_bytes
    if rows < 1:
        raise ValueError(f"max_bytes must allow one row of upsampled logits ({row_bytes} bytes), not {max_bytes}")
    top, bottom, weight_top, weight_bottom = (t.to(logits.device) for t in source_rows(h, height))
    columns = tuple(t.to(logits.device) for t in source_rows(w, width))
    ids = np.empty(shape, dtype=np.uint8)
    for start in range(0, height, rows):
        band = slice(start, min(height, start + rows))
        upper, lower = logits.index_select(1, top[band]), logits.index_select(1, bottom[band])
        logits_band = _blend(upper, lower, weight_top[band, None], weight_bottom[band, None], columns)
        ids[band] = class_ids(logits_band, 0).to(torch.uint8).cpu().numpy()
    return ids


def _blend(upper: torch.Tensor, lower: torch.Tensor, weight_top: torch.Tensor, weight_bottom: torch.Tensor,
           columns: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """(C, rows, W) logits from each output row's upper and lower source rows (C, rows, w), weighted
    and summed in the order PyTorch's CPU kernel uses, every ``+`` of a product fused (``addcmul``, a
    fused multiply-add as the kernel's own). Three channels or fewer take its separable path; more,
    its channels-last one: eight channels at a time as a*w00 + (b*w01 + (d*w11 + c*w10)), the channels
    left over as ((b*w01 + a*w00) + c*w10) + d*w11."""
    left, right, weight_left, weight_right = columns
    a, b = upper.index_select(2, left), upper.index_select(2, right)
    c, d = lower.index_select(2, left), lower.index_select(2, right)
    if len(a) <= 3:
        across_top = torch.addcmul(b * weight_right, a, weight_left)
        across_bottom = torch.addcmul(d * weight_right, c, weight_left)
        return torch.addcmul(across_bottom * weight_bottom, across_top, weight_top)
    w00, w01 = weight_top * weight_left, weight_top * weight_right
    w10, w11 = weight_bottom * weight_left, weight_bottom * weight_right
    lanes = len(a) - len(a) % VECTOR
    vector = torch.addcmul(torch.addcmul(torch.addcmul(c[:lanes] * w10, d[:lanes], w11), b[:lanes], w01), a[:lanes], w00)
    rest = torch.addcmul(torch.addcmul(torch.addcmul(b[lanes:] * w01, a[lanes:], w00), c[lanes:], w10), d[lanes:], w11)
    return torch.cat([vector, rest])


def source_rows(size: int, out_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """For each of ``out_size`` output rows, the two source rows it blends and their weights, as
    PyTorch's CPU bilinear kernel computes them (half-pixel centres; the source coordinate rounded
    once to float32, clamped at 0, the last row repeated at the far edge)."""
    scale = np.float32(size) / np.float32(out_size)
    coordinate = (np.float64(scale) * (np.arange(out_size, dtype=np.float64) + 0.5) - 0.5).astype(np.float32)
    coordinate = np.maximum(coordinate, np.float32(0))
    top = np.minimum(np.floor(coordinate).astype(np.int64), size - 1)
    weight_bottom = np.clip(coordinate - top.astype(np.float32), 0, 1).astype(np.float32)
    bottom = np.where(top < size - 1, top + 1, top)
    return (torch.from_numpy(top), torch.from_numpy(bottom), torch.from_numpy(1 - weight_bottom),
            torch.from_numpy(weight_bottom))


def _whole(logits: torch.Tensor, shape: tuple[int, int]) -> np.ndarray:
    return class_ids(_interpolate(logits, shape), 0).to(torch.uint8).cpu().numpy()


def _interpolate(logits: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    # A fresh (1, C, h, w) channels-last copy: a view of one image of a channels-last batch, batch stride
    # C, sends interpolate down a generic path about 9x slower on CPU (torch 2.13).
    one = logits[None].clone(memory_format=torch.channels_last)
    return F.interpolate(one, size=shape, mode="bilinear", align_corners=False)[0]
