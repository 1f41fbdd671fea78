"""Where and in what precision to compute: CUDA when present, bf16 only where it is native (and, on a
CPU, measured faster once per machine and network, then remembered, as the auto engine's choice is)."""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import time
from collections.abc import Callable, Collection
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


# oneDNN's instruction-set limits under which its bf16 kernels still run natively (ONEDNN_MAX_CPU_ISA).
_BF16_ISA_TAGS = ("BF16", "AMX", "FP16", "AVX10", "ALL")


def kernels_allow_bf16() -> bool:
    """Whether the kernels may use the CPU's bf16 instructions: ATen built for AVX-512 or better (not
    limited by ``ATEN_CPU_CAPABILITY=avx2``) and oneDNN not limited below AVX-512-BF16
    (``ONEDNN_MAX_CPU_ISA``). A limited process computes bf16 emulated, far slower than fp32, whatever
    the chip's flags say."""
    if torch.backends.cpu.get_cpu_capability() in ("DEFAULT", "NO AVX", "AVX", "AVX2"):
        return False
    limit = os.environ.get("ONEDNN_MAX_CPU_ISA", os.environ.get("DNNL_MAX_CPU_ISA", "ALL")).upper()
    return any(tag in limit for tag in _BF16_ISA_TAGS)


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bf16 in hardware (CUDA with bf16, CPUs with AVX512-BF16 or AMX whose
    kernels may use them); emulated bf16 is slower than fp32."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return kernels_allow_bf16() and (_cpu_has("_is_amx_tile_supported") or _cpu_has("_is_avx512_bf16_supported"))


def resolve_precision(requested: str, device: torch.device, depthwise: bool = False) -> torch.dtype | None:
    """The autocast dtype for ``requested`` (None = plain fp32), by rule: ``auto`` picks bf16 where it
    is native. A network with a ``depthwise`` encoder (EfficientNet-Lite) runs that encoder in fp32 on
    CPUs whatever the autocast (model/encoder_unet.py), so bf16 reaches its decoder only, and on AMX
    CPUs it stays fp32. On CPUs with native bf16, ``auto`` is settled by measurement instead, once per
    machine and network (:class:`PrecisionStore`): the same flags hide CPUs on which bf16 is slower
    (docs/benchmarks.md#precision-by-measurement).

    Raises:
        ValueError: ``fp16`` asked for on a device without CUDA.
    """
    if requested == "fp32":
        return None
    if requested == "fp16":
        if device.type != "cuda":
            raise ValueError("precision fp16 needs a CUDA GPU; use bf16 or fp32 on a CPU")
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


# A candidate whose first (untimed) call already took this many times the baseline's is dropped
# unmeasured: bf16 emulated in software runs an order of magnitude slower than fp32
# (docs/benchmarks.md#precision-by-measurement), and timing it further would cost the job minutes.
HOPELESS = 3.0


def measured_choice(time_of: Callable[[str], float], baseline: str, candidate: str, speedup: float,
                    rounds: int = 2) -> tuple[str, dict[str, float]]:
    """``baseline`` or ``candidate``, whichever ran ``time_of`` (seconds it returns for a name) faster, with
    the best time of each. One untimed call of each first (kernels and sessions are built then); the
    candidate is dropped at once where that call took ``HOPELESS`` times the baseline's (never the other
    way round: torch's first call, building its kernels, is slow for that reason alone). Otherwise
    ``rounds`` alternated pairs follow, so a slowdown of the machine hits both; the candidate must run
    ``speedup`` times as fast as the baseline, or the baseline stays.

    Args:
        time_of: seconds one call of the named choice takes.
        baseline: the choice kept unless the candidate is clearly faster.
        candidate: the challenger.
        speedup: how many times the baseline's speed the candidate must reach (> 1: a margin).
        rounds: alternated timed pairs.

    Returns:
        The name chosen, and the seconds of each name (best of the rounds, or the first call where dropped).
    """
    names = (baseline, candidate)
    first = {name: time_of(name) for name in names}
    if first[candidate] > HOPELESS * first[baseline]:
        return baseline, first
    times = dict.fromkeys(names, math.inf)
    for _ in range(rounds):
        for name in names:
            times[name] = min(times[name], time_of(name))
    return (candidate if times[candidate] * speedup < times[baseline] else baseline), times


def measured_precision(time_step: Callable[[torch.dtype | None], float], rounds: int = 2
                       ) -> tuple[torch.dtype | None, dict[str, float]]:
    """fp32 or bf16, whichever ran ``time_step`` faster (seconds it returns), with the best time of each,
    by :func:`measured_choice`: bf16 must win by 5%, or fp32, the more precise, stays."""
    name, seconds = measured_choice(lambda name: time_step(PRECISION_DTYPES[name]), "fp32", "bfloat16",
                                    speedup=1 / 0.95, rounds=rounds)
    return PRECISION_DTYPES[name], seconds


PRECISION_STORE = "precision.json"  # in the cache folder: the fp32-or-bf16 choices of this machine
# The autocast dtype of each name precision_name gives (runs and the store keep names, not dtypes).
PRECISION_DTYPES: dict[str, torch.dtype | None] = {"fp32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}


class ChoiceStore:
    """Choices measured once per machine and kept in a JSON file by name (a precision, an engine), so
    that the same run loaded twice computes the same way: a fresh measurement could flip between two
    close timings (a busy machine slows one of them), and the choice changes a few pixels of the masks.

    Each choice is keyed by the CPU model, the torch version and its kernels' instruction set, the
    thread count and ``what`` the caller measures (a network, a task, shapes). An unreadable file is
    measured over and rewritten; an unwritable one is measured again next time.

    Args:
        path: the JSON file (e.g. ``PRECISION_STORE`` in the cache folder).
    """

    def __init__(self, path: Path):
        self.path = Path(path)

    @staticmethod
    def _key(what: dict) -> tuple[str, dict]:
        measured = {"cpu": cpu_model(), "torch": torch.__version__, "build": torch.backends.cpu.get_cpu_capability(),
                    "bf16_kernels": kernels_allow_bf16(), "threads": torch.get_num_threads(), **what}
        return hashlib.sha256(json.dumps(measured, sort_keys=True).encode()).hexdigest()[:16], measured

    def recall(self, what: dict, names: Collection[str]) -> tuple[str, dict[str, float]] | None:
        """The kept choice for ``what`` (one of ``names``) with the seconds that chose it, or None."""
        record = _read_json_object(self.path).get(self._key(what)[0])
        if not isinstance(record, dict) or record.get("choice") not in names:
            return None
        seconds = record.get("seconds")
        return record["choice"], seconds if isinstance(seconds, dict) else {}

    def remember(self, what: dict, choice: str, seconds: dict[str, float]) -> None:
        """Keep ``choice`` for ``what`` with the ``seconds`` that chose it, whole or not at all."""
        digest, measured = self._key(what)
        known = _read_json_object(self.path)
        known[digest] = {"choice": choice, "seconds": seconds, "measured": measured}
        try:  # whole or not at all, also beside another process doing the same
            atomic_write(self.path, lambda tmp: tmp.write_text(json.dumps(known, indent=1) + "\n"), durable=False)
        except OSError:
            pass  # a read-only home: measured again next time, which costs seconds, not correctness

    def choose(self, what: dict, names: Collection[str], measure: Callable[[], tuple[str, dict[str, float]]]
               ) -> tuple[str, dict[str, float], bool]:
        """The kept choice for ``what``, or ``measure()``'s kept from now on: the name, its seconds, and
        whether it was measured now (False: kept from before)."""
        kept = self.recall(what, names)
        if kept is not None:
            return kept[0], kept[1], False
        choice, seconds = measure()
        self.remember(what, choice, seconds)
        return choice, seconds, True


class PrecisionStore:
    """fp32-or-bf16 choices measured once per machine and network and kept in a JSON file
    (a :class:`ChoiceStore`), so that the same run trained twice, or loaded twice, computes in the same
    precision: the precision changes the weights a run learns and a few pixels of its masks.

    Args:
        path: the JSON file (``PRECISION_STORE`` in the cache folder).
    """

    def __init__(self, path: Path):
        self.choices = ChoiceStore(path)
        self.path = self.choices.path

    def recall(self, what: dict) -> tuple[bool, torch.dtype | None]:
        """``(True, dtype)`` where a choice for ``what`` on this machine is kept, else ``(False, None)``."""
        kept = self.choices.recall(what, PRECISION_DTYPES)
        return (True, PRECISION_DTYPES[kept[0]]) if kept else (False, None)

    def remember(self, what: dict, choice: torch.dtype | None, seconds: dict[str, float]) -> None:
        """Keep ``choice`` for ``what`` with the ``seconds`` that chose it, whole or not at all."""
        self.choices.remember(what, precision_name(choice), seconds)

    def choose(self, what: dict, time_step: Callable[[torch.dtype | None], float]
               ) -> tuple[torch.dtype | None, dict[str, float] | None]:
        """The kept choice for ``what``, or :func:`measured_precision` of ``time_step`` kept from now on;
        with the seconds measured (None where the choice was kept from before)."""
        def measure() -> tuple[str, dict[str, float]]:
            dtype, seconds = measured_precision(time_step)
            return precision_name(dtype), seconds

        name, seconds, fresh = self.choices.choose(what, PRECISION_DTYPES, measure)
        return PRECISION_DTYPES[name], seconds if fresh else None


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
