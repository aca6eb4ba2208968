"""The library API: everything the CLI does, as Python calls.

    project = Project.load("topo.yaml")
    report = project.up()
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import socket
import time
from contextlib import ExitStack, contextmanager
from functools import cached_property
from ipaddress import IPv4Address, IPv6Address, ip_interface, ip_network
from pathlib import Path
from typing import Any, Callable, Iterator

from . import conditions, names, statefiles
from .apply import (FaultHook, Journal, Progress, STATE_DIR, deferred_interrupts, execute, failure_message,
                    raise_failure, rollback_outcome)
from .compile import Desired
from .drivers import Scope, rtnl
from .drivers.execs import ExecDriver
from .drivers.files import FilesDriver
from .drivers.nftables import NftablesDriver
from .drivers.netlink import Namespaces, NetlinkDriver, proven_mark, read_namespace_owner
from .drivers.ovsdb import OvsdbDriver, OvsdbUnavailable, remote_from
from .drivers.processes import STOP_TIMEOUT, ProcessDriver
from .drivers.proxies import ProxiesDriver
from .drivers.tc import TcDriver
from .errors import ApplyError, ConflictError, Interrupted, LockTimeout, NetcomposeError, SpecError, StalePlan
from .gcpause import gc_paused
from .plan import Plan, classify, describe, digest, make_plan
from .resources import HOST, KINDS, Resource, link_key, sysctl_device
from .spec import Source, Spec, check_project_name, load, runnable
from .spec.resolve import HostFacts, Resolved, kernel_names, port_key, resolve, shown_port


def _local_host(spec: Spec, given: str | None) -> str | None:
    """This machine's name among the file's hosts: --host, else $NETCOMPOSE_HOST."""
    host = given or os.environ.get("NETCOMPOSE_HOST") or None
    hosts = spec.topology.hosts
    if hosts is None:
        if given and spec.topology.containers:   # (a project known only by name has none)
            raise SpecError(spec.doc.where(()), f"--host {given} is given but the file declares no hosts:",
                            "drop --host, or declare hosts: and each container's host:")
        return given if not spec.topology.containers else None   # $NETCOMPOSE_HOST may be meant for other files
    if host is None:
        raise SpecError(spec.doc.where(("hosts",), key=True), f"the file spans hosts ({', '.join(hosts)}): say "
                        "which one this machine is", "pass --host NAME or set NETCOMPOSE_HOST=NAME")
    if host not in hosts:
        raise SpecError(spec.doc.where(("hosts",), key=True), f"this host is '{host}' (--host / NETCOMPOSE_HOST), "
                        "which hosts: does not declare", f"use one of: {', '.join(hosts)}")
    return host


def _check_northbound(spec: Spec, remote: str | None) -> None:
    if remote is not None:
        return
    for name, net in spec.topology.networks.items():
        if net.driver == "ovn":
            raise SpecError(spec.doc.where(("networks", name, "driver")), f"network '{name}' is driver: ovn but no "
                            "OVN Northbound DB is given", "set ovn: {northbound: tcp:HOST:6641}, or pass --ovn-nb / "
                            "NETCOMPOSE_OVN_NB")


# What `up` and `down` are doing, for a progress display: (phase, actions done, actions in
# all); phase is planning, applying, verifying or rolling back; a total of 0 is unknown.
ProgressHook = Callable[[str, int, int], None]


def _silent(phase: str, done: int, total: int) -> None:
    pass


class Report:
    __slots__ = ("plan", "applied", "seconds", "notes")

    def __init__(self, plan: Plan, applied: int = 0, seconds: float = 0.0, notes: list[str] | None = None) -> None:
        self.plan = plan
        self.applied = applied
        self.seconds = seconds
        self.notes = [] if notes is None else notes


def _ip(text: str) -> IPv4Address | IPv6Address:
    """From packed bytes: ipaddress parses strings in pure Python, 1000 at a time here."""
    if ":" in text:
        return IPv6Address(socket.inet_pton(socket.AF_INET6, text))
    return IPv4Address(socket.inet_aton(text))


def allocations_from_marks(observed: dict[str, Resource], project: str) -> tuple[dict, ...]:
    """Subnets and addresses (IPv4, then IPv6) read back from our marked bridges and veths:
    the fallback when the record of allocations is lost."""
    subnets: dict[int, dict[str, Any]] = {4: {}, 6: {}}
    addresses: dict[int, dict[tuple[str, str], Any]] = {4: {}, 6: {}}
    by_link: dict[tuple[str, str, int], Resource] = {}   # (ns, ifname, family) → our address there
    for res in observed.values():
        if res.kind == "address" and res.owner == project and not res.attrs["address"].startswith("fe80:"):
            by_link[(res.attrs["ns"], res.attrs["ifname"], 6 if ":" in res.attrs["address"] else 4)] = res
    for res in observed.values():
        mark = names.parse_alias(res.attrs.get("alias")) if res.owner == project else None
        if not mark:
            continue
        for version in (4, 6):
            if res.kind == "bridge" and (addr := by_link.get((HOST, res.attrs["ifname"], version))):
                subnets[version][mark[2]] = ip_interface(f"{addr.attrs['address']}/{addr.attrs['prefixlen']}").network
            elif res.kind == "veth" and mark[1] == "ep":
                addr = by_link.get((res.attrs["peer_ns"], res.attrs["peer_ifname"], version))
                if addr:
                    container, _, network = mark[2].partition("/")
                    addresses[version][(container, network)] = _ip(addr.attrs["address"])
    return subnets[4], addresses[4], subnets[6], addresses[6]


class Allocations:
    """The subnets and addresses handed out to the project (`allocations.json`), both
    families, written before an apply uses them.  Authoritative: an address stays with its
    container and network while both are in the file, whatever is inserted, reordered or
    drifted, and a hand-changed address or subnet is repaired back to it.  If the record is
    lost, the allocations are read back from our marked objects."""

    KEYS = ("subnets", "addresses", "subnets6", "addresses6")   # in HostFacts' order

    def __init__(self, project: str) -> None:
        self.path = os.path.join(STATE_DIR, project, "allocations.json")
        self._cached: tuple[tuple[int, int], tuple[dict, ...] | None] | None = None  # by (inode, mtime)

    def read(self) -> tuple[dict, ...] | None:
        found = statefiles.read_bytes(self.path)
        if found is None:
            return None
        stamp, text = found
        if self._cached is not None and self._cached[0] == (stamp.st_ino, stamp.st_mtime_ns):
            return self._cached[1]   # (write compares with what _facts read: parsed once)
        try:
            data = json.loads(text)
            parsed = tuple({n: ip_network(s) for n, s in data[key].items()} if key.startswith("subnets")
                           else {(c, n): _ip(ip) for c, n, ip in data[key]} for key in self.KEYS)
        except (ValueError, KeyError, TypeError):
            parsed = None
        self._cached = ((stamp.st_ino, stamp.st_mtime_ns), parsed)
        return parsed

    def write(self, resolved: Resolved) -> None:
        nets, containers = resolved.networks.values(), resolved.containers.values()
        current = ({n.name: n.subnet for n in nets if n.subnet},
                   {(c.name, ep.network): ep.address for c in containers for ep in c.endpoints if ep.address},
                   {n.name: n.subnet6 for n in nets if n.subnet6},
                   {(c.name, ep.network): ep.address6 for c in containers for ep in c.endpoints if ep.address6})
        if self.read() == current:
            return
        data = {key: {n: str(s) for n, s in values.items()} if key.startswith("subnets")
                else [[c, n, str(ip)] for (c, n), ip in values.items()] for key, values in zip(self.KEYS, current)}
        statefiles.write_json(self.path, data, sync=True)


class Host:
    """The imperative shell: drivers bound to this machine for one run."""

    def __init__(self, ovsdb: str | None = None, stop_timeout: float = STOP_TIMEOUT, ovn_nb: str | None = None) -> None:
        from .drivers.ovn_nb import NorthboundDriver
        self.nss = Namespaces()
        self.netlink = NetlinkDriver(self.nss)
        self.ovsdb = OvsdbDriver(remote_from(ovsdb))
        self.northbound = NorthboundDriver(ovn_nb)
        self.processes = ProcessDriver(stop_timeout)
        self.execs = ExecDriver()
        self.drivers: dict[str, Any] = {"netlink": self.netlink, "files": FilesDriver(self.nss), "ovsdb": self.ovsdb,
                                        "nftables": NftablesDriver(self.nss), "processes": self.processes,
                                        "proxies": ProxiesDriver(), "execs": self.execs, "tc": TcDriver(self.nss),
                                        "ovn_nb": self.northbound}

    def observe(self, scope: Scope) -> dict[str, Resource]:
        found: dict[str, Resource] = {}
        for driver in self.drivers.values():
            try:
                resources = driver.observe(scope)
            except OvsdbUnavailable:
                if scope.needs_ovs:
                    raise
                continue  # a topology without OVS networks works without OVS
            for res in resources:
                found[res.key] = res
        return found

    def observe_named(self, wanted: list[Resource], project: str) -> list[Resource]:
        """Resources a driver can only find by name (sysctls), read for the desired ones."""
        return [res for driver in self.drivers.values() if hasattr(driver, "observe_named")
                for res in driver.observe_named(wanted, project)]

    def close(self) -> None:
        for driver in self.drivers.values():
            driver.close()
        self.nss.close()


class AppliedState:
    """What the last successful apply asked for: each key's digest and zones (the keys of a
    unit, a container, filed under it with the unit's own digest).  Tells drift from file changes, and lets the next apply of an edited file
    compile and look only where the edit lands.

    Only an annotation: ownership never depends on it.  Losing it makes every pending
    action count as a file change and the next apply observe everything.

    The file is one JSON object whose first line holds what every run asks (the source
    applied, the ports published, where its tables and qdiscs are, how many keys); the
    entries after it are parsed only when a run needs them (an edit, or a plan with
    changes to tell drift in)."""

    FORMAT = 6
    # The namespaces holding recorded keys of a kind, on the first line (see Project._may_hold):
    # field → (key prefix, the namespace from the rest of the key).
    HELD: dict[str, tuple[str, Callable[[str], str]]] = {
        "tables": ("nft:", lambda rest: rest.rpartition("/")[0].rpartition("/")[0]),   # nft:NS/FAMILY/NAME
        "qdiscs": ("qdisc:", lambda rest: rest.rpartition("/")[0])}                     # qdisc:NS/IFNAME

    def __init__(self, project: str) -> None:
        self.path = os.path.join(STATE_DIR, project, "applied.json")
        # By (inode, mtime): the file's text and its first line, then the whole record, then its entries.
        self._cached: tuple[tuple[int, int], bytes, dict[str, Any]] | None = None
        self._record: tuple[bytes, dict[str, Any]] | None = None
        self._entries: tuple[dict[str, Any], dict[str, list]] | None = None

    def read(self) -> dict[str, Any]:
        """The first line: format, source, facts, held and keys; {} without a record."""
        found = statefiles.read_bytes(self.path)
        if found is None:
            return {}
        stamp, text = found
        if self._cached is not None and self._cached[0] == (stamp.st_ino, stamp.st_mtime_ns):
            return self._cached[2]
        first, newline, _ = text.partition(b"\n")
        try:   # the line ends with the comma before the entries
            head = json.loads(first[:-1] + b"}") if newline else {}
        except ValueError:
            head = {}
        head = head if isinstance(head, dict) and head.get("format") == self.FORMAT else {}
        self._cached = ((stamp.st_ino, stamp.st_mtime_ns), text, head)
        return head

    def _whole(self) -> dict[str, Any]:
        """The whole record, parsed once per text `read` found."""
        if not self.read():
            return {}
        text = self._cached[1]
        if self._record is None or self._record[0] is not text:
            try:
                record = json.loads(text)
            except ValueError:
                record = {}
            self._record = (text, record if isinstance(record, dict) else {})
        return self._record[1]

    def units(self) -> dict[str, list]:
        """Each recorded unit's [digest, {key: [digest, zones]}]."""
        return self._whole().get("units", {})

    def entries(self) -> dict[str, list]:
        """Every recorded key's [digest, zones]: the shared ones and each unit's."""
        data = self._whole()
        if self._entries is None or self._entries[0] is not data:
            flat = dict(data.get("shared", {}))
            for _, unit_entries in data.get("units", {}).values():
                flat.update(unit_entries)
            self._entries = (data, flat)
        return self._entries[1]

    def digests(self) -> dict[str, str]:
        return {key: entry[0] for key, entry in self.entries().items()}

    def write(self, desired: Desired, digests: dict[str, str], source: str) -> None:
        """Record `desired`; a unit it did not compile is unchanged, so its record stays."""
        resolved = desired.resolved
        # The host ports target-only `ports:` entries got (subnets and addresses: see Allocations).
        facts = {"ports": [[c.name, port_key(port), host_port] for c in resolved.containers.values()
                           for port, host_port in zip(resolved.topology.containers[c.name].ports, c.host_ports)]}
        recorded, recorded_units = self.entries(), self.units()

        def entry(key: str) -> list:
            res, old = desired.resources[key], recorded.get(key)
            hashed = digests.get(key) or digest(res)
            # The same digest means the same attributes, hence the same zones.
            return old if old is not None and old[0] == hashed else [hashed, sorted(res.zones)]
        in_units = {key for keys in desired.unit_keys.values() for key in keys}
        shared = {key: entry(key) for key in desired.resources if key not in in_units}
        units = {name: [unit.digest, {key: entry(key) for key in desired.unit_keys[name]}]
                 if name in desired.unit_keys else recorded_units[name] for name, unit in desired.units.items()}
        keys = [*shared, *(key for _, unit_entries in units.values() for key in unit_entries)]
        held = {field: sorted({namespace_in(key[len(prefix):]) for key in keys if key.startswith(prefix)})
                for field, (prefix, namespace_in) in self.HELD.items()}
        head = {"format": self.FORMAT, "source": source, "facts": facts, "held": held, "keys": len(keys)}
        # json.dumps is the C encoder (json.dump is not), and the data has no cycles to look for.
        text = json.dumps(head)[:-1] + ",\n" + json.dumps({"shared": shared, "units": units}, check_circular=False)[1:]
        statefiles.write_text(self.path, text)


# Held while an apply claims address space (a new subnet on the host), so concurrent
# projects never pick the same subnet: the second one plans again once the first is done.
ADDRESS_SPACE = ".address-space"


class Lock:
    """One run per project changes it: `up`/`down` hold the lock exclusively.  Reads (`plan`,
    `ps`, `check`, `config`) hold it shared: side by side with each other, never in the
    middle of an apply (they wait for it, as a second `up` does)."""

    def __init__(self, project: str, timeout: float, shared: bool = False) -> None:
        self.path = os.path.join(STATE_DIR, project, "lock")
        self.timeout, self.project, self.shared = timeout, project, shared
        self.what = ("the host's address space" if project == ADDRESS_SPACE else f"project '{project}'")
        self.fd: int | None = None

    def _open(self) -> int | None:
        flags = os.O_CLOEXEC | os.O_NOFOLLOW
        if self.shared:
            # A reader never makes the file (`down` removed the project's folder): none there
            # means no run holds it.
            try:
                return os.open(self.path, os.O_RDONLY | flags)
            except FileNotFoundError:
                return None
        statefiles.make_folder(os.path.dirname(self.path))
        return os.open(self.path, os.O_RDWR | os.O_CREAT | flags, 0o600)

    def __enter__(self) -> "Lock":
        deadline = time.monotonic() + self.timeout
        while True:
            self.fd = self._open()
            if self.fd is None:
                return self
            while True:
                try:
                    fcntl.flock(self.fd, (fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        os.close(self.fd)
                        raise LockTimeout(f"{self.what} is locked by another netcompose run "
                                          f"({self.path}); waited {self.timeout:g}s: retry later or raise "
                                          "--lock-timeout")
                    time.sleep(0.05)
            # `down` removes the project's folder, lock included, while holding it: a run that
            # waited on the removed file holds nothing, and locks the new one instead.
            try:
                if os.stat(self.path).st_ino == os.fstat(self.fd).st_ino:
                    return self
            except FileNotFoundError:
                pass
            os.close(self.fd)

    def remove_folder(self) -> None:
        """Remove the project's state folder (held: we hold its lock)."""
        folder, lock = os.path.split(self.path)
        with statefiles.folder(self.path) as dirfd:   # by descriptor: a link in its place is not followed
            if dirfd is None:
                return
            for entry in os.scandir(dirfd):
                if entry.name == lock:
                    continue
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.name, dir_fd=dirfd)
                else:
                    os.unlink(entry.name, dir_fd=dirfd)
            os.unlink(lock, dir_fd=dirfd)
        try:
            os.rmdir(folder)
        except OSError:  # a run that was waiting made its lock again already
            pass

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            os.close(self.fd)


def recreatable(res: Resource) -> bool:
    """False for a half-observed object a driver could not fully identify (see _pair_veths)."""
    return not res.meta.get("incomplete")


def state_fingerprint(state: "State") -> str:
    """Hash of what a plan was computed from: the resolved file and the observed host."""
    hasher = hashlib.sha256()
    for side in (state.target, state.observed):
        for key in sorted(side):
            hasher.update(json.dumps([key, side[key].attrs, side[key].owner], sort_keys=True, default=str).encode())
        hasher.update(b"|")
    return hasher.hexdigest()


class State:
    __slots__ = ("desired", "observed", "plan", "scope", "target", "digests")

    def __init__(self, desired: Desired, observed: dict[str, Resource], plan: Plan, scope: Scope,
                 target: dict[str, Resource], digests: dict[str, str] | None = None) -> None:
        self.desired = desired      # the file: every unit compiled, or those the focus needs
        self.observed = observed    # what was looked at: everything, or the focus
        self.plan = plan
        self.scope = scope
        self.target = target        # the part of the file the plan converges (the focus)
        self.digests = {} if digests is None else digests   # of desired resources, when already computed

    @property
    def resolved(self) -> Resolved:
        return self.desired.resolved


class Project:
    def __init__(self, spec: Spec, lock_timeout: float = 30.0, ovsdb: str | None = None,
                 stop_timeout: float = STOP_TIMEOUT, host: str | None = None, ovn_nb: str | None = None) -> None:
        from .drivers.ovn_nb import remote_from as northbound_from
        self.spec = spec
        self.ovsdb = ovsdb
        self.host = _local_host(spec, host)     # which of hosts: this machine is (None: a file without hosts:)
        ovn = spec.topology.ovn
        self.ovn_nb = northbound_from(ovn_nb, ovn.northbound if ovn else None)
        _check_northbound(spec, self.ovn_nb)
        self.stop_timeout = stop_timeout   # seconds between SIGTERM and SIGKILL when stopping processes
        self.name = spec.project
        self.lock_timeout = lock_timeout
        self.journal = Journal(self.name)
        self.applied = AppliedState(self.name)
        self.allocations = Allocations(self.name)
        self._compiled: tuple[HostFacts, Desired] | None = None
        self._busy_ports: tuple[frozenset, frozenset] | None = None   # see _with_ports

    @classmethod
    def by_name(cls, project: str, **options: Any) -> "Project":
        """A project known only by name (its file gone or unreadable): `down` removes
        everything carrying its marks."""
        from .spec.loader import Document
        from .spec.model import Topology
        return cls(Spec(Path("."), Document({}, "<no file>"), Topology(), check_project_name(project), []), **options)

    @classmethod
    def load(cls, path: str | Path, project: str | None = None, variables: dict[str, Any] | None = None,
             source: Source | None = None, **options: Any) -> "Project":
        """`source` says how to read the file: its format and, for Compose, override files,
        env files and profiles (default: detected from the content)."""
        return cls(load(path, project, variables, source=source), **options)

    def _host(self):
        return _host(self.ovsdb, self.stop_timeout, self.ovn_nb)

    def is_local(self, container: str) -> bool:
        """Whether this machine runs `container` (see Resolved.is_local)."""
        return self.spec.topology.containers[container].host in (None, self.host)

    # ---- pure-ish steps --------------------------------------------------------------
    def netns_of(self, container: str) -> str:
        """The namespace of a container: adopted (`netns:`, `pid:`) or ours, `<project>-<name>`."""
        spec = self.spec.topology.containers.get(container)
        if spec is not None and (spec.netns or spec.pid):
            return spec.netns or f"/proc/{spec.pid}/ns/net"
        return names.netns_name(self.name, container)

    def sandbox(self, container: str) -> str:
        """The namespace to enter for `container`: adopted, or ours by its mark; a namespace
        of our name that someone else made is refused, as `plan` would."""
        ns = self.netns_of(container)
        nss = Namespaces()
        try:
            if not nss.exists(ns):
                raise ApplyError(f"container '{container}' is not up (no namespace {ns}): run netcompose up first")
            if ns not in self.adopted() and (owner := read_namespace_owner(nss, ns)) != self.name:
                whose = f"project '{owner}'" if owner else "another tool"
                raise ConflictError(f"netns:{ns} belongs to {whose}, not to project '{self.name}'; "
                                    "netcompose never enters namespaces it did not create: rename or remove it")
        finally:
            nss.close()
        return ns

    def adopted(self) -> set[str]:
        return {self.netns_of(c) for c, spec in self.spec.topology.containers.items() if spec.netns or spec.pid}

    def _refuse_host_namespace(self) -> None:
        """Adopting the host's own namespace would hand the host's routes and uplink to
        netcompose: `pid:`/`netns:` must name a container's namespace."""
        host = set()
        for path in ("/proc/1/ns/net", "/proc/self/ns/net"):
            try:
                stat = os.stat(path)
            except OSError:  # pid 1 may be out of reach (a container without CAP_SYS_PTRACE)
                continue
            host.add((stat.st_dev, stat.st_ino))
        for name, spec in self.spec.topology.containers.items():
            if not (spec.netns or spec.pid):
                continue
            try:
                stat = os.stat(Namespaces.path(self.netns_of(name)))
            except OSError:
                continue  # missing: the plan says so
            if (stat.st_dev, stat.st_ino) in host:
                key = "pid" if spec.pid else "netns"
                raise SpecError(self.spec.doc.where(("containers", name, key)),
                                f"{key}: {spec.pid or spec.netns} is the host's own network namespace",
                                "adopt the namespace of a container, never the host's")

    def scope(self) -> Scope:
        self._refuse_host_namespace()
        topo = self.spec.topology
        local = [c for c, spec in topo.containers.items() if spec.host in (None, self.host)]
        namespaces = {self.netns_of(c) for c in local}
        host = kernel_names(self.name, topo)
        ovn = {name for name, n in topo.networks.items() if n.driver == "ovn"}
        needs_ovs = any(n.driver == "ovs" for n in topo.networks.values()) or bool(ovn) and any(
            ovn.intersection(topo.containers[c].networks) for c in local)
        wired = {link.host_interface for link in topo.links if link.host_interface}
        wired |= {link.macvlan.parent for link in topo.links if link.macvlan}
        wired |= {link.host_bridge for link in topo.links if link.host_bridge}
        shaped, lossy, ingress = self._conditioned
        firewalled = {c for c, spec in topo.containers.items() if spec.firewall} | lossy
        tables = self._may_hold(namespaces, {self.netns_of(c) for c in firewalled}, "tables")
        qdiscs = self._may_hold(namespaces | {HOST}, {self.netns_of(c) for c in shaped} | ({HOST} if ingress else set()),
                                "qdiscs")
        return Scope(self.name, frozenset(namespaces), frozenset(host.values()) | wired,
                     # With a Northbound DB given, rows of ours from an older file (or from a project
                     # known only by name) are looked for there too.
                     needs_ovs=needs_ovs, needs_ovn=bool(ovn) or self.ovn_nb is not None, ovn_host=self.host,
                     firewall_namespaces=tables, conditioned_namespaces=qdiscs,
                     renamed={pair: name for pair, name in host.items() if name != names.host_ifname(self.name, *pair)})

    def _may_hold(self, namespaces: set[str], wanted: set[str], held: str) -> frozenset[str]:
        """Where a table (or qdisc) of ours may be: sandboxes that have one in the file or in
        the last apply (its record's `held` field: see AppliedState.HELD); when the last
        apply is unknown or did not finish, also every sandbox that exists already (one
        this run creates holds nothing old: a cold `up` of 1000 sandboxes would otherwise
        open 1000 sockets to verify)."""
        record = self.applied.read()
        had = record.get("held", {}).get(held) if record.get("keys") else None
        if had is None or self.journal.claims():
            return frozenset(ns for ns in namespaces if ns in wanted or ns == HOST
                             or os.path.exists(Namespaces.path(ns)))
        return frozenset(namespaces & (wanted | set(had)))

    @cached_property
    def _conditioned(self) -> tuple[set[str], set[str], bool]:
        """See conditions.conditioned_containers: scope and compile both ask."""
        return conditions.conditioned_containers(self.spec.topology)

    @cached_property
    def _source(self) -> str:
        """The file as loaded (includes, variables and templates applied): unchanged means
        only drift can differ, which the full sweep finds."""
        return hashlib.blake2b(repr((self.name, self.spec.digest)).encode(), digest_size=16).hexdigest()

    def _facts(self, host: Host, observed: dict[str, Resource] | None = None,
               check_space: bool = True) -> HostFacts | None:
        """The address space in use around us (unless `check_space` is off: `down` removes
        whatever the host has come to overlap), and our allocations: from their record,
        else (given what was observed) from our marked objects."""
        allocations = self.allocations.read()
        if allocations is None:
            if observed is None:
                return None
            allocations = allocations_from_marks(observed, self.name)
        if any(net.driver == "ovn" for net in self.spec.topology.networks.values()):
            # Addresses on OVN networks are the same on every host: the Northbound DB's, where
            # any host wrote them, win over this host's record (a host new to the project
            # would otherwise allocate afresh).
            subnets, addresses, *rest = allocations
            allocations = (subnets, {**addresses, **host.northbound.port_addresses(self.name)}, *rest)
        if not check_space:
            return HostFacts((), *allocations, host=self.host)
        space = host.netlink.host_space if observed is not None else host.netlink.read_host_space(self.name)
        return HostFacts(tuple(space), *allocations, host=self.host)

    def _compile(self, facts: HostFacts) -> Desired:
        """Resolve, once per set of facts (a no-op `up` tries the focused path first); units
        compile as they are asked for."""
        facts = self._with_ports(facts)
        if any(self._conditioned[:2]):
            facts = facts._replace(netem=self._netem())
        if self._compiled is None or self._compiled[0] != facts:
            self._compiled = (facts, Desired(resolve(self.spec.topology, self.spec.doc, self.name, facts)))
        return self._compiled[1]

    def _with_ports(self, facts: HostFacts) -> HostFacts:
        """For target-only published ports: the host ports they had in the last apply, and
        the ports in use on the host (read once per run, and only when the file has some)."""
        if not any(p.published is None for c in self.spec.topology.containers.values() for p in c.ports):
            return facts
        if self._busy_ports is None:
            from .ports import listening, published_elsewhere
            self._busy_ports = (published_elsewhere(STATE_DIR, self.name), frozenset(listening()))
        recorded = self.applied.read().get("facts", {}).get("ports", [])
        return facts._replace(ports={(c, key): port for c, key, port in recorded},
                              other_ports=self._busy_ports[0], listening_ports=self._busy_ports[1])

    @staticmethod
    def _netem() -> bool:
        from .drivers.tc import netem_available
        return netem_available()

    def _observe(self, host: Host, scope: Scope, named: list[Resource] = ()) -> dict[str, Resource]:
        observed = host.observe(scope)
        observed.update((res.key, res) for res in host.observe_named(list(named), self.name))
        observed = self._claim(observed)
        if scope.focus is None:
            return observed
        return {k: v for k, v in observed.items() if v.zones <= scope.focus}

    def _claim(self, observed: dict[str, Resource]) -> dict[str, Resource]:
        # Unmarked objects that a crashed run was creating are ours (see Journal).
        claims = self.journal.claims()
        if not claims:   # (the last run finished)
            return observed
        return {k: (v.with_owner(self.name) if v.owner is None and k in claims else v) for k, v in observed.items()}

    def _state(self, host: Host, empty: bool = False, refresh: bool = True, all_hosts: bool = False) -> State:
        if not (refresh or empty):
            focused = self._focused_state(host)
            if focused is not None:
                return focused
        scope = self.scope()
        observed = self._claim(host.observe(scope))
        # `down` of one host's slice keeps the logical state while other hosts have ports bound.
        keep_logical = empty and scope.needs_ovn and not all_hosts and \
            bool(host.northbound.bound_elsewhere(self.name, self.host))
        desired = self._compile(self._facts(host, observed, check_space=not empty))
        if not empty:
            runnable.check(desired.resolved, self.spec.doc)
        everything = desired.complete()
        target = {k: v for k, v in everything.items() if v.external} if empty else everything
        if keep_logical:   # as they are (a project known only by name has no desired rows)
            target.update((k, v) for k, v in observed.items() if k.startswith("nb:") and v.owner == self.name)
        observed.update((res.key, res) for res in host.observe_named(list(target.values()), self.name))
        plan = make_plan(target, observed, self.name)
        if plan:   # (an empty plan has nothing to tell apart)
            classify(plan, self.applied.digests())
        return State(desired, observed, plan, scope, target)

    def _focused_state(self, host: Host) -> State | None:
        """Compile and observe only where the file's edit since the last apply lands; None
        when the file is unchanged (then a full, level-triggered sweep finds drift) or the
        last apply is unknown or did not finish."""
        applied = self.applied.read()
        if not applied.get("keys") or self.journal.claims() or applied.get("source") == self._source:
            return None
        recorded, recorded_units = self.applied.entries(), self.applied.units()
        if not recorded:
            return None   # (its entries unreadable)
        facts = self._facts(host)
        if facts is None:
            return None
        desired = self._compile(facts)
        runnable.check(desired.resolved, self.spec.doc)
        for name, unit in desired.units.items():
            if recorded_units.get(name, [None])[0] != unit.digest:
                desired.add(name)
        # Keys of the units left uncompiled: unchanged since the last apply.
        unit_of = {key: name for name, (_, keys) in recorded_units.items()
                   if name in desired.units and name not in desired.unit_keys for key in keys}
        if not unit_of.keys().isdisjoint(desired.resources):
            return None  # a key moved between units: the full path sorts it out (or reports a clash)
        digests = {k: digest(v) for k, v in desired.resources.items()}
        changed = [k for k, v in desired.resources.items() if k not in recorded or recorded[k][0] != digests[k]]
        removed = [k for k in recorded if k not in desired.resources and k not in unit_of]
        if not changed and not removed:
            return None
        focus: set[str] = set()
        for key in removed:
            focus.update(recorded[key][1])
        pending, seen = list(changed), set()
        while pending:  # a change also needs what it depends on to be there
            key = pending.pop()
            if key in unit_of:
                desired.add(unit_of[key])
            if key in seen or key not in desired.resources:
                continue
            seen.add(key)
            focus |= desired.resources[key].zones
            pending.extend(desired.resources[key].deps)
        scope = self.scope()._replace(focus=frozenset(focus))
        for key, name in unit_of.items():  # unchanged units inside the focus converge with it
            if name not in desired.unit_keys and scope.focus.issuperset(recorded[key][1]):
                desired.add(name)
        target = {k: v for k, v in desired.resources.items() if scope.focus.issuperset(v.zones)}
        observed = self._observe(host, scope, list(target.values()))
        plan = make_plan(target, observed, self.name)
        classify(plan, self.applied.digests())
        return State(desired, observed, plan, scope, target, digests)

    def resolved(self) -> Resolved:
        """The file resolved as `up` would: subnets and addresses from their record and the
        host's address space (its own links, addresses and routes), without reading the
        sandboxes; only when the record is lost are they read back from our marks."""
        with self._reading(), self._host() as host:
            facts = self._facts(host)
            if facts is None:
                return self._links_and_resolution(host)[1]
            return resolve(self.spec.topology, self.spec.doc, self.name, self._with_ports(facts))

    def _reading(self) -> Lock:
        return Lock(self.name, self.lock_timeout, shared=True)

    def plan(self, down: bool = False, all_hosts: bool = False) -> State:
        with self._reading(), self._host() as host:
            return self._state(host, empty=down, all_hosts=all_hosts)

    # ---- changes ---------------------------------------------------------------------
    def up(self, rollback: bool = True, fault: FaultHook | None = None, plan_fingerprint: str | None = None,
           refresh: bool = False, supervise: bool = False, progress: ProgressHook = _silent) -> Report:
        """Converge; with `plan_fingerprint` (from `plan -o`), only if nothing changed since.

        After an edit of the file, only what the edit touches is observed and converged
        (O(change)); `refresh` observes everything of the project, as an unchanged file does.
        `supervise` (watch): a process that exited is started again only as its restart
        policy and back-off say; otherwise every declared process that is not running starts.
        `progress` hears each phase (see ProgressHook).
        """
        return self._converge(empty=False, rollback=rollback, fault=fault, fingerprint=plan_fingerprint,
                              refresh=refresh or plan_fingerprint is not None, supervise=supervise, progress=progress)

    def _forget(self, lock) -> None:
        """Nothing of the project stays: its records, journal and lock, its entry in the list
        of projects, and folders a killed run left empty under /etc/netns."""
        from .drivers.files import remove_empty_folders
        from .workload import forget
        forget(self.name)
        remove_empty_folders(self.name)
        lock.remove_folder()

    def down(self, fault: FaultHook | None = None, all_hosts: bool = False, progress: ProgressHook = _silent) -> Report:
        """Remove this host's slice; the OVN logical state too when no other host has a port
        of the project bound, or with `all_hosts`."""
        return self._converge(empty=True, rollback=True, fault=fault, all_hosts=all_hosts, progress=progress)

    def _converge(self, empty: bool, rollback: bool, fault: FaultHook | None, fingerprint: str | None = None,
                  refresh: bool = True, supervise: bool = False, all_hosts: bool = False,
                  progress: ProgressHook = _silent) -> Report:
        started = time.monotonic()
        progress("planning", 0, 0)
        with Lock(self.name, self.lock_timeout) as lock, self._host() as host, \
                ExitStack() as held:
            host.processes.supervising = supervise
            state = self._state(host, empty=empty, refresh=refresh, all_hosts=all_hosts)
            if any(a.kind == "address" and a.op == "create" and a.resource.attrs["ns"] == HOST
                   for a in state.plan.actions):
                # A new subnet: with the host's address space to ourselves, plan again if another
                # run claimed some of it meanwhile (it holds this lock until its subnets are on the host).
                held.enter_context(Lock(ADDRESS_SPACE, self.lock_timeout))
                planned_with = self._compiled[0].space if self._compiled else None
                if tuple(host.netlink.read_host_space(self.name)) != planned_with:
                    self._compiled = None
                    state = self._state(host, empty=empty, refresh=refresh, all_hosts=all_hosts)
            if fingerprint is not None and state_fingerprint(state) != fingerprint:
                raise StalePlan("stale plan: the host or the topology changed since the plan was made; "
                                "run plan again")
            report = Report(state.plan)
            # Settings of devices this run creates (accept_ra of a new bridge) changed nothing anyone had.
            report.notes = [f"host sysctl {a.resource.attrs['name']} set to {a.resource.attrs['value']} "
                            f"(was {a.observed.attrs['value'] if a.observed else 'unset'})"
                            for a in state.plan.changes if a.kind == "sysctl" and a.resource.attrs["ns"] == HOST
                            and a.op != "delete" and not (a.observed is None and sysctl_device(a.resource))]
            if not empty:
                self.allocations.write(state.resolved)
            if not state.plan:
                if not empty and not self.applied.read():  # e.g. after an upgrade: next edits stay focused
                    self.applied.write(state.desired, state.digests, self._source)
                self.journal.clear()
                if empty:
                    self._forget(lock)
                report.seconds = time.monotonic() - started
                return report
            for name, actions in _by_driver(state.plan).items():  # e.g. a missing tool: before any change
                getattr(host.drivers[name], "preflight", lambda _: None)(actions)
            self.journal.write(state.plan)
            with deferred_interrupts() as interrupted:
                self._apply(host, state, report, rollback, fault, interrupted, progress)
                # Applied and verified: Ctrl-C from here on is too late to undo anything.
                if empty:
                    self._forget(lock)
                else:
                    self.applied.write(state.desired, state.digests, self._source)
                    from .workload import remember_file
                    remember_file(self.name, str(self.spec.path))
                    self.journal.clear()
            report.seconds = time.monotonic() - started
            return report

    def _apply(self, host: Host, state: State, report: Report, rollback: bool, fault: FaultHook | None,
               interrupted: Callable[[], bool], hook: ProgressHook) -> None:
        """Apply and verify the plan, or roll back and raise.  Ctrl-C at any moment of it
        (also after the last action, before the result is recorded) rolls back."""
        total = len(state.plan.actions)

        def undo() -> str | None:
            hook("rolling back", 0, 0)
            return self._rollback(host, state)
        try:
            try:
                progress = execute(state.plan, host.drivers, fault, interrupted,
                                   lambda done: hook("applying", done, total))
            except KeyboardInterrupt:  # a test's fault hook presses Ctrl-C in place of an action
                progress = Progress(interrupted=True)
            report.applied = len(progress.done)
            report.notes += host.processes.stopped + host.execs.notes
            if progress.failed is not None:
                raise_failure(progress, undo() if rollback else False)
            if not progress.interrupted:
                hook("verifying", total, total)
                if any(a.kind == "netns" and a.op == "delete" for a in state.plan.actions):
                    report.notes += self._settle(host)
                remaining = make_plan(state.target, self._observe(host, state.scope, list(state.target.values())),
                                      self.name)
                # A started process may exit at once, as a container may: `ps` and `up --wait` tell.
                remaining.actions = [a for a in remaining.actions if a.kind != "process" or a.op == "delete"]
                if remaining:
                    detail = "; ".join(describe(remaining.changes[:5]))
                    problem = undo() if rollback else False
                    raise ApplyError(f"verify failed: the host still differs after apply ({detail}); "
                                     + rollback_outcome(problem))
            if progress.interrupted or interrupted():
                raise Interrupted(f"interrupted; {rollback_outcome(undo())}")
        except NetcomposeError:
            raise
        except Exception as exc:  # whatever broke, the host goes back (or says what still differs)
            problem = undo() if rollback else False
            raise ApplyError(f"{type(exc).__name__}: {exc}; {rollback_outcome(problem)}") from exc

    def _settle(self, host: Host) -> list[str]:
        """Deleted namespaces free their devices asynchronously; wait for our host ends to go.

        A namespace that something still holds (an open descriptor, a bind mount elsewhere, a
        process netcompose could not stop) outlives its mount and would keep them forever:
        the kernel still finds it by id, where a dying one it does not.  Such leftovers are
        deleted explicitly at once.  Returns a note on those."""
        deadline = time.monotonic() + 10
        notes: list[str] = []
        judged: set[int] = set()   # namespace ids already found alive or dying
        sock = host.nss.sock(HOST)
        while time.monotonic() < deadline:
            leftovers = [l for l in sock.links()
                         if (m := proven_mark(self.name, HOST, l)) and l.kind == "veth"
                         and not os.path.exists(host.nss.path(self.netns_of(m[2].partition("/")[0])))]
            if not leftovers:
                return notes
            unjudged = sorted({l.link_netnsid for l in leftovers} - judged - {None, -1})
            held = {nsid for nsid, code in zip(unjudged, sock.execute([rtnl.get_nsid(i) for i in unjudged]) if
                    unjudged else []) if code == 0}
            judged.update(unjudged)
            stuck = [l for l in leftovers if l.link_netnsid in held]
            if stuck:
                sock.execute([rtnl.del_link(l.name) for l in stuck])
                notes.append(f"{len(stuck)} interface(s) of removed sandboxes that something still holds deleted "
                             f"explicitly: {', '.join(l.name for l in stuck[:5])}")
            time.sleep(0.02)
        return notes

    def _rollback(self, host: Host, state: State) -> str | None:
        """Apply a plan back to what was observed before; None when the host is back, else why not."""
        target = {k: v for k, v in state.observed.items() if (v.owner == self.name or v.external) and recreatable(v)}
        try:
            undo = make_plan(target, self._observe(host, state.scope, list(target.values())), self.name)
            progress = execute(undo, host.drivers)
            if progress.failed is not None:
                return failure_message(progress)
            self._settle(host)
            left = make_plan(target, self._observe(host, state.scope, list(target.values())), self.name)
            return "; ".join(describe(left.changes[:5])) or None
        except Exception as exc:  # rollback is best effort; the next `up` converges anyway
            return f"{type(exc).__name__}: {exc}"

    # ---- reading -----------------------------------------------------------------------
    def check(self, everything: bool | None = None, seed: int | None = None, **across) -> list:
        """Probe the reachability the topology promises from this host's containers; see
        netcompose.check (`seed` draws the sample of pairs; `across`: run's hooks for a
        check across hosts, see netcompose.across)."""
        import random
        from . import check
        with self._reading():  # probes too: never in the middle of an apply
            with self._host() as host:
                resolved = self._links_and_resolution(host)[1]
            return check.run(resolved, everything, rng=random.Random(seed) if seed is not None else None, **across)

    def explain(self, source: str, target: str, proto: str = "icmp", port: int | None = None,
                live: bool = False) -> list[dict]:
        """Why `source` can or cannot reach `target` (netcompose.explain), from the model; with
        `live`, each answer also holds one probe on the running lab traced by nftables
        (netcompose.livetrace): the chain and rule that decided, mapped to the file."""
        from .explain import explain
        where = self.spec.doc.where
        if not live:
            return explain(self.resolved(), where, source, target, proto, port)
        from . import livetrace
        from .origins import Origins
        with Lock(self.name, self.lock_timeout), self._host() as host:
            resolved = self._links_and_resolution(host)[1]
            answers = explain(resolved, where, source, target, proto, port)
            for container in (source, target):
                self.sandbox(container)   # up, and ours
            origins = Origins(resolved, where)
            for answer in answers:
                if answer["source_address"] and answer["target_address"]:
                    answer["live"] = livetrace.trace(resolved, origins, host.drivers["nftables"], source, target,
                                                     proto, port, answer["source_address"], answer["target_address"])
            return answers

    def _links_and_resolution(self, host: Host) -> tuple[dict[str, Resource], Resolved]:
        """What netlink shows of the project, and the file resolved against it (subnets and
        addresses stay where they were): what `ps` and `check` need, without a plan."""
        observed = self._claim({res.key: res for res in host.netlink.observe(self.scope())})
        return observed, resolve(self.spec.topology, self.spec.doc, self.name,
                                 self._with_ports(self._facts(host, observed)))

    # ---- processes -----------------------------------------------------------------------
    def sandboxes(self, containers: list[str] | None = None) -> list:
        """The containers (all, or those named) as workload.Sandbox: namespace and process."""
        from dataclasses import asdict
        from .spec.resolve import declared_processes
        from .workload import Sandbox
        topo = self.spec.topology
        unknown = [c for c in containers or [] if c not in topo.containers]
        if unknown:
            raise SpecError(None, f"no container '{unknown[0]}' in {self.spec.path}",
                            f"use one of: {', '.join(topo.containers) or 'none'}")
        elsewhere = [c for c in containers or [] if not self.is_local(c)]
        if elsewhere:
            raise SpecError(self.spec.doc.where(("containers", elsewhere[0], "host")), f"container '{elsewhere[0]}' "
                            f"runs on host '{topo.containers[elsewhere[0]].host}', not on this one ('{self.host}')",
                            "run the command there (--host / NETCOMPOSE_HOST name this machine)")
        declared = declared_processes(topo, self.spec.doc, self.name)
        return [Sandbox(name, self.netns_of(name), asdict(declared[name]) if name in declared else None)
                for name in topo.containers if (not containers or name in containers) and self.is_local(name)]

    def processes(self) -> dict[str, dict[str, Any]]:
        """Per container with a command: pid, state, uptime and restarts."""
        from . import workload
        return workload.status(self.name, self.sandboxes())

    def top(self, containers: list[str] | None = None) -> list[dict[str, Any]]:
        """Every process in the sandboxes, declared or not."""
        from . import workload
        return workload.top(self.name, self.sandboxes(containers))

    def wait(self, timeout: float) -> dict[str, str]:
        """Wait until every declared process runs and passes its ready probe; {container:
        why not} for those that did not within `timeout` seconds."""
        from . import workload
        resolved = self.resolved()
        addresses = {c.name: [str(ip) for ep in c.endpoints for ip, _ in ep.addresses()]
                     for c in resolved.containers.values()}
        return workload.wait_ready(self.name, self.sandboxes(), addresses, timeout)

    def stop(self, containers: list[str] | None = None) -> list[str]:
        """Stop declared processes (SIGTERM, SIGKILL after the stop timeout); `watch` and
        `start` leave them stopped until `start` or `up`."""
        from .drivers import processes
        from . import workload
        with Lock(self.name, self.lock_timeout):
            sandboxes = self.sandboxes(containers)
            declared, _ = workload.running(self.name, sandboxes)
            victims = [processes.Victim(p.pid, p.start, p.ns, p.argv, mark=p.mark() or "") for p in declared.values()]
            lines = processes.stop(victims, self.stop_timeout)
            for s in sandboxes:
                record = processes.read_record(self.name, s.container)
                if s.process is not None and record is not None:
                    processes.write_record(self.name, s.container, {**record, "state": "stopped"})
            return lines

    def start(self, containers: list[str] | None = None) -> Report:
        """Start declared processes that are not running; their sandboxes must be up."""
        with Lock(self.name, self.lock_timeout), self._host() as host:
            state = self._state(host)
            wanted = {self.netns_of(s.container) for s in self.sandboxes(containers) if s.process is not None}
            missing = [a.key for a in state.plan.changes if a.kind == "netns" and a.op == "create"
                       and a.resource.attrs["name"] in wanted]
            if missing:
                raise ApplyError(f"{missing[0]} is missing: run `netcompose up` first")
            actions = [a for a in state.plan.actions if a.kind == "process" and a.op == "create"
                       and a.observed is None and a.resource.attrs["ns"] in wanted]
            for action in actions:
                action.level = 0
            report = Report(Plan(actions))
            progress = execute(report.plan, host.drivers)
            report.applied = len(progress.done)
            if progress.failed is not None:
                raise ApplyError(failure_message(progress))
            return report

    @staticmethod
    def _single_end_row(link, resolved: Resolved, observed: dict[str, Resource]) -> dict[str, Any]:
        """A VXLAN or macvlan device, or a host link (whose host end comes first in its
        veth: it may join a bridge)."""
        (container, ifname), host_ifname = link.a, link.b[1]
        netns = resolved.containers[container].netns
        if link.vxlan is not None or link.macvlan is not None:
            device = observed.get(link_key(netns, ifname))
            intact = device is not None and device.kind == ("vxlan" if link.vxlan else "macvlan")
            up, mac = intact and device.attrs.get("up"), device.attrs.get("mac") if intact else None
            far = (f"vxlan {link.vxlan['vni']} to {link.vxlan['remote']}" if link.vxlan
                   else f"macvlan on {link.macvlan['parent']}")
        else:
            device = observed.get(link_key(HOST, host_ifname))
            intact = (device is not None and device.kind == "veth" and device.attrs.get("peer_ns") == netns
                      and device.attrs.get("peer_ifname") == ifname)
            up = intact and device.attrs.get("up") and device.attrs.get("peer_up")
            mac, far = device.attrs.get("peer_mac") if intact else None, f"host:{host_ifname}"
        return {"container": container, "netns": netns, "network": None, "link": far, "ifname": ifname,
                "ipv4": None, "mac": mac, "host_ifname": host_ifname,
                "state": "up" if up else _absent_state(observed, netns),
                "conditions": conditions.describe(link.conditions)}

    def ps(self) -> list[dict[str, Any]]:
        """A row per endpoint and per end of a direct wire (`links:`), each looked up by key in
        one netlink sweep (no plan, firewall or file reads): linear in the containers."""
        with self._reading(), self._host() as host:
            observed, resolved = self._links_and_resolution(host)
            # OVN ports as the Northbound DB reports them: bound (up) on whichever host.
            logical = host.northbound.port_states(self.name) if any(
                n.driver == "ovn" for n in self.spec.topology.networks.values()) else {}
        wires: dict[str, list[dict[str, Any]]] = {}
        for link in resolved.links:
            if link.b[0] is None:  # a host or VXLAN link: one row, for its end in the sandbox
                wires.setdefault(link.a[0], []).append(self._single_end_row(link, resolved, observed))
                continue
            ends = (link.a, link.b)
            netns = [resolved.containers[container].netns for container, _ in ends]
            wire = observed.get(link_key(netns[0], link.a[1]))
            intact = (wire is not None and wire.kind == "veth" and wire.attrs.get("peer_ns") == netns[1]
                      and wire.attrs.get("peer_ifname") == link.b[1])
            for i, ((container, ifname), (peer, peer_ifname)) in enumerate(zip(ends, reversed(ends))):
                side = "" if i == 0 else "peer_"
                addresses = [pair[i] for pair in (link.addresses, link.addresses6) if pair]
                up = intact and wire.attrs.get(f"{side}up") and all(
                    f"addr:{netns[i]}/{ifname}/{address}" in observed for address in addresses)
                wires.setdefault(container, []).append(
                    {"container": container, "netns": netns[i], "network": None, "link": f"{peer}:{peer_ifname}",
                     "ifname": ifname, "ipv4": next((a for a in addresses if ":" not in a), None),
                     "ipv6": next((a for a in addresses if ":" in a), None),
                     "mac": wire.attrs.get(f"{side}mac") if intact else None,
                     "host_ifname": None, "state": "up" if up else _absent_state(observed, netns[i]),
                     "conditions": conditions.describe(link.conditions)})
        rows = []
        for c in resolved.containers.values():
            for ep in c.endpoints:
                if ep.type == "ovs-internal":  # the OVS port itself, moved into the sandbox
                    device = observed.get(link_key(c.netns, ep.ifname))
                    present = device is not None and device.kind == "claimed_link"
                    mac, up = (device.attrs.get("mac"), device.attrs.get("up")) if present else (None, False)
                else:
                    device = observed.get(link_key(HOST, ep.host_ifname))
                    present = (device is not None and device.kind == "veth" and device.attrs.get("peer_ns") == c.netns
                               and device.attrs.get("peer_ifname") == ep.ifname)
                    mac = device.attrs.get("peer_mac") if present else None
                    up = present and device.attrs.get("up") and device.attrs.get("peer_up")
                up = up and all(f"addr:{c.netns}/{ep.ifname}/{ip}/{plen}" in observed for ip, plen in ep.addresses())
                rows.append({"container": c.name, "netns": c.netns, "network": ep.network, "link": None,
                             "ifname": ep.ifname, "ipv4": f"{ep.address}/{ep.prefixlen}" if ep.address else None,
                             "ipv6": f"{ep.address6}/{ep.prefixlen6}" if ep.address6 else None, "mac": mac,
                             "host_ifname": ep.host_ifname,
                             "state": "up" if up else _absent_state(observed, c.netns),
                             "conditions": conditions.describe_both(ep.egress, ep.ingress)})
                if resolved.networks[ep.network].driver == "ovn":
                    from .compile.ovn import endpoint_mac, port_name
                    found = logical.get(port_name(self.name, c.name, ep.network))
                    rows[-1].update(ovn="missing" if found is None else "up" if found else "down",
                                    mac=rows[-1]["mac"] or endpoint_mac(self.name, c, ep))
                if not resolved.is_local(c.name):
                    rows[-1]["state"] = "remote"   # its sandbox is on its host; the OVN port state says more
            rows.extend(wires.get(c.name, ()))
            if not c.endpoints and c.name not in wires:
                rows.append({"container": c.name, "netns": c.netns, "network": None, "link": None, "ifname": None,
                             "ipv4": None, "ipv6": None, "mac": None, "host_ifname": None, "conditions": "",
                             "state": "up" if f"netns:{c.netns}" in observed else "missing"})
        published = {c.name: [shown_port(port, host_port) for port, host_port in
                              zip(resolved.topology.containers[c.name].ports, c.host_ports)]
                     for c in resolved.containers.values()}
        if resolved.topology.ovn is not None and resolved.topology.ovn.uplink is not None:
            from .compile.ovn import published_ports
            uplink = resolved.topology.ovn.uplink.address.ip
            through_ovn: dict[str, list[str]] = {}   # every port of such a container: on the gateway router
            for proto, ports in published_ports(resolved).items():
                for host_port, (container, _, _, target) in ports.items():
                    through_ovn.setdefault(container, []).append(f"{uplink}:{host_port}->{target}/{proto}")
            published.update(through_ovn)
        for row in rows:  # like `docker ps`, ephemeral host ports included
            row["ports"] = published[row["container"]]
            row["host"] = resolved.containers[row["container"]].host
            row.setdefault("ovn", None)
        return self._with_processes(rows)

    def _with_processes(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Each row gains its container's process: pid, state, uptime (s), restarts."""
        status = self.processes()
        empty = {"pid": None, "process": None, "uptime": None, "restarts": None}
        for row in rows:
            found = status.get(row["container"])
            row.update({"pid": found["pid"], "process": found["state"], "uptime": found["uptime"],
                        "restarts": found["restarts"]} if found else empty)
        return rows


def _absent_state(observed: dict[str, Resource], netns: str) -> str:
    """An interface that is not up: `down` in a sandbox that exists, else `missing`."""
    return "down" if f"netns:{netns}" in observed else "missing"


def _by_driver(plan: Plan) -> dict[str, list]:
    out: dict[str, list] = {}
    for action in plan.changes:
        out.setdefault(KINDS[action.kind].driver, []).append(action)
    return out


@contextmanager
def _host(ovsdb: str | None, stop_timeout: float = STOP_TIMEOUT, ovn_nb: str | None = None) -> Iterator[Host]:
    with gc_paused():
        host = Host(ovsdb, stop_timeout, ovn_nb)
        try:
            yield host
        finally:
            host.close()
