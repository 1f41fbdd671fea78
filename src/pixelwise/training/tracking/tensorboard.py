"""TensorBoard event files in ``RUN/tb/``: the training loss, learning rates and step time at every
step, the epoch's means, and at each validation its loss, pixel accuracy, mIoU, per-class IoU and a
few frames as input | truth | prediction. All on one axis, the run's training step."""

from __future__ import annotations

import io
import math
import os
import socket
import time
from pathlib import Path

import numpy as np
from PIL import Image

from ...classes import ClassSet

PREFIX = "events.out.tfevents."  # what TensorBoard looks for in a file name
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
        # tensorboard's record format and protocol buffers into a file of our own: torch.utils.tensorboard
        # and tensorboard's EventFileWriter reach files through tf.io.gfile, which imports TensorFlow
        # wherever it is installed (seconds at every training start, and its log lines).
        from tensorboard.compat.proto import event_pb2, summary_pb2  # ImportError without the tensorboard package
        from tensorboard.summary.writer.record_writer import RecordWriter

        self.classes, self.events, self.summaries = classes, event_pb2, summary_pb2
        log_dir.mkdir(parents=True, exist_ok=True)
        # Readers take the files in name order, and a session's START drops what the files before it logged
        # from first_step on: so names sort in session order, also for sessions begun within one second.
        earlier = len(list(log_dir.glob(f"{PREFIX}*")))
        name = f"{PREFIX}{int(time.time()):010d}.{earlier:05d}.{socket.gethostname()}.{os.getpid()}"
        self.file = open(log_dir / name, "wb")
        self.writer = RecordWriter(self.file)
        # A session that starts at first_step makes readers drop what an earlier one logged from there on.
        self._write(event_pb2.Event(step=first_step, wall_time=time.time(), file_version="brain.Event:2"))
        start = event_pb2.SessionLog(status=event_pb2.SessionLog.START)
        self._write(event_pb2.Event(step=first_step, wall_time=time.time(), session_log=start))

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        """One value of the curve ``tag`` at ``step``."""
        self._add(step, self.summaries.Summary.Value(tag=tag, simple_value=float(value)))

    def add_image(self, tag: str, picture: np.ndarray, step: int) -> None:
        """A uint8 (H, W, 3) picture under ``tag`` at ``step``, stored as PNG."""
        png = io.BytesIO()
        Image.fromarray(picture).save(png, format="PNG")
        image = self.summaries.Summary.Image(height=picture.shape[0], width=picture.shape[1], colorspace=3,
                                             encoded_image_string=png.getvalue())
        self._add(step, self.summaries.Summary.Value(tag=tag, image=image))

    def _add(self, step: int, value) -> None:
        summary = self.summaries.Summary(value=[value])
        self._write(self.events.Event(step=step, wall_time=time.time(), summary=summary))

    def _write(self, event) -> None:
        self.writer.write(event.SerializeToString())

    def step(self, step: int, loss: float, rates: dict[str, float], seconds: float) -> None:
        """One training step: its loss (the optimised one), each parameter group's learning rate and its time."""
        self.add_scalar("train/loss", loss, step)
        for group, rate in rates.items():
            self.add_scalar(f"lr/{group}", rate, step)
        self.add_scalar("train/step_seconds", seconds, step)

    def epoch(self, step: int, row: dict, iou: np.ndarray | None, frames: np.ndarray | None) -> None:
        """An epoch's row of history.csv, and where it validated its per-class IoU and frames."""
        self.add_scalar("train/epoch_loss", row["train_loss"], step)
        self.add_scalar("train/epoch_accuracy", row["train_accuracy"], step)
        self.add_scalar("train/epoch_seconds", row["seconds"], step)
        if row.get("val_miou") is not None:
            self.add_scalar("val/loss", row["val_loss"], step)
            self.add_scalar("val/accuracy", row["val_accuracy"], step)
            self.add_scalar("val/miou", row["val_miou"], step)
        for name, value in zip(self.classes.names, [] if iou is None else iou):
            if not math.isnan(value):  # a class neither in the truth nor predicted has no IoU
                self.add_scalar(f"val_iou/{name}", float(value), step)
        if frames is not None:
            self.add_image("val/input_truth_prediction", frames, step)
        self.file.flush()

    def close(self) -> None:
        self.file.close()
