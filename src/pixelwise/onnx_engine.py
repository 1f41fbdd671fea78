"""The ``onnx`` engine: a run's exported model (int8 when present) in ONNX Runtime on the CPU.

A batch is cut into small chunks that run side by side, one per core, in single-threaded sessions:
measured on a 2-core AVX-512 machine (int8, 96x128), that gave 143 images/s at batch 8 and 126 at batch
32, against 125 and 111 for one session spreading each convolution over both cores (its threads meet
at every layer, and chunks of a few images keep a layer's activations in cache). A batch smaller than
the number of cores (``predict`` sends one image at a time) runs in one session on all cores.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from .tiling import Forward

CHUNK = 4  # images per call of a single-threaded session


def _session(path: Path, threads: int):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    try:
        return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types for unreadable models
        raise ValueError(f"{path}: unreadable ONNX model ({str(exc).splitlines()[0]})") from None


def _usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def onnx_forward(run_dir: Path, cores: int | None = None) -> Forward:
    """The run's ONNX model (int8 when ``pixelwise export --int8`` wrote one) as a tensor → tensor
    call on ``cores`` CPU cores (default: all that this process may use)."""
    from .export import INT8_FILE, ONNX_FILE

    path = next((run_dir / name for name in (INT8_FILE, ONNX_FILE) if (run_dir / name).exists()), None)
    if path is None:
        raise FileNotFoundError(f"{run_dir}: no {ONNX_FILE}; run `pixelwise export {run_dir}` first")
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        raise ValueError("--engine onnx needs onnxruntime: pip install 'pixelwise[onnx]'") from None
    cores = cores or _usable_cores()
    wide = _session(path, cores)
    # ONNX Runtime sessions may run from several threads at once; each call here uses one core.
    narrow = _session(path, 1) if cores > 1 else None
    pool = ThreadPoolExecutor(cores, thread_name_prefix="pixelwise-onnx") if narrow is not None else None

    def run(session, chunk: np.ndarray) -> np.ndarray:
        return session.run(None, {"image": chunk})[0]

    def forward(x: torch.Tensor) -> torch.Tensor:
        array = x.numpy()
        if pool is None or len(array) < cores:
            return torch.from_numpy(run(wide, array))
        chunks = np.array_split(array, max(cores, -(-len(array) // CHUNK)))
        return torch.from_numpy(np.concatenate(list(pool.map(lambda c: run(narrow, c), chunks))))

    return forward
