"""The inputs of ``predict``, listed once for any number of files: files, folders, glob patterns and list
files become one sorted list of strings, and each process of a sharded run takes its share of that list
by position, so every process (on every node) agrees on the shares without talking to the others.

Each entry is the string ``STEM\\0PATH``: sorting those strings orders the inputs by the name their
outputs take (``OUT/STEM_mask.png``), then by path, in one sort of one list. The same file given twice
then sits next to itself (kept once), and two files whose outputs would share a name sit next to each
other (the later one is a problem), without a second table of names beside the list."""

from __future__ import annotations

import bisect
import glob
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ..data.links import broken_link
from ..data.pairs import IMAGE_SUFFIXES
from ..data.problems import DataError, Problem

_SEPARATOR = "\0"  # no path holds it, and it sorts before every character, so "a" comes before "a b"
_GLOB_CHARACTERS = frozenset("*?[")


@dataclass
class InputList:
    """The sorted inputs (``entries``, ``STEM\\0PATH`` each) and the problems found while listing them
    (a missing path, a folder without images, a pattern that matches nothing, an unreadable list)."""

    entries: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.entries)

    def share(self, rank: int = 0, size: int = 1) -> range:
        """The positions of process ``rank`` of ``size``: every size-th input from its rank on."""
        return range(rank, len(self.entries), size)

    def stem(self, position: int) -> str:
        """The name the outputs of the input at ``position`` take (``STEM_mask.png`` …)."""
        return self.entries[position].partition(_SEPARATOR)[0]

    def path(self, position: int) -> Path:
        return Path(self.entries[position].partition(_SEPARATOR)[2])

    def clash(self, position: int) -> Path | None:
        """The first input whose outputs take the same name as those of the input at ``position``, if it
        is not that input itself: its outputs would overwrite those."""
        stem, first = self.stem(position), position
        while first > 0 and self.stem(first - 1) == stem:
            first -= 1
        return None if first == position else self.path(first)

    def find(self, path: str) -> int | None:
        """The position of the input listed as ``path``, or None."""
        entry = entry_for(path)
        position = bisect.bisect_left(self.entries, entry)
        return position if position < len(self.entries) and self.entries[position] == entry else None


def entry_for(path: str) -> str:
    """The list entry of ``path``: its output stem, the separator, the path."""
    return os.path.splitext(os.path.basename(path))[0] + _SEPARATOR + path


def list_inputs(inputs: Iterable[str | Path], lists: Iterable[str | Path] = ()) -> InputList:
    """Every input once, sorted by output name then path.

    Args:
        inputs: image (or video) files, folders (their image files, not recursive; hidden files left out)
            and glob patterns (``"frames/*.png"``, ``"**"`` recursive), quoted so the shell leaves them.
        lists: text files naming one input file a line, relative to the list file's folder unless
            absolute; blank lines are skipped. Listed files are not checked here: one that cannot be read
            is a problem when it is predicted.

    Every path is normalised (``a/./b/../c.png`` → ``a/c.png``), so one file reached two ways is one input.

    Returns:
        The :class:`InputList`, its problems in the order of ``inputs`` then ``lists``.
    """
    listing = InputList()
    for item in inputs:
        _add_input(listing, os.path.normpath(item))
    for list_file in lists:
        _add_list_file(listing, Path(list_file))
    listing.entries.sort()
    _drop_repeats(listing.entries)
    return listing


def _add_input(listing: InputList, item: str) -> None:
    if os.path.isdir(item):
        before = len(listing.entries)
        listing.entries.extend(_folder_entries(item))
        if len(listing.entries) == before:
            listing.problems.append(Problem(Path(item), "folder holds no images"))
    elif os.path.isfile(item):
        listing.entries.append(entry_for(item))
    elif _GLOB_CHARACTERS & set(item):
        before = len(listing.entries)
        listing.entries.extend(entry_for(os.path.normpath(p)) for p in glob.iglob(item, recursive=True) if os.path.isfile(p))
        if len(listing.entries) == before:
            listing.problems.append(Problem(Path(item), "no file matches this pattern"))
    else:
        listing.problems.append(Problem(Path(item), broken_link(Path(item)) or "no such file or folder"))


def _folder_entries(folder: str) -> Iterator[str]:
    """The image files of ``folder`` by name, straight from the directory listing (no Path, no stat per
    file): a broken link among them is a problem when it is read, naming it."""
    with os.scandir(folder) as found:
        for entry in found:
            stem, suffix = os.path.splitext(entry.name)
            if suffix.lower() in IMAGE_SUFFIXES and not entry.name.startswith("."):
                yield stem + _SEPARATOR + os.path.join(folder, entry.name)


def _add_list_file(listing: InputList, list_file: Path) -> None:
    folder = str(list_file.parent)
    try:
        with open(list_file, encoding="utf-8") as lines:
            for line in lines:
                name = line.rstrip("\r\n")
                if name.strip():
                    listing.entries.append(entry_for(os.path.normpath(os.path.join(folder, name))))
    except UnicodeDecodeError:
        raise DataError([Problem(list_file, "is not a UTF-8 text file of paths, one a line")]) from None
    except OSError as exc:
        raise DataError([Problem(list_file, f"cannot read this list ({exc.strerror or exc})")]) from None


def _drop_repeats(entries: list[str]) -> None:
    """Remove repeated entries from the sorted ``entries`` in place (no second list)."""
    kept = 0
    for entry in entries:
        if kept == 0 or entries[kept - 1] != entry:
            entries[kept] = entry
            kept += 1
    del entries[kept:]
