"""``pixelwise demo``: the whole flow on built-in synthetic data, so a fresh install shows what the
tool does in a few minutes with nothing to download."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .config import DataConfig, RunConfig, TrainConfig
from .data.pairs import IMAGE_DIR, MASK_DIR
from .evaluation.evaluate import Evaluation, evaluate
from .evaluation.report import format_report, write_report
from .inference.predict import predict
from .inference.predictor import Predictor
from .synth import write_dataset
from .training.loop import TrainResult, train
from .rundir import EVALUATION_DIR

DEMO_MARKER = ".pixelwise-demo"


# The assignment's model and optimiser, but batch 8 instead of 32: an epoch costs the same on a CPU and
# 4x the steps learn far more in a few minutes (validation mIoU after 12 epochs on the demo data, about
# 0.31 at batch 8, 0.23 at 16, 0.18 at 32).
DEMO_BATCH = 8
# The demo's training budget: 16 epochs take about 3 minutes on a 2-core CPU with native bf16 but 8 on
# an AVX2-only one (fp32); within the budget the slower CPU trains fewer epochs and the demo stays
# under 4 minutes on both (docs/benchmarks.md, "The demo").
DEMO_MINUTES = 3.0


@dataclass
class DemoResult:
    run_dir: Path
    training: TrainResult
    evaluation: Evaluation
    figures: list[Path]
    seconds: float


def run_demo(out: str | Path = "pixelwise-demo", *, count: int = 300, epochs: int = 16, minutes: float = DEMO_MINUTES,
             seed: int = 0, test_count: int = 40, progress: bool = True, log: Callable[[str], None] = print
             ) -> DemoResult:
    """Synthesise train and test scenes, train the assignment's U-Net for ``epochs`` epochs or as many
    as fit in ``minutes`` (0: no limit), score it on the unseen test scenes and draw Input | True |
    Predicted figures. Re-running replaces only an earlier demo's output.

    Raises:
        ValueError: ``count`` below 2, ``minutes`` negative, or ``out`` an existing folder that is not a demo's.
    """
    started = time.perf_counter()
    if minutes < 0:
        raise ValueError(f"minutes must be 0 (no limit) or more, not {minutes:g}")
    config = RunConfig(data=DataConfig(), train=TrainConfig(epochs=epochs, batch_size=DEMO_BATCH, seed=seed,
                                                            time_limit=minutes))
    if count < 2:
        raise ValueError(f"the demo needs at least 2 training scenes, not {count}")
    out = Path(out)
    if out.exists():
        if not (out / DEMO_MARKER).exists():
            raise ValueError(f"{out} exists and is not a pixelwise demo folder; pass another out=FOLDER")
        shutil.rmtree(out)
    out.mkdir(parents=True)
    (out / DEMO_MARKER).touch()

    log(f"[1/4] synthesising {count} training and {test_count} test street scenes in {out}")
    data = write_dataset(out / "data", count, seed=seed, progress=progress)
    test = write_dataset(out / "test", test_count, seed=seed + 1_000_003, progress=progress)

    budget = f", as many as fit in {minutes:g} minutes" if minutes else ""
    log(f"[2/4] training the assignment's U-Net for up to {epochs} epochs (batch {DEMO_BATCH}){budget}")
    run_dir = out / "run"
    training = train(data / IMAGE_DIR, data / MASK_DIR, run_dir, config, cache_dir=out / "cache",
                     progress=progress, log=log)

    log("[3/4] evaluating on the unseen test scenes at full 640x480 resolution")
    evaluation = evaluate(run_dir, test / IMAGE_DIR, test / MASK_DIR, cache_dir=out / "cache", progress=progress)
    write_report(evaluation, run_dir / EVALUATION_DIR)
    log(format_report(evaluation))

    log("[4/4] predicting masks for 4 test scenes")
    images = sorted((test / IMAGE_DIR).iterdir())[:: max(1, test_count // 4)][:4]
    result = predict(Predictor(run_dir), images, out / "predictions", masks_dir=test / MASK_DIR)
    figures = [p for p in result.written if p.name.endswith("_figure.png")]

    seconds = time.perf_counter() - started
    s = evaluation.scores
    val = f"best validation mIoU {training.best_miou:.3f}" if training.best_miou is not None else "best"
    log(f"\ndone in {seconds / 60:.1f} min: test mIoU {s.miou:.3f}, pixel accuracy {s.pixel_accuracy:.3f} "
        f"({val} at epoch {training.best_epoch})")
    log(f"  training curves     {run_dir / 'curves.png'}")
    log(f"  evaluation report   {run_dir / 'evaluation' / 'report.html'} (a page for a browser; report.json, confusion.png, "
        "per_class_iou.png beside it)")
    log(f"  predictions         {out / 'predictions'} (e.g. {figures[0].name if figures else '-'})")
    log(f"  try next            pixelwise predict {run_dir} YOUR_IMAGES --out predictions")
    return DemoResult(run_dir, training, evaluation, figures, seconds)
