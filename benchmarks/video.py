"""Video pipeline against bare inference: frames/s of ``predict_video`` on a 640x480 drive made from the
CARLA frames, against ``predict_batch`` on the same frames already decoded in memory (the model,
upsampling and argmax, nothing else), for each engine and each recipe's network.

    .venv/bin/python benchmarks/video.py [--data ../shared/carla] [--frames 96] [--batch-size 8] \
        [--recipes seed scratch] [--engines torch torch-fp32 onnx onnx-int8 auto] [--rounds 3] [--isa avx2]

Engines: ``torch`` (its ``auto`` precision), ``torch-fp32``, ``onnx`` (ONNX Runtime, the fp32 export),
``onnx-int8`` (the int8 export, calibrated on 16 of the frames) and ``auto`` (what ``pw.load`` picks: it
loads first, exporting and timing on its first use, outside the timed rounds; its choice and the time
that first load took are printed). Each round runs every engine in turn, so that a slowdown of the
shared machine hits them all. ``--isa avx2``
limits torch's kernels to AVX2 (benchmarks/isa.py); ONNX Runtime has no such limit and keeps the CPU's
own instructions.

Each recipe's network runs at its own training size (``seed``: the assignment's U-Net at 96x128,
``scratch``: the BatchNorm U-Net at 240x320, ``default``: EfficientNet-Lite0 at 480x640), untrained:
speed does not depend on the weights. Bare
and pipeline runs alternate (A B A B …) and the best of ``--rounds`` each is reported, as noise on a
shared machine only ever slows a run down; the CPU time of the whole process per frame (user + system,
all threads) is printed beside them, a figure the noise moves much less than wall time. The pipeline
adds decoding, the overlay with its legend and H.264 encoding; those run in threads beside inference,
so on a machine with spare cores they cost little, on 2 shared cores they compete with it.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import isa

isa.limit_isa()  # before torch loads: its kernels read the limits once

import torch  # noqa: E402

from pixelwise.config import RunConfig  # noqa: E402
from pixelwise.data.decode import read_image  # noqa: E402
from pixelwise.data.problems import DataError  # noqa: E402
from pixelwise.inference.batch import predict_batch  # noqa: E402
from pixelwise.inference.predictor import Predictor  # noqa: E402
from pixelwise.inference.video import VideoOptions, predict_video, require_av  # noqa: E402
from pixelwise.model.build import build_model  # noqa: E402
from pixelwise.recipes import recipe  # noqa: E402
from pixelwise.rundir import BEST, save_config  # noqa: E402
from pixelwise.training import checkpoint  # noqa: E402


def cpu_name() -> str:
    """The CPU model and its AVX-512/AMX flags, from /proc/cpuinfo (what lscpu prints)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown CPU"
    model = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")), "?")
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    wide = sorted(f for f in set(flags) if f.startswith(("avx512_bf16", "avx512f", "amx")))
    return f"{model}, {torch.get_num_threads()} torch threads, flags: {' '.join(wide) or 'no avx512/amx'}"


def make_run(run: Path, config: RunConfig) -> Path:
    run.mkdir()
    save_config(run, config)
    torch.manual_seed(0)
    checkpoint.save(run / BEST, build_model(config.model))  # untrained, no weight package needed
    return run


def make_drive(frames: list, path: Path, rate: int = 10) -> Path:
    av = require_av()
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=rate, options={"crf": "18"})
        stream.width, stream.height, stream.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode(None))
    return path


def timed(work, frames: int) -> tuple[float, float]:
    """(frames/s, CPU milliseconds of the whole process per frame) of ``work()``."""
    cpu = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    work()
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    used = after.ru_utime - cpu.ru_utime + after.ru_stime - cpu.ru_stime
    return frames / wall, 1000 * used / frames


def bare(predictor: Predictor, frames: list, batch: int) -> tuple[float, float]:
    def work() -> None:
        for i in range(0, len(frames), batch):
            predict_batch(predictor, frames[i: i + batch])
    return timed(work, len(frames))


def pipeline(predictor: Predictor, drive: Path, out: Path, batch: int, count: int) -> tuple[float, float]:
    def work() -> None:
        result = predict_video(predictor, drive, out, VideoOptions(batch_size=batch, progress=False))
        assert not result.problems and result.frames == count, (result.problems, result.frames)
    return timed(work, count)


ENGINES = {"torch": {"engine": "torch"}, "torch-fp32": {"engine": "torch", "precision": "fp32"},
           "onnx": {"engine": "onnx", "onnx_model": "fp32"}, "onnx-int8": {"engine": "onnx", "onnx_model": "int8"},
           "auto": {"engine": "auto"}}


def load_engine(run: Path, engine: str, frames: Path) -> Predictor:
    """The run loaded with ``engine``; the ONNX exports it needs are made first (auto makes its own)."""
    from pixelwise.inference.export import export
    from pixelwise.rundir import INT8_FILE, ONNX_FILE

    if engine == "onnx" and not (run / ONNX_FILE).exists():
        export(run)
    if engine == "onnx-int8" and not (run / INT8_FILE).exists():
        export(run, int8=[frames], calibration_count=16)
    return Predictor(run, **ENGINES[engine])


def described(predictor: Predictor) -> str:
    """What ran: the ONNX file, or torch's precision."""
    if predictor.model_file is not None:
        return f"onnx {predictor.model_file.name}"
    return "torch " + str(predictor.dtype or torch.float32).removeprefix("torch.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "carla")
    parser.add_argument("--frames", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--recipes", nargs="+", default=["seed", "scratch"],
                        help="whose network to run, each at its recipe's training size")
    parser.add_argument("--engines", nargs="+", choices=tuple(ENGINES), default=["torch", "onnx"])
    parser.add_argument("--rounds", type=int, default=3, help="bare and pipeline runs each, alternated; best kept")
    isa.add_isa_argument(parser)
    args = parser.parse_args()
    source = args.data / "CameraRGB"
    if not source.is_dir():
        print(f"skipped: {source} not found (the CARLA frames)")
        return
    frames = []
    for path in sorted(source.iterdir())[: args.frames]:
        try:
            frames.append(read_image(path))
        except DataError as exc:
            print(f"skipping {exc.problems[0]}", file=sys.stderr)
    print(f"CPU: {cpu_name()}")
    print(isa.isa_line())
    print(f"{len(frames)} frames of {frames[0].shape[1]}x{frames[0].shape[0]}, batch {args.batch_size}, "
          f"best of {args.rounds} alternated runs; cpu = process CPU ms per frame, all threads")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        drive = make_drive(frames, work / "drive.mp4")
        for name in args.recipes:
            config = recipe(name)
            if config.model.encoder != "unet":  # untrained: the ImageNet weights would change nothing here
                config = replace(config, model=replace(config.model, encoder_weights="none"))
            run = make_run(work / name, config)
            size = "x".join(map(str, config.data.size))
            loaded = {}
            for engine in sorted(args.engines, key=lambda e: e != "auto"):  # auto first: it exports on its own
                started = time.perf_counter()
                loaded[engine] = load_engine(run, engine, source)
                if engine == "auto":
                    print(f"auto, first load {time.perf_counter() - started:.1f} s: {loaded[engine].engine_note}")
                predict_batch(loaded[engine], frames[: args.batch_size])  # warm-up: kernels for this shape
            bares: dict[str, list] = {engine: [] for engine in loaded}
            pipes: dict[str, list] = {engine: [] for engine in loaded}
            for round_ in range(args.rounds):  # engines side by side in each round: a slowdown hits them all
                for engine, predictor in loaded.items():
                    bares[engine].append(bare(predictor, frames, args.batch_size))
                    pipes[engine].append(pipeline(predictor, drive, work / f"out-{name}-{engine}-{round_}",
                                                  args.batch_size, len(frames)))
            for engine, predictor in loaded.items():
                (b_rate, b_cpu), (p_rate, p_cpu) = max(bares[engine]), max(pipes[engine])
                print(f"{name:>8} at {size:>7}, {engine:>10} ({described(predictor)}): bare {b_rate:6.1f} frames/s "
                      f"(cpu {b_cpu:5.1f} ms), pipeline {p_rate:6.1f} frames/s (cpu {p_cpu:5.1f} ms): "
                      f"costs {100 * (1 - p_rate / b_rate):4.1f}% "
                      f"[all rounds: bare {' '.join(f'{r:.1f}' for r, _ in bares[engine])}; "
                      f"pipeline {' '.join(f'{r:.1f}' for r, _ in pipes[engine])}]")

if __name__ == "__main__":
    main()
