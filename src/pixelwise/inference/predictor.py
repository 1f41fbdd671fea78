"""A trained run loaded for inference at any image size: resize as in training, pad to a size the
network takes, run it (in tiles where large, with flip TTA if asked, on torch or ONNX Runtime), crop
back and upsample the logits to the image's own size."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Union

import numpy as np
import torch

from ..config import RunConfig
from ..data.arrays import image_array
from ..data.cache import default_cache_dir
from ..data.decode import read_image
from ..data.resize import resize_image
from ..data.transforms import to_input
from ..device import PRECISION_STORE, ChoiceStore, PrecisionStore, autocast, forward_timer, measures_precision, \
    pick_device, resolve_precision, usable_cores
from ..rundir import load_config, load_model, weights_path
from .auto_engine import ENGINE_STORE, EngineTimer, choice_line, faster_engine, onnx_candidate, wall_seconds
from .scales import check_scales, multi_scale
from .onnx_engine import check_fresh, onnx_forward, onnx_model_path
from .tiling import AUTO_TILE, Forward, blended_rows, gathered
from .upsample import streamed_ids, upsampled_ids

ImageInput = Union[np.ndarray, str, Path]
ENGINES = ("auto", "torch", "onnx")
TILE_OVERLAP = 0.25


class Predictor:
    """A trained run loaded for inference, holding its inference settings once: what ``pw.load``
    returns. ``predict(image)`` gives a class-id mask of the image's size; ``predict(files, out=DIR)``
    writes masks, colour masks and overlays; ``evaluate``, ``export``, ``serve`` and ``predict_video``
    use the same settings.

    ``engine="onnx"`` runs the run's exported ONNX model with ONNX Runtime on the CPU: ``onnx_model``
    "fp32" (``model.onnx``) or "int8" (``model.int8.onnx``); by default int8 where ``export(int8=...)``
    wrote it, else fp32. An export made from other weights than the run's current ``weights`` file is
    refused (:class:`~pixelwise.inference.onnx_engine.StaleExport`). ``model_file`` says which file runs
    (None for the torch engine).

    ``engine="auto"`` (``pw.load``'s default) runs ONNX Runtime where it is clearly faster than torch,
    torch everywhere else (:mod:`~pixelwise.inference.auto_engine`): on a CPU with onnxruntime, the run's
    ONNX export made from the current weights (int8 where exported, else fp32), written into the run on
    first use where there is none or it is stale; then whichever engine scores one image of the training
    size (or a tile) faster, ONNX needing 1.2x torch's speed, measured on the first load on the machine
    and remembered in the cache folder. A torch-only setting (a ``precision`` named, a CUDA ``device``,
    an unpadded U-Net) or an export that cannot be written (a read-only run) leaves torch. ``engine``
    is then the engine chosen and ``engine_note`` one line saying which and why (None unless auto).

    ``tile=(h, w)``: where the size the model sees (after padding) is larger than the tile on either
    side, predict in tiles of that size overlapping by at least 25%, blended with Gaussian weights; the
    network's memory then depends on the tile, not the image. Without ``tile`` a padded U-Net is tiled
    at ``AUTO_TILE`` (1024) per side when a side exceeds it, as ``size="native"`` on large photos does;
    a larger ``tile`` raises that limit. Unpadded ('valid') U-Nets always run in one pass. ``tta=True``
    averages the logits of the image and of its horizontal mirror (flipped back), at the cost of two
    forward passes. ``scales=(0.75, 1, 1.25)`` also runs the network on the input (or tile) resized by each
    factor and averages the class probabilities brought back to its size
    (:func:`~pixelwise.inference.scales.multi_scale`): one pass per scale, each doubled by ``tta``.

    Args:
        run_dir: a run directory (config.json and weights).
        weights: "best" or "last".
        device: where the torch engine runs (default: CUDA where present, else the CPU).
        precision: the torch engine's "auto", "fp32", "bf16" or "fp16"; "auto" picks fp32 or bf16 by
            a measurement remembered per machine and network.
        engine: "auto", "torch" or "onnx".
        tile: (height, width) of the tiles large inputs are predicted in.
        tta: average with the horizontal mirror.
        scales: factors of the size the model sees to predict at and average (padded U-Nets only).
        onnx_model: the onnx engine's "fp32" or "int8" model.
        engine_timer: seconds one forward call takes, given the engine's name and the call: what the auto
            engine compares (default: its wall-clock time).

    Raises:
        FileNotFoundError: no run, no such weights, or no ONNX export for the onnx engine.
        ValueError: a setting out of range or one the engine does not have; a damaged run.
        StaleExport: the ONNX export was made from other weights.
    """

    def __init__(self, run_dir: str | Path, weights: str = "best", device: torch.device | None = None,
                 precision: str = "auto", engine: str = "torch", tile: tuple[int, int] | None = None,
                 tta: bool = False, onnx_model: str | None = None, engine_timer: EngineTimer | None = None,
                 scales: tuple[float, ...] = (1.0,)):
        self.run_dir = Path(run_dir)
        self.config = load_config(self.run_dir)
        self.classes = self.config.classes
        check_settings(engine, precision, onnx_model)
        self.weights, self.engine, self.precision, self.onnx_model = weights, engine, precision, onnx_model
        self.tile = _check_tile(tile, self.config) or _default_tile(self.config)
        self.tta = tta
        self.scales = _check_scales(scales, self.config)
        self.model_file: Path | None = None
        self.engine_note: str | None = None
        if engine == "auto":
            self._choose_engine(device or pick_device(), engine_timer or wall_seconds)
        elif engine == "onnx":
            self.load_onnx()
        else:
            self._load_torch(device or pick_device())

    def _load_torch(self, device: torch.device) -> None:
        """Run the weights with torch on ``device``, in the precision asked for."""
        self.engine, self.model_file = "torch", None
        self.device = device
        self.dtype = resolve_precision(self.precision, device, depthwise=self.config.model.encoder != "unet")
        self.model = load_model(self.run_dir, self.config, self.weights).to(device, memory_format=torch.channels_last)
        if measures_precision(self.precision, device):
            self.dtype = self._remembered_dtype()

        model, dtype = self.model, self.dtype  # this engine's, whichever the auto engine loads after it

        def forward(x: torch.Tensor) -> torch.Tensor:
            with autocast(device, dtype):
                return model(x.contiguous(memory_format=torch.channels_last))

        self._forward = forward

    def load_onnx(self) -> None:
        """(Re)load the exported ONNX model, once checked to come from the current weights.

        Raises:
            StaleExport: the export was made from other weights, or records none.
            FileNotFoundError: no export.
        """
        self.engine, self.device, self.dtype, self.model = "onnx", torch.device("cpu"), None, None
        self.model_file = onnx_model_path(self.run_dir, self.onnx_model)
        check_fresh(self.model_file, weights_path(self.run_dir, self.weights))
        self._forward = onnx_forward(self.run_dir, model=self.onnx_model)

    def _choose_engine(self, device: torch.device, timer: EngineTimer) -> None:
        """The auto engine: torch where ONNX cannot run, else the faster of the two at the timing size,
        kept per machine and network; ``engine_note`` says which and why."""
        candidate = onnx_candidate(self.run_dir, self.config, self.weights, device, self.precision)
        if candidate.model is None:
            self._load_torch(device)
            self.engine_note = choice_line("torch", None, {}, candidate.notes)
            return
        import onnxruntime

        h, w = self._timing_size()
        x = torch.rand(1, self.config.model.in_channels, h, w)
        what = {"task": "engine", "model": self.config.model.to_dict(), "input": [h, w], "onnx": candidate.model,
                "onnxruntime": onnxruntime.__version__, "cores": usable_cores()}
        loaded: dict[str, Forward] = {}

        @torch.no_grad()
        def time_of(engine: str) -> float:
            if engine not in loaded:
                self._load_engine(engine, device, candidate.model)
                loaded[engine] = self._forward
            return timer(engine, lambda: loaded[engine](x))

        engine, seconds, _ = faster_engine(ChoiceStore(default_cache_dir() / ENGINE_STORE), what, time_of)
        if list(loaded)[-1:] != [engine]:  # not loaded (a kept choice), or another engine loaded after it
            self._load_engine(engine, device, candidate.model)
        self.engine_note = choice_line(engine, candidate.model, seconds, candidate.notes)

    def _load_engine(self, engine: str, device: torch.device, onnx_model: str) -> None:
        if engine == "onnx":
            self.onnx_model = onnx_model
            self.load_onnx()
        else:
            self.onnx_model = None
            self._load_torch(device)

    def _timing_size(self) -> tuple[int, int]:
        """The size choices are timed at: the training size the network sees, or a tile where smaller."""
        cfg = self.config.model
        h, w = (cfg.input_size_for(side) for side in self.config.data.size)
        if self.tile is not None:
            h, w = min(h, self.tile[0]), min(w, self.tile[1])
        return h, w

    def _remembered_dtype(self) -> torch.dtype | None:
        """fp32 or bf16, whichever scores one image of the training size (or a tile) faster on this
        machine, measured on the first load and remembered: CPUs with the same bf16 flags predicted
        Lite0 at 1.32x (an EPYC) and 0.74x (a Xeon without AMX) fp32's speed."""
        cfg = self.config.model
        h, w = self._timing_size()
        x = torch.rand(1, cfg.in_channels, h, w).contiguous(memory_format=torch.channels_last)
        store = PrecisionStore(default_cache_dir() / PRECISION_STORE)
        return store.choose({"model": cfg.to_dict(), "input": [h, w]}, forward_timer(self.model, x, self.device))[0]

    @torch.no_grad()
    def logits(self, image: ImageInput, size: tuple[int, int] | str | None = None) -> torch.Tensor:
        """(n_classes, H, W) float logits at ``size``: the training size by default, ``"native"`` for the
        image's own; any size works, in tiles where it is larger than the tile (see the class). ``image`` is
        any array :func:`~pixelwise.data.arrays.image_array` takes (RGB, RGBA, grey; uint8, 16 bits, floats)
        or the path of an image file."""
        return self._logits(as_image(image), size)

    def _logits(self, image: np.ndarray, size: tuple[int, int] | str | None) -> torch.Tensor:
        return self.batch_logits(self.resized(image, self.seen_size(image, size))[None])[0]

    def seen_size(self, image: np.ndarray, size: tuple[int, int] | str | None) -> tuple[int, int]:
        """(height, width) the model sees ``image`` at for ``size``: the training size for None, the
        image's own for ``"native"``."""
        h, w = image.shape[:2] if size == "native" else (size or self.config.data.size)
        return int(h), int(w)

    def resized(self, image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        """A uint8 (H, W, 3) image at ``size`` (height, width), resized as the run's training data was."""
        return image if image.shape[:2] == size else resize_image(image, size, self.config.data.image_resize)

    def tiled(self, height: int, width: int) -> bool:
        """Whether an input of this size the network sees goes through in tiles."""
        cfg = self.config.model
        return self.tile is not None and (cfg.input_size_for(height) > self.tile[0]
                                          or cfg.input_size_for(width) > self.tile[1])

    @torch.no_grad()
    def batch_logits(self, images: np.ndarray) -> torch.Tensor:
        """(N, n_classes, h, w) float logits of uint8 (N, h, w, 3) images already at the size the network
        sees: padded as it needs, in tiles where larger than the tile, with flip TTA if asked."""
        return gathered(self.logit_bands(images), images.shape[1])

    @torch.no_grad()
    def logit_bands(self, images: np.ndarray) -> Iterator[tuple[int, torch.Tensor]]:
        """``batch_logits`` as bands of rows, ``(first row, (N, n_classes, rows, w) logits)`` top to bottom,
        each valid until the next is asked for: in tiles, only a row of tiles' logits is ever held
        (:func:`~pixelwise.inference.tiling.blended_rows`), so a large image's class ids need not wait for
        all its logits. Untiled, one band holds them all."""
        h, w = images.shape[1:3]
        forward = flip_tta(self._forward) if self.tta else self._forward
        if self.scales != (1.0,):
            forward = multi_scale(forward, self.scales, self.config.model.input_size_for)
        pixels = self.padded(images)
        if not self.tiled(h, w):
            # images read with PIL are read-only arrays, which torch.from_numpy warns about: copy only those
            pixels = pixels if pixels.flags.writeable else pixels.copy()
            yield 0, forward(to_input(pixels, self.device))[:, :, :h, :w].float()
            return
        # The tiles are cut from the uint8 pixels and made floats one batch at a time: the whole padded
        # image in float32 would take 4 bytes a pixel and channel.
        def tile_forward(tiles: torch.Tensor) -> torch.Tensor:
            return forward(to_input(tiles.permute(0, 2, 3, 1).numpy(), self.device))

        with warnings.catch_warnings():  # a read-only image (PIL's) is only read here: no copy of it
            warnings.filterwarnings("ignore", "The given NumPy array is not writable")
            channels_first = torch.from_numpy(pixels).permute(0, 3, 1, 2)  # a view: tiles are cut along H and W
        for start, rows in blended_rows(tile_forward, channels_first, self.tile, TILE_OVERLAP):
            if start < h:  # rows of padding below the image are dropped
                yield start, rows[:, :, : h - start, :w]

    def padded(self, images: np.ndarray) -> np.ndarray:
        """uint8 (N, h, w, 3) images padded to a size the network takes (reflected where the image is
        large enough, else its edge repeated); an unpadded network's output is centred in its input, so
        the image is placed at that offset. The images themselves where no padding is needed."""
        h, w = images.shape[1:3]
        cfg = self.config.model
        in_h, in_w = cfg.input_size_for(h), cfg.input_size_for(w)
        top, left = (in_h - cfg.output_size(in_h)) // 2, (in_w - cfg.output_size(in_w)) // 2
        pads = ((0, 0), (top, in_h - h - top), (left, in_w - w - left), (0, 0))
        if not any(any(pair) for pair in pads):
            return images
        mode = "reflect" if max(pads[2]) < w and max(pads[1]) < h else "edge"
        return np.pad(images, pads, mode=mode)

    def predict(self, image: ImageInput, size: tuple[int, int] | str | None = None,
                confidence: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """One image's class ids, in memory bounded by the model and a tile or band of rows, not by the
        image (logits are upsampled and arg-maxed a band of rows at a time; in tiles, as each row of tiles
        is done).

        Args:
            image: an array (RGB, RGBA, grey; uint8, 16 bits, floats) or the path of an image file.
            size: what the model sees: the training size by default, ``"native"`` for the image's own.
            confidence: also return each pixel's confidence.

        Returns:
            The (H, W) uint8 class ids at the image's own size (logits upsampled bilinearly, then arg-maxed);
            with ``confidence``, ``(ids, confidence)``, the confidence (H, W) uint8: the softmax
            probability of the pixel's class, 0-255.

        Raises:
            TypeError: ``image`` is neither an array nor a path.
            ValueError: an array that cannot be an image (channels first, empty, NaN).
            DataError: an image file that cannot be read.
        """
        image = as_image(image)
        seen = self.resized(image, self.seen_size(image, size))
        bands = ((start, rows[0]) for start, rows in self.logit_bands(seen[None]))
        sure = np.empty(image.shape[:2], dtype=np.uint8) if confidence else None
        ids = streamed_ids(bands, seen.shape[:2], image.shape[:2], confidence=sure)
        return (ids, sure) if confidence else ids

    @staticmethod
    def mask(logits: torch.Tensor, shape: tuple[int, int], confidence: bool = False
             ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """(H, W) uint8 class ids of (n_classes, h, w) logits at ``shape``: upsampled bilinearly, then
        argmax, a band of rows at a time on large images (:func:`~pixelwise.inference.upsample.upsampled_ids`);
        with ``confidence``, ``(ids, confidence)`` as :meth:`predict` gives them."""
        if not confidence:
            return upsampled_ids(logits, shape)
        sure = np.empty(shape, dtype=np.uint8)
        return streamed_ids([(0, logits)], logits.shape[1:], shape, confidence=sure), sure


def as_image(image: ImageInput) -> np.ndarray:
    """A uint8 (H, W, 3) image from an array or the path of an image file; anything else is a TypeError."""
    if isinstance(image, (str, Path)):
        return read_image(image)
    if not isinstance(image, (np.ndarray, list, tuple)) and not any(
            hasattr(image, name) for name in ("__array__", "__array_interface__")):  # a tensor, a PIL image
        raise TypeError(f"image must be an array or the path of an image file, not {type(image).__name__}")
    return image_array(image)


def check_settings(engine: str, precision: str, onnx_model: str | None) -> None:
    """The engine exists and the settings given are the chosen engine's."""
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, not {engine!r}")
    if onnx_model is not None and engine != "onnx":
        raise ValueError("onnx_model is the onnx engine's; pass engine='onnx'")
    if precision != "auto" and engine == "onnx":
        raise ValueError("precision is the torch engine's; the onnx engine's is its model's (onnx_model)")


def flip_tta(forward: Forward) -> Forward:
    """``forward`` averaged over the input and its horizontal mirror, whose logits are flipped back: a
    mirrored scene is as plausible as the original, and the two passes err differently."""

    def averaged(x: torch.Tensor) -> torch.Tensor:
        return (forward(x).float() + forward(x.flip(-1)).float().flip(-1)) / 2

    return averaged


def _check_scales(scales: tuple[float, ...], config: RunConfig) -> tuple[float, ...]:
    scales = check_scales(scales)
    if scales != (1.0,) and config.model.padding != "same":
        raise ValueError("scales need a padded ('same') U-Net; this run's unpadded network predicts one size "
                         "(leave scales out)")
    return scales


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
                         "in one pass (leave tile out)")
    hints = config.model.size_hints(h, w)
    if hints:
        raise ValueError(f"tile {h}x{w} does not fit this U-Net (each side must be a multiple of "
                         f"{config.model.step}): {'; '.join(hints)}")
    return h, w
