"""Pictures: colourised masks, overlays, training curves, the confusion heat-map and the
assignment's "Input Image | True Mask | Predicted Mask" figure."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a window: pixelwise runs on headless machines
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .classes import ClassSet  # noqa: E402
from .files import atomic_write  # noqa: E402


def colorize(mask: np.ndarray, classes: ClassSet) -> np.ndarray:
    """(H, W) class ids → (H, W, 3) uint8 in the class colours."""
    return classes.palette()[np.clip(mask, 0, len(classes) - 1)]


def overlay(image: np.ndarray, mask: np.ndarray, classes: ClassSet, alpha: float = 0.5) -> np.ndarray:
    """Blend the colourised mask over the image so errors can be seen against the scene."""
    blended = (1 - alpha) * image.astype(np.float32) + alpha * colorize(mask, classes).astype(np.float32)
    return blended.round().clip(0, 255).astype(np.uint8)


def _save(fig: plt.Figure, path: str | Path) -> None:
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png"))
    plt.close(fig)


def plot_history(history: list[dict], path: str | Path) -> None:
    """Accuracy and loss per epoch, train against validation (the assignment's "plot model accuracy")."""
    epochs = [row["epoch"] for row in history]
    fig, (acc_ax, loss_ax) = plt.subplots(1, 2, figsize=(11, 4))
    for ax, key, title in ((acc_ax, "accuracy", "pixel accuracy"), (loss_ax, "loss", "loss")):
        ax.plot(epochs, [row[f"train_{key}"] for row in history], marker="o", label="train")
        val = [row.get(f"val_{key}") for row in history]
        if any(v is not None and v == v for v in val):
            ax.plot(epochs, val, marker="o", label="validation")
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
    if any(row.get("val_miou") is not None for row in history):
        acc_ax.plot(epochs, [row.get("val_miou") for row in history], marker="s", label="validation mIoU")
        acc_ax.legend()
    _save(fig, path)


def plot_confusion(cm: np.ndarray, classes: ClassSet, path: str | Path) -> None:
    """Row-normalised confusion heat-map over the classes that occur in truth or prediction."""
    cm = np.asarray(cm, dtype=np.float64)
    keep = np.flatnonzero((cm.sum(0) + cm.sum(1)) > 0)
    sub = cm[np.ix_(keep, keep)]
    norm = sub / np.maximum(sub.sum(axis=1, keepdims=True), 1)
    names = [classes.names[i] for i in keep]
    size = max(5.0, 0.45 * len(keep) + 2)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(keep)), names, rotation=90)
    ax.set_yticks(range(len(keep)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("confusion (each row sums to 1)")
    fig.colorbar(im, ax=ax, fraction=0.046)
    _save(fig, path)


def plot_per_class(names: list[str], values: list[float], path: str | Path, title: str) -> None:
    """Horizontal bars of a per-class score, so rare classes are as visible as common ones."""
    fig, ax = plt.subplots(figsize=(7, 0.3 * len(names) + 1.5))
    ax.barh(range(len(names)), values, color="tab:blue")
    ax.set_yticks(range(len(names)), names)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_title(title)
    ax.grid(axis="x", alpha=0.3)
    _save(fig, path)


def display_figure(image: np.ndarray, predicted: np.ndarray, classes: ClassSet, path: str | Path,
                   true: np.ndarray | None = None) -> None:
    """The assignment's ``display([image, true_mask, pred_mask])`` figure, saved to a file."""
    panels = [("Input Image", image)]
    if true is not None:
        panels.append(("True Mask", colorize(true, classes)))
    panels.append(("Predicted Mask", colorize(predicted, classes)))
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4))
    for ax, (title, picture) in zip(np.atleast_1d(axes), panels):
        ax.imshow(picture)
        ax.set_title(title)
        ax.axis("off")
    _save(fig, path)
