"""Open vSwitch through OVSDB, natively with the python-ovs IDL (never ovs-vsctl).

Observes Bridge, Port and Interface rows from one IDL snapshot; applies every action of a
batch in one transaction (verify() on the rows read, retried on TRY_AGAIN), bumps
next_cfg and waits for ovs-vswitchd to reach it in cur_cfg, then checks each Interface
for ofport -1 or an error.  For an OVN endpoint (`ovn_port_up`), it waits until
ovn-controller has bound the logical port here: external_ids:ovn-installed on its Interface.
"""
from __future__ import annotations

import os
import time

from .. import resources as r
from ..errors import NetcomposeError
from ..plan import Action
from ..resources import Resource
from . import Outcome, Scope

DEFAULT_REMOTE = "unix:/var/run/openvswitch/db.sock"
PROJECT_ID = r.mark_key("project")
TABLES = ("Open_vSwitch", "Bridge", "Port", "Interface")
CONNECT_TIMEOUT, VSWITCHD_TIMEOUT, DATAPATH_TIMEOUT, OVN_BIND_TIMEOUT = 5.0, 15.0, 3.0, 20.0

ovs = None  # python-ovs, imported on the first connection: topologies without OVS never load it


def _import_ovs() -> None:
    global ovs
    if ovs is None:
        import ovs.db.idl
        import ovs.jsonrpc
        import ovs.poller
        import ovs.stream
        import ovs.vlog
        ovs.vlog.Vlog.init(None)
        ovs.vlog.Vlog.set_levels_from_string("any:console:off")  # python-ovs chats on stderr otherwise


class OvsdbUnavailable(NetcomposeError):
    pass


def remote_from(option: str | None) -> str:
    return option or os.environ.get("NETCOMPOSE_OVSDB") or DEFAULT_REMOTE


def _unavailable(remote: str, why: str) -> OvsdbUnavailable:
    return OvsdbUnavailable(f"cannot reach OVSDB at {remote} ({why}); start Open vSwitch "
                            "(`/usr/share/openvswitch/scripts/ovs-ctl start`) or pass --ovsdb / NETCOMPOSE_OVSDB")


def open_idl(remote: str, database: str, tables, unavailable) -> "ovs.db.idl.Idl":
    """An IDL of `tables` of `database` at `remote`, with its first snapshot read;
    `unavailable(why)` makes the error raised when that fails."""
    if remote.startswith("unix:") and not os.path.exists(remote.removeprefix("unix:")):
        raise unavailable("no such socket")
    _import_ovs()
    error, stream = ovs.stream.Stream.open_block(ovs.stream.Stream.open(remote), CONNECT_TIMEOUT * 1000)
    if error:
        raise unavailable(os.strerror(error))
    rpc = ovs.jsonrpc.Connection(stream)
    error, reply = rpc.transact_block(ovs.jsonrpc.Message.create_request("get_schema", [database]))
    rpc.close()
    if error or reply.error:
        raise unavailable(os.strerror(error) if error else str(reply.error))
    helper = ovs.db.idl.SchemaHelper(schema_json=reply.result)
    for table in tables:
        helper.register_table(table)
    idl = ovs.db.idl.Idl(remote, helper)
    deadline = time.monotonic() + CONNECT_TIMEOUT
    while not idl.has_ever_connected() or idl.change_seqno == 0:
        if time.monotonic() > deadline:
            idl.close()
            raise unavailable("no answer")
        poll(idl)
    return idl


def poll(idl, timeout_ms: int = 100) -> None:
    """Let the IDL read what the server sent, waiting up to `timeout_ms` for something."""
    idl.run()
    poller = ovs.poller.Poller()
    idl.wait(poller)
    poller.timer_wait(timeout_ms)
    poller.block()
    idl.run()


def transact(idl, actions: list[Action], stage, what: str) -> tuple[Outcome | None, object]:
    """`stage(txn)` the actions into one transaction and commit it, staged again from fresh
    rows on TRY_AGAIN (a verify()ed column changed under us).  (None, the committed
    transaction), or (an Outcome failing every action, None)."""
    for _attempt in range(5):
        poll(idl, 0)
        txn = ovs.db.idl.Transaction(idl)
        try:
            stage(txn)
        except LookupError as exc:
            txn.abort()
            return Outcome({a.key: str(exc) for a in actions}), None
        status = txn.commit_block()
        if status == ovs.db.idl.Transaction.TRY_AGAIN:
            continue
        if status not in (ovs.db.idl.Transaction.SUCCESS, ovs.db.idl.Transaction.UNCHANGED):
            error = txn.get_error() or status
            return Outcome({a.key: f"{what} transaction failed: {error}" for a in actions}), None
        return None, txn
    return Outcome({a.key: f"{what} kept changing under us (TRY_AGAIN 5 times)" for a in actions}), None


class OvsdbDriver:
    name = "ovsdb"

    def __init__(self, remote: str) -> None:
        self.remote = remote
        self.idl: ovs.db.idl.Idl | None = None
        self.transactions = 0   # for tests: a no-op `up` must make none

    # ---- connection ------------------------------------------------------------------
    def connect(self) -> ovs.db.idl.Idl:
        if self.idl is None:
            self.idl = open_idl(self.remote, "Open_vSwitch", TABLES, lambda why: _unavailable(self.remote, why))
        return self.idl

    def close(self) -> None:
        if self.idl is not None:
            self.idl.close()
            self.idl = None

    # ---- observe -----------------------------------------------------------------------
    def observe(self, scope: Scope) -> list[Resource]:
        if not scope.sees("ovs"):
            return []
        idl = self.connect()
        poll(idl, 0)
        project = scope.project
        out: list[Resource] = []
        for br in idl.tables["Bridge"].rows.values():
            owner = br.external_ids.get(PROJECT_ID)
            ports = [p for p in br.ports if p.name != br.name]
            foreign = [p for p in ports if p.external_ids.get(PROJECT_ID) != project]
            # A bridge we made that others also use stays until their ports are gone.
            out.append(r.ovs_bridge(br.name, br.datapath_type or "system", br.fail_mode[0] if br.fail_mode else
                                    "standalone", owner, owner=owner, external=owner == project and bool(foreign)))
            for port in ports:
                port_owner = port.external_ids.get(PROJECT_ID)
                if port_owner != project:
                    continue
                iface = port.interfaces[0] if port.interfaces else None
                kind = iface.type if iface else ""
                # ovs-vswitchd sets ifindex 0 when a system device goes (an internal port
                # moved into a sandbox is not one: it keeps it).
                attached = not (kind == "" and iface is not None and iface.ifindex == [0])
                res = r.ovs_port(port.name, br.name, type=kind, tag=port.tag[0] if port.tag else None,
                                 trunks=list(port.trunks), external_ids=dict(port.external_ids), attached=attached,
                                 owner=port_owner)
                res.meta.update(uuid=str(iface.uuid) if iface else None)
                out.append(res)
                lsp = port.external_ids.get("iface-id")
                if lsp and iface is not None and iface.external_ids.get("ovn-installed") == "true":
                    out.append(r.ovn_port_up(lsp, scope.ovn_host, (r.nb_key("ovn_switch_port", lsp), res.key),
                                             owner=port_owner))
        return out

    # ---- apply -------------------------------------------------------------------------
    def apply(self, actions: list[Action]) -> Outcome:
        idl = self.connect()
        waits = [a for a in actions if a.kind == "ovn_port_up"]   # deleting one is nothing to do
        actions = [a for a in actions if a.kind != "ovn_port_up"]
        outcome = Outcome()
        if actions:
            def stage(txn) -> None:
                root = next(iter(idl.tables["Open_vSwitch"].rows.values()))
                for action in actions:
                    self._stage(idl, txn, root, action)
                root.increment("next_cfg")
            failed, txn = transact(idl, actions, stage, "OVSDB")
            self.transactions += 1
            if failed is not None:
                return failed
            self._wait_vswitchd(idl, txn.get_increment_new_value(), actions, outcome)
        if not outcome.errors:
            self._wait_bound([a for a in waits if a.op != "delete"], outcome)
        return outcome

    def _wait_bound(self, actions: list[Action], outcome: Outcome) -> None:
        """Wait until ovn-controller has bound each logical port to its br-int Interface."""
        waiting = {a.resource.attrs["name"]: a for a in actions}
        deadline = time.monotonic() + OVN_BIND_TIMEOUT
        while waiting:
            for iface in self.idl.tables["Interface"].rows.values():
                if iface.external_ids.get("ovn-installed") == "true":
                    waiting.pop(iface.external_ids.get("iface-id"), None)
            if not waiting or time.monotonic() > deadline:
                break
            poll(self.idl)
        for name, action in sorted(waiting.items()):
            outcome.errors[action.key] = (
                f"logical port {name} was not bound on this host within {OVN_BIND_TIMEOUT:g}s: is ovn-controller "
                "running here, with external_ids:ovn-remote (the Southbound DB) and system-id set in this OVS? "
                "(ovn-sbctl show lists the chassis that registered)")

    def _stage(self, idl, txn, root, action: Action) -> None:
        a = action.resource.attrs
        bridges = {b.name: b for b in idl.tables["Bridge"].rows.values()}
        ports = {p.name: p for p in idl.tables["Port"].rows.values()}
        if action.kind == "ovs_bridge":
            if action.op == "create":
                root.verify("bridges")
                br = txn.insert(idl.tables["Bridge"])
                br.name, br.datapath_type, br.fail_mode = a["name"], a["datapath_type"], [a["fail_mode"]]
                br.external_ids = {PROJECT_ID: a["project"]}
                # The bridge-local port and interface carry our mark too, like every row we insert.
                local = self._insert_port(idl, txn, a["name"], "internal", None, [], {PROJECT_ID: a["project"]})
                br.ports = [local]
                root.addvalue("bridges", br.uuid)
            elif action.op == "update":
                br = bridges[a["name"]]
                if "fail_mode" in action.changes:
                    br.fail_mode = [a["fail_mode"]]
            else:
                # Decided on the rows as they are now, not as observed: a port another tool
                # added since stays, and so does the bridge (observe then calls it shared).
                # verify() makes a port added before the commit fail it with TRY_AGAIN, and
                # the retry stages this again from fresh rows.
                br = bridges[a["name"]]
                br.verify("ports")
                foreign = [p for p in br.ports if p.name != br.name and p.external_ids.get(PROJECT_ID) != a["project"]]
                for port in br.ports:
                    if foreign and (port in foreign or port.name == br.name):
                        continue
                    for iface in port.interfaces:
                        iface.delete()
                    if foreign:
                        br.delvalue("ports", port.uuid)
                    port.delete()
                if not foreign:
                    root.delvalue("bridges", br.uuid)
                    br.delete()
            return
        if action.op == "create":
            br = bridges.get(a["bridge"]) or self._inserted_bridge(txn, a["bridge"])
            br.verify("ports")
            port = self._insert_port(idl, txn, a["name"], a["type"], a["tag"], a["trunks"], a["external_ids"])
            br.addvalue("ports", port.uuid)
        elif action.op == "update":
            port = ports[a["name"]]
            port.verify("tag")
            port.tag = [a["tag"]] if a["tag"] is not None else []
            port.trunks = a["trunks"]
            port.external_ids = a["external_ids"]
        else:
            port = ports.get(a["name"])
            if port is None:
                return
            owner = next((b for b in bridges.values() if port in b.ports), None)
            if owner is not None:
                owner.verify("ports")
                owner.delvalue("ports", port.uuid)
            for iface in port.interfaces:
                iface.delete()
            port.delete()

    @staticmethod
    def _inserted_bridge(txn, name: str):
        for row in txn._txn_rows.values():
            if row._table.name == "Bridge" and getattr(row, "name", None) == name:
                return row
        raise LookupError(f"OVS bridge {name} does not exist")

    @staticmethod
    def _insert_port(idl, txn, name: str, kind: str, tag, trunks, external_ids):
        iface = txn.insert(idl.tables["Interface"])
        iface.name, iface.type = name, kind
        iface.external_ids = external_ids
        port = txn.insert(idl.tables["Port"])
        port.name, port.interfaces = name, [iface]
        port.tag = [tag] if tag is not None else []
        port.trunks = list(trunks)
        port.external_ids = external_ids
        return port

    def _kernel_bridges_without_datapath(self, idl, actions: list[Action]) -> dict[str, str]:
        """Bridges of the batch on the kernel datapath ("system") that ovs-vswitchd could not
        open, each with what its rows show.  It reports datapath_id a little after cur_cfg,
        so wait as long as opening a datapath may take.  (The userspace datapath needs no
        module and is not checked: its datapath_id may come late on a busy host.)"""
        wanted = {a.resource.attrs["name"] if a.kind == "ovs_bridge" else a.resource.attrs["bridge"]
                  for a in actions if a.op != "delete"}
        deadline = time.monotonic() + DATAPATH_TIMEOUT
        while True:
            rows = {b.name: b for b in idl.tables["Bridge"].rows.values()}
            wanted = {name for name in wanted if name in rows and (rows[name].datapath_type or "system") == "system"
                      and not rows[name].datapath_id}
            if not wanted or time.monotonic() > deadline:
                break
            poll(idl, 20)
        return {name: (f"OVS bridge {name}: ovs-vswitchd could not open its kernel datapath (datapath_type "
                       "system: the Bridge row has no datapath_id and its interfaces no ofport); load the "
                       "openvswitch kernel module, or use datapath_type: netdev") for name in wanted}

    def _wait_vswitchd(self, idl, next_cfg: int, actions: list[Action], outcome: Outcome) -> None:
        deadline = time.monotonic() + VSWITCHD_TIMEOUT
        while True:
            root = next(iter(idl.tables["Open_vSwitch"].rows.values()))
            if root.cur_cfg >= next_cfg:
                break
            if time.monotonic() > deadline:
                for action in actions:
                    outcome.errors[action.key] = ("ovs-vswitchd did not apply the change within "
                                                  f"{VSWITCHD_TIMEOUT:g}s: is ovs-vswitchd running?")
                return
            poll(idl)
        broken = self._kernel_bridges_without_datapath(idl, actions)
        ifaces = {i.name: i for i in idl.tables["Interface"].rows.values()}
        for action in actions:
            if action.op == "delete":
                continue
            a = action.resource.attrs
            bridge = a["name"] if action.kind == "ovs_bridge" else a["bridge"]
            if bridge in broken:  # ovs-vswitchd only logs why; its rows show the result
                outcome.errors[action.key] = broken[bridge]
                continue
            if action.kind != "ovs_port":
                continue
            iface = ifaces.get(action.resource.attrs["name"])
            error = iface.error[0] if iface is not None and iface.error else None
            ofport = iface.ofport[0] if iface is not None and iface.ofport else None
            if iface is None or error or ofport == -1:
                outcome.errors[action.key] = f"OVS interface {action.resource.attrs['name']}: " \
                                             f"{error or 'not attached (ofport -1)'}"
