"""Training steps with glibc's default malloc against ``keep_freed_memory`` (src/pixelwise/allocator.py).

    .venv/bin/python benchmarks/allocator.py [--steps 12] [--rounds 2] [--recipes scratch default]

Each measurement is a fresh process (the malloc setting lasts for a process) that builds a recipe's
network, takes three warm-up steps and then times ``--steps`` training steps on one random batch of
the recipe's crop size, in the precision ``auto`` picks, reporting seconds, minor page faults and
kernel (system) time per step and the peak resident memory. The two settings alternate, A B A B, so
the ratio is measured minutes apart on the same machine. Linux with glibc only.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

from encoders import cpu_name

SETTINGS = ("glibc default", "keep_freed_memory")


def measure(recipe_name: str, keep: bool, steps: int) -> dict:
    import torch

    from pixelwise.allocator import keep_freed_memory
    from pixelwise.device import resolve_precision
    from pixelwise.model.build import build_model
    from pixelwise.recipes import recipe
    from pixelwise.training.losses import Criterion
    from pixelwise.training.step import make_optimizer, train_step

    if keep and not keep_freed_memory():
        raise SystemExit("this process does not run on glibc: nothing to compare")
    config = recipe(recipe_name)
    torch.manual_seed(0)
    model = build_model(config.model).to(memory_format=torch.channels_last).train()
    optimizer = make_optimizer(model, config.train)
    device = torch.device("cpu")
    dtype = resolve_precision("auto", device, depthwise=config.model.encoder != "unet")
    criterion = Criterion(config.train.loss, torch.ones(config.model.n_classes))
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    h, w = config.data.crop_size(config.model.step)
    batch = config.train.batch_size
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(batch, 3, h, w, generator=generator).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, config.model.n_classes, (batch, h, w), generator=generator)
    for _ in range(3):
        train_step(model, optimizer, scaler, x, y, batch, device, dtype, criterion=criterion)
    before, started = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    for _ in range(steps):
        train_step(model, optimizer, scaler, x, y, batch, device, dtype, criterion=criterion)
    seconds, after = time.perf_counter() - started, resource.getrusage(resource.RUSAGE_SELF)
    return {"s_per_step": seconds / steps, "faults_per_step": (after.ru_minflt - before.ru_minflt) / steps,
            "sys_per_step": (after.ru_stime - before.ru_stime) / steps, "peak_gb": after.ru_maxrss / 1e6,
            "batch": f"{batch}x{h}x{w}", "precision": "fp32" if dtype is None else str(dtype).removeprefix("torch.")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=2, help="A B pairs per recipe")
    parser.add_argument("--recipes", nargs="+", default=["scratch", "default"])
    parser.add_argument("--worker", nargs=2, metavar=("RECIPE", "KEEP"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(measure(args.worker[0], args.worker[1] == "1", args.steps)))
        return
    print(f"CPU: {cpu_name()}, {args.steps} timed steps per process\n")
    print("| recipe | batch | precision | malloc | s/step | minor faults/step | kernel s/step | peak GB |")
    print("|---|---|---|---|---:|---:|---:|---:|")
    for name in args.recipes:
        times: dict[str, list[float]] = {s: [] for s in SETTINGS}
        for _ in range(args.rounds):
            for keep, setting in enumerate(SETTINGS):
                out = subprocess.run([sys.executable, __file__, "--steps", str(args.steps), "--worker", name,
                                      str(keep)], check=True, capture_output=True, text=True).stdout
                r = json.loads(out.splitlines()[-1])
                times[setting].append(r["s_per_step"])
                print(f"| {name} | {r['batch']} | {r['precision']} | {setting} | {r['s_per_step']:.3f} | "
                      f"{r['faults_per_step']:,.0f} | {r['sys_per_step']:.2f} | {r['peak_gb']:.2f} |", flush=True)
        ratio = sum(times[SETTINGS[0]]) / sum(times[SETTINGS[1]])
        print(f"| {name} | | | **speed-up** | **{ratio:.2f}x** | | | |")


if __name__ == "__main__":
    main()
