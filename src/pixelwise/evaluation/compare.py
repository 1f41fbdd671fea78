"""Runs side by side: the recipe each is closest to and the settings in which they differ (read from each
run's config.json through the settings table), epochs done, training time and best validation mIoU (from
history.csv), and, where ``evaluate`` wrote its report into the run (``RUN/evaluation/report.json``),
the evaluation's mIoU, pixel accuracy and per-class IoU; as a printed markdown table, a CSV and one
per-class bar chart."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..config import SETTINGS, RunConfig
from ..figures import plt, save_figure
from ..files import atomic_write_text, make_folder
from ..recipes import RECIPES
from ..rundir import EVALUATION_DIR, HISTORY_FILE, load_config, read_history
from ..settings import shown
from .report import REPORT_FILE

COMPARE_CSV, COMPARE_MD, COMPARE_PNG = "compare.csv", "compare.md", "compare_per_class.png"
EVALUATED = ("weights", "engine", "tta", "scales", "images", "masks")  # what an evaluation ran on and how


@dataclass(frozen=True)
class RunSummary:
    """One run as :func:`compare` reads it: ``label`` names it in the tables; ``facts`` are its settings
    (``train.lr`` …, ``classes``) and what its evaluation ran on (``evaluated.images`` …) as shown;
    ``epochs`` the last epoch in history.csv and ``seconds`` their summed time (training and validation);
    ``best_val_miou`` at ``best_epoch``; ``evaluation`` the run's report.json (None where ``evaluate``
    has not written one into the run)."""

    path: Path
    label: str
    recipe: str
    facts: dict[str, str]
    epochs: int | None
    seconds: float | None
    best_val_miou: float | None
    best_epoch: int | None
    evaluation: dict | None

    def iou(self, class_name: str) -> float | None:
        """The evaluation's IoU of a class present in its truth, else None."""
        for entry in (self.evaluation or {}).get("per_class", []):
            if entry["name"] == class_name and entry["status"] == "present":
                return entry["iou"]
        return None


@dataclass(frozen=True)
class Comparison:
    """Runs compared: ``differing`` names the facts (settings, evaluation inputs) in which they differ,
    in the settings table's order; ``classes`` those with an evaluated IoU in at least one run."""

    runs: list[RunSummary]
    differing: list[str]
    classes: list[str]

    def rows(self) -> list[dict[str, object]]:
        """One flat row per run, the CSV's: numbers unrounded, None where unknown."""
        rows = []
        for r in self.runs:
            ev = r.evaluation or {}
            row = {"run": r.label, "path": str(r.path), "recipe": r.recipe, **{k: r.facts[k] for k in self.differing},
                   "epochs": r.epochs, "train_seconds": r.seconds, "best_val_miou": r.best_val_miou,
                   "best_epoch": r.best_epoch, "miou": ev.get("miou"), "pixel_accuracy": ev.get("pixel_accuracy")}
            rows.append(row | {f"iou.{c}": r.iou(c) for c in self.classes})
        return rows

    def csv(self) -> str:
        """The rows as CSV text."""
        rows = self.rows()
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: "" if v is None else v for k, v in row.items()} for row in rows)
        return buffer.getvalue()

    def markdown(self) -> str:
        """Two tables: the runs (recipe, differing settings, training, evaluation), then IoU per class."""
        head = ["run", "recipe", *self.differing, "epochs", "train time", "best val mIoU (epoch)", "mIoU",
                "pixel acc."]
        lines = [_row(head), _row(["---"] * len(head))]
        for r in self.runs:
            ev = r.evaluation or {}
            best = "-" if r.best_val_miou is None else f"{r.best_val_miou:.3f} ({r.best_epoch})"
            lines.append(_row([r.label, r.recipe, *(r.facts[k] for k in self.differing), _text(r.epochs),
                               "-" if r.seconds is None else f"{r.seconds / 60:.1f} min", best,
                               _number(ev.get("miou")), _number(ev.get("pixel_accuracy"))]))
        if self.classes:
            lines += ["", _row(["class", *(r.label for r in self.runs)]), _row(["---"] * (1 + len(self.runs)))]
            lines += [_row([c, *(_number(r.iou(c)) for r in self.runs)]) for c in self.classes]
        return "\n".join(lines) + "\n"


def _row(cells: Sequence[object]) -> str:
    return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"


def _text(value: object) -> str:
    return "-" if value is None else str(value)


def _number(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.3f}"


def compare(runs: Sequence[str | Path]) -> Comparison:
    """Read runs for comparison (nothing is computed again: each run's own files are read).

    Args:
        runs: run directories written by ``train``; each may hold an ``evaluation/report.json`` that
            ``evaluate`` wrote into it.

    Returns:
        The :class:`Comparison`.

    Raises:
        ValueError: no runs, or a run folder missing, not a run, or with an unreadable config.json,
            history.csv or report.json (the message names it).
    """
    if not runs:
        raise ValueError("runs: give at least one run directory")
    paths = [Path(r) for r in runs]
    names = [p.name for p in paths]
    summaries = [read_run(p, p.name if names.count(p.name) == 1 else str(p)) for p in paths]
    evaluated = [s for s in summaries if s.evaluation is not None]
    differing = [k for k in summaries[0].facts  # what evaluations ran on, among the runs evaluated
                 if len({s.facts[k] for s in (evaluated if k.startswith("evaluated.") else summaries)}) > 1]
    classes = list(dict.fromkeys(c["name"] for s in evaluated for c in s.evaluation["per_class"]
                                 if c["status"] == "present"))
    return Comparison(summaries, differing, classes)


def read_run(path: Path, label: str) -> RunSummary:
    """One run's summary, named ``label`` in the tables.

    Raises:
        ValueError: the folder is missing or not a run, or one of its files cannot be read.
    """
    if not path.is_dir():
        raise ValueError(f"{path}: no such run folder")
    try:
        config = load_config(path)  # its errors name the folder or the file
    except FileNotFoundError as exc:
        raise ValueError(str(exc)) from None
    try:
        history = read_history(path)
    except (OSError, UnicodeDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path / HISTORY_FILE}: unreadable history ({exc})") from None
    evaluation = read_evaluation(path)
    facts = settings_shown(config)
    inputs = (evaluation or {}).get("evaluated", {})
    # a list (the scales) shown as its items, so that facts stay hashable and read as the flag was written
    facts |= {f"evaluated.{k}": ",".join(map(str, v)) if isinstance(v, list) else v
              for k, v in ((k, inputs.get(k, "-")) for k in EVALUATED)}
    validated = [row for row in history if row.get("val_miou") is not None]
    best = max(validated, key=lambda row: row["val_miou"], default=None)
    seconds = [row["seconds"] for row in history if row.get("seconds") is not None]
    return RunSummary(path, label, nearest_recipe(config), facts, history[-1]["epoch"] if history else None,
                      sum(seconds) if seconds else None, None if best is None else best["val_miou"],
                      None if best is None else best["epoch"], evaluation)


def read_evaluation(run_dir: Path) -> dict | None:
    """The run's evaluation/report.json, or None where ``evaluate`` has not written one there.

    Raises:
        ValueError: the file exists but is not an evaluation report.
    """
    path = run_dir / EVALUATION_DIR / REPORT_FILE
    if not path.exists():
        return None
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(report, dict) or not isinstance(report.get("per_class"), list):
            raise ValueError("no per_class list")
        return report
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"{path}: unreadable evaluation report ({exc})") from None


def settings_shown(config: RunConfig) -> dict[str, str]:
    """Every setting of a run as a flag writes it, the settings table's first in its order, then the
    model's other fields (a preset's widths …) and the classes."""
    values = {f"model.{k}": v for k, v in asdict(config.model).items()}
    values |= {f"{section}.{k}": v for section in ("data", "train") for k, v in asdict(getattr(config, section)).items()}
    ordered = [name for name in SETTINGS if name in values] + [name for name in values if name not in SETTINGS]
    shown_values = {name: _shown(values[name]) for name in ordered}
    return shown_values | {"classes": f"{len(config.classes)}: {', '.join(config.classes.names)}"}


def _shown(value: object) -> str:
    if isinstance(value, list):
        value = tuple(value)
    if isinstance(value, tuple) and len(value) > 8:  # such as a 256-entry id map
        return f"({len(value)} values)"
    if isinstance(value, tuple) and len(value) != 2:
        return "/".join(map(str, value)) or "none"
    return shown(value)


def nearest_recipe(config: RunConfig) -> str:
    """The recipe from which ``config`` differs in the fewest settings, with that count: ``seed`` or
    ``seed +2``."""
    counts = {name: len(recipe.changes(config)) for name, recipe in RECIPES.items()}
    name = min(counts, key=counts.get)
    return name if counts[name] == 0 else f"{name} +{counts[name]}"


def write_comparison(comparison: Comparison, out_dir: str | Path) -> list[Path]:
    """compare.csv, compare.md and, where a run was evaluated, compare_per_class.png in ``out_dir``.

    Args:
        comparison: what :func:`compare` returned.
        out_dir: the folder (made if missing); files of the same names are replaced.

    Returns:
        The files written.

    Raises:
        ValueError: ``out_dir`` cannot be made. WriteError: a file cannot be written.
    """
    out_dir = make_folder(out_dir, "comparison folder")
    atomic_write_text(out_dir / COMPARE_CSV, comparison.csv())
    atomic_write_text(out_dir / COMPARE_MD, comparison.markdown())
    written = [out_dir / COMPARE_CSV, out_dir / COMPARE_MD]
    evaluated = [r for r in comparison.runs if r.evaluation is not None]
    if evaluated and comparison.classes:
        plot_runs(evaluated, comparison.classes, out_dir / COMPARE_PNG)
        written.append(out_dir / COMPARE_PNG)
    return written


def plot_runs(runs: list[RunSummary], classes: list[str], path: Path) -> None:
    """Per-class IoU bars, one colour per run, side by side for each class."""
    width = 0.8 / len(runs)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.5 * len(classes) * max(1, len(runs) / 2) + 2), 4.5))
    for k, r in enumerate(runs):
        values = [r.iou(c) or 0.0 for c in classes]
        ax.bar(np.arange(len(classes)) + k * width, values, width, label=f"{r.label} (mIoU {_number(r.evaluation['miou'])})")
    ax.set_xticks(np.arange(len(classes)) + width * (len(runs) - 1) / 2, classes, rotation=60, ha="right")
    ax.set_ylabel("IoU (evaluate)")
    ax.set_ylim(0, 1)
    ax.grid(axis="y", alpha=0.3)
    ax.legend()
    save_figure(fig, path)
