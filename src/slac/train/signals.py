"""Stopping a run cleanly on SIGTERM or SIGINT (Ctrl-C): the first signal is noted and training stops at
the next step with a checkpoint of the exact position; a second one stops at once.

    flag = StopFlag(print)
    previous = install_stop_handlers(flag)     # the Trainer does this in fit()
    ...
    if flag.signum: raise TrainingInterrupted(flag.signum, trainer.save())
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

__all__ = ["StopFlag", "TrainingInterrupted", "install_stop_handlers", "restore_handlers"]


def install_stop_handlers(handler: Callable[[int, Any], None]) -> dict[int, Any]:
    """Install ``handler`` for SIGTERM and SIGINT; returns the previous handlers (to put back with
    ``signal.signal``). Outside the main thread signals are left alone and nothing is returned."""
    previous = {}
    for signum in (signal.SIGTERM, signal.SIGINT):
        try:
            previous[signum] = signal.signal(signum, handler)
        except ValueError:  # not the main thread: leave signals alone
            break
    return previous


class StopFlag:
    """The handler of SIGTERM/SIGINT: the first signal is noted in ``signum`` (training stops at the next
    step with a checkpoint; a study at the end of what it is doing), a second raises ``KeyboardInterrupt``
    at once, or at the end of a ``deferred()`` block (a git commit, a copy of records) so that it leaves
    no lock or half-written file behind. One flag can be handed from a caller to a ``Trainer``
    (``trainer.stop = flag``) so that a signal caught before ``fit`` is not lost."""

    def __init__(self, log: Callable[[str], None] | None = None) -> None:
        self.signum: int | None = None
        self.log = log
        self._deferring = 0
        self._pending = False

    def __call__(self, signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if self.signum is not None:
            if self._deferring:
                self._pending = True
                self._say(f"\n{name} again: stopping once the records being written are complete")
                return
            raise KeyboardInterrupt
        self.signum = signum
        self._say(f"\n{name}: stopping at the next safe point (a checkpoint is written if training); "
                  "a second signal stops at once")  # fmt: skip

    def _say(self, message: str) -> None:
        if self.log is not None:
            # RuntimeError: the signal came inside a print to the same stream ("reentrant call").
            with suppress(RuntimeError):
                self.log(message)

    @contextmanager
    def deferred(self) -> Iterator[None]:
        """A block a second signal does not cut short: it stops at the block's end."""
        self._deferring += 1
        try:
            yield
        finally:
            self._deferring -= 1
            if not self._deferring and self._pending:
                self._pending = False
                raise KeyboardInterrupt


class TrainingInterrupted(Exception):
    """SIGTERM or SIGINT arrived; a checkpoint of the exact position was written first."""

    def __init__(self, signum: int, checkpoint: Path | None):
        super().__init__(f"interrupted by {signal.Signals(signum).name}; checkpoint: {checkpoint}")
        self.signum, self.checkpoint = signum, checkpoint


def restore_handlers(previous: dict[int, Any]) -> None:
    """Put back the handlers ``install_stop_handlers`` returned."""
    for signum, handler in previous.items():
        signal.signal(signum, handler)
