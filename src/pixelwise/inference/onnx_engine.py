"""The ``onnx`` engine: a run's exported model (int8 when present) in ONNX Runtime on the CPU.

A batch of at least as many images as cores is cut into chunks of up to ``CHUNK`` images that run side
by side, one per core, each in a single-threaded session of its own. Measured on a 2-core Xeon with
the int8 model `benchmarks/speed.py` exports (96x128, nothing else running between calls): 141 images/s
at batch 32 and 144 at batch 8 that way, against 111 and 126 for one session spreading each layer over
both cores, whose threads meet at every layer.
A batch smaller than the number of cores (``predict`` sends one image at a time) runs in one session
on all cores.
"""

from __future__ import annotations

import hashlib
import queue
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from ..device import usable_cores
from .tiling import Forward

CHUNK = 4  # images per call of a single-threaded session
ONNX_MODELS = ("fp32", "int8")
# Keys of the metadata an export records: which weights file it was made from, and that file's SHA-256.
WEIGHTS_KEY, DIGEST_KEY = "pixelwise.weights", "pixelwise.weights_sha256"


class StaleExport(ValueError):
    """An ONNX export that was not made from the run's current weights: running it would silently
    answer with an older model. ``onnx_file`` and ``weights_file`` are the two files."""

    def __init__(self, onnx_file: Path, weights_file: Path, reason: str, weights: str):
        self.onnx_file, self.weights_file, self.weights = onnx_file, weights_file, weights
        super().__init__(f"{onnx_file} {reason} {weights_file}; call export(weights={weights!r}) again")


def file_digest(path: Path) -> str:
    """The SHA-256 of a file, in hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_fresh(onnx_file: Path, weights_file: Path) -> None:
    """Refuse an export whose recorded weights are not ``weights_file`` as it is now.

    Raises:
        StaleExport: no record (an export by an older pixelwise), another weights file, or changed weights.
    """
    import onnxruntime

    weights = weights_file.stem.split(".")[0]
    try:
        options = onnxruntime.SessionOptions()
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
        meta = onnxruntime.InferenceSession(str(onnx_file), options, providers=["CPUExecutionProvider"])
        recorded = meta.get_modelmeta().custom_metadata_map
    except Exception as exc:  # onnxruntime raises its own exception types for unreadable models
        raise ValueError(f"{onnx_file}: unreadable ONNX model ({str(exc).splitlines()[0]})") from None
    if DIGEST_KEY not in recorded:
        raise StaleExport(onnx_file, weights_file, "records no weights it was made from, so it cannot be checked "
                                                   "against", weights)
    if recorded.get(WEIGHTS_KEY) != weights_file.name:
        raise StaleExport(onnx_file, weights_file, f"was made from {recorded.get(WEIGHTS_KEY)}, not", weights)
    if recorded[DIGEST_KEY] != file_digest(weights_file):
        raise StaleExport(onnx_file, weights_file, "was made from other weights than those now in", weights)


def _session(path: Path, threads: int):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    # Idle pool threads that spin take the cores from the torch ops that follow each call (upsampling,
    # class ids): at batch 1 with 2 threads, 87 images/s spinning against 103 without.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types for unreadable models
        raise ValueError(f"{path}: unreadable ONNX model ({str(exc).splitlines()[0]})") from None


def onnx_model_path(run_dir: str | Path, model: str | None = None) -> Path:
    """The ONNX file the engine runs: ``model="fp32"`` (model.onnx), ``"int8"`` (model.int8.onnx), or
    None for int8 where ``export(int8=...)`` wrote it, else fp32."""
    from ..rundir import INT8_FILE, ONNX_FILE

    run_dir = Path(run_dir)
    files = {"fp32": ONNX_FILE, "int8": INT8_FILE}
    if model is not None and model not in ONNX_MODELS:
        raise ValueError(f"the ONNX model must be one of {', '.join(ONNX_MODELS)}, not {model!r}")
    model = model or ("int8" if (run_dir / INT8_FILE).exists() else "fp32")
    path = run_dir / files[model]
    if not path.exists():
        if model == "int8":
            raise FileNotFoundError(f"{run_dir}: no {INT8_FILE}; call export(int8=IMAGES) first, or run the fp32 "
                                    "model (onnx_model='fp32')")
        raise FileNotFoundError(f"{run_dir}: no {ONNX_FILE}; call export() first")
    return path


def onnx_forward(run_dir: Path, cores: int | None = None, model: str | None = None) -> Forward:
    """The run's ONNX model (:func:`onnx_model_path`'s choice of ``model``) as a tensor → tensor call on
    ``cores`` CPU cores (default: all that this process may use)."""
    path = onnx_model_path(run_dir, model)
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        raise ValueError("the onnx engine needs onnxruntime: pip install 'pixelwise[onnx]'") from None
    cores = cores or usable_cores()
    wide = _session(path, cores)
    if cores == 1:
        return lambda x: torch.from_numpy(wide.run(None, {"image": x.numpy()})[0])
    # One single-threaded session per core: calls sharing one session from several threads measured slower.
    idle: queue.SimpleQueue = queue.SimpleQueue()
    for _ in range(cores):
        idle.put(_session(path, 1))
    pool = ThreadPoolExecutor(cores, thread_name_prefix="pixelwise-onnx")

    def run_chunk(chunk: np.ndarray) -> np.ndarray:
        session = idle.get()
        try:
            return session.run(None, {"image": chunk})[0]
        finally:
            idle.put(session)

    def forward(x: torch.Tensor) -> torch.Tensor:
        array = x.numpy()
        if len(array) < cores:
            return torch.from_numpy(wide.run(None, {"image": array})[0])
        chunks = np.array_split(array, max(cores, -(-len(array) // CHUNK)))
        return torch.from_numpy(np.concatenate(list(pool.map(run_chunk, chunks))))

    return forward
