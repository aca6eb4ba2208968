"""The OVN Northbound DB, natively with the python-ovs IDL (never ovn-nbctl).

Generic over Northbound tables: TABLES maps each resource kind to its table, the columns
netcompose writes and, for a row another row holds (a switch its ports), that holder's
kind and column.  A new kind of row is a new entry here and a compile step, nothing else.

Every row we write carries external_ids netcompose-project (ownership) and netcompose-name
(the resource's name; a table with a name column also names rows by it, so a same-named
row without our mark is seen, and is a conflict).  A batch is one transaction, verify()ing
the holders' columns it changes and retried on TRY_AGAIN, as the OVS driver does.
"""
from __future__ import annotations

import os
from ipaddress import IPv4Address
from typing import NamedTuple

from .. import resources as r
from ..errors import NetcomposeError
from ..plan import Action
from ..resources import NB_MARK, NB_NAME, Resource
from . import Outcome, Scope
from .ovsdb import open_idl, poll, transact

WRITES = r.mark_key("writes")   # NB_Global external_ids: our transactions' counter (see _transact)
HOST_MARK = r.mark_key("host")


class Table(NamedTuple):
    name: str
    columns: dict[str, str]      # column → "scalar", "optional" (0 or 1 value), "set", "map" or "ref:<kind>"
    named: bool = True           # the row's `name` column is its name (else only our mark names it)
    holder: tuple[str, str] | None = None   # (kind, column) of the row that holds this one
    holds: tuple[str, ...] = ()   # columns of this row holding rows of other kinds


TABLES: dict[str, Table] = {
    "ovn_switch": Table("Logical_Switch", {"external_ids": "map"}, holds=("ports",)),
    "ovn_switch_port": Table("Logical_Switch_Port", {"type": "scalar", "addresses": "set", "port_security": "set",
                                                     "options": "map", "external_ids": "map"},
                             holder=("ovn_switch", "ports")),
    "ovn_router": Table("Logical_Router", {"options": "map", "load_balancer": "ref:ovn_load_balancer",
                                           "external_ids": "map"},
                        holds=("ports", "static_routes", "nat")),
    "ovn_router_port": Table("Logical_Router_Port", {"mac": "scalar", "networks": "set", "external_ids": "map"},
                             holder=("ovn_router", "ports")),
    "ovn_static_route": Table("Logical_Router_Static_Route", {"ip_prefix": "scalar", "nexthop": "scalar",
                                                              "external_ids": "map"},
                              named=False, holder=("ovn_router", "static_routes")),
    "ovn_nat": Table("NAT", {"type": "scalar", "external_ip": "scalar", "logical_ip": "scalar", "external_ids": "map"},
                     named=False, holder=("ovn_router", "nat")),
    "ovn_load_balancer": Table("Load_Balancer", {"protocol": "optional", "vips": "map", "external_ids": "map"}),
    "ovn_port_group": Table("Port_Group", {"ports": "ref:ovn_switch_port", "external_ids": "map"}, holds=("acls",)),
    "ovn_acl": Table("ACL", {"direction": "scalar", "priority": "scalar", "match": "scalar", "action": "scalar",
                             "external_ids": "map"}, named=False, holder=("ovn_port_group", "acls")),
}


class NorthboundUnavailable(NetcomposeError):
    pass


def remote_from(option: str | None, in_file: str | None) -> str | None:
    """--ovn-nb, else $NETCOMPOSE_OVN_NB, else the file's ovn.northbound."""
    return option or os.environ.get("NETCOMPOSE_OVN_NB") or in_file


def _value(row, column: str, how: str):
    value = getattr(row, column)
    if how == "optional":
        return value[0] if value else None
    if how == "set":
        return sorted(value)
    if how == "map":
        return dict(value)
    if how.startswith("ref:"):
        return sorted(ref.name for ref in value)
    return value


class NorthboundDriver:
    name = "ovn_nb"

    def __init__(self, remote: str | None) -> None:
        self.remote = remote
        self.idl = None

    def connect(self):
        if self.idl is not None:
            return self.idl
        if self.remote is None:
            raise NorthboundUnavailable("driver: ovn networks need the OVN Northbound DB: set ovn.northbound in the "
                                        "file, or pass --ovn-nb / NETCOMPOSE_OVN_NB")

        def unavailable(why: str) -> NorthboundUnavailable:
            return NorthboundUnavailable(f"cannot reach the OVN Northbound DB at {self.remote} ({why}); start the "
                                         "OVN central databases (ovn-ctl start_northd) or fix ovn.northbound / --ovn-nb")
        self.idl = open_idl(self.remote, "OVN_Northbound", [t.name for t in TABLES.values()] + ["NB_Global"],
                            unavailable)
        return self.idl

    def close(self) -> None:
        if self.idl is not None:
            self.idl.close()
            self.idl = None

    def _rows(self, kind: str):
        return self.idl.tables[TABLES[kind].name].rows.values()

    # ---- observe -----------------------------------------------------------------------
    def observe(self, scope: Scope) -> list[Resource]:
        if not scope.needs_ovn or not scope.sees("nb"):
            return []
        idl = self.connect()
        poll(idl, 0)
        holders: dict[object, str] = {}   # a held row's uuid → its holder's name
        for kind, table in TABLES.items():
            for column in table.holds:
                for row in self._rows(kind):
                    for held in getattr(row, column):
                        holders[held.uuid] = row.name
        out: list[Resource] = []
        for kind, table in TABLES.items():
            for row in self._rows(kind):
                owner = row.external_ids.get(NB_MARK)
                name = row.name if table.named else row.external_ids.get(NB_NAME)
                if name is None or (owner is None and not table.named):
                    continue
                columns = {column: _value(row, column, how) for column, how in table.columns.items()}
                parent = (table.holder[0], holders.get(row.uuid, "")) if table.holder else None
                res = r.nb_row(kind, name, columns, owner or "", parent=parent, owner=owner)
                res.attrs["external_ids"] = dict(row.external_ids)   # as found, mark or not
                res.meta["uuid"] = row.uuid
                out.append(res)
        return out

    def _ports_of(self, project: str) -> list:
        """The logical switch ports of `project`, as the DB has them now."""
        idl = self.connect()
        poll(idl, 0)
        return [row for row in self._rows("ovn_switch_port") if row.external_ids.get(NB_MARK) == project]

    def port_states(self, project: str) -> dict[str, bool]:
        """Each logical switch port of `project`: up (bound by an ovn-controller) or not."""
        return {row.name: row.up == [True] for row in self._ports_of(project)}

    def port_addresses(self, project: str) -> dict[tuple[str, str], IPv4Address]:
        """(container, network) → the IPv4 address of its logical port, for every endpoint
        port of `project` (addresses are "MAC IP")."""
        found = {}
        for row in self._ports_of(project):
            ids = row.external_ids
            if HOST_MARK in ids and row.addresses:
                try:
                    found[(ids[r.mark_key("container")], ids[r.mark_key("network")])] = \
                        IPv4Address(row.addresses[0].split()[1])
                except (KeyError, IndexError, ValueError):
                    continue   # not as we write it: the plan repairs it
        return found

    def bound_elsewhere(self, project: str, host: str | None) -> list[str]:
        """Endpoint ports of `project` that hosts other than `host` have bound (up); a router's
        ports are always up and belong to no host."""
        return sorted(row.name for row in self._ports_of(project) if HOST_MARK in row.external_ids
                      and row.up == [True] and row.external_ids[HOST_MARK] != (host or ""))

    # ---- apply -------------------------------------------------------------------------
    def apply(self, actions: list[Action]) -> Outcome:
        idl = self.connect()

        def stage(txn) -> None:
            # Every host writes the same logical state, maybe at the same time: our writes
            # take turns on a counter in NB_Global (verify()ed, so a concurrent write makes
            # this one TRY_AGAIN, staged again from rows that now show the other's work).
            root = next(iter(idl.tables["NB_Global"].rows.values()), None)
            if root is not None:
                root.verify("external_ids")
                turns = dict(root.external_ids)
                turns[WRITES] = str(int(turns.get(WRITES, "0")) + 1)
                root.external_ids = turns
            rows = _Rows(idl)
            for action in actions:
                self._stage(idl, txn, action, rows)
        failed, _ = transact(idl, actions, stage, "OVN Northbound")
        return failed or Outcome()

    def _stage(self, idl, txn, action: Action, rows: "_Rows") -> None:
        table = TABLES[action.kind]
        a = action.resource.attrs
        holder = rows.find(table.holder[0], a["parent"]) if table.holder and a.get("parent") else None
        if action.op == "delete":
            try:
                row = rows.existing(action.kind, a["name"])
            except LookupError:
                return   # gone already
            if holder is not None:
                holder.verify(table.holder[1])
                holder.delvalue(table.holder[1], row.uuid)
            rows.delete(action.kind, a["name"])
            return
        made_meanwhile = self._made_meanwhile(action, rows) if action.op == "create" and action.observed is None \
            else None
        if made_meanwhile is not None:   # by another host since we looked: write it as ours
            row = made_meanwhile
        elif action.op == "create":
            row = txn.insert(idl.tables[table.name])
            if table.named:
                row.name = a["name"]
            rows.inserted[(action.kind, a["name"])] = row
            if holder is not None:
                holder.verify(table.holder[1])
                holder.addvalue(table.holder[1], row.uuid)
        else:
            row = rows.find(action.kind, a["name"])
        for column, how in table.columns.items():
            if action.op == "update" and column not in action.changes:
                continue
            value = a[column]
            if how.startswith("ref:"):
                value = [rows.find(how[4:], name).uuid for name in value]
            elif how == "optional":
                value = [] if value is None else [value]
            setattr(row, column, value)

    def _made_meanwhile(self, action: Action, rows: "_Rows"):
        """The row a create names, when another writer of the project has made it since the
        plan was made; a same-named row of anyone else is a conflict."""
        try:
            row = rows.existing(action.kind, action.resource.attrs["name"])
        except LookupError:
            return None
        if row.external_ids.get(NB_MARK) != action.resource.attrs["external_ids"][NB_MARK]:
            raise LookupError(f"OVN Northbound: {TABLES[action.kind].name} '{action.resource.attrs['name']}' "
                              "appeared meanwhile and is not ours")
        return row


class _Rows:
    """The rows one staging of a transaction finds by kind and name: those it inserted, then
    the database's, indexed once per kind (a port group's ports would otherwise scan the
    table once each)."""

    def __init__(self, idl) -> None:
        self.idl = idl
        self.inserted: dict[tuple[str, str], object] = {}
        self._existing: dict[str, dict[str, object]] = {}

    def find(self, kind: str, name: str):
        return self.inserted[(kind, name)] if (kind, name) in self.inserted else self.existing(kind, name)

    def existing(self, kind: str, name: str):
        table = TABLES[kind]
        if kind not in self._existing:
            index: dict[str, object] = {}
            for row in self.idl.tables[table.name].rows.values():
                index.setdefault(row.name if table.named else row.external_ids.get(NB_NAME), row)
            self._existing[kind] = index
        row = self._existing[kind].get(name)
        if row is None:
            raise LookupError(f"OVN Northbound: no {table.name} row '{name}'")
        return row

    def delete(self, kind: str, name: str) -> None:
        self._existing[kind].pop(name).delete()
