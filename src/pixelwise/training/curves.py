"""curves.png: accuracy and loss per epoch, train against validation (a view of history.csv)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..figures import plt, save_figure

# The plot is only a view of history.csv, and drawing it costs a noticeable share of a small epoch.
CURVES_EVERY_S = 30.0


def plot_history(history: list[dict], path: str | Path) -> None:
    """Accuracy and loss per epoch, train against validation (the assignment's "plot model accuracy")."""
    epochs = [row["epoch"] for row in history]
    fig, (acc_ax, loss_ax) = plt.subplots(1, 2, figsize=(11, 4))
    for ax, key, title in ((acc_ax, "accuracy", "pixel accuracy"), (loss_ax, "loss", "loss")):
        ax.plot(epochs, [row[f"train_{key}"] for row in history], marker="o", label="train")
        validated = _validated(history, f"val_{key}")
        if validated:
            ax.plot(*zip(*validated), marker="o", label="validation")
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
    validated = _validated(history, "val_miou")
    if validated:
        acc_ax.plot(*zip(*validated), marker="s", label="validation mIoU")
        acc_ax.legend()
    save_figure(fig, path)


def _validated(history: list[dict], key: str) -> list[tuple[int, float]]:
    """(epoch, value) of the epochs that have a ``key`` value (not NaN): all, or every --val-every'th."""
    return [(row["epoch"], row[key]) for row in history if row.get(key) is not None and row[key] == row[key]]


@dataclass
class Curves:
    """curves.png: drawn after the first epoch of a session and the last of the run, and in between at
    most every ``every_s`` seconds of ``clock`` (the plot is only a view of history.csv)."""

    path: Path
    plot: Callable[[list[dict], Path], None]
    clock: Callable[[], float]
    every_s: float
    drawn_at: float = -math.inf

    def update(self, history: list[dict], final: bool) -> None:
        if final or self.clock() - self.drawn_at >= self.every_s:
            self.plot(history, self.path)
            self.drawn_at = self.clock()
