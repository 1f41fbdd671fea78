"""One writer per run directory: ``train`` holds an exclusive ``flock`` on a file inside the run from
its first check to its exit. The kernel drops the lock when the process ends, however it ends (a
crash, SIGKILL), so a stale lock never blocks; a second ``train`` (or ``--resume``) of a run that is
being trained is refused at once, naming the process that holds it."""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from .files import make_folder
from .rundir import RunDirError

try:
    import fcntl
except ImportError:  # Windows: no flock; runs are then unguarded, as before
    fcntl = None  # type: ignore[assignment]

LOCK_FILE = ".pixelwise.lock"


class RunLocked(RunDirError):
    """Another process is training this run directory."""


def _holder(path: Path) -> str:
    """The PID the holder wrote into the lock file (it writes it right after locking)."""
    for _ in range(20):
        try:
            text = path.read_text(encoding="ascii", errors="ignore").strip()
        except OSError:
            text = ""
        if text.isdigit():
            return text
        time.sleep(0.01)
    return ""


def foreign_files(run_dir: Path) -> list[str]:
    """The names in ``run_dir`` that a pixelwise run does not write (sorted), so that a folder holding
    other work (predictions, a dataset) is never trained into and mixed up with a run."""
    from .rundir import TRAINING_FILES

    own = {LOCK_FILE, *TRAINING_FILES}
    try:
        names = [p.name for p in Path(run_dir).iterdir()]
    except (FileNotFoundError, NotADirectoryError):
        return []
    # Hidden ".NAME.*.tmp*" files are atomic writes a killed process left behind.
    return sorted(n for n in names if n not in own and not (n.startswith(".") and ".tmp" in n))


@contextmanager
def hold_run(run_dir: str | Path, held: bool = True,
             agree: Callable[[bool], bool] = lambda refused: refused) -> Iterator[None]:
    """Lock ``run_dir`` (created if missing) for the block, or raise at once: :class:`RunLocked` if
    another process holds it, ValueError if it cannot be a folder (a file has its name).

    ``held=False`` takes no lock (the other ranks of a torchrun launch, whose rank 0 holds it);
    ``agree`` (``World.any``) makes every rank refuse when one does. The lock file goes again at the end
    (a killed holder leaves it, unlocked), and so does the folder if this call created it and the block
    wrote nothing into it."""
    run_dir = Path(run_dir)
    refusal: Exception | None = None
    fd, created = None, False
    if held and fcntl is not None:
        try:
            created = not run_dir.exists()
            make_folder(run_dir, "run folder")
            fd = _lock(run_dir / LOCK_FILE)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except BlockingIOError:
            pid = _holder(run_dir / LOCK_FILE)
            who = f"process {pid}" if pid else "another process"
            refusal = RunLocked(f"{run_dir}: {who} is training this run right now; wait for it to finish "
                                "(or stop it), or choose another run_dir")
        except (ValueError, OSError) as exc:
            refusal = exc
    if agree(refusal is not None):
        if fd is not None:
            os.close(fd)
        raise refusal or RunLocked(f"{run_dir}: refused by rank 0 (see its message)")
    try:
        yield
    finally:
        if fd is not None:
            try:  # removed while still held (see _lock); a start that wrote nothing removes the folder it made
                (run_dir / LOCK_FILE).unlink()
                if created and not any(run_dir.iterdir()):
                    run_dir.rmdir()
            except OSError:
                pass
            os.close(fd)


def _lock(path: Path) -> int:
    """Open and flock ``path``; BlockingIOError if another process holds it. The holder removes the file
    when it is done, so a lock taken on a file that has meanwhile been removed (or replaced) is taken
    again on the file now there: two processes can never hold "the" lock at once."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if os.fstat(fd).st_ino == os.stat(path).st_ino:
                return fd
        except FileNotFoundError:
            pass
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
