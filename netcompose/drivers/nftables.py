"""nftables driver: the project's own tables, each replaced in one atomic `nft -j -f -`.

Tables in a namespace are listed over NETLINK_NETFILTER in-process; `nft` runs only to
read one of our tables or to write a transaction, entering the namespace by setns in the
child before exec.  Tables, chains and rules of anyone else are never named in a command.
"""
from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess

from .. import resources as r
from .. import statefiles
from ..apply import STATE_DIR
from ..compile.firewall import project_of, table_name, trace_table_name
from ..errors import UnsupportedError
from ..plan import Action
from ..resources import HOST, Resource
from . import Outcome, Scope, namespaces, rtnl

FAMILIES = {1: "inet", 2: "ip", 7: "bridge", 10: "ip6", 3: "arp", 5: "netdev"}
# Ownership mark: a table is ours only when it holds this chain (never hooked, so never
# evaluated) with one rule commented `netcompose project=<project>`.  nft 1.0.6 cannot
# write a table comment through JSON, and a same-named table made by hand lacks it.
OWNER_CHAIN = "netcompose-owner"


def owner_comment(project: str) -> str:
    return f"netcompose project={project}"


class NftablesDriver:
    name = "nftables"

    def __init__(self, nss) -> None:
        self.nss = nss   # netlink.Namespaces: namespace fds
        self.nft = shutil.which("nft")

    def close(self) -> None:
        pass

    def preflight(self, actions: list[Action]) -> None:
        """Checked before an apply changes anything."""
        if actions and self.nft is None:
            self._missing()

    @staticmethod
    def _missing() -> None:
        raise UnsupportedError("nftables is not installed (`nft` is not on the PATH; Debian package `nftables`): "
                               "it is needed for isolation, NAT, published ports and firewalls")

    def run(self, ns: str, args: list[str], stdin: str | None = None) -> subprocess.CompletedProcess:
        """`nft ARGS` (an argv, never a shell line) inside namespace `ns`."""
        if self.nft is None:
            self._missing()
        fd = None if ns == HOST else self.nss.fd(ns)
        return subprocess.run([self.nft, *args], input=stdin, capture_output=True, text=True,
                              pass_fds=(fd,) if fd is not None else (),
                              preexec_fn=(lambda: namespaces.setns(fd)) if fd is not None else None)

    def tables_in(self, ns: str) -> list[tuple[str, str]]:
        sock = self.nss.nft_sock(ns)
        return [(FAMILIES.get(family, str(family)), name) for family, name in rtnl.nft_tables(sock)]

    def observe(self, scope: Scope) -> list[Resource]:
        # A trace table `explain --live` could not remove (killed) is ours too: desired by no
        # one, the next up or down removes it.
        ours = (table_name(scope.project), trace_table_name(scope.project))
        out = []
        places = [HOST] if scope.sees("nft") else []
        places += [n for n in scope.firewall_namespaces if scope.sees(f"ns:{n}") and self.nss.exists(n)]
        if not places:   # an edit elsewhere: the recorded listings are not even read
            return out
        listings = Listings(scope.project, self.nft)
        for ns in places:
            tables = [(family, name) for family, name in self.tables_in(ns) if name in ours]
            stamp = listings.stamp(self.nss.nft_sock(ns)) if tables else None
            for family, name in tables:
                text = listings.get(ns, family, name, stamp)
                if text is None:
                    text = self._list(ns, family, name)
                    listings.put(ns, family, name, stamp, text)
                out.append(self.parse(ns, family, name, scope.project, text))
        listings.save(places)
        return out

    def read(self, ns: str, family: str, name: str, project: str) -> Resource:
        return self.parse(ns, family, name, project, self._list(ns, family, name))

    def _list(self, ns: str, family: str, name: str) -> str | None:
        result = self.run(ns, ["-j", "list", "table", family, name])
        return result.stdout if result.returncode == 0 else None

    @staticmethod
    def parse(ns: str, family: str, name: str, project: str, listing: str | None) -> Resource:
        """The table from `nft -j list table` (None: it could not be listed)."""
        chains: dict[str, dict] = {}
        rules: dict[str, list] = {}   # as nft lists them: enough to write the table back (rollback)
        if listing is not None:
            for item in json.loads(listing)["nftables"]:
                if "chain" in item:
                    c = item["chain"]
                    chains[c["name"]] = {"type": c.get("type"), "hook": c.get("hook"), "prio": c.get("prio"),
                                         "policy": c.get("policy"), "rules": []}
                    rules[c["name"]] = []
                elif "rule" in item:
                    rule = item["rule"]
                    chains[rule["chain"]]["rules"].append(rule.get("comment"))
                    rules[rule["chain"]].append({"comment": rule.get("comment"), "expr": rule.get("expr", [])})
        mark = chains.pop(OWNER_CHAIN, {}).get("rules")
        rules.pop(OWNER_CHAIN, None)
        owner = project if mark == [owner_comment(project)] else None
        table = r.nft_table(ns, family, name, chains, rules, owner=owner)
        if owner is None and mark is None:
            # Tables made before the mark existed carry none, like one made by hand: nothing on
            # the table proves which it is, so the user decides.
            delete = f"nft delete table {family} {name}"
            table.meta["conflict_hint"] = (
                "it has no owner mark (older netcompose versions made their tables without one); if it is this "
                f"project's, delete it (`{delete if ns == HOST else f'ip netns exec {ns} {delete}'}`) and run "
                "`netcompose up` again, which makes it anew with the mark")
        return table

    def apply(self, actions: list[Action]) -> Outcome:
        outcome = Outcome()
        by_ns: dict[str, list[Action]] = {}
        for action in actions:
            by_ns.setdefault(action.resource.attrs["ns"], []).append(action)
        for ns, group in by_ns.items():
            commands: list[dict] = []
            for action in group:
                commands.extend(self._commands(action))
            result = self.run(ns, ["-j", "-f", "-"], json.dumps({"nftables": commands}))
            if result.returncode != 0:
                error = " ".join(result.stderr.split())[:300] or f"nft exited {result.returncode}"
                for action in group:
                    outcome.errors[action.key] = f"nft: {error}"
        return outcome

    @staticmethod
    def _commands(action: Action) -> list[dict]:
        a = action.resource.attrs
        if action.op == "delete":
            return table_commands(a["family"], a["name"])
        return table_commands(a["family"], a["name"], project_of(a["name"]), a["chains"], a["rules"])


class Listings:
    """What `nft -j list table` said of each table of the project, with the stamp of the
    ruleset it listed (`<state>/<project>/nft-listings.json`).  The stamp is the namespace
    (its cookie, unique until the machine reboots, and the boot), the ruleset's generation
    there (every nftables transaction in the namespace changes it) and the nft binary: while
    it holds, the ruleset is the very one listed, and a no-op `up` or `plan` reads the
    listing instead of running nft (a process each, ~5 ms).  The generation is read before
    nft lists, so a change meanwhile never passes for the listed ruleset."""

    def __init__(self, project: str, nft: str | None) -> None:
        self.folder = os.path.join(STATE_DIR, project)
        self.path = os.path.join(self.folder, "nft-listings.json")
        try:
            tool = os.stat(nft) if nft else None
        except OSError:
            tool = None
        self.tool = [nft, tool.st_ino, tool.st_mtime_ns] if tool else None
        recorded = statefiles.read_json(self.path)
        self.found: dict[tuple, list] = {}   # (ns, family, name) → [stamp, listing]
        for entry in recorded if isinstance(recorded, list) else ():
            if isinstance(entry, list) and len(entry) == 5:
                self.found[tuple(entry[:3])] = entry[3:]
        self.kept: dict[tuple, list] = {}

    def stamp(self, sock: rtnl.RtnlSocket) -> list | None:
        if self.tool is None:
            return None
        try:
            return [_boot_id(), rtnl.netns_cookie(sock), rtnl.nft_generation(sock), self.tool]
        except (OSError, KeyError):
            return None   # a kernel without namespace cookies (before 5.14): nft lists every time

    def get(self, ns: str, family: str, name: str, stamp: list | None) -> str | None:
        entry = self.found.get((ns, family, name))
        if stamp is None or entry is None or entry[0] != stamp:
            return None
        self.kept[(ns, family, name)] = entry
        return entry[1]

    def put(self, ns: str, family: str, name: str, stamp: list | None, listing: str | None) -> None:
        if stamp is not None and listing is not None:
            self.kept[(ns, family, name)] = [stamp, listing]

    def save(self, places: list[str]) -> None:
        """Keep what this observation listed, and the listings of namespaces it did not look
        in; only for a project with a state folder (one that was applied)."""
        entries = {key: entry for key, entry in self.found.items() if key[0] not in places}
        entries.update(self.kept)
        if entries != self.found and os.path.isdir(self.folder):
            try:
                statefiles.write_json(self.path, [[*key, *entry] for key, entry in entries.items()])
            except OSError:
                pass   # only a shortcut: the next run lists again


@functools.cache
def _boot_id() -> str:
    with open("/proc/sys/kernel/random/boot_id") as f:
        return f.read().strip()


def table_commands(family: str, name: str, project: str | None = None, chains: dict[str, dict] | None = None,
                   rules: dict[str, list[dict]] | None = None) -> list[dict]:
    """One transaction that removes table `name` if it is there and, given `chains`, makes it
    anew with the ownership mark of `project`, those chains and the `rules` of each."""
    table = {"family": family, "name": name}
    # "add" then "delete" makes the delete idempotent; all of it is one transaction.
    commands: list[dict] = [{"add": {"table": table}}, {"delete": {"table": table}}]
    if chains is None:
        return commands
    commands.append({"add": {"table": table}})
    commands.append({"add": {"chain": {"family": family, "table": name, "name": OWNER_CHAIN}}})
    commands.append({"add": {"rule": {"family": family, "table": name, "chain": OWNER_CHAIN,
                                      "comment": owner_comment(project), "expr": [{"counter": None}]}}})
    for chain_name, chain in chains.items():
        commands.append({"add": {"chain": {"family": family, "table": name, "name": chain_name,
                                           "type": chain["type"], "hook": chain["hook"], "prio": chain["prio"],
                                           "policy": chain["policy"]}}})
        for rule in rules[chain_name]:  # type: ignore[index]
            commands.append({"add": {"rule": {"family": family, "table": name, "chain": chain_name,
                                              "comment": rule["comment"], "expr": rule["expr"]}}})
    return commands
