"""Stop requests: SIGTERM, SIGINT and Slurm's warning signal (SIGUSR1) turned into a flag that
the driver reads between chunks, and the exception it raises once the chunk is saved."""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from typing import Any


class Interrupted(Exception):
    """Raised by the driver after a SIGTERM/SIGINT/SIGUSR1, once the current chunk is saved."""

    def __init__(self, signum: int, where: str):
        self.signum = signum
        self.where = where
        self.requeue: str | None = None  # what `--requeue` did, once the runner tried it
        super().__init__(f"interrupted by {signal.Signals(signum).name} {where}")


class StopSignal:
    """While active, SIGTERM, SIGINT and SIGUSR1 (Slurm's warning, `--signal=B:USR1@S`) only set
    a flag the driver checks between chunks; one that came since `early()` counts too.

    A second signal restores the previous handlers and re-delivers itself, so a user who
    insists stops at once. Handlers are restored on exit. Outside the main thread (where
    Python forbids handlers) this is inert.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)
    _early: list = []  # signals caught by `early` before training began

    def __init__(self):
        self.signum: int | None = StopSignal._early[0] if StopSignal._early else None
        self._previous: dict[int, Any] = {}

    @classmethod
    @contextlib.contextmanager
    def early(cls):
        """While active (main thread), SIGTERM and SIGUSR1 outside training only mark a stop
        request that a StopSignal within honours (before its first block), instead of killing
        the process before it has recorded anything."""
        previous = {}
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGTERM, signal.SIGUSR1):
                previous[s] = signal.signal(s, lambda signum, frame: cls._early.append(signum))
        try:
            yield
        finally:
            for s, h in previous.items():
                signal.signal(s, h)
            cls._early.clear()

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def _handle(self, signum, frame):
        if self.signum is not None:
            self._restore()
            signal.raise_signal(signum)
            return
        self.signum = signum
        print(
            f"jaxcl: received {signal.Signals(signum).name}: finishing the current chunk and "
            "saving a checkpoint (send it again to stop at once, without saving)",
            file=sys.stderr,
            flush=True,
        )

    def _restore(self):
        for s, h in self._previous.items():
            signal.signal(s, h)
        self._previous = {}

    def __enter__(self) -> "StopSignal":
        if threading.current_thread() is threading.main_thread():
            for s in self.SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        self._restore()
