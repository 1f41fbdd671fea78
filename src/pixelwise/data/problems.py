"""What is wrong with the data, as values: a Problem names the file and says what is wrong, so a
user can fix a whole dataset in one round; DataError carries them all."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

_LINE_BREAKS = "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"  # what str.splitlines splits on


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the data. Always names the file or folder, so the user knows what to fix."""

    path: Path
    message: str

    def __str__(self) -> str:
        # A line break in a file name is shown escaped, so one problem stays one line.
        path = "".join(repr(c)[1:-1] if c in _LINE_BREAKS else c for c in str(self.path))
        return f"{path}: {self.message}"


class DataError(Exception):
    """Bad input data: carries every :class:`Problem` found, one line each in ``str(error)``."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = list(problems)
        lines = [str(p) for p in self.problems]
        if len(lines) > 1:
            lines.insert(0, f"{len(lines)} problems with the data:")
        super().__init__("\n".join(lines) if lines else "problem with the data")

    def __reduce__(self):  # picklable across processes although __init__ takes problems, not a message
        return (type(self), (self.problems,))


class SkippableDataError(DataError):
    """Problems in some pairs while others are valid: skipping the bad ones (``skip_invalid``) would work."""
