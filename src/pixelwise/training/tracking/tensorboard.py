"""TensorBoard event files in ``RUN/tb/``: the training loss, learning rates and step time at every
step, the epoch's means, and at each validation its loss, pixel accuracy, mIoU, per-class IoU and a
few frames as input | truth | prediction. All on one axis, the run's training step."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ...classes import ClassSet

MISSING_NOTE = ("TensorBoard logs off: the tensorboard package is not installed "
                "(pip install 'pixelwise[tensorboard]' writes them to {path})")


class TensorBoardLog:
    """One session's writer into ``RUN/tb/``; a resumed run continues the curves from ``first_step``.

    Args:
        log_dir: the folder of event files (``RUN/tb``).
        first_step: the first step this session logs. Events an earlier session logged from this step on
            (steps it took after the checkpoint it was resumed from) are dropped by TensorBoard's
            readers (``purge_step``), so a resumed run has no step twice.
        classes: the names per-class IoU is logged under.

    Raises:
        ImportError: the tensorboard package is not installed.
    """

    def __init__(self, log_dir: Path, first_step: int, classes: ClassSet) -> None:
        from torch.utils.tensorboard import SummaryWriter  # ImportError without the tensorboard package

        self.classes = classes
        self.writer = SummaryWriter(str(log_dir), purge_step=first_step)

    def step(self, step: int, loss: float, rates: dict[str, float], seconds: float) -> None:
        """One training step: its loss (the optimised one), each parameter group's learning rate and its time."""
        self.writer.add_scalar("train/loss", loss, step)
        for group, rate in rates.items():
            self.writer.add_scalar(f"lr/{group}", rate, step)
        self.writer.add_scalar("train/step_seconds", seconds, step)

    def epoch(self, step: int, row: dict, iou: np.ndarray | None, frames: np.ndarray | None) -> None:
        """An epoch's row of history.csv, and where it validated its per-class IoU and frames."""
        self.writer.add_scalar("train/epoch_loss", row["train_loss"], step)
        self.writer.add_scalar("train/epoch_accuracy", row["train_accuracy"], step)
        self.writer.add_scalar("train/epoch_seconds", row["seconds"], step)
        if row.get("val_miou") is not None:
            self.writer.add_scalar("val/loss", row["val_loss"], step)
            self.writer.add_scalar("val/accuracy", row["val_accuracy"], step)
            self.writer.add_scalar("val/miou", row["val_miou"], step)
        for name, value in zip(self.classes.names, [] if iou is None else iou):
            if not math.isnan(value):  # a class neither in the truth nor predicted has no IoU
                self.writer.add_scalar(f"val_iou/{name}", float(value), step)
        if frames is not None:
            self.writer.add_image("val/input_truth_prediction", frames, step, dataformats="HWC")
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
