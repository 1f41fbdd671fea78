"""What int8 costs in quality: a trained run scored on the held-out CARLA drives with PyTorch, with
ONNX Runtime on the exported fp32 model, and with ONNX Runtime on its int8 quantisation.

    .venv/bin/python benchmarks/int8.py RUN [--data ../shared/carla] [--out benchmarks/quality-runs]

RUN is a run trained on the training drives of benchmarks/quality.py's split (e.g.
benchmarks/quality-runs/seed-96x128). Calibration uses 64 of the training frames, never held-out ones.
Every score is mIoU over the classes present in the held-out truth, at the masks' full 640x480. The
run's model.onnx and model.int8.onnx are (re)written.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from quality import frame_names, held_out_folder

from pixelwise.data.pairs import IMAGE_DIR, MASK_DIR
from pixelwise.evaluation.evaluate import evaluate
from pixelwise.inference.export import export_onnx, quantize_int8
from pixelwise.rundir import INT8_FILE


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "carla")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/quality-runs"))
    parser.add_argument("--weights", choices=("best", "last"), default="last")
    args = parser.parse_args()
    cache = args.out / "cache"
    names = frame_names(args.data, cache)
    held_out = held_out_folder(args.data, args.out, names)
    training = held_out_folder(args.data, args.out, names, part="train")
    frames = sorted((training / IMAGE_DIR).iterdir())
    calibration = frames[:: max(1, len(frames) // 64)][:64]

    (args.run / INT8_FILE).unlink(missing_ok=True)
    export_onnx(args.run, weights=args.weights)
    scores = {}
    for label in ("torch", "onnx fp32", "onnx int8"):
        if label == "onnx int8":
            quantize_int8(args.run, calibration)
        evaluation = evaluate(args.run, held_out / IMAGE_DIR, held_out / MASK_DIR, weights=args.weights,
                              cache_dir=cache, progress=False, engine=label.split()[0])
        scores[label] = evaluation.scores
        print(f"{label:10s} mIoU {evaluation.scores.miou:.4f}  pixel accuracy {evaluation.scores.pixel_accuracy:.4f}",
              flush=True)
    loss = scores["onnx fp32"].miou - scores["onnx int8"].miou
    print(f"\nint8 costs {100 * loss:.2f} mIoU points against the fp32 ONNX model "
          f"({100 * (scores['torch'].miou - scores['onnx int8'].miou):.2f} against PyTorch at auto precision)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
