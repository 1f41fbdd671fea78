"""The one place matplotlib is set up: files only, never a window (pixelwise runs on headless machines)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from .files import atomic_write  # noqa: E402

__all__ = ["plt", "save_figure"]


def save_figure(fig: plt.Figure, path: str | Path) -> None:
    """Write ``fig`` as a PNG atomically and free it (figures are drawn often during training)."""
    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png"))
    finally:  # freed even when the file cannot be written (a full disk)
        plt.close(fig)
