"""Sliding-window inference: run a network on overlapping tiles of a large input and blend their
logits, so memory is bounded by the tile, not the image (the scheme of MONAI's
``sliding_window_inference`` and nnU-Net)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator

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


def blended_rows(forward: Forward, x: torch.Tensor, tile: tuple[int, int], overlap: float = 0.25,
                 batch_size: int = 4) -> Iterator[tuple[int, torch.Tensor]]:
    """The logits of ``x`` (N, C, H, W), computed tile by tile and blended with ``gaussian_window``, as
    bands of finished rows: ``(first row, (N, classes, rows, W) logits)``, top to bottom, covering all H.

    Only one row of tiles is held: the rows above the next row of tiles' top are finished (no later tile
    reaches them) and handed out, those below kept for it. Tiles are added in the order of their
    corners, row by row, so every pixel's sum, and so its logits, are those of blending the whole image
    at once. A band is a view of that buffer, valid until the next one is asked for: copy what must last.

    Args:
        forward: a network whose logits have the height and width of its input (a padded U-Net).
        x: the input; its sides and ``tile`` must be sizes ``forward`` takes. It may be of any dtype
            ``forward`` takes (uint8 pixels that ``forward`` scales, say): tiles are cut from it as they go.
        tile: (height, width) of the tiles; a side larger than ``x``'s is cut to it.
        overlap: the least overlap of neighbouring tiles, as a share of a tile, in [0, 1).
        batch_size: how many tiles go through ``forward`` at once.

    Yields:
        (first row, logits) of each band, as float32.

    Raises:
        ValueError: ``overlap``, ``tile`` or ``batch_size`` out of range; a network whose output is not
            the size of its input.
    """
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap must be in [0, 1), not {overlap}")
    if min(tile) < 1 or batch_size < 1:
        raise ValueError(f"tile sides and batch size must be ≥ 1, not tile {tile}, batch size {batch_size}")
    n, _, height, width = x.shape
    th, tw = min(tile[0], height), min(tile[1], width)
    corners = [(top, left) for top in tile_starts(height, th, overlap) for left in tile_starts(width, tw, overlap)]
    band = weights = window = None  # the sums of rows band_top .. band_top + th
    band_top = 0
    for first in range(0, len(corners), batch_size):
        chunk = corners[first : first + batch_size]
        logits = forward(torch.cat([x[:, :, top : top + th, left : left + tw] for top, left in chunk])).float()
        if logits.shape[-2:] != (th, tw):
            raise ValueError(f"sliding_window needs a network whose output is the size of its input; a {th}x{tw} "
                             f"tile gave {logits.shape[-2]}x{logits.shape[-1]}")
        if band is None:
            band = logits.new_zeros(n, logits.shape[1], th, width)
            weights = logits.new_zeros(th, width)
            window = gaussian_window(th, tw).to(logits.device)
        for i, (top, left) in enumerate(chunk):
            if top != band_top:  # a new row of tiles: the rows above its top are finished
                yield band_top, band[:, :, : top - band_top].div_(weights[: top - band_top])
                _shift_up(band, top - band_top)
                _shift_up(weights, top - band_top)
                band_top = top
            band[:, :, :, left : left + tw] += logits[i * n : (i + 1) * n] * window
            weights[:, left : left + tw] += window
    yield band_top, band.div_(weights)


def _shift_up(rows: torch.Tensor, by: int) -> None:
    """Move the rows (second last axis) of ``rows`` up by ``by`` in place, zeros below."""
    kept = rows.shape[-2] - by
    rows[..., :kept, :] = rows[..., by:, :].clone()  # the two ranges overlap where kept > by
    rows[..., kept:, :] = 0


def gathered(bands: Iterable[tuple[int, torch.Tensor]], height: int) -> torch.Tensor:
    """The (N, classes, ``height``, W) logits that bands of rows (``blended_rows``') make up."""
    whole = None
    for start, rows in bands:
        if whole is None:
            whole = rows.new_empty(*rows.shape[:2], height, rows.shape[-1])
        whole[:, :, start : start + rows.shape[2]] = rows
    return whole


def sliding_window(forward: Forward, x: torch.Tensor, tile: tuple[int, int], overlap: float = 0.25,
                   batch_size: int = 4) -> torch.Tensor:
    """Logits (N, classes, H, W) of ``x`` (N, C, H, W), computed tile by tile and blended with
    ``gaussian_window``: ``blended_rows``' bands gathered into one tensor.

    ``forward`` must return logits of the same height and width as its input (a padded U-Net), and
    both ``tile`` and the sides of ``x`` must be sizes it takes; a tile side larger than ``x`` is cut
    to ``x``'s. Up to ``batch_size`` tiles go through ``forward`` at once.

    Raises:
        ValueError: as ``blended_rows``.
    """
    return gathered(blended_rows(forward, x, tile, overlap, batch_size), x.shape[2])
