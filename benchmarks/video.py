"""Video pipeline against bare inference: frames/s of ``predict_video`` on a 640x480 drive made from the
CARLA frames, against ``predict_batch`` on the same frames already decoded in memory (the model,
upsampling and argmax, nothing else), for the torch and onnx engines.

    .venv/bin/python benchmarks/video.py [--data ../shared/carla] [--frames 120] [--batch-size 8] [--size 96x128]

The model is the assignment's U-Net, untrained (speed does not depend on the weights). The pipeline
adds decoding, the overlay with its legend and H.264 encoding; those run in threads beside inference,
so on a machine with spare cores they cost little, on 2 shared cores they compete with it.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

from pixelwise.config import DataConfig, RunConfig
from pixelwise.data.decode import read_image
from pixelwise.data.problems import DataError
from pixelwise.inference.batch import predict_batch
from pixelwise.inference.predictor import Predictor
from pixelwise.inference.video import VideoOptions, predict_video, require_av
from pixelwise.model.unet import UNet
from pixelwise.rundir import BEST, save_config
from pixelwise.training import checkpoint


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


def make_run(work: Path, size: tuple[int, int]) -> Path:
    run = work / "run"
    run.mkdir()
    config = RunConfig(data=DataConfig(size=size))
    save_config(run, config)
    torch.manual_seed(0)
    checkpoint.save(run / BEST, UNet(config.model))
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


def bare_rate(predictor: Predictor, frames: list, batch: int) -> float:
    predict_batch(predictor, frames[:batch])  # warm-up: kernels for this shape
    started = time.perf_counter()
    for i in range(0, len(frames), batch):
        predict_batch(predictor, frames[i: i + batch])
    return len(frames) / (time.perf_counter() - started)


def pipeline_rate(predictor: Predictor, drive: Path, out: Path, batch: int) -> float:
    started = time.perf_counter()
    result = predict_video(predictor, drive, out, VideoOptions(batch_size=batch, progress=False))
    assert not result.problems, result.problems
    return result.frames / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "carla")
    parser.add_argument("--frames", type=int, default=120)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--size", default="96x128", help="the model's input HEIGHTxWIDTH")
    parser.add_argument("--engines", nargs="+", default=["torch", "onnx"])
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
    size = tuple(int(v) for v in args.size.split("x"))
    print(f"CPU: {cpu_name()}")
    print(f"{len(frames)} frames of {frames[0].shape[1]}x{frames[0].shape[0]}, model input {size[0]}x{size[1]}, "
          f"batch {args.batch_size}")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        run = make_run(work, size)
        drive = make_drive(frames, work / "drive.mp4")
        for engine in args.engines:
            if engine == "onnx":
                from pixelwise.inference.export import export_onnx

                export_onnx(run)
            predictor = Predictor(run, engine=engine)
            bare = bare_rate(predictor, frames, args.batch_size)
            piped = pipeline_rate(predictor, drive, work / f"out-{engine}", args.batch_size)
            print(f"{engine:>5}: bare inference {bare:6.1f} frames/s, video pipeline {piped:6.1f} frames/s "
                  f"(decode + overlay + encode cost {100 * (1 - piped / bare):4.1f}%)")


if __name__ == "__main__":
    main()
