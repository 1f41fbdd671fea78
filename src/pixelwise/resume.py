"""The rule that keeps a run directory whole: a new run never lands on another, and a resumed run
keeps its settings but for how long it trains (the settings declared ``resumable``)."""

from __future__ import annotations

from pathlib import Path

from .config import RESUMABLE, RunConfig
from .rundir import CONFIG_FILE, RunDirError


class RunExists(RunDirError):
    """``run_dir`` already holds a run and ``resume`` was not asked for."""

    def __init__(self, run_dir: Path) -> None:
        super().__init__(f"{run_dir}: already holds a run; pass resume=True to continue it, or another run_dir")
        self.run_dir = run_dir


class SettingsChanged(RunDirError):
    """A resumed run was asked to change settings it keeps.

    Attributes:
        changed: the settings asked to change (``train.lr``, ``classes`` …).
        config_file: the run's config.json, which keeps them.
    """

    def __init__(self, changed: list[str], config_file: Path) -> None:
        allowed = " and ".join(f"train.{name}" for name in RESUMABLE)
        super().__init__(f"{', '.join(changed)} cannot change when resuming: the run keeps the settings in "
                         f"{config_file} (only {allowed} can change)")
        self.changed, self.config_file = changed, config_file


def resumed(saved: RunConfig, asked: RunConfig | None, run_dir: Path) -> RunConfig:
    """What a resumed run trains with: ``saved`` (its config.json) with ``asked``'s resumable settings.

    Args:
        saved: the run's own configuration.
        asked: the configuration the caller asks for (None: the run's own).
        run_dir: the run directory, named in the error.

    Returns:
        the configuration to train with.

    Raises:
        SettingsChanged: ``asked`` differs from ``saved`` in a setting that is not resumable.
    """
    if asked is None:
        return saved
    changed = [name for name in saved.changes(asked) if name.removeprefix("train.") not in RESUMABLE]
    if changed:
        raise SettingsChanged(changed, Path(run_dir) / CONFIG_FILE)
    return saved.with_train(**{name: getattr(asked.train, name) for name in RESUMABLE})
