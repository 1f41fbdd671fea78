"""Atomic file writes: a crash or Ctrl-C never leaves a half-written checkpoint, report or mask."""

from __future__ import annotations

import errno
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp creates files readable by their owner only; outputs get the usual permissions instead.
_FILE_MODE = 0o666 & ~_current_umask()


# A file name may be up to 255 bytes (NAME_MAX); the temporary name must fit too, so it keeps only a
# readable start of the final name (".NAME.XXXXXXXX.tmp.png" would not fit beside a 240-byte NAME).
_PREFIX_BYTES = 64


def _temp_prefix(name: str) -> str:
    start = os.fsencode(name)[:_PREFIX_BYTES].decode("utf-8", "ignore")  # never half a character
    return f".{start}."


def _short_suffix(name: str) -> str:
    suffix = os.path.splitext(name)[1]
    return suffix if len(os.fsencode(suffix)) <= 16 else ""


def _temp_name_pattern(name: str) -> re.Pattern[str]:
    """The names :func:`atomic_path` gives the temporary files of ``name``: the prefix, mkstemp's 8
    random characters, ``.tmp`` and the short suffix (".history.csv.k3x_9az2.tmp.csv")."""
    return re.compile(re.escape(_temp_prefix(name)) + "[a-z0-9_]{8}" + re.escape(".tmp" + _short_suffix(name)))


def remove_leftover_temps(folder: str | Path, names: Iterable[str]) -> list[Path]:
    """Remove the temporary files that atomic writes of ``names`` into ``folder`` left behind when the
    process was killed mid-write, and return them. Only names of exactly that pattern are touched, never
    another file. Call it only where no other process can be writing those files (under a lock).

    Raises:
        WriteError: a leftover could not be removed (no permission)."""
    patterns = [_temp_name_pattern(name) for name in names]
    try:
        entries = list(os.scandir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return []
    removed = []
    for entry in entries:
        if entry.is_file(follow_symlinks=False) and any(p.fullmatch(entry.name) for p in patterns):
            try:
                os.unlink(entry.path)
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise write_error(entry.path, exc) from None
            removed.append(Path(entry.path))
    return removed


class WriteError(OSError):
    """A file could not be written (a full disk, no permission, a read-only file system): its message is
    one line naming the file and the reason; the file's previous version, if any, is left as it was."""

    free = ""  # "1.2 MB free" where the disk (or quota) is full

    def __str__(self) -> str:
        return f"cannot write {self.filename} ({self.strerror}{f'; {self.free} there' if self.free else ''})"


def _free_space(path: Path) -> str:
    """How much room the file system holding ``path`` has left, e.g. "1.2 MB free", or ""."""
    for folder in (path, *path.parents):
        try:
            free = shutil.disk_usage(folder).free
        except OSError:
            continue
        for unit in ("bytes", "kB", "MB", "GB", "TB"):
            if free < 1000 or unit == "TB":
                return f"{free:.0f} {unit} free" if unit == "bytes" else f"{free:.1f} {unit} free"
            free /= 1000
    return ""


def write_error(path: str | Path, exc: OSError) -> WriteError:
    """``exc``, raised while writing ``path``, as a WriteError whose one-line message names the file."""
    if isinstance(exc, WriteError):
        return exc
    reason = exc.strerror or (str(exc).splitlines() or [type(exc).__name__])[0]
    error = WriteError(exc.errno, reason, str(path))
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        error.free = _free_space(Path(path).parent)
    return error


@contextmanager
def atomic_path(path: str | Path, durable: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; it replaces ``path`` only if the block succeeds.

    ``durable`` also fsyncs before the rename, so the file survives a power cut, not just a crash;
    caches and regenerable data skip that cost. An OSError (a full disk, no permission) becomes a
    :class:`WriteError` naming ``path``; its previous version stays as it was."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path.name), suffix=".tmp" + _short_suffix(path.name),
                                   dir=path.parent)
        os.close(fd)
    except OSError as exc:
        raise write_error(path, exc) from None
    try:
        yield Path(tmp)
        os.chmod(tmp, _FILE_MODE)
        if durable:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
        if durable:  # the rename itself must reach the disk too
            folder = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(folder)
            finally:
                os.close(folder)
    except OSError as exc:
        raise write_error(path, exc) from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def make_folder(path: str | Path, what: str = "output folder") -> Path:
    """Create ``path`` (and its parents) if needed; a ValueError naming it if that cannot be done."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise ValueError(f"{path}: a file has this name, so it cannot be the {what}") from None
    except OSError as exc:
        raise ValueError(f"{path}: cannot create the {what} ({exc.strerror or exc})") from None
    return path


def atomic_write(path: str | Path, write: Callable[[Path], object], durable: bool = True) -> None:
    """Run ``write(tmp_path)`` and move the result into place atomically."""
    with atomic_path(path, durable) as tmp:
        write(tmp)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def files_in(folder: str | Path) -> set[Path]:
    """The entries of ``folder`` now (none if it does not exist): what a command's outputs may replace."""
    try:
        return set(Path(folder).iterdir())
    except OSError:
        return set()


def replaced_note(before: set[Path], written: Iterable[Path]) -> str | None:
    """THE output rule of evaluate, predict and export: outputs replace earlier files of the same name
    (they are made again from the run and the inputs, which stay), and the command says which:
    "replaced 3 earlier file(s) in OUT: a.png, b.png, c.png"; None when nothing was replaced."""
    replaced = [p for p in written if p in before]
    if not replaced:
        return None
    names = ", ".join(p.name for p in replaced[:3]) + (f" and {len(replaced) - 3} more" if len(replaced) > 3 else "")
    folders = {p.parent for p in replaced}
    where = f" in {folders.pop()}" if len(folders) == 1 else ""
    return f"replaced {len(replaced)} earlier file(s){where}: {names}"
