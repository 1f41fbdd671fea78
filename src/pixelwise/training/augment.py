"""Paired augmentation on whole batches, on the training device: random scale, crop and horizontal
flip applied identically to image and mask (``zoom``), plus colour jitter applied to the image alone
(``full``); or the horizontal flip alone (``flip``), which keeps every pixel exact. Crops can be
steered to rare classes (``class_crops``), as nnU-Net oversamples foreground: a class picked uniformly
among those in a mask is usually a small one, so Pedestrian or TrafficSign fill training crops far more
often than their pixel share. Before all that, a share of the frames can take the small classes of
another frame of the batch (``paste``, :func:`paste_small`).

One affine resampling per batch does scale, crop and flip together, so augmentation costs a few
percent of a training step. Draws come from torch's global generator, which the training loop seeds
per step: a resumed run repeats them exactly.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..config import ZOOMING
from ..data.transforms import IGNORE_INDEX

Transform = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class Augment:
    """Scale is the zoom of the crop (>1 magnifies); pixels the crop takes from outside the image are
    black in the image and unlabelled (IGNORE_INDEX) in the mask."""

    scale: tuple[float, float] = (0.75, 1.5)
    flip: bool = True
    color: float = 0.25  # brightness, contrast and saturation each vary by up to ±this
    class_crops: float = 0.0  # the share of crops placed to hold a pixel of a class picked by class_pixels

    def __call__(self, x: torch.Tensor, y: torch.Tensor, out_size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """``x`` (N, 3, H, W) floats in [0, 1], ``y`` (N, H, W) class ids → a crop of ``out_size`` of each."""
        n, _, h, w = x.shape
        out_h, out_w = out_size
        if n == 0:  # a rank's empty share of a short last batch
            return x.new_zeros(0, x.shape[1], out_h, out_w), y.new_zeros(0, out_h, out_w)
        # Zoom evenly on a log scale; the window the crop reads, as a fraction of each side.
        lo, hi = math.log(self.scale[0]), math.log(self.scale[1])
        zoom = torch.exp(torch.rand(n) * (hi - lo) + lo)
        frac_h, frac_w = out_h / (h * zoom), out_w / (w * zoom)
        # Centre anywhere the window stays inside the image (or holds the whole image, when larger).
        centre_y = (1 - frac_h) * (2 * torch.rand(n) - 1)
        centre_x = (1 - frac_w) * (2 * torch.rand(n) - 1)
        if self.class_crops > 0:
            chosen, rows, cols = class_pixels(y, self.class_crops)
            centre_y = _centre_holding(centre_y, frac_h, (2 * rows + 1) / h - 1, chosen)
            centre_x = _centre_holding(centre_x, frac_w, (2 * cols + 1) / w - 1, chosen)
        mirror = torch.where(torch.rand(n) < 0.5, -1.0, 1.0) if self.flip else torch.ones(n)
        theta = torch.zeros(n, 2, 3)
        theta[:, 0, 0], theta[:, 0, 2] = frac_w * mirror, centre_x
        theta[:, 1, 1], theta[:, 1, 2] = frac_h, centre_y
        grid = F.affine_grid(theta.to(x.device), [n, 1, out_h, out_w], align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        # Labels + 1 so that the zero padding outside the image reads back as -1: unlabelled.
        labels = F.grid_sample((y + 1).unsqueeze(1).float(), grid, mode="nearest", padding_mode="zeros",
                               align_corners=False).squeeze(1).long() - 1
        y = torch.where(labels < 0, IGNORE_INDEX, labels)
        if self.color > 0:
            x = self._jitter(x)
        return x.contiguous(memory_format=torch.channels_last), y

    def _jitter(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]

        def factor() -> torch.Tensor:
            return (1 + self.color * (2 * torch.rand(n, 1, 1, 1) - 1)).to(x.device)

        x = x * factor()
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) * factor() + mean
        gray = (0.299 * x[:, :1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:]).expand_as(x)
        x = (x - gray) * factor() + gray
        return x.clamp_(0, 1)


def class_pixels(y: torch.Tensor, share: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For each mask of ``y`` (N, H, W), with probability ``share``: one pixel of a class picked
    uniformly among the labelled classes in that mask. Returns (chosen (N,) bool, rows, cols); masks
    not chosen, or with nothing labelled, have chosen False."""
    n = len(y)
    chosen = torch.rand(n) < share
    rows, cols = torch.zeros(n, dtype=torch.long), torch.zeros(n, dtype=torch.long)
    for i in chosen.nonzero().flatten().tolist():
        # The labelled classes present, ascending as unique() gives them, by counting: unique() sorts every
        # pixel, 4% of a default-recipe step (docs/benchmarks.md#avx2-profile-issue-37).
        classes = torch.bincount(y[i][y[i] != IGNORE_INDEX]).nonzero().flatten()
        if len(classes) == 0:
            chosen[i] = False
            continue
        where = (y[i] == classes[torch.randint(len(classes), ())]).nonzero()
        rows[i], cols[i] = where[torch.randint(len(where), ())].cpu()
    return chosen, rows, cols


def _centre_holding(centre: torch.Tensor, half: torch.Tensor, pixel: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
    """Where ``chosen``: a centre (image coordinates, -1 to 1) drawn evenly among those whose window of
    half-size ``half`` stays inside the image and holds ``pixel``; elsewhere ``centre`` as it was. A
    window as large as the image holds every pixel anyway."""
    lo = torch.maximum(half - 1, pixel - half)
    hi = torch.minimum(1 - half, pixel + half)
    return torch.where(chosen & (half < 1), lo + (hi - lo) * torch.rand(len(centre)), centre)


def random_crop(x: torch.Tensor, y: torch.Tensor, out_size: tuple[int, int],
                class_crops: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """A crop of ``out_size`` at a random whole-pixel place in each image: no resampling, so images and
    masks keep their exact pixels (training on crops without the rest of augmentation). A
    ``class_crops`` share of them is placed to hold a pixel picked by :func:`class_pixels`."""
    out_h, out_w = out_size
    if len(x) == 0:  # a rank's empty share of a short last batch
        return x.new_zeros(0, x.shape[1], out_h, out_w), y.new_zeros(0, out_h, out_w)
    h, w = x.shape[-2:]
    tops = torch.randint(0, h - out_h + 1, (len(x),))
    lefts = torch.randint(0, w - out_w + 1, (len(x),))
    if class_crops > 0:
        chosen, rows, cols = class_pixels(y, class_crops)
        tops = torch.where(chosen, _place_holding(rows, out_h, h), tops)
        lefts = torch.where(chosen, _place_holding(cols, out_w, w), lefts)
    tops, lefts = tops.tolist(), lefts.tolist()
    x = torch.stack([image[:, t:t + out_h, s:s + out_w] for image, t, s in zip(x, tops, lefts)])
    y = torch.stack([mask[t:t + out_h, s:s + out_w] for mask, t, s in zip(y, tops, lefts)])
    return x.contiguous(memory_format=torch.channels_last), y


def _place_holding(pixel: torch.Tensor, window: int, side: int) -> torch.Tensor:
    """A start drawn evenly among those whose window of ``window`` pixels fits in ``side`` and holds ``pixel``."""
    lo = (pixel - window + 1).clamp(min=0)
    hi = pixel.clamp(max=side - window)
    return lo + (torch.rand(len(pixel)) * (hi - lo + 1)).long().clamp(max=hi - lo)


def random_flip(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mirror each image and its mask left-right, each with probability 1/2: no resampling."""
    mirror = (torch.rand(len(x)) < 0.5).to(x.device)
    x = torch.where(mirror.view(-1, 1, 1, 1), x.flip(-1), x).contiguous(memory_format=torch.channels_last)
    return x, torch.where(mirror.view(-1, 1, 1), y.flip(-1), y)


SMALL = 0.05  # a class covering less of a frame than this is one :func:`paste_small` may copy


def paste_small(x: torch.Tensor, y: torch.Tensor, share: float) -> tuple[torch.Tensor, torch.Tensor]:
    """For a ``share`` of the frames of a batch: the pixels of the small classes of the frame before it
    in the batch (each class covering under SMALL of that frame, each taken with probability 1/2),
    copied at the same place, image and label alike. A class-mix (ClassMix, Olsson et al. 2021) aimed
    at the rare classes: pedestrians, signs and lights appear in more frames and more surroundings,
    and a fixed car camera puts them where such things stand."""
    n = len(x)
    if share == 0 or n < 2:  # no draws either: runs without pasting repeat their augmentation exactly
        return x, y
    chosen = torch.rand(n) < share
    if not chosen.any():
        return x, y
    donors, donor_x = y.roll(1, 0), x.roll(1, 0)
    known = donors != IGNORE_INDEX
    classes = max(int(donors.max()), 0) + 1  # IGNORE_INDEX is negative; bin ``classes`` holds it below
    keep = (torch.rand(n, classes + 1) < 0.5) & chosen[:, None]
    # One table of classes + 1 bins per frame: which of its donor's classes it takes.
    cell = torch.where(known, donors, classes) + (classes + 1) * torch.arange(n, device=y.device).view(-1, 1, 1)
    counts = torch.bincount(cell.flatten(), minlength=n * (classes + 1)).view(n, classes + 1)
    take = (counts > 0) & (counts < SMALL * donors[0].numel()) & keep.to(counts.device)
    take[:, classes] = False
    where = take.flatten()[cell]
    x = torch.where(where[:, None], donor_x, x).contiguous(memory_format=torch.channels_last)
    return x, torch.where(where, donors, y)


def training_transform(augment: str, size: tuple[int, int], crop: tuple[int, int],
                       class_crops: float = 0.0, paste: float = 0.0) -> Transform:
    """What every training batch goes through: a ``paste`` share of frames given another's small
    classes, ``augment`` (one of AUGMENTATIONS) and the random ``crop`` out of the full training
    ``size``, a ``class_crops`` share of them steered to a class."""
    if augment in ZOOMING:
        resample = Augment(color=Augment.color if augment == "full" else 0.0, class_crops=class_crops)
        return lambda x, y: resample(*paste_small(x, y, paste), crop)

    def transform(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = paste_small(x, y, paste)
        if augment == "flip":
            x, y = random_flip(x, y)
        if crop != size:  # without resampling, a crop is still taken at a random place
            x, y = random_crop(x, y, crop, class_crops)
        return x, y

    return transform
