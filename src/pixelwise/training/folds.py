"""Cross-validation, as nnU-Net trains it: every fold of ``data.folds`` trained in turn, each
validating on its own drives, then their ensemble written as the run a user keeps."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..config import RunConfig
from ..rundir import CONFIG_FILE, LAST, RunDirError, load_config
from ..rundir_ensemble import write_ensemble
from ..rundir_lock import foreign_files
from .distributed import launched_rank
from .loop import TrainResult, train


@dataclass
class FoldsResult:
    run_dir: Path  # the ensemble run
    folds: list[TrainResult]  # each fold's training, fold 0 first


def fold_dir(run_dir: str | Path, fold: int) -> Path:
    """Where ``train_folds`` trains fold ``fold`` of the run ``run_dir``."""
    return Path(run_dir) / f"fold-{fold}"


def trains_folds(run_dir: str | Path, config: RunConfig, fold_given: bool) -> bool:
    """Whether ``train`` with ``config`` into ``run_dir`` means every fold and their ensemble: folds above 1,
    no fold named, and ``run_dir`` not a single fold's own run."""
    if config.data.folds < 2 or fold_given:
        return False
    config_file = Path(run_dir) / CONFIG_FILE
    return not config_file.is_file() or load_config(run_dir).model.members > 1


def resumable_config(run_dir: str | Path) -> RunConfig | None:
    """What resuming ``run_dir`` continues with: its own config.json, or for folds (an ensemble, or
    folds not yet assembled) the first fold's; None where there is neither."""
    run_dir = Path(run_dir)
    own = load_config(run_dir) if (run_dir / CONFIG_FILE).is_file() else None
    if own is not None and own.model.members == 1:
        return own
    first = fold_dir(run_dir, 0)
    return load_config(first) if (first / CONFIG_FILE).is_file() else None


def train_folds(images_dir: str | Path, masks_dir: str | Path, run_dir: str | Path, config: RunConfig, *,
                resume: bool = False, log: Callable[[str], None] = print, **options) -> FoldsResult:
    """Train fold 0, 1 … of ``config.data.folds`` into ``run_dir/fold-K`` (each a run of its own,
    validating on its group of drives), then write ``run_dir`` as their ensemble
    (:func:`~pixelwise.rundir_ensemble.write_ensemble`).

    Args:
        images_dir, masks_dir: the training pairs, as for :func:`~pixelwise.training.loop.train`.
        run_dir: a new or empty folder; with ``resume``, the folder of an earlier call.
        config: the run settings; ``config.data.folds`` (at least 2) folds are trained, whatever ``config.data.fold``.
        resume: continue: folds already finished are kept as they are, an interrupted one continues, the rest start.
        log: where progress lines go.
        options: the other keyword arguments of :func:`~pixelwise.training.loop.train` (``cache_dir``,
            ``progress``, ``skip_invalid``, ``hooks``, ``mlflow``; an ``official`` split is refused, folds
            being a split of their own).

    Returns:
        the ensemble's folder and each fold's training.

    Raises:
        ValueError: ``config.data.folds`` below 2, or what ``train`` raises for a fold.
        RunDirError: ``run_dir`` holds a single run or other files (or, without ``resume``, folds).
        TrainingStopped: training was interrupted; ``resume=True`` continues it.
    """
    folds = config.data.folds
    if folds < 2:
        raise ValueError(f"data.folds must be at least 2 to train folds, not {folds}")
    run_dir = Path(run_dir)
    if (run_dir / CONFIG_FILE).is_file() and load_config(run_dir).model.members == 1:
        raise RunDirError(f"{run_dir}: holds a single run, not folds; train the folds into another run_dir")
    members = [fold_dir(run_dir, k) for k in range(folds)]
    if not resume:
        if any(m.exists() for m in members):
            raise RunDirError(f"{run_dir}: already holds folds; pass resume=True to continue them, or another run_dir")
        foreign = foreign_files(run_dir)
        if foreign:
            raise RunDirError(f"{run_dir}: is not empty ({len(foreign)} file(s) such as {foreign[0]!r}); train the "
                              "folds into a new or empty folder (run_dir)")
    results = []
    for k, member in enumerate(members):
        log(f"fold {k} ({k + 1} of {folds}): {member}")
        results.append(train(images_dir, masks_dir, member, config.with_data(fold=k),
                             resume=resume and (member / LAST).exists(), log=log, **options))
    if launched_rank() in (None, 0):  # under torchrun the folds' main process alone writes
        write_ensemble(members, run_dir)
        log(f"ensemble of {folds} folds written to {run_dir}")
    return FoldsResult(run_dir, results)
