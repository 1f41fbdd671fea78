"""Where a training run reports beyond its own files: TensorBoard event files in ``RUN/tb/`` (in
every run where the tensorboard package is installed) and an MLflow run (where a tracking URI is
given). The loop calls one :class:`Tracking` at each step, validation, epoch and at the end.

The MLflow URI is where a run reports, not one of the run's settings (settings.py): it changes nothing
the run computes, so it is not in config.json (a server's address belongs to the machine, not to the
model) and every session, a resumed one too, may give another one or none."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ...config import RunConfig
from ...rundir import TB_DIR
from .frames import frames_image, pick_frames
from .mlflow_run import MlflowRun
from .tensorboard import MISSING_NOTE, TensorBoardLog


@dataclass(frozen=True)
class Frames:
    """What the validation frames shown in TensorBoard are drawn from: the run's decoded arrays and
    the frames picked (among those the main process validates)."""

    images: np.ndarray
    masks: np.ndarray
    index: np.ndarray


class Tracking:
    """A run's trackers; with none (the other ranks of a data-parallel run) every call does nothing.

    Args:
        config: the run's settings (class names and colours).
        tensorboard: the TensorBoard writer, or None.
        mlflow: the MLflow run, or None.
        frames: the validation frames to show in TensorBoard, or None.
        log: where a tracker that fails mid-run (a full disk, a tracking server gone) says that it
            stops; training goes on without it.
    """

    def __init__(self, config: RunConfig | None = None, tensorboard: TensorBoardLog | None = None,
                 mlflow: MlflowRun | None = None, frames: Frames | None = None,
                 log: Callable[[str], None] = print) -> None:
        self.config, self.tensorboard, self.mlflow, self.frames, self.log = config, tensorboard, mlflow, frames, log
        self._iou: np.ndarray | None = None
        self._image: np.ndarray | None = None
        self._predicted: dict[int, np.ndarray] = {}

    def step(self, step: int, loss: float, rates: dict[str, float], seconds: float) -> None:
        """A training step (counted over the run from 1) with its loss, learning rates and time."""
        if self.tensorboard:
            self._guarded("tensorboard", lambda: self.tensorboard.step(step, loss, rates, seconds))

    def predicted(self, batch: np.ndarray, ids: torch.Tensor) -> None:
        """A validation batch's frame indices and predicted class ids: those of the frames shown are kept
        (validation's own predictions, so showing them costs no second forward pass)."""
        if self.tensorboard and self.frames is not None:
            for row in np.flatnonzero(np.isin(batch, self.frames.index)):
                self._predicted[int(batch[row])] = ids[row].cpu().numpy()

    def validated(self, iou: np.ndarray) -> None:
        """The validation just done: its per-class IoU, and the frames it predicted, drawn for TensorBoard."""
        self._iou = iou
        if self._predicted:
            self._image = frames_image(self.frames.images, self.frames.masks, self._predicted, self.config.classes)
            self._predicted = {}

    def epoch(self, step: int, row: dict) -> None:
        """An epoch saved (its history.csv row), at the run's step count at its end."""
        if self.tensorboard:
            self._guarded("tensorboard", lambda: self.tensorboard.epoch(step, row, self._iou, self._image))
        if self.mlflow:
            self._guarded("mlflow", lambda: self.mlflow.epoch(row["epoch"], row, self._iou, self.config.classes.names))
        self._iou = self._image = None

    def meta(self) -> dict:
        """What ``last`` keeps so that a resumed run logs to the same MLflow run."""
        return {"mlflow": {"uri": self.mlflow.uri, "run_id": self.mlflow.run_id}} if self.mlflow else {}

    def close(self, finished: bool) -> None:
        """The end of this session: ``finished`` training, or stopped to be resumed."""
        if self.tensorboard:
            self._guarded("tensorboard", self.tensorboard.close)
        if self.mlflow:
            self._guarded("mlflow", lambda: self.mlflow.close(finished))

    def _guarded(self, tracker: str, action: Callable[[], None]) -> None:
        """A call to ``tracker`` ("tensorboard" or "mlflow"); where it fails, training goes on without it."""
        failures: tuple[type[Exception], ...] = (OSError,)
        if tracker == "mlflow":
            from mlflow.exceptions import MlflowException

            failures += (MlflowException,)
        try:
            action()
        except failures as exc:
            self.log(f"{tracker}: {str(exc).splitlines()[0]}; this run logs no more to it")
            setattr(self, tracker, None)


def require_mlflow(uri: str) -> None:
    """Refuse at once, before any data is read, to log to MLflow without its package.

    Raises:
        ValueError: the mlflow package is not installed.
    """
    try:
        import mlflow  # noqa: F401 (only whether it is there)
    except ImportError:
        raise ValueError(f"logging to MLflow ({uri}) needs the mlflow package: pip install 'pixelwise[mlflow]'") \
            from None


def learning_rates(optimizer: torch.optim.Optimizer) -> dict[str, float]:
    """The decoder's and the encoder's learning rate now: the first and the last parameter group's
    (training/step.py's ``make_optimizer``), the same where one group trains the whole network."""
    first, last = optimizer.param_groups[0], optimizer.param_groups[-1]
    return {"decoder": first["lr"] * first.get("lr_scale", 1.0), "encoder": last["lr"] * last.get("lr_scale", 1.0)}


def open_tracking(run_dir: Path, config: RunConfig, first_step: int, frames: Frames | None, *,
                  mlflow: str | None = None, saved: dict | None = None,
                  log: Callable[[str], None] = print) -> Tracking:
    """The trackers of one training session.

    Args:
        run_dir: the run folder (TensorBoard writes into ``run_dir/tb``).
        config: the run's settings.
        first_step: the first training step this session takes, counted over the run from 1.
        frames: where the validation frames shown come from (None: no validation split).
        mlflow: an MLflow tracking URI, or None for no MLflow run.
        saved: what ``last`` kept of the trackers (:meth:`Tracking.meta`), for a resumed run.
        log: where the one-line note goes when the tensorboard package is missing.

    Returns:
        the session's :class:`Tracking`.

    Raises:
        ValueError: the MLflow store at ``mlflow`` cannot be used, or the mlflow package is not installed.
    """
    try:
        tensorboard = TensorBoardLog(run_dir / TB_DIR, first_step, config.classes)
    except ImportError:
        tensorboard = None
        log(MISSING_NOTE.format(path=run_dir / TB_DIR))
    mlflow_run = None
    if mlflow:
        require_mlflow(mlflow)
        previous = (saved or {}).get("mlflow") or {}
        mlflow_run = MlflowRun(mlflow, run_dir, config, previous.get("run_id") if previous.get("uri") == mlflow else None)
    return Tracking(config, tensorboard, mlflow_run, frames, log)


__all__ = ["Frames", "Tracking", "learning_rates", "open_tracking", "pick_frames", "require_mlflow"]
