"""bf16 autocast against fp32 training: the same validation mIoU, in less time.

    .venv/bin/python benchmarks/precision.py [--count 300] [--epochs 12] [--out DIR]

Trains the assignment's model twice on the same synthetic scenes, split, seed and recipe (the seed
recipe at batch 8, as the demo), once with ``--precision fp32`` and once with ``bf16`` (what ``auto``
picks on a CPU with AVX512-BF16), and prints each run's final and best validation mIoU and its
training time (the decode cache is filled first, outside either run). Not part of the test run.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import isa  # sets the --isa limits, which torch reads when it loads: before any import of it

isa.limit_isa()

from pixelwise.config import RunConfig, TrainConfig
from pixelwise.data.dataset import decode_dataset
from pixelwise.data.pairs import IMAGE_DIR, MASK_DIR
from pixelwise.synth import write_dataset
from pixelwise.training.loop import train


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--out", type=Path, default=None, help="work folder (default: a temporary one)")
    isa.add_isa_argument(parser)
    args = parser.parse_args()
    print(isa.isa_line())
    with tempfile.TemporaryDirectory() as tmp:
        work = args.out or Path(tmp)
        data = write_dataset(work / "data", args.count, seed=0, progress=False)
        decode_dataset(data / IMAGE_DIR, data / MASK_DIR, (96, 128), 23, cache_dir=work / "cache", progress=False)
        print("| precision | final val mIoU | best val mIoU | training time |\n|---|---|---|---|")
        for precision in ("fp32", "bf16"):
            config = RunConfig(train=TrainConfig(epochs=args.epochs, batch_size=8, precision=precision))
            started = time.perf_counter()
            result = train(data / IMAGE_DIR, data / MASK_DIR, work / precision, config, cache_dir=work / "cache",
                           progress=False, log=lambda _: None)
            seconds = time.perf_counter() - started
            print(f"| {precision} | {result.history[-1]['val_miou']:.4f} | {result.best_miou:.4f} | "
                  f"{seconds / 60:.1f} min |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
