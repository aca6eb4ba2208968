"""The cyclic garbage collector, paused for one bounded step.

A run at N=1000 allocates ~100k small, acyclic objects (the parsed file, resources,
decoded netlink messages).  Every few hundred allocations CPython's generational collector
walks the live ones again, which measured as half the time of a one-container edit.
Reference counting still frees them.  What survives the step is frozen (left out of later
collections, which would otherwise start by walking all of it) until the next step.
"""
from __future__ import annotations

import gc
from contextlib import contextmanager
from typing import Iterator


@contextmanager
def gc_paused() -> Iterator[None]:
    was_enabled = gc.isenabled()
    gc.disable()
    gc.unfreeze()  # what an earlier step froze is collectable again
    try:
        yield
    finally:
        if was_enabled:
            gc.freeze()
            gc.enable()
