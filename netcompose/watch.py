"""`netcompose watch`: reconcile continuously.

Triggers: an edit of the topology or of any file it was built from (includes, files a
template pulls in, `.env`; debounced, so several saves within 300 ms make one apply), a
netlink event on one of the project's host links (deleted, or set down), a declared process
that exited and is due for a restart (its `restart:` policy, with exponential back-off), and
an optional interval, which fires on its own schedule whatever else happens and observes
everything (so it repairs drift inside sandboxes too).  An invalid edit is reported and the
last good state is kept; the loop goes on.
"""
from __future__ import annotations

import hashlib
import threading
import time
from pathlib import Path
from typing import Any, Callable

from pyroute2 import IPRoute
from pyroute2.netlink.rtnl import RTMGRP_LINK
from watchdog.events import (EVENT_TYPE_CLOSED, EVENT_TYPE_CREATED, EVENT_TYPE_DELETED, EVENT_TYPE_MODIFIED,
                             EVENT_TYPE_MOVED, FileSystemEventHandler)
from watchdog.observers import Observer

from . import names
from .engine import Project
from .errors import NetcomposeError, SpecError
from .inputs import read_text

DEBOUNCE = 0.3
PROCESS_CHECK = 0.25   # seconds between looks for exited processes
# Events that can change a file's content.  Reading the files (ours included: every reconcile
# loads them) makes `opened` and `closed_no_write` events, which must not count as edits.
CONTENT_EVENTS = frozenset({EVENT_TYPE_CREATED, EVENT_TYPE_DELETED, EVENT_TYPE_MODIFIED, EVENT_TYPE_MOVED,
                            EVENT_TYPE_CLOSED})
Emit = Callable[[dict[str, Any]], None]


class _Trigger:
    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.reasons: dict[str, float] = {}   # reason → time of the latest event

    def fire(self, reason: str) -> None:
        with self.cond:
            self.reasons[reason] = time.monotonic()
            self.cond.notify()


class _Files(FileSystemEventHandler):
    def __init__(self, watcher: "Watcher") -> None:
        self.watcher = watcher

    def on_any_event(self, event) -> None:
        if event.event_type not in CONTENT_EVENTS:
            return
        for raw in (getattr(event, "src_path", None), getattr(event, "dest_path", None)):
            if raw and Path(str(raw)).resolve() in self.watcher.watched():
                self.watcher.trigger.fire("file")


class Watcher:
    def __init__(self, path: str | Path, project: str | None, variables: dict[str, Any], emit: Emit,
                 interval: float | None = None, **options: Any) -> None:
        self.path, self.project_name, self.variables = Path(path), project, variables
        self.options, self.emit, self.interval = options, emit, interval
        self.trigger = _Trigger()
        self.stop = threading.Event()
        self.sources: set[Path] = {self.path.resolve()}
        self.project: Project | None = None
        self.seen_content: bytes | None = None   # watchdog reports one save as several events

    def watched(self) -> set[Path]:
        return self.sources | {p.parent / ".env" for p in self.sources}

    def content(self) -> bytes:
        digest = hashlib.sha256()
        for path in sorted(self.watched()):
            try:
                digest.update(read_text(path).encode())
            except SpecError:  # missing, not a regular file, too big: the load reports it
                digest.update(b"-")
        return digest.digest()

    def reconcile(self, reason: str) -> None:
        content = self.content()
        if content == self.seen_content:  # a repeated event of a save already applied
            reason = "+".join(r for r in reason.split("+") if r != "file")
            if not reason:
                return
        self.seen_content = content
        # Anything but an edit alone looks everywhere: an interval or a link event is about
        # drift, which an edit's focused apply would not see.
        refresh = reason != "file"
        started = time.monotonic()
        try:
            project = Project.load(self.path, self.project_name, self.variables, **self.options)
        except NetcomposeError as exc:
            self.emit({"event": "error", "trigger": reason, "error": str(exc), "kept": "last good state"})
            return
        self.project = project
        self.sources = {p.resolve() for p in project.spec.sources}
        try:
            report = project.up(refresh=refresh, supervise=True)
        except NetcomposeError as exc:
            self.emit({"event": "error", "trigger": reason, "error": str(exc)})
            return
        if not report.plan and reason == "netlink":
            return  # our own apply's link events: nothing drifted
        self.emit({"event": "reconcile", "trigger": reason, "project": project.name, **report.plan.counts(),
                   "seconds": round(time.monotonic() - started, 3)})

    def _watch_links(self) -> None:
        """Host link events: one of ours deleted or set down triggers a reconcile."""
        with IPRoute() as ipr:
            ipr.bind(groups=RTMGRP_LINK)
            while not self.stop.is_set():
                for msg in ipr.get():
                    project = self.project
                    if project is None:
                        continue
                    mark = names.parse_alias(msg.get_attr("IFLA_IFALIAS"))
                    ours = (mark is not None and mark[0] == project.name) or \
                        msg.get_attr("IFLA_IFNAME") in project.scope().host_ifnames
                    if not ours:
                        continue
                    if msg["event"] == "RTM_DELLINK" or not msg["flags"] & 1:
                        self.trigger.fire("netlink")

    @staticmethod
    def _process_exited(project: str) -> bool:
        """Supervision: record exit codes of processes that exited; True when one is due
        for a restart (restart policy, exponential back-off)."""
        from .drivers import processes
        processes.claim_supervision(project)
        processes.record_exits(project)
        return processes.restart_due(project)

    def _follow(self, observer: Observer, folders: set[Path]) -> None:
        """Watch the folders of the files the topology is built from (new includes too)."""
        for folder in {p.parent for p in self.watched()} - folders:
            observer.schedule(_Files(self), str(folder), recursive=False)
            folders.add(folder)

    def run(self) -> None:
        # Watching starts before the first load, so an edit made while it runs is not missed.
        observer, folders = Observer(), set()
        self._follow(observer, folders)
        observer.start()
        try:
            self.reconcile("start")
            self._follow(observer, folders)
            threading.Thread(target=self._watch_links, daemon=True).start()
            next_tick = time.monotonic() + self.interval if self.interval else None
            last_check = time.monotonic()
            while not self.stop.is_set():
                with self.trigger.cond:
                    self.trigger.cond.wait(timeout=0.1)
                    now = time.monotonic()
                    ready = [r for r, t in self.trigger.reasons.items() if now - t >= DEBOUNCE]
                    for reason in ready:
                        del self.trigger.reasons[reason]
                if next_tick is not None and now >= next_tick:
                    ready.append("interval")
                    while next_tick <= now:  # ticks missed during a long apply are not made up
                        next_tick += self.interval
                if not ready and now - last_check >= PROCESS_CHECK:
                    last_check = now
                    if self.project is not None and self._process_exited(self.project.name):
                        ready = ["process"]
                if ready:
                    self.reconcile("+".join(sorted(ready)))
                    self._follow(observer, folders)
        finally:
            observer.stop()
            observer.join()
            if self.project is not None:
                from .drivers import processes
                processes.release_supervision(self.project.name)
