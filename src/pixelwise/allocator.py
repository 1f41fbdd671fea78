"""How a process's freed memory goes back (or not) to the kernel: kept for training, whose large CPU
tensors would otherwise be faulted in afresh at every step; handed back by a server once idle.

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


def glibc() -> ctypes.CDLL | None:
    """The C library this process runs on where it is glibc (whose malloc these functions tune), else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)  # the C library this process already runs on
    except OSError:
        return None
    if not hasattr(libc, "gnu_get_libc_version") or not hasattr(libc, "mallopt"):
        return None  # musl and others: their malloc has other knobs
    return libc


def release_freed_memory() -> bool:
    """Hand the memory this process has freed back to the kernel now (glibc's ``malloc_trim(0)``, over
    every arena: each thread that allocates may have one, and a freed block inside an arena is otherwise
    kept for reuse). True when memory went back; False when none did or the process does not run on glibc.
    Costs a walk over the free blocks: call it when idle, not per allocation."""
    libc = glibc()
    return bool(libc.malloc_trim(0)) if libc is not None and hasattr(libc, "malloc_trim") else False


def keep_freed_memory() -> bool:
    """Make glibc's malloc reuse freed memory instead of returning it to the kernel; True when it did
    (False where the process does not run on glibc). Lasts for the rest of the process."""
    libc = glibc()
    return libc is not None and bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, TRIM_ABOVE))
