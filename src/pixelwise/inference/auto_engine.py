"""The ``auto`` engine's choice: ONNX Runtime where it runs the network clearly faster than torch on this
CPU, torch everywhere else (CUDA, no onnxruntime, a setting only torch has, an export that cannot be made).

The ONNX model is the run's own export when it was made from the current weights (int8 where the user
exported one), else an fp32 export written into the run on first use and kept fresh with the weights.
Which engine is faster is measured once per machine and network and remembered in the cache folder
(``ENGINE_STORE``, a :class:`~pixelwise.device.ChoiceStore`), as the torch engine's precision is.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from ..config import RunConfig
from ..device import ChoiceStore, measured_choice
from ..rundir import INT8_FILE, ONNX_FILE, weights_path
from .onnx_engine import check_fresh

ENGINE_STORE = "engine.json"  # in the cache folder: the torch-or-onnx choices of this machine
SPEEDUP = 1.2  # ONNX must run this many times torch's speed to be chosen: small gains are not worth a switch
EngineTimer = Callable[[str, Callable[[], object]], float]  # (engine name, one forward call) -> seconds


def wall_seconds(engine: str, call: Callable[[], object]) -> float:
    """The default :data:`EngineTimer`: the wall-clock seconds of one ``call``."""
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


@dataclass(frozen=True)
class OnnxCandidate:
    """What auto may run on ONNX Runtime: ``model`` ("fp32", "int8") or None where only torch can run,
    and ``notes``: what happened on the way (an export made, a stale int8 model passed over, why not)."""

    model: str | None
    notes: tuple[str, ...] = ()


def onnx_candidate(run_dir: Path, config: RunConfig, weights: str, device: torch.device,
                   precision: str) -> OnnxCandidate:
    """The ONNX model ``auto`` may use for this run, exporting the fp32 one on first use.

    Args:
        run_dir: the run directory.
        config: its configuration.
        weights: the weights file the model must come from ("best", "last").
        device: where torch would run (ONNX Runtime runs on the CPU only).
        precision: the torch precision asked for; one named explicitly is torch's alone.

    Returns:
        The candidate: a fresh int8 export, else a fresh (or newly written) fp32 export, else none.
    """
    if device.type != "cpu":
        return OnnxCandidate(None, (f"ONNX Runtime runs on the CPU, not {device.type}",))
    if precision != "auto":
        return OnnxCandidate(None, (f"precision {precision} asked for, a torch setting",))
    if config.model.padding != "same":
        return OnnxCandidate(None, ("ONNX export supports padded U-Nets only",))
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return OnnxCandidate(None, ("onnxruntime is not installed",))
    source = weights_path(run_dir, weights)
    notes: list[str] = []
    for model, name in (("int8", INT8_FILE), ("fp32", ONNX_FILE)):
        path = run_dir / name
        if not path.exists():
            continue
        try:
            check_fresh(path, source)
            return OnnxCandidate(model, tuple(notes))
        except ValueError as exc:  # stale or unreadable: not run, and the fp32 one is made again below
            if model == "int8":
                reason = str(exc).split("; ")[0].replace(str(path), "it")
                notes.append(f"{path.name} passed over, {reason}: export it again with int8 images to use it")
    return _exported(run_dir, weights, notes)


def _exported(run_dir: Path, weights: str, notes: list[str]) -> OnnxCandidate:
    """The fp32 export written into the run now, or torch with the reason where it cannot be."""
    from .export import export_onnx  # export imports the prediction code, which imports the Predictor

    started = time.perf_counter()
    try:
        export_onnx(run_dir, weights=weights)
    except Exception as exc:  # noqa: BLE001  (whatever stops the export, torch still predicts)
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return OnnxCandidate(None, (*notes, f"could not export {run_dir / ONNX_FILE} ({reason})"))
    return OnnxCandidate("fp32", (*notes, f"exported {run_dir / ONNX_FILE} in {time.perf_counter() - started:.0f} s "
                                          "(once: kept while the weights do not change)"))


def faster_engine(store: ChoiceStore, what: dict, time_of: Callable[[str], float]
                  ) -> tuple[str, dict[str, float], bool]:
    """"torch" or "onnx" for ``what`` on this machine: kept in ``store``, or measured now by
    :func:`~pixelwise.device.measured_choice` with ONNX needing ``SPEEDUP`` times torch's speed.

    Returns:
        The engine, the seconds of each that chose it, and whether they were measured now.
    """
    return store.choose(what, ("torch", "onnx"),
                        lambda: measured_choice(time_of, "torch", "onnx", speedup=SPEEDUP))


def choice_line(engine: str, onnx_model: str | None, seconds: dict[str, float], notes: tuple[str, ...]) -> str:
    """The one line a command prints about auto's choice, e.g. ``engine: onnx fp32 (2.1x torch's speed on
    this CPU)``: the engine, the measured ratio where both were timed, then the ``notes``."""
    reasons = list(notes)
    if onnx_model is not None and seconds.get("onnx") and seconds.get("torch"):
        speed = f"{seconds['torch'] / seconds['onnx']:.1f}x torch's speed on this CPU"
        reasons.insert(0, speed if engine == "onnx" else f"onnx {onnx_model} ran at {speed}, under the {SPEEDUP}x "
                                                         "a switch needs")
    name = f"onnx {onnx_model}" if engine == "onnx" else "torch"
    return f"engine: {name}" + (f" ({'; '.join(reasons)})" if reasons else "")
