"""Inference at any image size: resize as in training, pad to a size the network takes, crop back,
upsample the logits to the image's own size, and write class-id, colour and overlay PNGs. Sizes larger
than a tile are predicted in overlapping, blended tiles (``tiling.py``)."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors import SafetensorError, safe_open

from . import checkpoint
from .classes import ClassSet
from .config import CONFIG_FILE, RunConfig
from .data import (
    DataError,
    Problem,
    ids_out_of_range,
    is_image_file,
    quiet_bomb_warnings,
    read_image,
    read_mask,
    resize_image,
)
from .device import autocast, pick_device, resolve_precision
from .files import atomic_write, make_folder
from .metrics import class_ids
from .model import UNet, meta_unet
from .onnx_engine import onnx_forward
from .tiling import AUTO_TILE, Forward, sliding_window
from .viz import colorize, display_figure, overlay

ENGINES = ("torch", "onnx")
TILE_OVERLAP = 0.25


class Predictor:
    """A trained run loaded for inference; ``predict(image)`` returns a class-id mask of the same size.

    ``engine="onnx"`` runs the run's exported ONNX model with ONNX Runtime on the CPU, the int8 one
    (``model.int8.onnx``) when ``pixelwise export --int8`` wrote it, else ``model.onnx``.

    ``tile=(h, w)``: where the size the model sees (after padding) is larger than the tile on either
    side, predict in tiles of that size overlapping by at least 25%, blended with Gaussian weights; the
    network's memory then depends on the tile, not the image. Without ``tile`` a padded U-Net is tiled
    at ``AUTO_TILE`` (1024) per side when a side exceeds it, as ``size="native"`` on large photos does;
    a larger ``tile`` raises that limit. Unpadded ('valid') U-Nets always run in one pass. ``tta=True`` averages the logits of
    the image and of its horizontal mirror (flipped back), at the cost of two forward passes."""

    def __init__(self, run_dir: str | Path, weights: str = "best", device: torch.device | None = None,
                 precision: str = "auto", engine: str = "torch", tile: tuple[int, int] | None = None,
                 tta: bool = False):
        self.run_dir = Path(run_dir)
        self.config = RunConfig.load(self.run_dir)
        self.classes = self.config.classes
        if engine not in ENGINES:
            raise ValueError(f"engine must be one of {', '.join(ENGINES)}, not {engine!r}")
        self.tile = _check_tile(tile, self.config) or _default_tile(self.config)
        self.tta = tta
        if engine == "onnx":
            self.device, self.dtype = torch.device("cpu"), None
            self._forward = onnx_forward(self.run_dir)
            return
        self.device = device or pick_device()
        self.dtype = resolve_precision(precision, self.device)
        self.model = load_model(self.run_dir, self.config, weights).to(self.device, memory_format=torch.channels_last)

        def forward(x: torch.Tensor) -> torch.Tensor:
            with autocast(self.device, self.dtype):
                return self.model(x.contiguous(memory_format=torch.channels_last))

        self._forward = forward

    @torch.no_grad()
    def logits(self, image: np.ndarray, size: tuple[int, int] | str | None = None) -> torch.Tensor:
        """(n_classes, H, W) float logits at ``size``: the training size by default, ``"native"`` for the
        image's own; any size works, in tiles where it is larger than the tile (see the class)."""
        h, w = image.shape[:2] if size == "native" else (size or self.config.data.size)
        if image.shape[:2] != (h, w):
            image = resize_image(image, (h, w), self.config.data.image_resize)
        # A copy: images read with PIL are read-only arrays, which torch.from_numpy warns about.
        x = torch.from_numpy(np.array(image, order="C")).to(self.device).permute(2, 0, 1)[None].float().div_(255)
        cfg = self.config.model
        in_h, in_w = cfg.input_size_for(h), cfg.input_size_for(w)
        # The output of an unpadded network is centred in its input: place the image at that offset.
        top, left = (in_h - cfg.output_size(in_h)) // 2, (in_w - cfg.output_size(in_w)) // 2
        pads = (left, in_w - w - left, top, in_h - h - top)
        if any(pads):
            mode = "reflect" if max(pads[0], pads[1]) < w and max(pads[2], pads[3]) < h else "replicate"
            x = F.pad(x, pads, mode=mode)
        forward = flip_tta(self._forward) if self.tta else self._forward
        if self.tile is not None and (in_h > self.tile[0] or in_w > self.tile[1]):
            return sliding_window(forward, x, self.tile, TILE_OVERLAP)[0, :, :h, :w]
        return forward(x)[0, :, :h, :w].float()

    def predict(self, image: np.ndarray, size: tuple[int, int] | str | None = None) -> np.ndarray:
        """(H, W) uint8 class ids at the image's own size; logits are upsampled bilinearly, then argmax."""
        logits = self.logits(image, size)
        if logits.shape[1:] != image.shape[:2]:
            logits = F.interpolate(logits[None], size=image.shape[:2], mode="bilinear", align_corners=False)[0]
        return class_ids(logits, 0).to(torch.uint8).cpu().numpy()


def flip_tta(forward: Forward) -> Forward:
    """``forward`` averaged over the input and its horizontal mirror, whose logits are flipped back: a
    mirrored scene is as plausible as the original, and the two passes err differently."""

    def averaged(x: torch.Tensor) -> torch.Tensor:
        return (forward(x).float() + forward(x.flip(-1)).float().flip(-1)) / 2

    return averaged


def _default_tile(config: RunConfig) -> tuple[int, int] | None:
    """The largest square tile up to ``AUTO_TILE`` that the network takes; none for an unpadded network,
    whose output is smaller than its input."""
    step = config.model.step
    if config.model.padding != "same":
        return None
    side = AUTO_TILE // step * step or step
    return side, side


def _check_tile(tile: tuple[int, int] | None, config: RunConfig) -> tuple[int, int] | None:
    """A tile must be a size the network takes, and the network one whose output matches its input."""
    if tile is None:
        return None
    h, w = (int(side) for side in tile)
    if min(h, w) < 1:
        raise ValueError(f"tile sides must be ≥ 1, not {h}x{w}")
    if config.model.padding != "same":
        raise ValueError("tiled prediction needs a padded ('same') U-Net; this run's unpadded network predicts "
                         "in one pass (leave out --tile)")
    hints = config.model.size_hints(h, w)
    if hints:
        raise ValueError(f"tile {h}x{w} does not fit this U-Net (each side must be a multiple of "
                         f"{config.model.step}): {'; '.join(hints)}")
    return h, w


def load_model(run_dir: Path, config: RunConfig, weights: str = "best") -> UNet:
    """The run's trained UNet (``best`` or ``last`` weights) on the CPU, in eval mode; a damaged
    config.json or checkpoint is a one-line error before any large allocation."""
    if weights not in ("best", "last"):
        raise ValueError(f"weights must be 'best' or 'last', not {weights!r}")
    path = run_dir / (checkpoint.BEST if weights == "best" else checkpoint.LAST)
    if not path.exists():
        raise FileNotFoundError(f"{run_dir}: no {path.name}; has this run finished an epoch?")
    _check_weights_fit(path, run_dir / CONFIG_FILE, config)
    model = UNet(config.model)
    checkpoint.load(path, model)
    return model.eval()


def _check_weights_fit(weights: Path, config_file: Path, config: RunConfig) -> None:
    """Compare the tensor shapes config.json implies with those in the checkpoint's header BEFORE any
    memory is allocated: a damaged config.json (say n_filters 100000000) must be an error message, not
    a model too large for memory that gets the process killed."""
    try:
        wanted = {k: tuple(v.shape) for k, v in meta_unet(config.model).state_dict().items()}
    except ValueError as exc:
        raise ValueError(f"{config_file}: describes a model that cannot be built ({exc})") from None
    try:
        with safe_open(str(weights), framework="pt") as f:
            keys = [k for k in f.keys() if not k.startswith("_")]  # noqa: SIM118 (a file, not a dict)
            found = {k: tuple(f.get_slice(k).get_shape()) for k in keys}
    except (OSError, SafetensorError, ValueError) as exc:
        raise ValueError(f"{weights}: unreadable checkpoint ({exc})") from None
    if found != wanted:
        odd = sorted(k for k in wanted.keys() | found.keys() if wanted.get(k) != found.get(k))
        raise ValueError(f"{weights}: weights do not match the model in {config_file} ({len(odd)} tensor(s) differ, "
                         f"such as {odd[0]}: {found.get(odd[0], 'missing')} in the weights, "
                         f"{wanted.get(odd[0], 'missing')} in the config)")


def expand_images(inputs: Iterable[str | Path]) -> tuple[list[Path], list[Problem]]:
    """Files as given, folders expanded to the images they hold; missing paths become problems."""
    files, problems = [], []
    for item in map(Path, inputs):
        if item.is_dir():
            found = sorted(p for p in item.iterdir() if is_image_file(p))
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
    make_folder(out_dir)  # a bad --out fails once here, not once per image
    by_stem: dict[str, Path] = {}
    for path in dict.fromkeys(files):  # the same file given twice is predicted once
        if path.stem in by_stem:
            result.problems.append(Problem(path, f"same name as {by_stem[path.stem]}: its outputs would overwrite "
                                                 "those; predict them into separate --out folders"))
            continue
        by_stem[path.stem] = path
    for path in by_stem.values():
        try:
            with warnings.catch_warnings():
                quiet_bomb_warnings()
                image = read_image(path)
                true = read_mask(masks[path.stem]) if path.stem in masks else None
            if true is not None:
                _check_true_mask(true, masks[path.stem], path, image, len(predictor.classes))
        except DataError as exc:
            result.problems.extend(exc.problems)
            continue
        try:
            mask = predictor.predict(image, size)
        except (RuntimeError, MemoryError) as exc:  # out of memory on a large --size native image, say
            message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            result.problems.append(Problem(path, f"cannot predict this image ({message})"))
            continue
        try:
            result.written += _write_outputs(path, out_dir / path.stem, image, mask, predictor.classes,
                                             true=true, figure=masks_dir is not None)
        except DataError as exc:
            result.problems.extend(exc.problems)
            continue
        if on_file is not None:
            on_file(path)
    return result


def _check_true_mask(true: np.ndarray, mask_path: Path, image_path: Path, image: np.ndarray, n_classes: int) -> None:
    """A true mask must fit its image and the run's classes, or its figure would show something false."""
    if true.shape != image.shape[:2]:
        raise DataError([Problem(mask_path, f"mask is {true.shape[0]}x{true.shape[1]} (height x width) but its image "
                                            f"{image_path.name} is {image.shape[0]}x{image.shape[1]}")])
    ids = ids_out_of_range(np.bincount(true.ravel(), minlength=256), n_classes)
    if ids:
        raise DataError([Problem(mask_path, f"mask has ids {ids} but the run has only {n_classes} classes "
                                            f"(0-{n_classes - 1})")])


def _write_outputs(path: Path, stem: Path, image: np.ndarray, mask: np.ndarray, classes: ClassSet, *,
                   true: np.ndarray | None, figure: bool) -> list[Path]:
    """Write one image's outputs, all or none: if one cannot be written (a name too long for the file
    system, a full disk) the others are removed again and a DataError names the image."""
    outputs = {Path(f"{stem}_mask.png"): mask, Path(f"{stem}_color.png"): colorize(mask, classes),
               Path(f"{stem}_overlay.png"): overlay(image, mask, classes)}
    written: list[Path] = []
    target: Path
    try:
        for target, array in outputs.items():
            _save_png(target, array)
            written.append(target)
        if figure:
            target = Path(f"{stem}_figure.png")
            display_figure(image, mask, classes, target, true=true)
            written.append(target)
    except OSError as exc:
        for done in written:
            done.unlink(missing_ok=True)
        raise DataError([Problem(path, f"cannot write its output {target.name} ({exc.strerror or exc}); "
                                       "nothing written for this image")]) from None
    return written


def _masks_by_stem(masks_dir: Path) -> dict[str, Path]:
    """Mask files by stem; an image without one still gets a figure, with no true-mask panel."""
    if not masks_dir.is_dir():
        raise DataError([Problem(masks_dir, "--masks folder not found")])
    return {p.stem: p for p in sorted(masks_dir.iterdir())
            if is_image_file(p)}
