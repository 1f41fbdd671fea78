"""Where a training step's time goes, per operator, against the CPU's fp32 peak measured in the same run.

    python benchmarks/profile_step.py [--isa avx2] [--recipe seed default] [--steps 4] [--rows 15]
    python benchmarks/profile_step.py --isa avx2 --recipe seed --try contiguous --rounds 4

For each recipe, the step its training loop takes (to_batch, the recipe's augmentation and crop,
pixelwise's ``train_step`` with the recipe's model, loss, optimiser and ``auto`` precision, freed memory
kept as the loop keeps it), with the
shapes the recipe trains on: the seed recipe's assignment U-Net on 96x128 at batch 32, the default
recipe's EfficientNet-Lite0 U-Net on 256x320 crops of 480x640 frames at batch 8. Prints the mean step
time over ``--steps`` steps after two warm-up steps, the step's achieved GFLOP/s (3 forward passes per
image, the FLOP count of speed.py) against the fp32 matrix-multiply peak measured first in the same
process (under the same ``--isa`` limits), and the ``torch.profiler`` table of the operators with the
most self CPU time, each as a share of the profiled steps' wall time.

``--try CHANGE`` instead times the step as the loop runs it (A) against the step with CHANGE (B),
alternating A B A B for ``--rounds`` pairs, and prints each pair's B/A ratio and their median (below 1:
the change is faster). Weights of the two are the same at the start and their optimisers separate.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import isa  # sets the --isa limits, which torch reads when it loads: before any import of it

isa.limit_isa()

from speed import forward_flops, matmul_peak  # noqa: E402  (first: it applies --isa again, before torch)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402

from pixelwise.allocator import keep_freed_memory  # noqa: E402
from pixelwise.config import RunConfig  # noqa: E402
from pixelwise.data.transforms import to_batch  # noqa: E402
from pixelwise.device import pick_device, precision_name, resolve_precision  # noqa: E402
from pixelwise.model.build import build_model  # noqa: E402
from pixelwise.recipes import recipe  # noqa: E402
from pixelwise.training.augment import training_transform  # noqa: E402
from pixelwise.training.losses import make_criterion  # noqa: E402
from pixelwise.training.step import make_optimizer, train_step  # noqa: E402

Step = Callable[[], None]


def step_of(config: RunConfig, memory_format: torch.memory_format = torch.channels_last, compiled: bool = False,
            fused: bool = False, threads: int | None = None, frozen_stride: int = 0) -> tuple[Step, str]:
    """One training step of ``config``'s recipe as its loop takes it, on random frames of its size, and
    the precision it computes in; the keywords are the changes ``--try`` sets against the loop's own."""
    device = pick_device()
    torch.manual_seed(0)
    model = build_model(config.model).to(device, memory_format=memory_format)
    if frozen_stride:
        if not hasattr(model, "encoder"):
            raise SystemExit(f"--try freeze-stride{frozen_stride} needs a pretrained encoder: use --recipe default")
        freeze_encoder_up_to(model.encoder, frozen_stride)
    net = torch.compile(model) if compiled else model
    h, w = config.data.size
    batch = config.train.batch_size
    images = np.random.default_rng(0).integers(0, 256, (batch, h, w, 3), dtype=np.uint8)
    masks = np.random.default_rng(1).integers(0, config.model.n_classes, (batch, h, w), dtype=np.uint8)
    index = np.arange(batch)
    criterion = make_criterion(config, masks, index)
    optimizer = make_optimizer(model, config.train)
    for group in optimizer.param_groups:
        group["fused"] = fused or group["fused"]  # True: one fused kernel instead of Adam's per-parameter loop
    scaler = torch.amp.GradScaler(device.type, enabled=False)
    augment = training_transform(config.data.augment, config.data.size, config.data.crop_size(config.model.step),
                                 config.data.class_crops, config.data.paste)
    dtype = resolve_precision(config.train.precision, device, depthwise=config.model.encoder != "unet")

    def step() -> None:
        before = torch.get_num_threads()
        torch.set_num_threads(threads or before)
        model.train()
        x, y = augment(*to_batch(images, masks, index, device))
        train_step(net, optimizer, scaler, x.contiguous(memory_format=memory_format), y, batch, device, dtype,
                   criterion=criterion)
        torch.set_num_threads(before)
    return step, precision_name(dtype)


def freeze_encoder_up_to(encoder: torch.nn.Module, stride: int) -> None:
    """Stop training an EfficientNet-Lite encoder's stem and its blocks up to ``stride``: autograd then
    skips their backward, the costliest part of the step at full resolution."""
    last = encoder.feature_blocks[encoder.strides.index(stride)]
    frozen = ("_conv_stem.", "_bn0.") + tuple(f"_blocks.{i}." for i in range(last + 1))
    for name, parameter in encoder.named_parameters():
        if name.startswith(frozen):
            parameter.requires_grad_(False)


def seconds_per_step(step: Step, steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - start) / steps


def operator_table(step: Step, steps: int, rows: int) -> list[str]:
    """The ``rows`` operators with the most self CPU time over ``steps`` profiled steps, as a markdown table."""
    start = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    wall_us = (time.perf_counter() - start) * 1e6
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    lines = ["| operator | calls per step | self CPU ms per step | share of the step |", "|---|---|---|---|"]
    for event in events[:rows]:
        lines.append(f"| {event.key} | {event.count / steps:.0f} | {event.self_cpu_time_total / steps / 1e3:.1f} | "
                     f"{100 * event.self_cpu_time_total / wall_us:.1f}% |")
    shown = sum(e.self_cpu_time_total for e in events[:rows])
    lines.append(f"| (the other {max(len(events) - rows, 0)} operators) | | "
                 f"{(sum(e.self_cpu_time_total for e in events) - shown) / steps / 1e3:.1f} | "
                 f"{100 * (sum(e.self_cpu_time_total for e in events) - shown) / wall_us:.1f}% |")
    return lines


CHANGES: dict[str, dict] = {
    "contiguous": {"memory_format": torch.contiguous_format},  # NCHW instead of the loop's channels-last
    "compile": {"compiled": True},  # torch.compile (inductor: needs a C++ compiler)
    "fused-adam": {"fused": True},  # Adam's fused kernel (breaks the exact resume: docs/benchmarks.md)
    "one-thread": {"threads": 1},  # one intra-op thread instead of one per core
    # the default recipe's encoder frozen up to stride 4 or 8: how many more epochs a time limit would fit
    "freeze-stride4": {"frozen_stride": 4},
    "freeze-stride8": {"frozen_stride": 8},
}


def try_change(config: RunConfig, change: str, rounds: int, steps: int) -> list[str]:
    """B/A per pair of the loop's step (A) and the step with ``change`` (B), alternating."""
    (a, _), (b, _) = step_of(config), step_of(config, **CHANGES[change])
    warm_a, warm_b = seconds_per_step(a, 2), seconds_per_step(b, 2)  # warm-up (B's compilation included)
    print(f"  warm-up: A {2 * warm_a:.1f} s, B {2 * warm_b:.1f} s for 2 steps", flush=True)
    ratios = []
    for _ in range(rounds):
        time_a, time_b = seconds_per_step(a, steps), seconds_per_step(b, steps)
        ratios.append(time_b / time_a)
        print(f"  A {time_a:.3f} s, B {time_b:.3f} s per step: B/A {time_b / time_a:.3f}", flush=True)
    return [f"{change}: B/A median {statistics.median(ratios):.3f} over {rounds} pairs "
            f"({', '.join(f'{r:.3f}' for r in ratios)})"]


def profile_recipe(name: str, peak: float, steps: int, rows: int) -> list[str]:
    config = recipe(name)
    step, precision = step_of(config)
    crop = config.data.crop_size(config.model.step)
    for _ in range(2):
        step()
    seconds = seconds_per_step(step, steps)
    flops = 3 * forward_flops(crop, build_model(config.model)) * config.train.batch_size
    achieved = flops / seconds / 1e9
    return [f"### {name} recipe: {config.model.encoder} U-Net, {crop[0]}x{crop[1]}, batch {config.train.batch_size}, "
            f"{precision}",
            f"{seconds:.3f} s per step ({config.train.batch_size / seconds:.1f} img/s), "
            f"{flops / 1e9:.1f} GFLOP per step: {achieved:.0f} GFLOP/s, {100 * achieved / peak:.0f}% of the fp32 peak",
            "", *operator_table(step, max(1, steps // 2), rows), ""]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", nargs="+", choices=("seed", "default"), default=["seed", "default"])
    parser.add_argument("--steps", type=int, default=4, help="timed steps (default: %(default)s); half as many profiled")
    parser.add_argument("--rows", type=int, default=15, help="operators listed (default: %(default)s)")
    parser.add_argument("--try", dest="change", choices=tuple(CHANGES), help="time the step with this change, A B A B")
    parser.add_argument("--rounds", type=int, default=4, help="A B pairs of --try (default: %(default)s)")
    isa.add_isa_argument(parser)
    args = parser.parse_args()
    keep_freed_memory()  # as the training loop does: without it large steps fault their memory in again
    print(f"{isa.isa_line()}; torch {torch.__version__}, {torch.get_num_threads()} threads\n")
    if args.change:
        for name in args.recipe:
            print("\n".join([f"{name} recipe, {args.steps} steps per timing:"]
                            + try_change(recipe(name), args.change, args.rounds, args.steps)), flush=True)
        return 0
    peak = matmul_peak(torch.float32)
    print(f"fp32 matrix-multiply peak: {peak:.0f} GFLOP/s (2048x2048)\n", flush=True)
    for name in args.recipe:
        print("\n".join(profile_recipe(name, peak, args.steps, args.rows)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
