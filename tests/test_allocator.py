import subprocess
import sys

import pytest

# Allocates, fills and frees a 64 MiB tensor 20 times; prints the minor page faults that took.
CHURN = """
import resource, sys, torch
from pixelwise.allocator import keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == "keep" else False
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    torch.empty(16 << 20, dtype=torch.float32).fill_(1.0)
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(setting: str) -> tuple[str, int]:
    out = subprocess.run([sys.executable, "-c", CHURN, setting], check=True, capture_output=True, text=True).stdout
    applied, faults = out.split()
    return applied, int(faults)


def test_freed_memory_is_reused_instead_of_faulted_in_again():
    applied, kept = _faults("keep")
    if applied != "True":
        pytest.skip("not glibc: keep_freed_memory leaves the allocator alone")
    _, default = _faults("default")
    assert default > 10 * 16384  # glibc maps and zeroes each 64 MiB block anew (16,384 pages)
    assert kept < default / 5  # only the first block's pages are faulted in
