"""An MLflow run per training run: the complete settings as parameters, each epoch's scores as
metrics, and at the end config.json, history.csv, curves.png, the evaluation report (where one was
written) and the model (config.json and best weights, a folder ``pixelwise.load`` takes) as artifacts."""

from __future__ import annotations

import math
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from ...config import RunConfig
from ...rundir import BEST, CONFIG_FILE, CURVES_FILE, EVALUATION_DIR, HISTORY_FILE

EXPERIMENT = "pixelwise"  # unless MLflow's own MLFLOW_EXPERIMENT_NAME names another
_METRIC_KEYS = ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "val_miou", "lr", "seconds", "stale")


def flat_settings(config: RunConfig) -> dict[str, str]:
    """The run's complete settings as MLflow parameters: ``train.lr`` → ``"0.001"``, the classes by name."""
    flat = {f"{section}.{key}": str(value) for section, values in config.to_dict().items() if section != "classes"
            for key, value in values.items()}
    flat["classes"] = " ".join(config.classes.names)
    return flat


def metric_name(text: str) -> str:
    """``text`` in the characters MLflow allows in a metric name (a class file may name a class anything)."""
    return re.sub(r"[^\w\-. /]", "_", text)


class MlflowRun:
    """The MLflow run a training run logs to.

    Args:
        uri: the tracking URI: ``file:PATH`` (a local store) or a tracking server's ``http(s)://…``.
        run_dir: the run folder; its name names the MLflow run.
        config: the run's settings, logged as parameters.
        run_id: the MLflow run an interrupted session logged to (from ``last``), continued where it
            is still in the store at ``uri``; otherwise a new run is started.

    Raises:
        ImportError: the mlflow package is not installed.
        ValueError: the store at ``uri`` cannot be used (the URI and MLflow's reason).
    """

    def __init__(self, uri: str, run_dir: Path, config: RunConfig, run_id: str | None = None) -> None:
        from mlflow import MlflowClient
        from mlflow.exceptions import MlflowException

        if uri.startswith("file:"):  # MLflow 3 refuses a file store unless asked: --mlflow file:… is asking
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self.uri, self.run_dir = uri, run_dir
        try:
            self.client = MlflowClient(tracking_uri=uri)
            self.run_id = self._continued(run_id) or self._started(config)
            self._log_settings(config)
        except (MlflowException, OSError) as exc:  # OSError: a file store that is not a folder
            raise ValueError(f"MLflow at {uri}: {str(exc).splitlines()[0]}") from None

    def _continued(self, run_id: str | None) -> str | None:
        from mlflow.exceptions import MlflowException

        if not run_id:
            return None
        try:
            return self.client.get_run(run_id).info.run_id
        except MlflowException:  # another store, or the run was deleted there: start a new one
            return None

    def _started(self, config: RunConfig) -> str:
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME", EXPERIMENT)
        experiment = self.client.get_experiment_by_name(name)
        experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(name)
        return self.client.create_run(experiment_id, run_name=self.run_dir.name,
                                      tags={"pixelwise.run_dir": str(self.run_dir.resolve())}).info.run_id

    def _log_settings(self, config: RunConfig) -> None:
        """All settings as parameters; a resumed run that changed one (``train.epochs``) keeps the first
        value as the parameter (MLflow's parameters never change) and the new one as a tag."""
        from mlflow.entities import Param, RunTag

        logged = self.client.get_run(self.run_id).data.params
        settings = flat_settings(config)
        params = [Param(k, v) for k, v in settings.items() if k not in logged]
        tags = [RunTag(f"resumed.{k}", v) for k, v in settings.items() if k in logged and logged[k] != v]
        self.client.log_batch(self.run_id, params=params, tags=tags)

    def epoch(self, epoch: int, row: dict, iou: np.ndarray | None, names: tuple[str, ...]) -> None:
        """An epoch's row of history.csv (and its per-class IoU where it validated) as metrics at step ``epoch``."""
        from mlflow.entities import Metric

        values = {key: row.get(key) for key in _METRIC_KEYS}
        if iou is not None:
            values.update({f"val_iou/{metric_name(name)}": value for name, value in zip(names, iou)})
        stamp = int(1000 * time.time())
        metrics = [Metric(key, float(value), stamp, epoch) for key, value in values.items()
                   if value is not None and not math.isnan(value)]
        self.client.log_batch(self.run_id, metrics=metrics)

    def close(self, finished: bool) -> None:
        """Log the run folder's files as artifacts and end the MLflow run: FINISHED, or KILLED when
        training stopped to be resumed (a resumed session continues the same MLflow run). A finished
        run also logs its model (config.json and best weights) as an MLflow model named pixelwise."""
        for name in (CONFIG_FILE, HISTORY_FILE, CURVES_FILE):
            if (self.run_dir / name).exists():
                self.client.log_artifact(self.run_id, str(self.run_dir / name))
        if (self.run_dir / EVALUATION_DIR).is_dir():
            self.client.log_artifacts(self.run_id, str(self.run_dir / EVALUATION_DIR), EVALUATION_DIR)
        if finished and (self.run_dir / BEST).exists():
            self._log_model()
        self.client.set_terminated(self.run_id, "FINISHED" if finished else "KILLED")

    def _log_model(self) -> None:
        """config.json and best.safetensors, as a run folder: as the run's ``model/`` artifacts and as a
        logged model (MLflow's Models list) whose artifacts ``pixelwise.load`` takes once downloaded."""
        run = self.client.get_run(self.run_id)
        with tempfile.TemporaryDirectory() as folder:
            for name in (CONFIG_FILE, BEST):
                shutil.copyfile(self.run_dir / name, Path(folder) / name)
            self.client.log_artifacts(self.run_id, folder, "model")
            model = self.client.create_logged_model(run.info.experiment_id, name="pixelwise",
                                                    source_run_id=self.run_id)
            self.client.log_model_artifacts(model.model_id, folder)
            self.client.finalize_logged_model(model.model_id, "READY")

