"""Sliding-window inference: run a network on overlapping tiles of a large input and blend their
logits, so memory is bounded by the tile, not the image (the scheme of MONAI's
``sliding_window_inference`` and nnU-Net)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

Forward = Callable[[torch.Tensor], torch.Tensor]


AUTO_TILE = 1024  # by default, a side above this is predicted in tiles of at most AUTO_TILE x AUTO_TILE


def tile_starts(size: int, tile: int, overlap: float) -> list[int]:
    """Start offsets of the fewest tiles of length ``tile`` that cover ``size`` with neighbours
    overlapping by at least ``overlap`` of a tile (at most ``tile - 1`` pixels), spread evenly so the
    first starts at 0 and the last ends at ``size``."""
    if tile >= size:
        return [0]
    stride = max(1, math.floor(tile * (1 - overlap)))  # the largest step that keeps the overlap
    gaps = math.ceil((size - tile) / stride)
    return [round(i * (size - tile) / gaps) for i in range(gaps + 1)]


def gaussian_window(height: int, width: int) -> torch.Tensor:
    """(height, width) blending weights peaking at the centre, sigma 1/8 of the side (nnU-Net's and
    MONAI's choice). A network sees least context at a tile's edges, so those pixels count least where
    tiles overlap; the weights never reach zero (exp(-8) per side at the edges), so pixels that only a
    tile's edge covers, the image's own border, are still defined."""

    def ramp(n: int) -> torch.Tensor:
        offsets = torch.arange(n, dtype=torch.float32) - (n - 1) / 2
        return torch.exp(-0.5 * (offsets / (n / 8)) ** 2)

    return ramp(height)[:, None] * ramp(width)[None, :]


def sliding_window(forward: Forward, x: torch.Tensor, tile: tuple[int, int], overlap: float = 0.25,
                   batch_size: int = 4) -> torch.Tensor:
    """Logits (N, classes, H, W) of ``x`` (N, C, H, W), computed tile by tile and blended with
    ``gaussian_window``.

    ``forward`` must return logits of the same height and width as its input (a padded U-Net), and
    both ``tile`` and the sides of ``x`` must be sizes it takes; a tile side larger than ``x`` is cut
    to ``x``'s. Up to ``batch_size`` tiles go through ``forward`` at once."""
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap must be in [0, 1), not {overlap}")
    if min(tile) < 1 or batch_size < 1:
        raise ValueError(f"tile sides and batch size must be ≥ 1, not tile {tile}, batch size {batch_size}")
    n, _, height, width = x.shape
    th, tw = min(tile[0], height), min(tile[1], width)
    corners = [(top, left) for top in tile_starts(height, th, overlap) for left in tile_starts(width, tw, overlap)]
    total = weights = window = None
    for first in range(0, len(corners), batch_size):
        chunk = corners[first : first + batch_size]
        tiles = torch.cat([x[:, :, top : top + th, left : left + tw] for top, left in chunk])
        logits = forward(tiles).float()
        if logits.shape[-2:] != (th, tw):
            raise ValueError(f"sliding_window needs a network whose output is the size of its input; a {th}x{tw} "
                             f"tile gave {logits.shape[-2]}x{logits.shape[-1]}")
        if total is None:
            total = logits.new_zeros(n, logits.shape[1], height, width)
            weights = logits.new_zeros(height, width)
            window = gaussian_window(th, tw).to(logits.device)
        for i, (top, left) in enumerate(chunk):
            total[:, :, top : top + th, left : left + tw] += logits[i * n : (i + 1) * n] * window
            weights[top : top + th, left : left + tw] += window
    return total / weights
