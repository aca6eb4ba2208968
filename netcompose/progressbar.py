"""A progress bar for `up` and `down` on a terminal, shown once they have taken a second.

A quick run prints only its summary, as into a pipe; a slow one (a large lab, processes to
start) shows where it is: planning, applying (actions done of all), verifying, or rolling
back.  The bar (rich) is drawn by its own thread, so a long single step still moves, and it
is erased when done, leaving the usual summary.  rich honours NO_COLOR.  It is imported only
when the bar appears: a quick run never loads it.
"""
from __future__ import annotations

import os
import sys
import threading
from typing import Any

DELAY = 1.0   # seconds before the bar appears


class ProgressBar:
    """A ProgressHook (see netcompose.engine) that draws itself after DELAY on a terminal;
    use it as a context manager, which erases it."""

    def __init__(self, verb: str, wanted: bool = True, stream: Any = None) -> None:
        self.verb, self.wanted, self.stream = verb, wanted, stream or sys.stdout
        self.phase, self.done, self.total = "planning", 0, 0
        self.lock = threading.Lock()
        self.bar: Any = None
        self.closed = False
        self.timer = threading.Timer(DELAY, self._show)
        self.timer.daemon = True

    def __enter__(self) -> "ProgressBar":
        if self.wanted and self.stream.isatty() and os.environ.get("TERM") != "dumb":
            self.timer.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self.timer.cancel()
        with self.lock:
            self.closed = True
            if self.bar is not None:
                self.bar.stop()

    def __call__(self, phase: str, done: int, total: int) -> None:
        with self.lock:
            self.phase, self.done, self.total = phase, done, total
            if self.bar is not None:
                self._update()

    def _show(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, \
            TimeElapsedColumn
        with self.lock:
            if self.closed:
                return
            self.bar = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                                MofNCompleteColumn(), TimeElapsedColumn(), transient=True,
                                console=Console(file=self.stream))
            self.task = self.bar.add_task("", total=None)
            self._update()
            self.bar.start()

    def _update(self) -> None:
        self.bar.update(self.task, description=f"{self.verb}: {self.phase}", completed=self.done,
                        total=self.total or None)
