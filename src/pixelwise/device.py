"""Where and in what precision to compute: CUDA when present, bf16 only where it is native."""

from __future__ import annotations

import os
from contextlib import AbstractContextManager, nullcontext

import torch


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


def resolve_precision(requested: str, device: torch.device, depthwise: bool = False) -> torch.dtype | None:
    """The autocast dtype for ``requested`` (None = plain fp32). ``auto`` picks bf16 only where the
    hardware computes it natively (CUDA with bf16, CPUs with AVX512-BF16 or AMX); emulated bf16 is
    slower than fp32. A network with a ``depthwise`` encoder (EfficientNet-Lite) runs that encoder in
    fp32 on CPUs whatever the autocast (model/encoder_unet.py), so bf16 reaches its decoder only: on
    AVX512-BF16 without AMX that trained the 128/96/64/48 decoder 1.23x and predicted 1.32x as fast
    as fp32 (docs/benchmarks.md#pretrained-encoders), while on AMX, measured with the first, narrower
    decoder only, it predicted at 0.87x, so there it stays fp32 until measured again."""
    if requested == "fp32":
        return None
    if requested == "fp16":
        if device.type != "cuda":
            raise ValueError("fp16 training needs a CUDA GPU; use --precision bf16 or fp32 on a CPU")
        return torch.float16
    amx = False
    if device.type == "cuda":
        native_bf16 = torch.cuda.is_bf16_supported()
    else:
        amx = _cpu_has("_is_amx_tile_supported")
        native_bf16 = amx or _cpu_has("_is_avx512_bf16_supported")
    if requested == "bf16":
        return torch.bfloat16
    if native_bf16 and not (depthwise and amx):
        return torch.bfloat16
    return torch.float16 if device.type == "cuda" else None


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
