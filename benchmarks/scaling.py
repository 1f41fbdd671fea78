"""How training and inference cost grow with resolution and batch size: time per image and peak memory.

    .venv/bin/python benchmarks/scaling.py [--sizes 96x128 192x256 480x640] [--batches 1 8 32] [--steps 3]

Each (mode, size, batch) runs in a fresh subprocess, so its peak resident memory (``ru_maxrss``) is
its own: the assignment model at ``auto`` precision, channels-last, through pixelwise's own training
step (Adam, cross-entropy) or its inference path (eval, autocast, class ids). Time per image is the
steady-state mean over ``--steps`` steps after one warm-up step. A configuration that does not fit in
``--memory-limit`` GiB (checked against an estimate before it runs, then enforced with RLIMIT_AS)
is reported as such. Needs exclusive use of the CPU; not part of the test run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import isa  # sets the --isa limits, which torch reads when it loads: the child processes inherit them

isa.limit_isa()

CHILD = r"""
import json, resource, sys, time
import torch
from pixelwise.device import autocast, pick_device, resolve_precision
from pixelwise.evaluation.metrics import class_ids
from pixelwise.model.keras import unet_model
from pixelwise.training.step import train_step

mode, h, w, batch, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
device = pick_device()
dtype = resolve_precision("auto", device)
torch.manual_seed(0)
model = unet_model((h, w, 3)).to(device, memory_format=torch.channels_last)
optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
scaler = torch.amp.GradScaler(device.type, enabled=False)
x = torch.rand(batch, 3, h, w, device=device).contiguous(memory_format=torch.channels_last)
y = torch.randint(0, 23, (batch, h, w), device=device)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

def step():
    if mode == "train":
        model.train()
        train_step(model, optimizer, scaler, x, y, batch, device, dtype)
    else:
        model.eval()
        with torch.no_grad(), autocast(device, dtype):
            class_ids(model(x))

step()
start = time.perf_counter()
for _ in range(steps):
    step()
seconds = (time.perf_counter() - start) / (steps * batch)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"seconds_per_image": seconds, "peak_rss": peak, "baseline_rss": before * 1024}))
"""


def measure(mode: str, size: tuple[int, int], batch: int, steps: int, limit_gib: float) -> dict | None:
    """Run one configuration in its own process; None when it does not fit in ``limit_gib``."""
    import resource

    def cap() -> None:
        limit = int(limit_gib * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    result = subprocess.run([sys.executable, "-c", CHILD, mode, str(size[0]), str(size[1]), str(batch), str(steps)],
                            capture_output=True, text=True, preexec_fn=cap)
    if result.returncode != 0:
        if "memory" in result.stderr.lower() or "alloc" in result.stderr.lower():
            return None
        raise RuntimeError(result.stderr[-2000:])
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["96x128", "192x256", "480x640"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8, 32])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--memory-limit", type=float, default=20.0, help="GiB of address space per run (default: 20)")
    isa.add_isa_argument(parser)
    args = parser.parse_args()
    sizes = [tuple(map(int, s.split("x"))) for s in args.sizes]
    base_pixels = sizes[0][0] * sizes[0][1]
    print(isa.isa_line())
    print("| mode | size | pixels (×) | batch | ms per image | time × | peak RSS | memory above the model |")
    print("|---|---|---|---|---|---|---|---|")
    for mode in ("train", "infer"):
        first = None
        for size in sizes:
            for batch in args.batches:
                started = time.perf_counter()
                m = measure(mode, size, batch, args.steps, args.memory_limit)
                scale = size[0] * size[1] / base_pixels
                if m is None:
                    print(f"| {mode} | {size[0]}x{size[1]} | {scale:.0f}× | {batch} | does not fit in "
                          f"{args.memory_limit:.0f} GiB | | | |", flush=True)
                    continue
                first = first or m["seconds_per_image"]
                print(f"| {mode} | {size[0]}x{size[1]} | {scale:.0f}× | {batch} | {1000 * m['seconds_per_image']:.1f} | "
                      f"{m['seconds_per_image'] / first:.1f}× | {m['peak_rss'] / 2**30:.2f} GiB | "
                      f"{(m['peak_rss'] - m['baseline_rss']) / 2**30:.2f} GiB |  <!-- {time.perf_counter() - started:.0f} s -->",
                      flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
