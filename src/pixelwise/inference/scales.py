"""Test-time scales: the network run on the input resized by each of several factors, the class
probabilities brought back to the input's size and averaged. Small objects gain pixels at the larger
scales and large ones context at the smaller; what each setting gains and costs is measured in
docs/quality.md."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F

Forward = Callable[[torch.Tensor], torch.Tensor]
LIMITS = (0.25, 4.0)  # a scale outside this costs more than it can give (or leaves too few pixels)


def check_scales(scales: Iterable[float]) -> tuple[float, ...]:
    """``scales`` as a tuple, once each is known to be usable.

    Raises:
        ValueError: no scale, a repeated one, or one outside ``LIMITS``.
    """
    scales = tuple(float(s) for s in scales)
    if not scales:
        raise ValueError("scales must name at least one scale (1 is the size the model sees)")
    bad = [s for s in scales if not LIMITS[0] <= s <= LIMITS[1]]
    if bad:
        raise ValueError(f"scales must lie between {LIMITS[0]} and {LIMITS[1]}, not {bad[0]}")
    if len(set(scales)) != len(scales):
        raise ValueError(f"scales repeats a scale: {', '.join(map(str, scales))}")
    return scales


def multi_scale(forward: Forward, scales: tuple[float, ...], fit: Callable[[int], int]) -> Forward:
    """``forward`` run at each of ``scales`` and averaged in probability space.

    Args:
        forward: the network on an (N, 3, H, W) input, giving (N, C, H, W) logits.
        scales: the factors; each side becomes ``fit(round(side * scale))``.
        fit: the nearest size the network takes at or above a side (a multiple of its stride).

    Returns:
        A forward giving the log of the mean probabilities, (N, C, H, W) at the input's size: logits
        whose softmax is that mean, so arg-max and confidence work on them as on the network's own.
    """
    def averaged(x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        total = None
        for scale in scales:
            size = (fit(max(1, round(h * scale))), fit(max(1, round(w * scale))))
            seen = x if size == (h, w) else F.interpolate(x, size=size, mode="bilinear", align_corners=False,
                                                          antialias=scale < 1)
            probabilities = forward(seen).float().softmax(dim=1)
            if size != (h, w):
                probabilities = F.interpolate(probabilities, size=(h, w), mode="bilinear", align_corners=False)
            total = probabilities if total is None else total + probabilities
        return (total / len(scales)).clamp_min(torch.finfo(torch.float32).tiny).log()

    return averaged
