"""The object a user holds for a trained run: :func:`load` returns a :class:`Model`, a
:class:`~pixelwise.inference.predictor.Predictor` (every inference setting held once) that also predicts
files and folders, evaluates, exports, serves and labels videos with those settings. It stands above the
modules it calls, which take a Predictor and never import it back."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch

from ..evaluation.evaluate import Evaluation, evaluate_predictor
from .auto_engine import EngineTimer
from .export import export
from .predict import PredictResult, predict
from .predictor import ImageInput, Predictor
from .serve import ServeOptions, serve
from .video import VideoOptions, VideoResult, predict_video


class Model(Predictor):
    """A trained run loaded by :func:`load`: a :class:`~pixelwise.inference.predictor.Predictor` whose
    settings (engine, precision, tile, TTA, weights) every method below uses."""

    def predict(self, images: ImageInput | Iterable[str | Path], size: tuple[int, int] | str | None = None, *,
                out: str | Path | None = None, masks: str | Path | None = None, video: VideoOptions | None = None,
                on_file: Callable[[Path], None] | None = None, data: dict | None = None,
                lists: Iterable[str | Path] = (), overwrite: bool = False,
                on_start: Callable[[int], None] | None = None, confidence: bool = False
                ) -> np.ndarray | tuple[np.ndarray, np.ndarray] | PredictResult:
        """One image's class ids, or with ``out`` every file's outputs written.

        Args:
            images: without ``out``, one image: an array (RGB, RGBA, grey; uint8, 16 bits, floats) or
                the path of an image file. With ``out``, image files, folders of them and videos.
            size: what the model sees: the training size by default, ``"native"`` for each image's own.
            out: the folder for ``NAME_mask.png`` (ids), ``NAME_color.png``, ``NAME_overlay.png``.
            masks: with ``out``, a folder of true masks: each image also gets ``NAME_figure.png``.
            video: with ``out``, the options for video files.
            on_file: with ``out``, called with each image file once its outputs are written.
            data: with ``masks``, data settings that replace the run's own for reading them
                (``mask_suffix="_L"``, ``mask_format="colors"`` …).
            lists, overwrite, on_start: with ``out``, as for :func:`~pixelwise.inference.predict.predict`
                (lists of input paths; predict again what ``OUT/predictions.csv`` says is done; told the
                count to predict). Started by torchrun, each process predicts its share (docs/scaling.md).
            confidence: each pixel's confidence too (the softmax probability of its class, 0-255): returned
                beside the ids, or with ``out`` written as ``NAME_confidence.png``.

        Returns:
            Without ``out``, the (H, W) uint8 class ids at the image's own size (logits upsampled
            bilinearly, then arg-maxed), with ``confidence`` as ``(ids, confidence)``. With ``out``, a :class:`~pixelwise.inference.predict.PredictResult`:
            the files written and the problems of the files that were not.

        Raises:
            TypeError: ``images`` is neither an array nor a path.
            ValueError: an array that cannot be an image (channels first, empty, NaN).
            DataError: an image file that cannot be read (without ``out``; with it, a problem in the result).
        """
        if out is not None:
            return predict(self, [images] if isinstance(images, (str, Path)) else images, out, masks_dir=masks,
                           size=size, on_file=on_file, video=video, data=data, lists=lists, overwrite=overwrite,
                           on_start=on_start, confidence=confidence)
        if any(v is not None for v in (masks, video, on_file, data, on_start)) or lists or overwrite:
            raise ValueError("masks, video, on_file, data, lists, overwrite and on_start are for predicting files "
                             "into a folder: pass out")
        return super().predict(images, size, confidence)

    def evaluate(self, images: str | Path, masks: str | Path, **options) -> Evaluation:
        """This model scored on a folder of image/mask pairs, with its settings.

        Args:
            images: the images folder.
            masks: the masks folder.
            **options: ``skip_invalid``, ``cache_dir``, ``progress``, ``size``, ``only``, ``data``, ``worst``, as for
                :func:`~pixelwise.evaluation.evaluate.evaluate_predictor`.

        Returns:
            The :class:`~pixelwise.evaluation.evaluate.Evaluation`.

        Raises:
            DataError: problems in the data (unless ``skip_invalid`` and valid pairs remain).
        """
        return evaluate_predictor(self, images, masks, **options)

    def export(self, *, int8: Iterable[str | Path] | None = None, calibration_count: int = 64) -> list[Path]:
        """The run's model as ONNX from this model's ``weights`` (see :func:`~pixelwise.inference.export.export`);
        with the onnx engine (named or chosen by auto), this model then runs the new export.

        Returns:
            The files written.

        Raises:
            ValueError: an unpadded U-Net, the ONNX packages missing, a calibration count below 1.
            DataError: unreadable calibration inputs.
        """
        written = export(self.run_dir, int8=int8, calibration_count=calibration_count, weights=self.weights)
        if self.engine == "onnx":
            if self.engine_note is not None:  # chosen by auto: the new export's best model (int8 where written)
                self.onnx_model = None
            self.load_onnx()
        return written

    def serve(self, *, host: str = "127.0.0.1", port: int = 8000, options: ServeOptions | None = None,
              log: Callable[[str], None] = print) -> None:
        """Serve this model over HTTP until interrupted (see :func:`~pixelwise.inference.serve.serve`).

        Raises:
            ValueError: the port cannot be bound, or FastAPI is missing.
        """
        serve(self, host=host, port=port, options=options or ServeOptions(), log=log)

    def predict_video(self, path: str | Path, out: str | Path, options: VideoOptions | None = None,
                      size: tuple[int, int] | str | None = None) -> VideoResult:
        """One video's labelled copy (see :func:`~pixelwise.inference.video.predict_video`).

        Raises:
            DataError: the file cannot be read as a video.
            ValueError: PyAV is missing.
        """
        return predict_video(self, path, out, options or VideoOptions(), size)


def load(run_dir: str | Path, *, engine: str = "auto", precision: str = "auto", tile: tuple[int, int] | None = None,
         tta: bool = False, weights: str = "best", onnx_model: str | None = None,
         device: torch.device | None = None, engine_timer: EngineTimer | None = None,
         scales: tuple[float, ...] = (1.0,)) -> Model:
    """A trained run ready for inference, its settings held once for ``predict``, ``evaluate``,
    ``export``, ``serve`` and ``predict_video``.

    Args:
        run_dir: a run directory.
        engine: "auto" (the faster of ONNX Runtime and torch, exporting the run on first use; see
            :class:`Predictor`), "torch" or "onnx".
        precision, tile, tta, weights, onnx_model, device, engine_timer, scales: as for :class:`Predictor`.

    Returns:
        The run's :class:`Model`.

    Raises:
        FileNotFoundError, ValueError, StaleExport: as :class:`Predictor` does.
    """
    return Model(run_dir, weights=weights, device=device, precision=precision, engine=engine, tile=tile,
                 tta=tta, onnx_model=onnx_model, engine_timer=engine_timer, scales=scales)
