"""Keep freed memory inside the process, so that PyTorch's large CPU tensors are not faulted in afresh
at every step.

glibc's malloc gives each block above its mmap threshold (which never rises past 32 MiB) a mapping of
its own and hands it back to the kernel when freed; the next step maps it again and the kernel zeroes
every page of it once more. A training step of the ``default`` recipe (Lite0, batch 8 of 256x320
crops) has many such blocks, so it spent much of its time in page faults. With no mmap'd blocks and the
heap trimmed only above 1 GiB, those faults are gone, for a little more peak memory (measured with
benchmarks/allocator.py: docs/benchmarks.md#memory-allocator). Other C libraries, or glibc replaced by jemalloc or tcmalloc through ``LD_PRELOAD``, are left as they are.
"""

from __future__ import annotations

import ctypes
import sys

M_TRIM_THRESHOLD = -1  # mallopt parameters, from glibc's <malloc.h>
M_MMAP_MAX = -4
TRIM_ABOVE = 1 << 30


def keep_freed_memory() -> bool:
    """Make glibc's malloc reuse freed memory instead of returning it to the kernel; True when it did
    (False where the process does not run on glibc). Lasts for the rest of the process."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None)  # the C library this process already runs on
    except OSError:
        return False
    if not hasattr(libc, "gnu_get_libc_version") or not hasattr(libc, "mallopt"):
        return False  # musl and others: their malloc has other knobs
    return bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, TRIM_ABOVE))
