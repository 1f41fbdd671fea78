"""Inference at any image size: resize as in training, pad to a size the network takes, crop back,
upsample the logits to the image's own size, and write class-id, colour and overlay PNGs."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from . import checkpoint
from .config import RunConfig
from .data import IMAGE_SUFFIXES, DataError, Problem, read_image, read_mask, resize_image
from .device import autocast, pick_device, resolve_precision
from .files import atomic_write
from .model import UNet
from .viz import colorize, display_figure, overlay


class Predictor:
    """A trained run loaded for inference; ``predict(image)`` returns a class-id mask of the same size."""

    def __init__(self, run_dir: str | Path, weights: str = "best", device: torch.device | None = None,
                 precision: str = "auto"):
        self.run_dir = Path(run_dir)
        self.config = RunConfig.load(self.run_dir)
        self.classes = self.config.classes
        self.device = device or pick_device()
        self.dtype = resolve_precision(precision, self.device)
        if weights not in ("best", "last"):
            raise ValueError(f"weights must be 'best' or 'last', not {weights!r}")
        path = self.run_dir / (checkpoint.BEST if weights == "best" else checkpoint.LAST)
        if not path.exists():
            raise FileNotFoundError(f"{self.run_dir}: no {path.name}; has this run finished an epoch?")
        self.model = UNet(self.config.model)
        checkpoint.load(path, self.model)
        self.model.to(self.device, memory_format=torch.channels_last).eval()

    @torch.no_grad()
    def logits(self, image: np.ndarray, size: tuple[int, int] | str | None = None) -> torch.Tensor:
        """(n_classes, H, W) float logits at ``size``: the training size by default, ``"native"`` for the
        image's own; any size works."""
        h, w = image.shape[:2] if size == "native" else (size or self.config.data.size)
        if image.shape[:2] != (h, w):
            image = resize_image(image, (h, w), self.config.data.image_resize)
        x = torch.from_numpy(np.ascontiguousarray(image)).to(self.device).permute(2, 0, 1)[None].float().div_(255)
        cfg = self.config.model
        in_h, in_w = cfg.input_size_for(h), cfg.input_size_for(w)
        # The output of an unpadded network is centred in its input: place the image at that offset.
        top, left = (in_h - cfg.output_size(in_h)) // 2, (in_w - cfg.output_size(in_w)) // 2
        pads = (left, in_w - w - left, top, in_h - h - top)
        if any(pads):
            mode = "reflect" if max(pads[0], pads[1]) < w and max(pads[2], pads[3]) < h else "replicate"
            x = F.pad(x, pads, mode=mode)
        with autocast(self.device, self.dtype):
            out = self.model(x.contiguous(memory_format=torch.channels_last))
        return out[0, :, :h, :w].float()

    def predict(self, image: np.ndarray, size: tuple[int, int] | str | None = None) -> np.ndarray:
        """(H, W) uint8 class ids at the image's own size; logits are upsampled bilinearly, then argmax."""
        logits = self.logits(image, size)
        if logits.shape[1:] != image.shape[:2]:
            logits = F.interpolate(logits[None], size=image.shape[:2], mode="bilinear", align_corners=False)[0]
        return logits.argmax(0).to(torch.uint8).cpu().numpy()


def expand_images(inputs: Iterable[str | Path]) -> tuple[list[Path], list[Problem]]:
    """Files as given, folders expanded to the images they hold; missing paths become problems."""
    files, problems = [], []
    for item in map(Path, inputs):
        if item.is_dir():
            found = sorted(p for p in item.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
            if not found:
                problems.append(Problem(item, "folder holds no images"))
            files.extend(found)
        elif item.is_file():
            files.append(item)
        else:
            problems.append(Problem(item, "no such file or folder"))
    return files, problems


def _save_png(path: Path, array: np.ndarray) -> None:
    atomic_write(path, lambda tmp: Image.fromarray(array).save(tmp, format="PNG"))


@dataclass
class PredictResult:
    written: list[Path] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


def predict_files(predictor: Predictor, inputs: Iterable[str | Path], out_dir: str | Path, *,
                  masks_dir: str | Path | None = None, size: tuple[int, int] | str | None = None,
                  on_file: Callable[[Path], None] | None = None) -> PredictResult:
    """For each image: ``NAME_mask.png`` (class ids, original size), ``NAME_color.png``,
    ``NAME_overlay.png``, and with ``masks_dir`` the Input | True | Predicted ``NAME_figure.png``.
    A bad file is reported and skipped; the others are still written."""
    out_dir = Path(out_dir)
    files, problems = expand_images(inputs)
    result = PredictResult(problems=problems)
    masks = _masks_by_stem(Path(masks_dir)) if masks_dir is not None else {}
    by_stem: dict[str, Path] = {}
    for path in dict.fromkeys(files):  # the same file given twice is predicted once
        if path.stem in by_stem:
            result.problems.append(Problem(path, f"same name as {by_stem[path.stem]}: its outputs would overwrite "
                                                 "those; predict them into separate --out folders"))
            continue
        by_stem[path.stem] = path
    for path in by_stem.values():
        try:
            image = read_image(path)
            true = read_mask(masks[path.stem]) if path.stem in masks else None
            if true is not None and true.shape != image.shape[:2]:
                raise DataError([Problem(masks[path.stem], f"mask is {true.shape[0]}x{true.shape[1]} (height x width) "
                                                           f"but its image is {image.shape[0]}x{image.shape[1]}")])
        except DataError as exc:
            result.problems.extend(exc.problems)
            continue
        mask = predictor.predict(image, size)
        stem = out_dir / path.stem
        outputs = {f"{stem}_mask.png": mask, f"{stem}_color.png": colorize(mask, predictor.classes),
                   f"{stem}_overlay.png": overlay(image, mask, predictor.classes)}
        for name, array in outputs.items():
            _save_png(Path(name), array)
            result.written.append(Path(name))
        if masks_dir is not None:
            figure = Path(f"{stem}_figure.png")
            display_figure(image, mask, predictor.classes, figure, true=true)
            result.written.append(figure)
        if on_file is not None:
            on_file(path)
    return result


def _masks_by_stem(masks_dir: Path) -> dict[str, Path]:
    """Mask files by stem; an image without one still gets a figure, with no true-mask panel."""
    if not masks_dir.is_dir():
        raise DataError([Problem(masks_dir, "--masks folder not found")])
    return {p.stem: p for p in sorted(masks_dir.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES}
