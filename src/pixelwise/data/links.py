"""Symbolic links that lead nowhere, said as what they are: a dataset copied without its link targets
or a link pointing at itself is a problem of that file, not a missing file elsewhere."""

from __future__ import annotations

import errno
import os
from pathlib import Path


def broken_link(path: str | Path) -> str | None:
    """"broken link to TARGET" or "symbolic link loop (…)" if ``path`` is such a link, else None."""
    path = Path(path)
    try:
        if not path.is_symlink():
            return None
        target = os.readlink(path)
        path.stat()
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return f"symbolic link loop ({path.name} -> {target}); it never reaches a file"
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            return f"broken link to {target} (no such file)"
    return None
