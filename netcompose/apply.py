"""apply: run a plan through the drivers, level by level, and roll back on failure.

Actions of one level do not depend on each other (or the driver sequences them), so each
driver gets them as one batch (pipelined netlink, one OVSDB transaction, one nft
transaction), and the batches of different drivers run at once: each driver owns its
backend, and their kernel work (netlink, the filesystem) overlaps on separate cores.
Rollback is itself a plan: from what the host is now back to what it was before
(nmstate's model).
"""
from __future__ import annotations

import itertools
import os
import signal
import threading
from contextlib import contextmanager
from typing import Callable, Iterator

from .drivers import Outcome
from . import statefiles
from .errors import ApplyError
from .plan import Action, Plan
from .resources import KINDS

STATE_DIR = "/run/netcompose"


class InjectedFault(Exception):
    """Raised by a test's fault hook in place of the Nth operation."""


class Progress:
    __slots__ = ("done", "failed", "error", "interrupted")

    def __init__(self, interrupted: bool = False) -> None:
        self.done: list[Action] = []
        self.failed: Action | None = None
        self.error = ""
        self.interrupted = interrupted    # stopped between levels by Ctrl-C


FaultHook = Callable[[Action], None]


def batches(plan: Plan):
    """Consecutive actions with the same phase and level, grouped by driver."""
    def phase(a: Action) -> tuple[bool, int]:
        return (a.op != "delete", a.level)
    for _, group in itertools.groupby(plan.actions, key=phase):
        by_driver: dict[str, list[Action]] = {}
        for action in group:
            by_driver.setdefault(KINDS[action.kind].driver, []).append(action)
        yield by_driver


def execute(plan: Plan, drivers: dict, fault: FaultHook | None = None,
            interrupted: Callable[[], bool] = lambda: False,
            advanced: Callable[[int], None] = lambda done: None) -> Progress:
    """Apply every action; stop at the first failed level (or, once `interrupted`, before
    the next level) and say which actions completed (`advanced` hears their number after
    each level)."""
    progress = Progress()
    for by_driver in batches(plan):
        advanced(len(progress.done))
        if interrupted():
            progress.interrupted = True
            return progress
        work: dict[str, list[Action]] = {}
        for driver_name, actions in by_driver.items():
            progress.done.extend(a for a in actions if a.implicit)
            work[driver_name] = [a for a in actions if not a.implicit]
        if fault is not None and _inject(fault, work, drivers, progress):
            return progress
        outcomes = _apply_concurrently({name: (drivers[name], actions) for name, actions in work.items() if actions})
        for name, outcome in outcomes.items():
            _record(work[name], outcome, progress)
        if progress.failed is not None:
            return progress
    advanced(len(progress.done))
    return progress


def _inject(fault: FaultHook, work: dict[str, list[Action]], drivers: dict, progress: Progress) -> bool:
    """A test's fault hook raises in place of one action: apply the batch up to it, then fail."""
    for driver_name, actions in work.items():
        for i, action in enumerate(actions):
            try:
                fault(action)
            except InjectedFault as exc:
                if i:
                    _record(actions[:i], drivers[driver_name].apply(actions[:i]), progress)
                progress.failed, progress.error = action, f"injected fault: {exc}"
                return True
    return False


def _apply_concurrently(batches: dict[str, tuple[object, list[Action]]]) -> dict[str, Outcome]:
    """Each driver's batch, side by side.  A driver that raises (any exception, not only an
    OSError: a value the kernel's wire format cannot carry, a bug) fails its batch; the
    caller rolls back from what it observes."""
    def guarded(driver, actions: list[Action]) -> Outcome:
        try:
            return driver.apply(actions)
        except Exception as exc:
            return Outcome({actions[0].key: f"{type(exc).__name__}: {exc}"})
    if not batches:   # a level of only implicit actions has nothing to send
        return {}
    outcomes: dict[str, Outcome] = {}

    def run(name: str, driver, actions: list[Action]) -> None:
        outcomes[name] = guarded(driver, actions)
    # A thread per driver but the first, which runs here (a pool's module and logging would
    # cost every apply ~5 ms of imports).
    (first, (driver, actions)), *others = batches.items()
    threads = [threading.Thread(target=run, args=(name, *batch)) for name, batch in others]
    for thread in threads:
        thread.start()
    run(first, driver, actions)
    for thread in threads:
        thread.join()
    return {name: outcomes[name] for name in batches}


def _record(actions: list[Action], outcome: Outcome, progress: Progress) -> None:
    for action in actions:
        if action.key in outcome.errors:
            if progress.failed is None:
                progress.failed, progress.error = action, outcome.errors[action.key]
        else:
            progress.done.append(action)


@contextmanager
def deferred_interrupts() -> Iterator[Callable[[], bool]]:
    """Ctrl-C (SIGINT) is noted instead of raised while the body runs: an apply stops at the
    end of its current level and rolls back, so it never leaves a batch half sent, a thread
    still writing behind a rollback, or a rollback cut short.  Yields "was it pressed?"."""
    if threading.current_thread() is not threading.main_thread():
        yield lambda: False   # signals reach the main thread only
        return
    pressed: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, _frame: pressed.append(signum))
    try:
        yield lambda: bool(pressed)
    finally:
        signal.signal(signal.SIGINT, previous)


class Journal:
    """What an apply in progress is about to create; read back after a crash.

    Objects are marked as ours in a second step after creation (an interface alias, the
    loopback alias of a namespace).  A crash between the two steps leaves an unmarked
    object; the journal lets the next run recognise it as ours.
    """

    def __init__(self, project: str, root: str = STATE_DIR) -> None:
        self.path = os.path.join(root, project, "journal.json")

    def claims(self) -> set[str]:
        data = statefiles.read_json(self.path)
        try:
            return set(data["creates"])
        except (TypeError, KeyError):
            return set()

    def write(self, plan: Plan) -> None:
        creates = sorted(self.claims() | {a.key for a in plan.actions if a.op == "create"})
        statefiles.write_json(self.path, {"creates": creates}, sync=True)

    def clear(self) -> None:
        statefiles.remove(self.path)


def failure_message(progress: Progress) -> str:
    action = progress.failed
    assert action is not None
    return f"{action.op} {action.key} failed: {progress.error}"


def rollback_outcome(problem: str | None | bool) -> str:
    """`problem`: None = rolled back, False = not attempted (--no-rollback), text = why it failed."""
    if problem is None:
        return "rolled back: the host is as it was before"
    if problem is False:
        return "left as is (--no-rollback): run `netcompose up` again to converge"
    return f"rollback failed ({problem}): run `netcompose up` again to converge"


def raise_failure(progress: Progress, problem: str | None | bool) -> None:
    raise ApplyError(f"{failure_message(progress)}; {rollback_outcome(problem)}")
