"""Speed of pixelwise against the assignment's own Keras code, side by side in one run.

    python benchmarks/speed.py            # needs `pip install -e ".[bench]"` for the Keras baseline
    python benchmarks/speed.py --no-keras # pixelwise only

Prints one table: training and inference images/s of pixelwise and of the same U-Net written as the
assignment writes it in Keras (fp32 defaults), their ratio, and pixelwise's achieved GFLOP/s against
a matrix-multiply peak measured in the same run; inference through pixelwise's ``onnx`` engine with
the exported fp32 and int8 models at batch 32, 8 and 1 (needs the ``onnx`` extra). Then a full epoch of real training from PNG files
(../shared/carla when present, synthetic scenes otherwise) against the pure compute time of the
same number of steps: the data path's overhead. Timings on a shared 2-core machine are noisy:
read the ratios, which are measured minutes apart in one run.

Each measurement runs in a fresh process of its own: TensorFlow's and ONNX Runtime's thread pools
stay alive once started and would slow every measurement that came after them in the same process
(the data-path epoch ran 1.15x its compute after the Keras baseline, 1.02x on its own).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import re
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import isa  # sets the --isa limits, which torch reads when it loads: before any import of it

isa.limit_isa()

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from pixelwise.config import DataConfig, RunConfig, TrainConfig
from pixelwise.data.pairs import IMAGE_DIR, MASK_DIR
from pixelwise.data.transforms import to_batch
from pixelwise.device import autocast, pick_device, precision_name, resolve_precision
from pixelwise.evaluation.metrics import class_ids
from pixelwise.model.keras import unet_model
from pixelwise.rundir import save_config
from pixelwise.synth import write_dataset
from pixelwise.training.loop import train
from pixelwise.training.step import train_step

CARLA = Path(__file__).resolve().parents[1].parent / "shared" / "carla"


def isolated(function, *args):
    """``function(*args)`` run in a fresh interpreter, so that no framework's threads linger from an
    earlier measurement."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:  # may fork decoders
        return pool.submit(function, *args).result()


def matmul_peak(dtype: torch.dtype, n: int = 2048, seconds: float = 2.0) -> float:
    """GFLOP/s of a square matrix multiply: the ceiling for convolution-heavy work."""
    a, b = torch.rand(n, n).to(dtype), torch.rand(n, n).to(dtype)
    for _ in range(3):
        a @ b
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        count += 1
    return 2 * n**3 * count / (time.perf_counter() - start) / 1e9


def forward_flops(size: tuple[int, int], model: torch.nn.Module | None = None) -> float:
    """FLOPs of one forward pass of ``model`` (the assignment model by default) on one image of ``size``
    (a multiply-add counts 2)."""
    model = unet_model((*size, 3)) if model is None else model
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.rand(1, 3, *size))
    return float(counter.get_total_flops())


def timed(step, images_per_step: int, warmup: int, steps: int) -> float:
    """Images/s of ``step()`` in steady state (warm-up excluded)."""
    for _ in range(warmup):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return images_per_step * steps / (time.perf_counter() - start)


def pixelwise_speed(size: tuple[int, int], batch: int, steps: int) -> tuple[float, float, str]:
    """Training and inference images/s through pixelwise's own training step and model setup."""
    device = pick_device()
    dtype = resolve_precision("auto", device)
    torch.manual_seed(0)
    model = unet_model((*size, 3)).to(device, memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    images = torch.randint(0, 256, (batch, *size, 3), dtype=torch.uint8).numpy()
    masks = torch.randint(0, 23, (batch, *size), dtype=torch.uint8).numpy()

    def batch_tensors() -> tuple[torch.Tensor, torch.Tensor]:  # what training does with each batch
        return to_batch(images, masks, np.arange(batch), device)

    def train_once() -> None:
        model.train()
        x, y = batch_tensors()
        train_step(model, optimizer, scaler, x, y, batch, device, dtype)

    @torch.no_grad()
    def infer_once() -> None:
        model.eval()
        x, _ = batch_tensors()
        with autocast(device, dtype):
            class_ids(model(x))

    precision = precision_name(dtype)
    return timed(train_once, batch, 2, steps), timed(infer_once, batch, 2, steps), precision


def keras_speed(size: tuple[int, int], batch: int, steps: int) -> tuple[float, float]:
    """The assignment's Keras U-Net and recipe, fp32 defaults: the baseline users have today."""
    from keras_unet import unet_model as keras_unet  # first: it quiets TensorFlow's start-up logging
    import tensorflow as tf

    model = keras_unet((*size, 3))
    rng = np.random.default_rng(0)
    x = tf.constant(rng.random((batch, *size, 3), dtype=np.float32))
    y = tf.constant(rng.integers(0, 23, (batch, *size, 1)).astype(np.uint8))
    train_rate = timed(lambda: model.train_on_batch(x, y), batch, 2, steps)
    predict = tf.function(lambda t: tf.argmax(model(t, training=False), axis=-1))
    infer_rate = timed(lambda: predict(x).numpy(), batch, 2, steps)
    return train_rate, infer_rate


def onnx_speed(size: tuple[int, int], batches: tuple[int, ...], steps: int, work: Path) -> dict[str, list[float]]:
    """Inference images/s (argmax included) of pixelwise's ``onnx`` engine (what ``predict --engine onnx``
    runs) with the exported fp32 model and with its int8 quantisation, made by ``pixelwise export``
    (calibrated on synthetic scenes; speed does not depend on the weights, so an untrained model
    stands in for a trained one), at each batch size of ``batches``."""
    from pixelwise.inference.export import export_onnx, quantize_int8
    from pixelwise.inference.onnx_engine import onnx_forward
    from pixelwise.rundir import BEST
    from pixelwise.training import checkpoint

    run = work / f"onnx-{size[0]}x{size[1]}"
    run.mkdir()
    save_config(run, RunConfig(data=DataConfig(size=size)))
    torch.manual_seed(0)
    checkpoint.save(run / BEST, unet_model((*size, 3)))
    export_onnx(run)
    rates = {}
    for name in ("fp32", "int8"):
        if name == "int8":
            scenes = write_dataset(work / f"calibration-{size[0]}", 32, seed=1, height=size[0], width=size[1],
                                   progress=False)
            quantize_int8(run, sorted((scenes / IMAGE_DIR).iterdir()))
        forward = onnx_forward(run)  # the int8 model once it exists
        rates[name] = []
        for batch in batches:
            x = torch.rand(batch, 3, *size)
            rates[name].append(timed(lambda: class_ids(forward(x)), batch, 2, max(steps, 96 // batch)))
    return rates


def data_path_overhead(data: Path, work: Path, batch: int, train_rate: float, infer_rate: float) -> list[str]:
    """Real training from PNGs against the pure compute of the same training steps and validation passes:
    one epoch with a cold cache (decoding included in the wall time), then four with a warm one. Warm
    epochs after the first are timed in the training loop (steps, batching, augmentation, validation)
    and end to end, from one epoch's log line to the next (adding the checkpoint, history and plot
    writes); both leave out a fresh process's one-off kernel set-up, as the pure compute rate does."""
    rows = []
    for label, epochs in (("cold cache (decodes PNGs)", 1), ("warm cache", 4)):
        config = RunConfig(data=DataConfig(), train=TrainConfig(epochs=epochs, batch_size=batch))
        stamps: list[tuple[float, str]] = []
        start = time.perf_counter()
        result = train(data / IMAGE_DIR, data / MASK_DIR, work / f"run-{epochs}", config, cache_dir=work / "cache",
                       progress=False, log=lambda line: stamps.append((time.perf_counter(), line)),
                       skip_invalid=True)
        wall = time.perf_counter() - start
        text = "\n".join(line for _, line in stamps)
        trained, validated = map(int, re.search(r"(\d+) training and (\d+) validation", text).groups())
        compute = trained / train_rate + validated / infer_rate
        if epochs == 1:
            first = result.history[0]["seconds"]
            rows.append(f"| epoch from PNGs, {label} | {wall:.1f} s wall, {first:.1f} s in the loop | "
                        f"pure compute ≈ {compute:.1f} s | {first / compute:.2f}× |")
        else:
            ends = [t for t, line in stamps if line.startswith("epoch ")]
            whole = [later - earlier for earlier, later in zip(ends, ends[1:])]
            loop = [row["seconds"] for row in result.history[1:]]
            rows.append(f"| epochs 2–{epochs} from PNGs, {label} | in the loop {', '.join(f'{t:.2f}' for t in loop)} s; "
                        f"end to end {', '.join(f'{t:.2f}' for t in whole)} s | pure compute ≈ {compute:.1f} s | "
                        f"{float(np.median(loop)) / compute:.2f}× in the loop, "
                        f"{float(np.median(whole)) / compute:.2f}× end to end (medians) |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=6, help="timed steps per measurement (default: %(default)s)")
    parser.add_argument("--no-keras", action="store_true", help="skip the Keras baseline")
    parser.add_argument("--data", type=Path, default=None, help="dataset for the epoch test (default: shared/carla)")
    isa.add_isa_argument(parser)
    args = parser.parse_args()

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}"
          + (f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""))
    print(isa.isa_line())
    peaks = {"fp32": isolated(matmul_peak, torch.float32), "bf16": isolated(matmul_peak, torch.bfloat16)}
    print(f"matrix-multiply peak: fp32 {peaks['fp32']:.0f} GFLOP/s, bf16 {peaks['bf16']:.0f} GFLOP/s\n")
    print("| size, batch | pixelwise train img/s | Keras train img/s | ratio | pixelwise infer img/s | "
          "Keras infer img/s | ratio | pixelwise train GFLOP/s (% of peak) |")
    print("|---|---|---|---|---|---|---|---|")
    rates_96 = keras_96 = (float("nan"), float("nan"))
    for size, batch in (((96, 128), 32), ((240, 320), 8)):
        flops = forward_flops(size)
        p_train, p_infer, precision = isolated(pixelwise_speed, size, batch, args.steps)
        k_train, k_infer = (float("nan"), float("nan")) if args.no_keras else isolated(keras_speed, size, batch,
                                                                                        args.steps)
        if size == (96, 128):
            rates_96, keras_96 = (p_train, p_infer), (k_train, k_infer)
        achieved = 3 * flops * p_train / 1e9  # forward + backward ≈ 3 forward passes
        peak = peaks["bf16" if precision == "bfloat16" else "fp32"]
        print(f"| {size[0]}x{size[1]}, {batch} | {p_train:.1f} ({precision}) | {k_train:.1f} | {p_train / k_train:.2f}× | "
              f"{p_infer:.1f} | {k_infer:.1f} | {p_infer / k_infer:.2f}× | {achieved:.0f} ({100 * achieved / peak:.0f}%) |")

    with tempfile.TemporaryDirectory() as tmp:
        batches = (32, 8, 1)
        print("\n| inference engine, 96x128 | " + " | ".join(f"batch {b} img/s" for b in batches)
              + " | × Keras fp32 at batch 32 |\n|---|---|---|---|---|")
        print(f"| pixelwise torch ({precision}) | {rates_96[1]:.1f} | | | {rates_96[1] / keras_96[1]:.2f}× |")
        onnx = isolated(onnx_speed, (96, 128), batches, args.steps, Path(tmp))
        for name, label in (("fp32", "ONNX Runtime fp32 (pixelwise export)"),
                            ("int8", "ONNX Runtime int8 (pixelwise export --int8)")):
            print(f"| {label} | " + " | ".join(f"{r:.1f}" for r in onnx[name])
                  + f" | {onnx[name][0] / keras_96[1]:.2f}× |")

    data = args.data or (CARLA if CARLA.is_dir() else None)
    with tempfile.TemporaryDirectory() as tmp:
        if data is None:
            data = write_dataset(Path(tmp) / "synth", 256, seed=0, progress=False)
        print(f"\ndata path on {data}:")
        for row in isolated(data_path_overhead, data, Path(tmp), 32, *rates_96):
            print(row)


if __name__ == "__main__":
    main()
