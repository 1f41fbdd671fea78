"""Stopping on request: Ctrl-C or SIGTERM finishes the step, saves and stops; a second Ctrl-C
stops at once."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from pathlib import Path

from ..rundir import LAST


class TrainingStopped(Exception):
    """Training was asked to stop (Ctrl-C, SIGTERM) and saved its progress in ``last``."""

    def __init__(self, run_dir: Path, epoch: int, step: int, steps: int):
        self.run_dir, self.epoch, self.step, self.steps = run_dir, epoch, step, steps
        where = f"after step {step} of {steps} in epoch {epoch}" if step else f"after epoch {epoch - 1}"
        super().__init__(f"stopped {where}; progress saved in {run_dir / LAST}")


class StopRequest:
    """Ctrl-C or SIGTERM asks training to finish the current step, save and stop; a second Ctrl-C
    stops at once (the last saved checkpoint stays intact)."""

    def __init__(self, log: Callable[[str], None]):
        self.requested = False
        self._log = log
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, _frame) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        self._log(f"\n{signal.Signals(signum).name}: finishing this step, then saving and stopping "
                  "(Ctrl-C again stops at once)")

    def __exit__(self, *_exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
