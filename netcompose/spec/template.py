"""Jinja2 templates, rendered in a forked child with bounds on time, memory and output.

A template is a program: `{% for %}` loops nested five deep, `"x" * 10**9` or `10**10**8`
run for hours or take all memory, in Python code or in C where no timer can interrupt
them.  The child renders under RLIMIT_AS and is killed at the deadline; the parent reads
at most MAX_OUTPUT_BYTES from it.  A parent waiting for the child still handles signals,
so `watch` stops at once on SIGTERM.  Templates include only regular files inside their
own folder (symbolic links resolved).
"""
from __future__ import annotations

import os
import select
import signal
import time
import warnings
from pathlib import Path
from typing import Any

from ..errors import Position, SpecError, excerpt, shorten
from ..inputs import MAX_FILE_BYTES, read_text

RENDER_SECONDS = 5.0
MAX_OUTPUT_BYTES = MAX_FILE_BYTES
CHILD_MEMORY_BYTES = 256 << 20      # address space the child may add to what it inherits


def render(text: str, path: Path, context: dict[str, Any], pulled_in: list[Path] | None = None) -> tuple[str, list[int]]:
    """The rendered text and, for each of its lines, the template's line it came from (what
    a plan, `explain` or an error points at); or a SpecError naming the template's line.
    `pulled_in` gains the files the template included or imported."""
    read_end, write_end = os.pipe()
    with warnings.catch_warnings():  # Python 3.12 warns about fork beside threads; the child only renders
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the child: render, send the result, never return into the caller
        status = 1
        try:
            os.close(read_end)
            _limit_memory()
            _send(write_end, _render_here(text, path, context))
            status = 0
        finally:
            os._exit(status)
    os.close(write_end)
    try:
        reply = _receive(read_end, path)
    finally:
        os.close(read_end)
        _reap(pid)
    kind, payload = reply
    if kind == "ok":
        rendered, lines, files = payload
        if pulled_in is not None:
            pulled_in.extend(Path(f) for f in files)
        return rendered, lines
    raise SpecError(*payload)


def _limit_memory() -> None:
    import resource   # here, like pickle below: a file without a template never needs them
    with open("/proc/self/statm") as f:
        size = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    wanted = size + CHILD_MEMORY_BYTES
    for limit in (soft, hard):
        if limit != resource.RLIM_INFINITY:
            wanted = min(wanted, limit)
    resource.setrlimit(resource.RLIMIT_AS, (wanted, hard))


def _render_here(text: str, path: Path, context: dict[str, Any]) -> tuple[str, Any]:
    import jinja2
    from jinja2.sandbox import SandboxedEnvironment

    folder = path.parent
    pulled_in: list[str] = []

    class FolderLoader(jinja2.BaseLoader):
        def get_source(self, environment, template):
            target = folder / template
            if not target.exists():
                raise jinja2.TemplateNotFound(template)
            pulled_in.append(str(target))
            return (read_text(target, Position(str(path), 1, 1), confined_to=folder, name=template), str(target),
                    lambda: False)

    env = SandboxedEnvironment(loader=FolderLoader(), undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                               autoescape=False)
    where = str(path)
    try:
        out, size = [], 0
        compiled = env.from_string(text)
        lines = _LineMap(compiled, env, text)
        stream = compiled.generate(**context)
        for chunk in stream:
            size += len(chunk)
            if size > MAX_OUTPUT_BYTES:
                return "error", (Position(where, _template_line(), 1), f"template output exceeds {MAX_OUTPUT_BYTES} "
                                 "bytes", "generate less (check loop bounds)")
            out.append(chunk)
            lines.add(chunk, stream)
        return "ok", ("".join(out), lines.lines, pulled_in)
    except SpecError as exc:
        return "error", (exc.position, exc.problem, exc.fix)
    except jinja2.TemplateSyntaxError as exc:
        return "error", (Position(str(exc.filename or path), exc.lineno or 1, 1),
                         f"template syntax: {shorten(exc.message or '')}", "fix the Jinja2 syntax")
    except jinja2.TemplateNotFound as exc:
        return "error", (Position(where, 1, 1), f"template not found: {excerpt(exc.name)}",
                         "templates may only include files in the topology's folder")
    except jinja2.UndefinedError as exc:
        return "error", (Position(where, _template_line(exc), 1), f"template: {shorten(exc.message or '')}",
                         "define it with --var, --vars-file or vars:")
    except jinja2.exceptions.SecurityError as exc:
        return "error", (Position(where, _template_line(exc), 1), f"template: {shorten(str(exc))}",
                         "templates cannot call Python internals")
    except MemoryError:
        return "error", (Position(where, 1, 1), f"template rendering needs more than {CHILD_MEMORY_BYTES >> 20} MB",
                         "generate less (check string products and loop bounds)")
    except RecursionError:
        return "error", (Position(where, 1, 1), "template recursion is too deep", "check recursive macros or includes")
    except Exception as exc:  # a template's own arithmetic or filter errors
        return "error", (Position(where, _template_line(exc), 1), f"template: {shorten(str(exc))}",
                         "fix the expression")


class _LineMap:
    """For each output line, the template line its first visible character came from.

    Jinja yields output piece by piece, each from one node of the template; while the root
    render function is suspended at a yield, its frame's line is that yield's, which the
    template maps to the line of the last node that recorded one: exact for an expression,
    at most the line of a piece of literal text, which is then the first literal of the
    same text from that line on (the lexer knows where each starts).  Newlines inside a
    piece move on by one template line each.  What an `{% include %}` yields is placed on
    the include's line."""

    def __init__(self, template: Any, environment: Any, source: str) -> None:
        self.template = template
        self.literals: dict[str, list[int]] = {}   # literal text → the lines it starts on, ascending
        for line, kind, value in environment.lex(source):
            if kind == "data":
                self.literals.setdefault(value, []).append(line)
        self.lines: list[int] = []
        self.line = 1              # the template line at the current output position
        self.visible = False       # the current output line has shown a non-blank character

    def add(self, chunk: str, stream: Any) -> None:
        root = stream.gi_yieldfrom   # Template.generate delegates to the root render function
        nested = root is not None and root.gi_yieldfrom is not None
        if root is not None and root.gi_frame is not None:
            self.line = self.template.get_corresponding_lineno(root.gi_frame.f_lineno)
            if not nested:
                self.line = next((line for line in self.literals.get(chunk, ()) if line >= self.line), self.line)
        if not self.lines:
            self.lines.append(self.line)
        for i, piece in enumerate(chunk.split("\n")):
            if i:
                self.line += not nested
                self.lines.append(self.line)
                self.visible = False
            if not self.visible and piece.strip():
                self.lines[-1], self.visible = self.line, True


def _template_line(exc: BaseException | None = None) -> int:
    tb, line = (exc.__traceback__ if exc else None), 1
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def _send(fd: int, reply: tuple[str, Any]) -> None:
    import pickle
    data = pickle.dumps(reply)
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
    os.close(fd)


def _receive(fd: int, path: Path) -> tuple[str, Any]:
    import pickle
    deadline = time.monotonic() + RENDER_SECONDS
    chunks, size = [], 0
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise SpecError(Position(str(path), 1, 1), f"template rendering took longer than {RENDER_SECONDS:g} s",
                            "generate less (check loop bounds and arithmetic)")
        # Short waits: a signal delivered to another thread runs its handler (watch's SIGTERM)
        # only once this, the main thread, runs Python code again.
        ready, _, _ = select.select([fd], [], [], min(left, 0.1))
        if not ready:
            continue
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            break
        size += len(chunk)
        if size > MAX_OUTPUT_BYTES + (64 << 10):
            raise SpecError(Position(str(path), 1, 1), f"template output exceeds {MAX_OUTPUT_BYTES} bytes",
                            "generate less")
        chunks.append(chunk)
    try:
        return pickle.loads(b"".join(chunks))
    except Exception:  # the child died (killed for memory, say) before it finished its reply
        raise SpecError(Position(str(path), 1, 1), "template rendering failed (out of memory?)",
                        "generate less (check string products and loop bounds)") from None


def _reap(pid: int) -> None:
    """Kill the child if it still runs (timeout, or we were interrupted) and wait for it."""
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    os.waitpid(pid, 0)
