"""The rule that keeps a run directory whole: a new run never lands on another, and a resumed run
keeps its settings but for how long it trains (the settings declared ``resumable``)."""

from __future__ import annotations

from pathlib import Path

from .config import RESUMABLE, RunConfig
from .recipes import DEFAULT_RECIPE, recipe
from .rundir import BEST, CONFIG_FILE, LAST, RunDirError, load_config
from .rundir_lock import foreign_files


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
        names = [f"train.{name}" for name in RESUMABLE]
        allowed = " and ".join(names) if len(names) < 3 else f"{', '.join(names[:-1])} and {names[-1]}"
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


def run_config(run_dir: Path, config: RunConfig | None, resume: bool) -> RunConfig:
    """The configuration a run trains with, and the refusals that keep a run directory whole: a new
    run never overwrites one (RunExists), and a resumed one keeps its settings (SettingsChanged)."""
    if not resume:
        if (run_dir / LAST).exists() or (run_dir / BEST).exists():  # a saved model without its last state is a run too
            raise RunExists(run_dir)
        foreign = foreign_files(run_dir)
        if foreign:
            raise RunDirError(f"{run_dir}: is not a run folder and not empty ({len(foreign)} other file(s) such as "
                              f"{foreign[0]!r}); train into a new or empty folder (run_dir)")
        return config or recipe(DEFAULT_RECIPE)
    if not (run_dir / LAST).exists():
        raise RunDirError(f"{run_dir}: nothing to resume (no {LAST})")
    return resumed(load_config(run_dir), config, run_dir)
