"""``--isa avx2`` for the benchmark scripts: torch's, oneDNN's and MKL's kernels limited to AVX2, so any
x86 CPU measures like the AVX2-only CPUs most laptops have (no native bf16: bf16 runs emulated).

The limits are environment variables the libraries read when they load, so a script calls
:func:`limit_isa` before it imports torch (or anything that does); the processes it starts inherit
them. Each row measured this way is labelled "AVX2 (emulated)" by :func:`isa_line`.

    import isa
    isa.limit_isa()          # reads --isa from sys.argv
    import torch             # noqa: E402
    ...
    isa.add_isa_argument(parser)
    print(isa.isa_line())
"""

from __future__ import annotations

import argparse
import os
import platform
import sys

ISA_LIMITS = {
    "native": {},
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"},
}
_FLAGS_SHOWN = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")


def requested_isa(argv: list[str]) -> str:
    """The ``--isa`` value in ``argv`` ("native" when absent); argparse checks it again later."""
    for i, arg in enumerate(argv):
        if arg == "--isa" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--isa="):
            return arg.split("=", 1)[1]
    return "native"


def limit_isa(argv: list[str] | None = None) -> str:
    """Set the environment that limits the kernels to ``--isa`` (from ``argv``, default ``sys.argv``).

    Returns:
        The ISA asked for.

    Raises:
        SystemExit: an unknown ISA, or torch already imported (the limits would not take).
    """
    isa = requested_isa(sys.argv if argv is None else argv)
    if isa not in ISA_LIMITS:
        raise SystemExit(f"--isa {isa}: choose one of {', '.join(ISA_LIMITS)}")
    if ISA_LIMITS[isa] and "torch" in sys.modules:
        raise SystemExit("--isa must be applied before torch is imported")
    os.environ.update(ISA_LIMITS[isa])
    return isa


def add_isa_argument(parser: argparse.ArgumentParser) -> None:
    """The ``--isa`` option (applied earlier by :func:`limit_isa`; declared here for --help)."""
    parser.add_argument("--isa", choices=tuple(ISA_LIMITS), default="native",
                        help="limit torch/oneDNN/MKL kernels to this instruction set (avx2: measure as an "
                             "AVX2-only laptop CPU would run; default: %(default)s)")


def isa_line() -> str:
    """One line for a report: the CPU, its relevant flags, the kernels' capability and the limits set."""
    import torch

    flags: set[str] = set()
    model = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name") and not model:
                    model = line.split(":", 1)[1].strip()
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    model = model or platform.processor() or platform.machine()
    limits = {k: os.environ[k] for k in ISA_LIMITS["avx2"] if k in os.environ}
    emulated = " (emulated)" if limits else ""
    shown = " ".join(f for f in _FLAGS_SHOWN if f in flags) or "unknown"
    limit_text = " ".join(f"{k}={v}" for k, v in limits.items()) or "none"
    return (f"ISA: {torch.backends.cpu.get_cpu_capability()}{emulated}; CPU: {model}, {os.cpu_count()} cores; "
            f"flags: {shown}; limits: {limit_text}")
