"""Drivers: each owns one backend, observes its resources and applies actions to them."""
from __future__ import annotations

from typing import NamedTuple, Protocol

from ..plan import Action
from ..resources import Resource


class Scope(NamedTuple):
    """Where to look: our project, plus names the topology wants (to detect foreign collisions)."""

    project: str
    namespaces: frozenset[str] = frozenset()    # namespaces the file names (ours or adopted)
    host_ifnames: frozenset[str] = frozenset()  # host interface names the file wants
    needs_ovs: bool = False
    needs_ovn: bool = False                     # the file has driver: ovn networks (the Northbound DB)
    ovn_host: str | None = None                 # this machine's name in hosts: (see Resolved.host)
    firewall_namespaces: frozenset[str] = frozenset()   # namespaces that may hold a table of ours
    conditioned_namespaces: frozenset[str] = frozenset()   # namespaces (or the host, "") that may hold our qdiscs
    # None: everything of the project.  Else only these zones (see Resource.zones), for
    # an apply whose work is O(change).
    focus: frozenset[str] | None = None
    # (role, ident) → host name, for the rare names a hash collision moved off their
    # plain digest (see names.host_ifnames); drivers that derive a name use it.
    renamed: dict[tuple[str, str], str] = {}   # never changed, like every field of a tuple

    def sees(self, zone: str) -> bool:
        return self.focus is None or zone in self.focus


class Outcome:
    """Per action: None when it succeeded, else the error text."""

    __slots__ = ("errors",)

    def __init__(self, errors: dict[str, str] | None = None) -> None:
        self.errors = {} if errors is None else errors


class Driver(Protocol):
    name: str

    def observe(self, scope: Scope) -> list[Resource]: ...

    def apply(self, actions: list[Action]) -> Outcome: ...

    def close(self) -> None: ...
