"""Export a run's model to ONNX (any batch, height and width) and quantise it to int8 for fast CPU
inference with ONNX Runtime (VNNI on x86), calibrated on the user's own images."""

from __future__ import annotations

import logging
import warnings
from contextlib import contextmanager
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch

from ..config import RunConfig
from ..data.decode import read_image
from ..data.pairs import IMAGE_DIR, is_image_file
from ..data.problems import DataError
from ..data.resize import resize_image
from ..data.transforms import to_input
from ..files import atomic_path
from ..model.unet import subpixel_copy
from ..rundir import INT8_FILE, ONNX_FILE, load_config, load_model, weights_path
from .onnx_engine import DIGEST_KEY, WEIGHTS_KEY, file_digest
from .predict import expand_images
EXAMPLE_SIDE = 256  # the largest side of the input the export traces with


def _require(module: str) -> None:
    try:
        __import__(module)
    except ImportError:
        raise ValueError(f"ONNX export needs the '{module}' package: pip install 'pixelwise[onnx]'") from None


def export_onnx(run_dir: str | Path, out: str | Path | None = None, weights: str = "best") -> Path:
    """Write the fp32 model as ONNX with dynamic batch, height and width (each side a multiple of
    what the network needs, e.g. 16); the onnx engine pads images to such sizes. Transposed convs are
    written as conv + pixel shuffle (SubPixelUpConv): the same outputs, and quantisable. The model's
    metadata records the weights file it was made from and its SHA-256, which the onnx engine checks."""
    _require("onnxscript")
    run_dir = Path(run_dir)
    config = load_config(run_dir)
    # Same outputs; transposed convs become conv + pixel shuffle, which int8 quantisation can cover.
    model = subpixel_copy(load_model(run_dir, config, weights))
    if config.model.padding != "same":
        raise ValueError("ONNX export supports padded ('same') U-Nets, whose valid sizes are multiples of one step; "
                         "this run uses unpadded convolutions")
    out = Path(out) if out is not None else run_dir / ONNX_FILE
    # An example the network takes, small: the graph's height and width are dynamic, and an example of a
    # large training size (8192x8192 is a valid one) made the export trace take over 20 GB.
    h, w = (config.model.input_size_for(min(side, EXAMPLE_SIDE)) for side in config.data.size)
    step = config.model.step
    example = torch.rand(1, config.model.in_channels, h, w)
    dims = torch.export.Dim
    dynamic = {"x": {0: dims("batch", min=1, max=1024), 2: step * dims("h", min=1, max=4096 // step),
                     3: step * dims("w", min=1, max=4096 // step)}}
    source = weights_path(run_dir, weights)
    made_from = {WEIGHTS_KEY: source.name, DIGEST_KEY: file_digest(source)}
    with atomic_path(out) as tmp, warnings.catch_warnings(), _quiet("torch.onnx"):
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (example,), str(tmp), input_names=["image"], output_names=["logits"],
                          dynamic_shapes=dynamic, dynamo=True, external_data=False, optimize=True, verbose=False)
        _record(tmp, made_from)
    return out


def _record(path: Path, metadata: dict[str, str]) -> None:
    """Write ``metadata`` into the ONNX model at ``path`` (its metadata_props), replacing those keys."""
    import onnx

    model = onnx.load(str(path))
    kept = [p for p in model.metadata_props if p.key not in metadata]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    for key, value in metadata.items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(path))


def _recorded(path: Path) -> dict[str, str]:
    """The weights an export records it was made from (empty for an export by an older pixelwise)."""
    import onnx

    props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    return {key: props[key] for key in (WEIGHTS_KEY, DIGEST_KEY) if key in props}


@contextmanager
def _quiet(logger: str | None) -> Iterator[None]:
    """Silence a library's chatter (the exporter's notes; the quantiser's per-layer warnings such as
    'Axis 1 is out-of-range' for BatchNorm weights, which it then quantises per tensor): not the
    user's concern."""
    log = logging.getLogger(logger)
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def _calibration_batches(images: Iterable[Path], config: RunConfig) -> Iterator[dict]:
    """Calibration inputs, preprocessed exactly as in training."""
    for path in images:
        image = resize_image(read_image(path), config.data.size, config.data.image_resize)
        yield {"image": to_input(image[None]).contiguous().numpy()}


def quantize_int8(run_dir: str | Path, calibration: list[Path], source: str | Path | None = None,
                  out: str | Path | None = None) -> Path:
    """Static int8 quantisation (QDQ, per-channel weights) calibrated on ``calibration`` images."""
    _require("onnxruntime")
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    run_dir = Path(run_dir)
    if not calibration:
        raise ValueError("int8 quantisation needs calibration images (a few dozen typical ones)")
    config = load_config(run_dir)
    source = Path(source) if source is not None else run_dir / ONNX_FILE
    if not source.exists():
        raise FileNotFoundError(f"{source}: export the fp32 ONNX model first")
    out = Path(out) if out is not None else run_dir / INT8_FILE

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = _calibration_batches(calibration, config)

        def get_next(self) -> dict | None:
            return next(self.batches, None)

    with atomic_path(out) as tmp:
        prepared = tmp.with_name(tmp.name + ".pre.onnx")  # an intermediate, removed whatever happens
        try:
            quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
            with _quiet(None):  # onnxruntime.quantization logs through the root logger
                quantize_static(str(prepared), str(tmp), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
            _record(tmp, _recorded(source))  # made from the same weights as the model it quantises
        finally:
            prepared.unlink(missing_ok=True)
    return out


def export(run_dir: str | Path, *, int8: Iterable[str | Path] | None = None, calibration_count: int = 64,
           weights: str = "best") -> list[Path]:
    """``model.onnx`` (fp32) and, with ``int8`` images or folders, ``model.int8.onnx`` calibrated on up
    to ``calibration_count`` of them, taken evenly over the sorted list so a folder of consecutive
    frames calibrates on the whole drive; a dataset folder stands for its CameraRGB/. Every argument is
    checked before anything is written. Outputs replace earlier ones: an fp32 export without ``int8``
    removes an earlier ``model.int8.onnx``, quantised from the model.onnx it replaces."""
    run_dir = Path(run_dir)
    config = load_config(run_dir)
    weights_path(run_dir, weights)
    if config.model.padding != "same":
        raise ValueError("ONNX export supports padded ('same') U-Nets, whose valid sizes are multiples of one step; "
                         "this run uses unpadded convolutions")
    _require("onnxscript")
    calibration: list[Path] = []
    if int8 is not None:
        _require("onnxruntime")
        if calibration_count < 1:
            raise ValueError(f"the calibration count must be at least 1, not {calibration_count}")
        images, problems = expand_images([_image_folder(Path(item)) for item in int8])
        if problems:
            raise DataError(problems)
        step = max(1, len(images) // calibration_count)
        calibration = images[::step][:calibration_count]
    written = [export_onnx(run_dir, weights=weights)]
    if calibration:
        written.append(quantize_int8(run_dir, calibration, source=written[0]))
    else:
        (run_dir / INT8_FILE).unlink(missing_ok=True)
    return written


def _image_folder(path: Path) -> Path:
    """A dataset folder (CameraRGB/ and CameraMask/, no images of its own) stands for its images folder."""
    if path.is_dir() and (path / IMAGE_DIR).is_dir() and not any(is_image_file(p) for p in path.iterdir()):
        return path / IMAGE_DIR
    return path
