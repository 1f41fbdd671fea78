"""Where and in what precision to compute: CUDA when present, bf16 only where it is native (and, on a
CPU, measured faster: anew for each training run, once per machine and network for prediction)."""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import torch

from .files import atomic_write


def usable_cores() -> int:
    """The CPU cores this process may run on: under ``taskset`` or a container's CPU set that is fewer
    than ``os.cpu_count()``, which counts the whole machine, and more workers than cores only contend."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def pick_device() -> torch.device:
    """CUDA when present, without flags; the CPU otherwise."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _cpu_has(probe: str) -> bool:
    """A private torch CPU probe, read defensively: a torch without it means no (fp32)."""
    check = getattr(torch.cpu, probe, None)
    return bool(check()) if check is not None else False


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bf16 in hardware (CUDA with bf16, CPUs with AVX512-BF16 or AMX);
    emulated bf16 is slower than fp32."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return _cpu_has("_is_amx_tile_supported") or _cpu_has("_is_avx512_bf16_supported")


def resolve_precision(requested: str, device: torch.device, depthwise: bool = False) -> torch.dtype | None:
    """The autocast dtype for ``requested`` (None = plain fp32), by rule: ``auto`` picks bf16 where it
    is native. A network with a ``depthwise`` encoder (EfficientNet-Lite) runs that encoder in fp32 on
    CPUs whatever the autocast (model/encoder_unet.py), so bf16 reaches its decoder only: on AMX,
    measured with the first, narrower decoder, it predicted at 0.87x fp32, so there it stays fp32.
    On CPUs with native bf16, training measures instead of trusting the rule (:func:`measured_precision`)
    and prediction measures once per machine and network (:func:`remembered_precision`): the same flags
    hide CPUs on which bf16 is slower (docs/benchmarks.md#precision-by-measurement)."""
    if requested == "fp32":
        return None
    if requested == "fp16":
        if device.type != "cuda":
            raise ValueError("fp16 training needs a CUDA GPU; use --precision bf16 or fp32 on a CPU")
        return torch.float16
    if requested == "bf16":
        return torch.bfloat16
    if native_bf16(device) and not (depthwise and device.type == "cpu" and _cpu_has("_is_amx_tile_supported")):
        return torch.bfloat16
    return torch.float16 if device.type == "cuda" else None


def measures_precision(requested: str, device: torch.device) -> bool:
    """Whether ``auto`` is settled by timing rather than by :func:`resolve_precision`'s rule: on CPUs
    with native bf16, whose flags do not say whether bf16 pays."""
    return requested == "auto" and device.type == "cpu" and native_bf16(device)


def measured_precision(time_step: Callable[[torch.dtype | None], float], rounds: int = 2
                       ) -> tuple[torch.dtype | None, dict[str, float]]:
    """fp32 or bf16, whichever ran ``time_step`` faster (seconds it returns), with the best time of each.
    One untimed call of each first (the kernels are built then), then ``rounds`` alternated pairs, so a
    slowdown of the machine hits both; bf16 must win by 5%, or fp32, the more precise, stays."""
    candidates = (None, torch.bfloat16)
    for dtype in candidates:
        time_step(dtype)
    times: dict[torch.dtype | None, float] = {dtype: math.inf for dtype in candidates}
    for _ in range(rounds):
        for dtype in candidates:
            times[dtype] = min(times[dtype], time_step(dtype))
    choice = torch.bfloat16 if times[torch.bfloat16] < 0.95 * times[None] else None
    return choice, {precision_name(dtype): seconds for dtype, seconds in times.items()}


def remembered_precision(store: Path, what: dict, time_step: Callable[[torch.dtype | None], float]
                         ) -> torch.dtype | None:
    """:func:`measured_precision` of ``what`` (a network and input shape) on this machine, measured once
    and kept in the JSON file ``store``: prediction is then as fast as the machine allows and still
    gives the same masks every time a run is loaded here (a fresh measurement could flip between two
    close timings, and bf16 changes a few pixels). Keyed by the CPU model, the torch version and build,
    the thread count and ``what``; an unreadable store is measured over and rewritten."""
    measured = {"cpu": cpu_model(), "torch": torch.__version__, "build": torch.backends.cpu.get_cpu_capability(),
                "threads": torch.get_num_threads(), **what}
    digest = hashlib.sha256(json.dumps(measured, sort_keys=True).encode()).hexdigest()[:16]
    known = _read_json_object(store)
    record = known.get(digest)
    if isinstance(record, dict) and record.get("choice") in ("fp32", "bfloat16"):
        return None if record["choice"] == "fp32" else torch.bfloat16
    choice, times = measured_precision(time_step)
    known[digest] = {"choice": precision_name(choice), "seconds": times, "measured": measured}
    try:  # whole or not at all, also beside another process doing the same
        atomic_write(store, lambda tmp: tmp.write_text(json.dumps(known, indent=1) + "\n"), durable=False)
    except OSError:
        pass  # a read-only home: measured again next time, which costs a second, not correctness
    return choice


def _read_json_object(path: Path) -> dict:
    """The JSON object in ``path``; empty where the file is missing, unreadable or holds something else."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def cpu_model() -> str:
    """The CPU's model name (Linux's /proc/cpuinfo), else what the platform says."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def forward_timer(model: torch.nn.Module, x: torch.Tensor, device: torch.device
                  ) -> Callable[[torch.dtype | None], float]:
    """Seconds ``model`` takes to score ``x`` in a given precision, in eval mode and without gradients."""
    @torch.no_grad()
    def time_forward(dtype: torch.dtype | None) -> float:
        model.eval()
        started = time.perf_counter()
        with autocast(device, dtype):
            model(x)
        return time.perf_counter() - started
    return time_forward


def available_memory(device: torch.device) -> int | None:
    """Bytes free for a new allocation on ``device`` (None where the system does not say)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            fields = dict(line.split(":", 1) for line in f)
        return int(fields["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return None


def precision_name(dtype: torch.dtype | None) -> str:
    """"fp32" for no autocast, else the dtype's short name ("bfloat16", "float16")."""
    return "fp32" if dtype is None else str(dtype).removeprefix("torch.")


def autocast(device: torch.device, dtype: torch.dtype | None) -> AbstractContextManager:
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()
