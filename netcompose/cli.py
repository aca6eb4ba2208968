"""The command line: parse arguments, call the library, format the result.

Start-up is part of every command's cost: this module imports only the standard library's
light parts at load, and each command imports what it uses (`--version` and `--help` load
no YAML, pydantic, netlink or OVS code)."""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
from functools import lru_cache
from json.encoder import encode_basestring
from typing import Any

from . import __version__, errors
from .inputs import STDIN

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_STYLES = {"green": "32", "yellow": "33", "red": "31", "dim": "2", "bold": "1"}


def _colour(stream=None) -> bool:
    """ANSI colour on a terminal, unless NO_COLOR is set (no-color.org); never into pipes and files."""
    return not os.environ.get("NO_COLOR") and (stream or sys.stdout).isatty()


def _styled(text: str, style: str, stream=None) -> str:
    if not _colour(stream):
        return text
    return f"\x1b[{_STYLES[style]}m{text}\x1b[0m"


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False))


def _table(headers: list[str], rows: list[list[str]]) -> str:
    """Columns padded to their widest cell, two spaces apart (cells may carry ANSI colour)."""
    def width(cell: str) -> int:
        return len(_ANSI.sub("", cell)) if "\x1b" in cell else len(cell)
    widths = [max([len(h)] + [width(row[i]) for row in rows]) for i, h in enumerate(headers)]
    lines = ["  ".join(_styled(h.ljust(w), "bold") for h, w in zip(headers, widths)).rstrip()]
    lines += ["  ".join(cell + " " * (w - width(cell)) for cell, w in zip(row, widths)).rstrip() for row in rows]
    return "\n".join(lines)


# A string YAML reads back as the same string when written plainly (no quotes).
_PLAIN = re.compile(r"[A-Za-z_/][A-Za-z0-9_./@+-]*(?:[ :][A-Za-z0-9_./@+-]+)*")
_YAML_WORDS = {"y", "n", "yes", "no", "on", "off", "true", "false", "null"}


def _yaml_scalar(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return _yaml_string(str(value))


@lru_cache(maxsize=None)   # a lab repeats its strings (hosts entries) in every container
def _yaml_string(text: str) -> str:
    if _PLAIN.fullmatch(text) and text.lower() not in _YAML_WORDS and ": " not in text and not text.endswith(":"):
        return text
    return encode_basestring(text)   # a JSON string is a YAML double-quoted scalar


def _yaml_lines(value: Any, indent: str) -> list[str]:
    """Block-style YAML of plain data (dicts, lists, scalars): PyYAML's representer resolves
    every scalar through its regular expressions and takes seconds for a large lab."""
    if isinstance(value, dict) and value:
        lines = []
        for key, item in value.items():
            head = f"{indent}{_yaml_scalar(key)}:"
            if isinstance(item, (dict, list)) and item:
                lines.append(head)
                lines.extend(_yaml_lines(item, indent + ("  " if isinstance(item, dict) else "")))
            else:
                lines.append(f"{head} {_yaml_flow(item)}")
        return lines
    if isinstance(value, list) and value:
        lines = []
        for item in value:
            if isinstance(item, (dict, list)) and item:
                nested = _yaml_lines(item, indent + "  ")
                lines.append(f"{indent}- {nested[0][len(indent) + 2:]}")
                lines.extend(nested[1:])
            else:
                lines.append(f"{indent}- {_yaml_flow(item)}")
        return lines
    return [indent + _yaml_flow(value)]


def _yaml_flow(value: Any) -> str:
    if isinstance(value, dict):
        return "{}"
    if isinstance(value, list):
        return "[]"
    return _yaml_scalar(value)


def _yaml_text(document: Any) -> str:
    return "\n".join(_yaml_lines(document, "")) + "\n"


def _error(text: str) -> None:
    print(text, file=sys.stderr)


def _parse_var(text: str) -> tuple[str, Any]:
    name, sep, value = text.partition("=")
    if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise errors.SpecError(None, f"--var {errors.excerpt(text)} is not NAME=VALUE (NAME: letters, digits, '_')",
                               "write --var count=10")
    from .spec.loader import safe_load
    try:
        return name, safe_load(value) if value else ""
    except errors.SpecError:
        raise errors.SpecError(None, f"--var {name}: {errors.excerpt(value)} is not a valid YAML value",
                               "quote it: --var 'name=\"text\"'") from None


def _variables(args) -> dict[str, Any]:
    variables: dict[str, Any] = {}
    if getattr(args, "vars_file", None):
        from .inputs import read_text
        from .spec.loader import safe_load
        at = errors.Position(args.vars_file, 1, 1)
        data = safe_load(read_text(args.vars_file, at), at) or {}
        if not isinstance(data, dict):
            raise errors.SpecError(errors.Position(args.vars_file, 1, 1), "vars file must be a mapping",
                                   "write name: value lines")
        variables.update(data)
    variables.update(dict(_parse_var(v) for v in getattr(args, "var", None) or []))
    return variables


def _source(args):
    from .spec import Source
    return Source(args.format, tuple(args.files[1:]), tuple(args.env_file or ()), tuple(args.profile or ()))


def _load(args, **options: Any):
    """The project of -f; a Compose or containerlab file's translation notes go to stderr
    once (`--quiet` hides them)."""
    from .gcpause import gc_paused
    with gc_paused():   # the engine's modules live until exit: collecting while they load finds nothing
        from .engine import Project
    options = {**options, "stop_timeout": args.timeout} if getattr(args, "timeout", None) is not None else options
    project = Project.load(args.file, args.project_name, _variables(args), source=_source(args), **options)
    if not args.quiet:
        for note in project.spec.notes:
            _error(f"note: {note}")
    return project


def _project(args):
    return _load(args, lock_timeout=args.lock_timeout, ovsdb=args.ovsdb, host=args.host, ovn_nb=args.ovn_nb)


def _print_plan(plan, origins, as_json: bool, verbose: bool = False) -> None:
    if as_json:
        _print_json(plan.to_json())
        return
    from .origins import render
    from .plan import summarize
    for action, line in render(plan.actions, origins, verbose):
        style = "bold" if action is None else "dim" if action.implicit else \
            {"create": "green", "update": "yellow", "delete": "red"}[action.op]
        print(_styled(line, style))
    print(f"Plan: {summarize(plan)}." if plan else "No changes. The host matches the topology.")


def cmd_plan(args) -> int:
    from .origins import Origins, annotate
    project = _project(args)
    state = project.plan(down=getattr(args, "destroy", False), all_hosts=getattr(args, "all_hosts", False))
    origins = Origins(state.resolved, project.spec.doc.where)
    annotate(state.plan.actions, origins)   # provenance, also in a saved plan
    if args.out:
        from .saved import save_plan
        save_plan(args.out, project, state)
    _print_plan(state.plan, origins, args.json, getattr(args, "verbose", False))
    return errors.EXIT_CHANGES if args.detailed_exitcode and state.plan else errors.EXIT_OK


def cmd_watch(args) -> int:
    if STDIN in args.files:
        raise errors.SpecError(None, "watch reads the file again on every edit, and standard input cannot be "
                               "watched", "name the file: -f topo.yaml")
    import signal
    from .watch import Watcher

    def emit(event: dict) -> None:
        if args.json:
            print(json.dumps(event), flush=True)
        elif event["event"] == "error":
            _error(f"{event['trigger']}: error: {event['error']} (keeping the last good state)")
        else:
            print(f"{event['trigger']}: {event['create']} created, {event['update']} updated, "
                  f"{event['delete']} deleted in {event['seconds']:.2f}s", flush=True)

    watcher = Watcher(args.file, args.project_name, _variables(args), emit, interval=args.interval,
                      lock_timeout=args.lock_timeout, ovsdb=args.ovsdb, host=args.host, ovn_nb=args.ovn_nb,
                      source=_source(args))

    def terminate(*_) -> None:
        # Stop now, even inside a long load or apply: an apply interrupted so rolls back.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        watcher.stop.set()
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminate)
    try:
        watcher.run()
    except KeyboardInterrupt:
        pass
    return errors.EXIT_OK


def cmd_up(args) -> int:
    if getattr(args, "watch", False):
        return cmd_watch(args)
    if args.dry_run:
        args.out, args.detailed_exitcode = None, False
        return cmd_plan(args)
    project = _project(args)
    fingerprint = None
    if args.plan:
        from .saved import read_plan
        fingerprint = read_plan(args.plan, project)
    with _progress_bar(args, "up") as progress:
        report = project.up(rollback=not args.no_rollback, plan_fingerprint=fingerprint, refresh=args.refresh,
                            progress=progress)
    _report(report, args, "up")
    if args.wait:
        not_ready = project.wait(args.wait_timeout)
        if not_ready:
            raise errors.ApplyError(f"not ready after {args.wait_timeout:g}s: " + ", ".join(
                f"{name} ({why})" for name, why in not_ready.items()) + "; see `netcompose logs` and `netcompose ps`")
        if not args.json:
            print("up: every process is running and ready")
    return errors.EXIT_OK


def cmd_down(args) -> int:
    if args.project_name and not args.file_given:  # as `docker compose -p NAME down`: by the marks alone
        options = {"stop_timeout": args.timeout} if args.timeout is not None else {}
        from .engine import Project
        project = Project.by_name(args.project_name, lock_timeout=args.lock_timeout, ovsdb=args.ovsdb,
                                  host=args.host, ovn_nb=args.ovn_nb, **options)
    else:
        project = _project(args)
    with _progress_bar(args, "down") as progress:
        report = project.down(all_hosts=args.all_hosts, progress=progress)
    _report(report, args, "down")
    return errors.EXIT_OK


def _progress_bar(args, verb: str):
    """On a terminal, a bar once the command has taken a second (not with --json)."""
    from .progressbar import ProgressBar
    return ProgressBar(verb, wanted=not args.json)


def _report(report, args, verb: str) -> None:
    if args.json:
        _print_json({**report.plan.to_json(), "applied": report.applied,
                     "seconds": round(report.seconds, 3), "notes": report.notes})
        return
    from .plan import describe
    if report.plan:
        for line in describe(report.plan.changes):
            print(line)
    for note in report.notes:
        print(f"note: {note}")
    counts = report.plan.counts()
    print(f"{verb}: {counts['create']} created, {counts['update']} updated, {counts['delete']} deleted "
              f"in {report.seconds:.2f}s" if report.plan else f"{verb}: nothing to do, the host already matches.")


def cmd_ps(args) -> int:
    from .workload import uptime_text
    if args.all_hosts:
        from . import across
        hosts, via, arguments, spec = _across(args)
        rows = across.ps(hosts, via, arguments, list(spec.topology.containers))
    else:
        rows = _project(args).ps()
    if args.json:
        _print_json(rows)
        return errors.EXIT_OK
    columns = ["container", "netns", "network", "ifname", "ipv4", "ipv6", "mac", "host_ifname", "state", "pid",
               "process"]
    if not any(row["ipv6"] for row in rows):
        columns.remove("ipv6")   # an IPv4-only project keeps its narrow table
    if any(row["host"] for row in rows):
        columns.insert(1, "host")
    if any(row["ovn"] for row in rows):
        columns.insert(columns.index("state") + 1, "ovn")
    if any(row.get("conditions") for row in rows):
        columns.insert(columns.index("state") + 1, "conditions")
    first = {}   # a container's published ports on its first row only
    for row in rows:
        first.setdefault(row["container"], id(row))
    print(_table([c.upper().replace("_", " ") for c in columns] + ["UPTIME", "RESTARTS", "PORTS"],
                 [[str((f"link to {row['link']}" if k == "network" and row["link"] else row[k]) or "-")
                   for k in columns] + [uptime_text(row["uptime"]), "-" if row["restarts"] is None
                                        else str(row["restarts"]),
                                        ", ".join(row["ports"]) if first[row["container"]] == id(row) and row["ports"]
                                        else "-"] for row in rows]))
    return errors.EXIT_OK


def cmd_logs(args) -> int:
    import signal
    import threading
    from . import logs
    project = _project(args)
    containers = [s.container for s in project.sandboxes(args.containers or None)
                  if s.process is not None or args.containers]
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        logs.show(project.name, containers, tail=args.tail, timestamps=args.timestamps,
                  colour=_colour() and not args.no_color, follow_until=stop.is_set if args.follow else None)
    except KeyboardInterrupt:
        pass
    return errors.EXIT_OK


def cmd_top(args) -> int:
    from .workload import uptime_text
    rows = _project(args).top(args.containers or None)
    if args.json:
        _print_json(rows)
        return errors.EXIT_OK
    print(_table(["CONTAINER", "PID", "USER", "UPTIME", "DECLARED", "COMMAND"],
                 [[row["container"], str(row["pid"]), row["user"], uptime_text(row["uptime"]),
                   "yes" if row["declared"] else "no", row["command"]] for row in rows]))
    return errors.EXIT_OK


def cmd_ls(args) -> int:
    from .workload import projects
    rows = projects()
    if args.json:
        _print_json(rows)
        return errors.EXIT_OK
    print(_table(["NAME", "STATUS", "CONTAINERS", "NETWORKS", "FILE"],
                 [[row["name"], row["status"], str(len(row["containers"])), str(len(row["networks"])),
                   row["file"] or "-"] for row in rows]))
    return errors.EXIT_OK


def cmd_stop(args) -> int:
    for line in _project(args).stop(args.containers or None):
        print(line)
    return errors.EXIT_OK


def cmd_start(args) -> int:
    from .plan import describe
    report = _project(args).start(args.containers or None)
    for line in describe(report.plan.changes):
        print(line)
    print(f"start: {report.applied} started")
    return errors.EXIT_OK


def cmd_restart(args) -> int:
    cmd_stop(args)
    return cmd_start(args)


def cmd_config(args) -> int:
    from .saved import resolved_document
    document = resolved_document(_project(args).resolved())
    if args.json:
        _print_json(document)
    else:
        sys.stdout.write(_yaml_text(document))
    return errors.EXIT_OK


def cmd_explain(args) -> int:
    from .explain import render
    project = _project(args)
    proto = args.proto or ("tcp" if args.port else "icmp")
    answers = project.explain(args.source, args.target, proto, args.port, live=args.live)
    if args.json:
        _print_json(answers)
    else:
        for line in render(answers, args.source, args.target, proto, args.port):
            print(line)
    return errors.EXIT_OK


def cmd_graph(args) -> int:
    from .graph import RENDER
    fmt = args.output_format or (args.out.rsplit(".", 1)[-1] if args.out and
                                 args.out.endswith((".svg", ".html", ".dot")) else "dot")
    from .spec.resolve import resolve
    project = _load(args)   # offline: a drawing of the file, whatever the host holds
    text = RENDER[fmt](resolve(project.spec.topology, project.spec.doc, project.name))
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
    return errors.EXIT_OK


def cmd_completion(args) -> int:
    from .completion import script
    sys.stdout.write(script(build_parser(), args.shell))
    return errors.EXIT_OK


def cmd_exec(args) -> int:
    project = _load(args)
    container = project.spec.topology.containers.get(args.container)
    if container is None:
        raise errors.SpecError(None, f"no container '{args.container}' in {args.file}",
                               f"use one of: {', '.join(project.spec.topology.containers)}")
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        raise errors.SpecError(None, "no command given", "write: netcompose exec CONTAINER -- CMD ARGS...")
    ns = project.sandbox(args.container)
    if container.pid:
        argv = ["nsenter", f"--net={ns}", "--", *command]
    else:
        # `ip netns exec` also bind-mounts /etc/netns/NAME/{resolv.conf,hosts} over /etc.
        argv = ["ip", "netns", "exec", ns, *command]
    sys.stdout.flush()
    os.execvp(argv[0], argv)


def _across(args) -> tuple[list[str], str, list[str], Any]:
    """For `--all-hosts`: the file's hosts, the --via command, the arguments each host's
    netcompose gets (the file and options as given) and the spec."""
    from . import across
    from .spec import load
    via = args.via or os.environ.get("NETCOMPOSE_VIA")
    if not via:
        raise errors.SpecError(None, "--all-hosts needs a way to run netcompose on each host",
                               "pass --via 'ssh {host} netcompose' (or set NETCOMPOSE_VIA)")
    spec = load(args.file, args.project_name, _variables(args), source=_source(args))
    arguments = [args.command, "-q", "-p", spec.project, *(f"--file={f}" for f in args.files)]
    for option, values in (("--format", [args.format] if args.format else []), ("--env-file", args.env_file or []),
                           ("--profile", args.profile or []), ("--var", args.var or []),
                           ("--vars-file", [args.vars_file] if args.vars_file else []),
                           ("--ovn-nb", [args.ovn_nb] if args.ovn_nb else []),
                           ("--lock-timeout", [str(args.lock_timeout)] if args.lock_timeout != LOCK_TIMEOUT else [])):
        arguments += [f"{option}={value}" for value in values]
    return across.hosts_of(spec), via, arguments, spec


def cmd_check(args) -> int:
    from .check import FULL_MATRIX_UP_TO
    if args.peer:
        return _check_peer(args)
    if args.all_hosts:
        from . import across
        hosts, via, arguments, _ = _across(args)
        probes = across.check(hosts, via, arguments + (["--all"] if args.all else []))
    else:
        probes = _project(args).check(everything=True if args.all else None)
    bad = [p for p in probes if not p.ok]
    import shlex
    # The explain hint names the file and project as given, so it runs as printed from here.
    same_file = "".join(f" -f {shlex.quote('-' if f == STDIN else f)}" for f in args.files) + \
        (f" -p {shlex.quote(args.project_name)}" if args.project_name else "")
    if args.json:
        _print_json({"probes": [p.to_json() for p in probes], "classes": probes.classes, "mismatches": len(bad),
                     "left_out": probes.elsewhere})
        return errors.EXIT_FAILURE if bad else errors.EXIT_OK
    icmp = [p for p in probes if p.proto == "icmp"]
    names = sorted({p.source for p in icmp} | {p.target for p in icmp})
    if len(names) <= FULL_MATRIX_UP_TO:
        _print_container_matrix(names, icmp)
    else:
        _print_class_summary(probes.classes, icmp)
    for p in probes:
        if p.proto != "icmp" or not p.ok:
            mark = "ok  " if p.ok else "FAIL"
            port = f":{p.port}" if p.port else ""
            got = f"inconclusive: {p.inconclusive}" if p.inconclusive else \
                f"got {'reachable' if p.actual else 'blocked'}"
            print(f"{mark} {p.source} → {p.target} {p.proto}{port} IPv{p.family} ({p.address}): expected "
                  f"{'reachable' if p.expected else 'blocked'} ({p.reason}), {got}")
            if not p.ok and not p.inconclusive:
                options = f" --proto {p.proto}" + (f" --port {p.port}" if p.port else "")
                print(f"     why: netcompose explain {p.source} {p.target}{options} --live{same_file}")
    print(f"check: {len(probes) - len(bad)} of {len(probes)} probes as expected")
    if probes.elsewhere:
        print(f"note: {probes.elsewhere} TCP/UDP probes of containers on other hosts left out (their listeners run "
              "there): check --all-hosts probes them")
    return errors.EXIT_FAILURE if bad else errors.EXIT_OK


def _check_peer(args) -> int:
    """This host's part of `check --all-hosts` (see netcompose.across): JSON lines out, "go"
    and the end in."""
    def listening() -> None:
        print(json.dumps({"listening": True}), flush=True)
        if sys.stdin.readline().strip() != "go":
            raise errors.NetcomposeError("the check across hosts went away")

    def done(probes) -> None:
        print(json.dumps({"probes": [p.to_json() for p in probes], "classes": probes.classes}), flush=True)
        sys.stdin.read()   # until every host has probed: their probes may need our listeners
    _project(args).check(everything=True if args.all else None, seed=args.seed, with_other_hosts=listening,
                         done=done)
    return errors.EXIT_OK


def _cell(probes: list) -> str:
    """Probes of one matrix cell: ✓ reachable, · blocked (as expected), or the mismatches, red."""
    bad = sum(not p.ok for p in probes)
    if bad:
        return _styled(f"! {bad}/{len(probes)}" if len(probes) > 1 else "!", "red")
    seen = {p.actual for p in probes}
    return ("✓" if True in seen else "") + ("·" if False in seen else "") + (f" {len(probes)}" if len(probes) > 1
                                                                            else "")


def _print_container_matrix(names: list[str], icmp: list) -> None:
    """With both families, a cell is "IPv4/IPv6": the same promise probed in each."""
    families = sorted({p.family for p in icmp}) or [4]
    by_pair = {(p.source, p.target, p.family): p for p in icmp}
    print(f"ICMP{' (IPv4/IPv6)' if len(families) > 1 else ''}: ✓ reachable, · blocked, ! differs from expected"
          + (", - no address of that family" if len(families) > 1 else ""))

    def cell(source: str, target: str) -> str:
        found = [by_pair.get((source, target, family)) for family in families]
        return "/".join(_cell([p]) if p else "-" for p in found) if any(found) else ""
    print(_table(["FROM \\ TO", *names], [[source, *(cell(source, target) for target in names)]
                                           for source in names]))


def _print_class_summary(classes: dict[str, dict], icmp: list) -> None:
    """The matrix by class (containers that behave alike) and by network."""
    print(f"{sum(len(c['members']) for c in classes.values())} containers in {len(classes)} classes "
          "(same networks, routes, firewall and place in others' rules); each pair of classes probed "
          "through a representative and a random pair, each container both ways (--all: every pair)")
    print(_table(["CLASS", "CONTAINERS", "NETWORKS", "MEMBERS"],
                 [[name, str(len(c["members"])), ",".join(c["networks"]) or "-",
                   ", ".join(c["members"][:3]) + (", ..." if len(c["members"]) > 3 else "")]
                  for name, c in classes.items()]))
    cells: dict[tuple[str, str], list] = {}
    for p in icmp:
        cells.setdefault((p.source_class, p.target_class), []).append(p)
    print("\nICMP by class (probes per cell): ✓ reachable, · blocked, as expected; ! mismatches")
    print(_table(["FROM \\ TO", *classes],
                 [[source, *(_cell(cells[source, target]) if (source, target) in cells else ""
                             for target in classes)] for source in classes]))
    networks: dict[str, list] = {}
    for p in icmp:
        networks.setdefault(p.network or "(between networks and over wires)", []).append(p)
    print("\nICMP by network")
    print(_table(["NETWORK", "PROBES", "REACHABLE", "BLOCKED", "MISMATCHES"],
                 [[name, str(len(ps)), str(sum(bool(p.actual) for p in ps)), str(sum(p.actual is False for p in ps)),
                   str(sum(not p.ok for p in ps))] for name, ps in networks.items()]))


def cmd_convert(args) -> int:
    from .frontends.convert import render
    text = render(_load(args).spec)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
    return errors.EXIT_OK


def cmd_schema(args) -> int:
    from .spec.model import json_schema
    sys.stdout.write(json.dumps(json_schema(), indent=2) + "\n")
    return errors.EXIT_OK


def _timeout_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("-t", "--timeout", type=float, metavar="SECONDS",
                   help="when stopping processes: SIGKILL after this long (default 10)")


LOCK_TIMEOUT = 30.0   # seconds, --lock-timeout's default


def _across_options(p) -> None:
    p.add_argument("--all-hosts", action="store_true",
                   help="run on every host of hosts: (through --via) and merge the answers")
    p.add_argument("--via", metavar="COMMAND", help="with --all-hosts: the command that runs netcompose on a host, "
                   "{host} standing for its name, e.g. 'ssh {host} netcompose' (default: $NETCOMPOSE_VIA)")


class _Parser(argparse.ArgumentParser):
    """A command line it rejects is invalid input (exit 3, one line), as a bad file is: never
    exit 2, which `plan --detailed-exitcode` gives "changes pending" (a pipeline that reads 2
    as such would take a typo in a flag for a pending change).  Subcommands' parsers are of
    the same class (argparse makes them with their parent's)."""

    def error(self, message: str):
        self.exit(errors.EXIT_INVALID, f"error: {message}; see '{self.prog} --help'\n")


def _file_options(target: argparse.ArgumentParser, suppress: bool, short_file: bool = True) -> None:
    """The file/project options, on the main parser and (with `suppress`: a value given before
    the subcommand stays) on the subcommands'."""
    default = (lambda value: argparse.SUPPRESS) if suppress else (lambda value: value)
    target.add_argument(*(("-f", "--file") if short_file else ("--file",)), action="append",
                        default=default(None), help="topology, Compose or containerlab file (default: "
                        "netcompose.yaml); repeat for Compose override files")
    target.add_argument("--format", choices=("netcompose", "compose", "clab"), default=default(None),
                        help="format of the file (default: detected from its content)")
    target.add_argument("--env-file", action="append", default=default(None),
                        help="variables for interpolation, instead of .env beside the file")
    target.add_argument("--profile", action="append", default=default(None),
                        help="Compose profile to enable (also $COMPOSE_PROFILES)")
    target.add_argument("-q", "--quiet", action="store_true", default=default(False),
                        help="hide the notes on what a Compose or containerlab translation leaves out")
    target.add_argument("-p", "--project-name", default=default(None),
                        help="project name (default: name: in the file, then the folder)")
    target.add_argument("--var", action="append", metavar="NAME=VALUE", default=default(None),
                        help="template variable")
    target.add_argument("--vars-file", default=default(None), help="YAML file of template variables")
    target.add_argument("--lock-timeout", type=float, default=default(LOCK_TIMEOUT),
                        help="seconds to wait for the project lock")
    target.add_argument("--json", action="store_true", default=default(False), help="machine-readable output")
    target.add_argument("--ovsdb", default=default(None),
                        help="OVSDB remote (default: $NETCOMPOSE_OVSDB or unix:/var/run/openvswitch/db.sock)")
    target.add_argument("--host", default=default(None),
                        help="which of the file's hosts: this machine is; its slice is applied "
                             "(default: $NETCOMPOSE_HOST)")
    target.add_argument("--ovn-nb", default=default(None), metavar="REMOTE",
                        help="OVN Northbound DB, e.g. tcp:10.240.0.1:6641 (default: $NETCOMPOSE_OVN_NB, "
                             "then ovn.northbound in the file)")


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser of the command line `argv` (None: of any).  Only the subcommands `argv`
    names get their options; the others are only listed (for --help and errors): argparse
    takes ~0.1 ms to build each one, mostly looking up translations of its messages, and a
    command line uses one."""
    parser = _Parser(prog="netcompose", description="Declarative container network topologies.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument("--version", action="version", version=f"netcompose {__version__}")
    _file_options(parser, suppress=False)
    sub = parser.add_subparsers(dest="command", required=True)
    wanted = None if argv is None else set(argv)
    file_options: dict[str, argparse.ArgumentParser] = {}

    def command(name: str, help: str, files: str | None = "-f") -> argparse.ArgumentParser | None:
        """The subparser of `name`, or None when `argv` does not name it (then it is only
        listed).  `files`: the file/project options it takes, which work before or after the
        subcommand, as in `docker compose -f X up` ("--file": all but -f, which `logs` takes
        as --follow, as `docker compose logs -f` does; None: none)."""
        if wanted is not None and name not in wanted:
            sub.add_parser(name, help=help, add_help=False)
            return None
        if files is None:
            return sub.add_parser(name, help=help)
        if files not in file_options:
            file_options[files] = argparse.ArgumentParser(add_help=False)
            _file_options(file_options[files], suppress=True, short_file=files == "-f")
        return sub.add_parser(name, parents=[file_options[files]], help=help)

    if p := command("plan", "show the changes up would make"):
        p.add_argument("--detailed-exitcode", action="store_true", help="exit 2 when changes are pending")
        p.add_argument("-o", "--out", help="save the plan for `up --plan`")
        p.add_argument("--destroy", action="store_true", help="plan what down would do")
        p.add_argument("--all-hosts", action="store_true", help="with --destroy: as down --all-hosts")
        p.add_argument("-v", "--verbose", action="store_true", help="list every element of long lists")
        p.set_defaults(func=cmd_plan)
    if p := command("up", "create or repair everything"):
        p.add_argument("--dry-run", action="store_true", help="same as plan")
        p.add_argument("-v", "--verbose", action="store_true", help="with --dry-run: list every element of long lists")
        p.add_argument("--no-rollback", action="store_true", help="keep partial state after a failure")
        p.add_argument("--plan", help="apply only if the host and file still match this saved plan")
        p.add_argument("--refresh", action="store_true",
                       help="after an edit, still observe everything (repairs drift outside the edit too)")
        p.add_argument("--watch", action="store_true", help="keep reconciling (see `watch`)")
        p.add_argument("--interval", type=float, help="with --watch: also reconcile every N seconds")
        _timeout_option(p)
        p.add_argument("--wait", action="store_true", help="return once every process runs and passes its ready probe")
        p.add_argument("--wait-timeout", type=float, default=60.0, metavar="SECONDS",
                       help="with --wait: fail after this long (default 60)")
        p.set_defaults(func=cmd_up)
    if p := command("watch", "reconcile on file edits, link events and an interval"):
        p.add_argument("--interval", type=float, help="also reconcile every N seconds")
        p.set_defaults(func=cmd_watch)
    if p := command("down", "remove everything the project owns"):
        p.add_argument("--all-hosts", action="store_true",
                       help="also remove the OVN logical state while other hosts still have ports bound")
        _timeout_option(p)
        p.set_defaults(func=cmd_down)
    if p := command("ps", "list containers and endpoints"):
        _across_options(p)
        p.set_defaults(func=cmd_ps)
    if p := command("config", "print the resolved topology"):
        p.set_defaults(func=cmd_config)
    if p := command("explain", "why a container can or cannot reach another"):
        p.add_argument("source")
        p.add_argument("target")
        p.add_argument("--proto", choices=["tcp", "udp", "icmp"], help="default: tcp with --port, else icmp")
        p.add_argument("--port", type=int)
        p.add_argument("--live", action="store_true",
                       help="also send one probe on the running lab, traced by nftables, and show what decided")
        p.set_defaults(func=cmd_explain)
    if p := command("graph", "draw the topology"):
        p.add_argument("-o", "--out", help="write to this file (its extension picks the format)")
        # -T as in dot: --format already names the input file's format.
        p.add_argument("-T", "--output-format", choices=["dot", "mermaid", "svg", "html"],
                       help="default: from -o's extension, else dot")
        p.set_defaults(func=cmd_graph)
    if p := command("completion", "print a shell completion script (source it: "
                    "eval \"$(netcompose completion bash)\")", files=None):
        p.add_argument("shell", choices=["bash", "zsh"])
        p.set_defaults(func=cmd_completion)
    if p := command("exec", "run a command in a container's sandbox"):
        p.add_argument("container")
        p.add_argument("command", nargs=argparse.REMAINDER)
        p.set_defaults(func=cmd_exec)
    if p := command("check", "probe the promised reachability"):
        p.add_argument("--all", action="store_true",
                       help="probe every ordered pair of containers (default: all up to 20 containers, "
                            "beyond that by classes of containers that behave alike)")
        _across_options(p)
        p.add_argument("--seed", type=int, help=argparse.SUPPRESS)     # of a host's part of --all-hosts
        p.add_argument("--peer", action="store_true", help=argparse.SUPPRESS)
        p.set_defaults(func=cmd_check)
    if p := command("convert", "write a Compose or containerlab file as a netcompose topology"):
        p.add_argument("-o", "--out", help="write to this file (default: stdout)")
        p.set_defaults(func=cmd_convert)
    if p := command("schema", "print the topology JSON Schema", files=None):
        p.set_defaults(func=cmd_schema)
    if p := command("logs", "print the processes' output", files="--file"):
        p.add_argument("containers", nargs="*", metavar="CONTAINER")
        p.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
        p.add_argument("-n", "--tail", type=int, metavar="N", help="only the last N lines of each container")
        p.add_argument("-t", "--timestamps", action="store_true", help="show when each line was written")
        p.add_argument("--no-color", action="store_true", help="no colour-coded prefixes")
        p.set_defaults(func=cmd_logs)
    if p := command("top", "list every process in the sandboxes"):
        p.add_argument("containers", nargs="*", metavar="CONTAINER")
        p.set_defaults(func=cmd_top)
    if p := command("ls", "list the projects on this host"):
        p.set_defaults(func=cmd_ls)
    for name, func, text in (("stop", cmd_stop, "stop declared processes"),
                             ("start", cmd_start, "start declared processes that are not running"),
                             ("restart", cmd_restart, "stop, then start declared processes")):
        if p := command(name, text):
            p.add_argument("containers", nargs="*", metavar="CONTAINER")
            _timeout_option(p)
            p.set_defaults(func=func)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(argv)
    args, extra = parser.parse_known_args(argv)
    # argparse takes `stop -p NAME web` as an empty container list followed by a stray "web".
    if extra and isinstance(getattr(args, "containers", None), list) and not any(e.startswith("-") for e in extra):
        args.containers += extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.file_given = args.file is not None
    # `-f -`: the topology from standard input (Compose's spelling), read once and bounded.
    args.files = [STDIN if name == "-" else name for name in args.file or ["netcompose.yaml"]]
    args.file = args.files[0]
    try:
        return args.func(args)
    except errors.NetcomposeError as exc:
        if args.debug:
            import traceback
            traceback.print_exc()
        _error(f"error: {exc}")
        return exc.exit_code
    except PermissionError as exc:
        if args.debug:
            import traceback
            traceback.print_exc()
        _error(f"error: {exc.strerror or exc}: netcompose changes kernel networking and needs root "
               "(CAP_NET_ADMIN, CAP_SYS_ADMIN)")
        return errors.EXIT_FAILURE
    except KeyboardInterrupt:
        _error("error: interrupted")
        return errors.EXIT_INTERRUPTED
    except Exception as exc:  # a bug: still one line unless --debug
        if args.debug:
            import traceback
            traceback.print_exc()
        _error(f"error: {type(exc).__name__}: {exc} (rerun with --debug for details)")
        return errors.EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
