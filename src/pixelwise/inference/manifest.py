"""``OUT/predictions.csv``: one row per predicted input (its outputs, size, the classes present with
their pixel shares, the seconds it took, and which model made it), so a user can find the frames that
hold pedestrians without opening a mask, and a re-run knows what is already done.

Each process appends its rows to its own part (``predictions.part-TIME-RANK.csv``) as soon as an
input's outputs are all written: a row is the mark that they are complete, so a process killed at any
moment leaves at worst one input without a row, which the next run predicts again. The main process
merges the parts into ``predictions.csv`` (the newest row of an input wins) when all are done, or at
the start of the next run if they were killed first. Every source is sorted by output name (each
process predicts its share in that order), so the merge streams them and holds no table in memory."""

from __future__ import annotations

import csv
import hashlib
import heapq
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..classes import ClassSet
from ..files import atomic_path
from ..rundir import weights_path
from .inputs import InputList, entry_for
from .onnx_engine import file_digest
from .predictor import Predictor

MANIFEST = "predictions.csv"
_PART_PATTERN = "predictions.part-*.csv"
COLUMNS = ("input", "outputs", "height", "width", "classes", "seconds", "model")


def model_key(predictor: Predictor, size: tuple[int, int] | str | None) -> str:
    """A short digest of everything that decides the masks: the weights (or ONNX model) file's content,
    the engine, the arithmetic, the size the model sees, the tiles and TTA. Rows made under another key
    were made by another model and are predicted again."""
    model_file = predictor.model_file or weights_path(predictor.run_dir, predictor.weights)
    settings = {"file": file_digest(model_file), "engine": predictor.engine, "dtype": str(predictor.dtype),
                "size": size or list(predictor.config.data.size), "tile": predictor.tile, "tta": predictor.tta}
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]


def manifest_row(path: Path, outputs: list[Path], mask: np.ndarray, classes: ClassSet, seconds: float,
                 key: str) -> list[str]:
    """The row of one input: the classes present, largest share first (``Road:0.4312;Sky:0.3107``)."""
    counts = np.bincount(mask.ravel(), minlength=len(classes))[:len(classes)]
    present = sorted(np.flatnonzero(counts), key=lambda i: -counts[i])
    shares = ";".join(f"{classes.names[i]}:{counts[i] / mask.size:.4g}" for i in present)
    return [str(path), ";".join(p.name for p in outputs), str(mask.shape[0]), str(mask.shape[1]), shares,
            f"{seconds:.3f}", key]


class ManifestPart:
    """This process's rows, appended and flushed one by one; the file is created with its first row."""

    def __init__(self, out_dir: Path, rank: int):
        self.path = out_dir / f"predictions.part-{time.time_ns():020d}-{rank:05d}.csv"
        self._file = None

    def add(self, row: list[str]) -> None:
        if self._file is None:
            self._file = open(self.path, "x", newline="", encoding="utf-8")
            csv.writer(self._file).writerow(COLUMNS)
        csv.writer(self._file).writerow(row)
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


def _sources(out_dir: Path) -> list[Path]:
    """The merged manifest, then the parts, oldest first: a later row of an input replaces an earlier one."""
    merged = [out_dir / MANIFEST] if (out_dir / MANIFEST).is_file() else []
    return merged + sorted(out_dir.glob(_PART_PATTERN))


def _rows(path: Path) -> Iterator[list[str]]:
    """The complete rows of one source; a line cut short by a killed process is left out."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            if next(reader, None) != list(COLUMNS):
                return
            yield from (row for row in reader if len(row) == len(COLUMNS))
    except (OSError, UnicodeDecodeError, csv.Error):  # a foreign or damaged file: its inputs are predicted again
        return


def done_in_share(out_dir: Path, listing: InputList, share: range, key: str) -> bytearray:
    """For each position of ``share``, 1 where a row made under ``key`` says its outputs were written."""
    done = bytearray(len(share))
    for source in _sources(out_dir):
        for row in _rows(source):
            position = listing.find(row[0]) if row[-1] == key else None
            if position is not None and position in share:
                done[share.index(position)] = 1
    return done


def merge_manifest(out_dir: Path) -> Path | None:
    """Merge ``predictions.csv`` and every part in ``out_dir`` into ``predictions.csv`` (sorted by output
    name, the newest row of each input kept) and remove the parts; None when there are no rows at all.
    Call it where no other process writes parts into ``out_dir``.

    Raises:
        WriteError: the manifest cannot be written (the parts are then left as they were).
    """
    sources = _sources(out_dir)
    if not sources:
        return None
    target = out_dir / MANIFEST
    streams = [((entry_for(row[0]), age, row) for row in _rows(source)) for age, source in enumerate(sources)]
    with atomic_path(target) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(COLUMNS)
        held: tuple[str, int, list[str]] | None = None
        for item in heapq.merge(*streams):
            if held is not None and held[0] != item[0]:
                writer.writerow(held[2])
            held = item  # of rows of the same input, the newest comes last
        if held is not None:
            writer.writerow(held[2])
    for part in sources:
        if part != target:
            os.unlink(part)
    return target
