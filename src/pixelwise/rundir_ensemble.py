"""An ensemble run: several trained runs of one model written as one run directory that every tool
takes like a single run (``evaluate``, ``predict``, ``serve``, ``export``: one ONNX graph).

It holds ``config.json`` (the members' configuration with ``model.members`` set to their number),
``best.safetensors`` and ``last.safetensors`` (every member's weights of that name, as one
:class:`~pixelwise.model.ensemble.Ensemble`) and ``ensemble.json`` (where the members came from).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from .config import DataConfig, RunConfig
from .files import atomic_write_text, make_folder
from .model.ensemble import Ensemble
from .rundir import CONFIG_FILE, WEIGHTS, RunDirError, load_config, load_model, read_history, save_config
from .training import checkpoint

ENSEMBLE_FILE = "ensemble.json"


def write_ensemble(members: Sequence[str | Path], out: str | Path) -> RunConfig:
    """Write the runs ``members`` as one ensemble run in ``out``, their probabilities averaged.

    Each weights file (``best``, ``last``) is written where every member has it. ``out`` may be the
    folder that holds the members (as ``train`` with folds writes it) and may already hold an
    ensemble, which is replaced.

    Args:
        members: two or more trained run directories of one model: the same network, classes,
            training size and image resizing (their seeds, splits and training may differ).
        out: the ensemble run directory.

    Returns:
        the ensemble's configuration.

    Raises:
        ValueError: fewer than two members, a member that is an ensemble, or members that are not one model
            (the first difference named).
        FileNotFoundError: a member that is not a run, or no weights file that every member has.
        RunDirError: ``out`` holds a single run.
    """
    members = [Path(m) for m in members]
    out = Path(out)
    if len(members) < 2:
        raise ValueError(f"an ensemble needs at least 2 member runs, not {len(members)}")
    configs = [load_config(m) for m in members]
    nested = [m for m, c in zip(members, configs) if c.model.members > 1]
    if nested:
        raise ValueError(f"{nested[0]}: is an ensemble itself; give the runs it was made of")
    for member, config in zip(members[1:], configs[1:]):
        differs = _model_differences(configs[0], config)
        if differs:
            raise ValueError(f"{member}: not the same model as {members[0]} ({', '.join(differs)} differ); an "
                             "ensemble averages runs of one network, classes and input size")
    if (out / CONFIG_FILE).is_file() and load_config(out).model.members == 1:
        raise RunDirError(f"{out}: holds a single run; write the ensemble to another folder (out)")
    kinds = [w for w, name in WEIGHTS.items() if all((m / name).is_file() for m in members)]
    if not kinds:
        raise FileNotFoundError(f"{', '.join(map(str, members))}: no weights file (best or last) that every member has")
    first = configs[0]
    # The split belongs to each member: the ensemble validated on nothing of its own.
    config = replace(first, model=replace(first.model, members=len(members)),
                     data=replace(first.data, folds=DataConfig.folds, fold=DataConfig.fold))
    make_folder(out)
    for kind, name in WEIGHTS.items():
        if kind in kinds:
            ensemble = Ensemble([load_model(m, c, kind) for m, c in zip(members, configs)])
            checkpoint.save(out / name, ensemble, meta={"members": [str(m) for m in members]})
        else:  # an earlier ensemble's file that these members cannot replace
            (out / name).unlink(missing_ok=True)
    atomic_write_text(out / ENSEMBLE_FILE, json.dumps({"members": [_describe(m, out) for m in members]}, indent=2) + "\n")
    save_config(out, config)  # last: a folder with config.json is a usable run
    return config


def _model_differences(a: RunConfig, b: RunConfig) -> list[str]:
    """What keeps two runs from being averaged: the network, the classes, or the input prediction makes."""
    keep = ("size", "image_resize")
    theirs = b.model.to_dict()
    found = [f"model.{k}" for k, v in a.model.to_dict().items() if theirs.get(k) != v]
    found += [f"data.{k}" for k in keep if getattr(a.data, k) != getattr(b.data, k)]
    return found + (["classes"] if a.classes != b.classes else [])


def _describe(member: Path, out: Path) -> dict:
    """A member as ensemble.json records it: its folder (relative to the ensemble's where inside it)
    and how its training went."""
    history = read_history(member)
    scores = [row["val_miou"] for row in history if row.get("val_miou") is not None]
    try:
        where = str(member.resolve().relative_to(out.resolve()))
    except ValueError:
        where = str(member.resolve())
    return {"run": where, "epochs": len(history), "best_val_miou": max(scores) if scores else None}
