"""plan: a pure, generic diff of desired against observed resources.

Knows nothing about kinds beyond `KINDS[kind].replace_on`.  Yields delete actions in
reverse dependency order, then create/update actions in dependency order, each with a
`level` so the executor can batch independent actions.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Iterable

from .errors import ConflictError, NetcomposeError
from .resources import KINDS, Resource

FORMAT_VERSION = "1.1"  # 1.1: origin, source; cause "consequence"


class PlanError(NetcomposeError):
    pass


@dataclass
class Action:
    """One step of a plan: create, update or delete one resource, with why (cause) and where
    in the file it comes from (origin, source)."""

    op: str                      # create | update | delete
    key: str
    kind: str
    desired: Resource | None
    observed: Resource | None
    changes: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    implicit: bool = False       # removed by the kernel together with a parent; nothing to send
    level: int = 0
    cause: str = "config"        # config | drift | consequence (of another action of the plan)
    origin: tuple | None = None  # the path into the document that declares it (see netcompose.origins)
    source: str | None = None    # that declaration's file:line:col

    @property
    def resource(self) -> Resource:
        return self.desired if self.desired is not None else self.observed  # type: ignore[return-value]

    def to_json(self) -> dict[str, Any]:
        return {"op": self.op, "key": self.key, "kind": self.kind, "level": self.level, "implicit": self.implicit,
                "cause": self.cause, "origin": list(self.origin) if self.origin is not None else None,
                "source": self.source,
                "changes": {k: {"before": a, "after": b} for k, (a, b) in self.changes.items()},
                "desired": self.desired.to_json() if self.desired else None,
                "observed": self.observed.to_json() if self.observed else None}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Action":
        return cls(data["op"], data["key"], data["kind"],
                   Resource.from_json(data["desired"]) if data["desired"] else None,
                   Resource.from_json(data["observed"]) if data["observed"] else None,
                   {k: (v["before"], v["after"]) for k, v in data["changes"].items()},
                   data["implicit"], data["level"], data.get("cause", "config"),
                   tuple(data["origin"]) if data.get("origin") is not None else None, data.get("source"))


class Plan:
    __slots__ = ("actions",)

    def __init__(self, actions: list[Action]) -> None:
        self.actions = actions

    @property
    def changes(self) -> list[Action]:
        return [a for a in self.actions if not a.implicit]

    def __bool__(self) -> bool:
        return bool(self.actions)

    def counts(self) -> dict[str, int]:
        out = {"create": 0, "update": 0, "delete": 0}
        for a in self.actions:
            out[a.op] += 1
        return out

    def to_json(self) -> dict[str, Any]:
        """Changes the file asks for and drift the host suffered, separately; `index` is the
        position of each action in execution order."""
        actions = [{**a.to_json(), "index": i} for i, a in enumerate(self.actions)]
        return {"format_version": FORMAT_VERSION, "counts": self.counts(),
                "resource_changes": [a for a in actions if a["cause"] != "drift"],
                "resource_drift": [a for a in actions if a["cause"] == "drift"]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Plan":
        actions = sorted(data["resource_changes"] + data["resource_drift"], key=lambda a: a["index"])
        return cls([Action.from_json(a) for a in actions])


def diff_attrs(desired: Resource, observed: Resource) -> dict[str, tuple[Any, Any]]:
    compare, want, have = KINDS[desired.kind].compare, desired.attrs, observed.attrs
    wanted = want.items() if compare is None else ((k, want.get(k)) for k in compare)
    return {k: (have.get(k), value) for k, value in wanted if value is not None and value != have.get(k)}


def _conflict(have: Resource) -> ConflictError:
    owner = f"project '{have.owner}'" if have.owner else "another tool"
    how = have.meta.get("conflict_hint") or "rename or remove it"   # a driver may know better
    return ConflictError(f"{have.key} already exists and belongs to {owner}; "
                         f"netcompose never takes over objects it did not create: {how}")


def _check_namesakes(desired: dict[str, Resource], observed: dict[str, Resource], project: str) -> None:
    """A foreign object named like a desired one (see KindSpec.identity) is a conflict."""
    kinds = {kind for kind, spec in KINDS.items() if spec.identity}
    wanted = {(res.kind, *(res.attrs.get(a) for a in KINDS[res.kind].identity))
              for res in desired.values() if res.kind in kinds and not res.external}
    if not wanted:
        return
    for have in observed.values():
        if have.kind in kinds and have.owner != project and not have.external and \
                (have.kind, *(have.attrs.get(a) for a in KINDS[have.kind].identity)) in wanted:
            raise _conflict(have)


def _topo_order(resources: dict[str, Resource]) -> list[str]:
    order: list[str] = []
    state: dict[str, int] = {}
    for root in sorted(resources):
        if root in state:
            continue
        stack = [(root, iter(resources[root].deps))]
        state[root] = 1
        while stack:
            key, deps = stack[-1]
            for dep in deps:
                if dep in resources and dep not in state:
                    state[dep] = 1
                    stack.append((dep, iter(resources[dep].deps)))
                    break
            else:
                stack.pop()
                state[key] = 2
                order.append(key)
    return order


def make_plan(desired: dict[str, Resource], observed: dict[str, Resource], project: str) -> Plan:
    actions: dict[str, Action] = {}
    removed: set[str] = set()
    for key, want in desired.items():
        have = observed.get(key)
        if have is None:
            if want.external:
                raise PlanError(f"{want.kind} '{want.attrs.get('name', key)}' does not exist; " + want.meta.get(
                    "missing", "netcompose adopts it but never creates it: create it first or fix the name"))
            actions[key] = Action("create", key, want.kind, want, None)
        elif have.owner != project and not want.external:
            raise _conflict(have)
        elif not want.external and want.attrs != have.attrs:
            changes = diff_attrs(want, have)
            if have.kind != want.kind or changes and any(k in KINDS[want.kind].replace_on for k in changes):
                actions[key] = Action("create", key, want.kind, want, have, changes)
                removed.add(key)
            elif changes:
                actions[key] = Action("update", key, want.kind, want, have, changes)
    _check_namesakes(desired, observed, project)   # (after every desired key's own conflict)
    deletes: dict[str, Action] = {}
    for key, have in observed.items():
        if key not in desired and have.owner == project and not have.external:
            deletes[key] = Action("delete", key, have.kind, None, have)
            removed.add(key)

    # Removing a parent removes its children in the kernel: their deletes become implicit,
    # and children that should stay are created again.
    everything = {**observed, **desired} if removed else {}
    busy = _busy_parents(observed, removed, project) if removed else set()
    for key in _topo_order(everything):
        res = observed.get(key)
        if res is None or key in removed and key not in deletes:
            continue
        if not any(p in removed for p in res.parents):
            continue
        removed.add(key)
        explicit = _outlives(res) or not busy.isdisjoint(res.parents)
        if key in deletes:
            deletes[key].implicit = not explicit
        elif key in desired:
            actions[key] = Action("create", key, res.kind, desired[key], res)
        elif _outlives(res):  # not ours, but it must not outlive its parent
            deletes[key] = Action("delete", key, res.kind, None, res)

    return Plan(_order(list(deletes.values()), actions, desired, observed))


def _outlives(res: Resource) -> bool:
    spec = KINDS.get(res.kind)  # observed foreign objects may be of no managed kind
    return spec is not None and spec.outlives_parents


def _busy_parents(observed: dict[str, Resource], removed: set[str], project: str) -> set[str]:
    """Removed parents holding a child that the kernel will not remove with them and that is
    not ours (a process started by hand in a sandbox): such a parent may linger after its
    removal, so its other children are removed explicitly.  Children of ours are removed
    first and for sure; then the kernel removes the rest with the parent, in one batch."""
    return {p for res in observed.values() if _outlives(res) and res.owner != project
            for p in res.parents if p in removed}


def _order(deletes: list[Action], upserts: dict[str, Action], desired: dict[str, Resource],
           observed: dict[str, Resource]) -> list[Action]:
    # Replacements delete the old object first, in the delete phase.
    replaced = [Action("delete", a.key, a.kind, None, a.observed, implicit=_implicit(a, upserts, observed))
                for a in upserts.values() if a.op == "create" and a.observed is not None]
    delete_set = {a.key: a for a in deletes + replaced}
    delete_depth = _levels(delete_set, observed, reverse=True)
    upsert_depth = _levels(upserts, desired, reverse=False)
    # Within a level, dependency order: an ordered driver sequences the batch as given.
    ordered_deletes = sorted(delete_set.values(), key=lambda a: (a.level, delete_depth[a.key], a.key))
    ordered_upserts = sorted(upserts.values(), key=lambda a: (a.level, upsert_depth[a.key], a.key))
    return ordered_deletes + ordered_upserts


def _implicit(action: Action, upserts: dict[str, Action], observed: dict[str, Resource]) -> bool:
    res = observed[action.key]
    return not _outlives(res) and any(p in upserts and upserts[p].op == "create" and upserts[p].observed is not None
               for p in res.parents)


def _levels(actions: dict[str, Action], graph: dict[str, Resource], reverse: bool) -> dict[str, int]:
    """Set each action's level; return its depth (longest chain of acted-on prerequisites;
    for deletes, of acted-on dependents).

    A level is a batch: dependencies inside one driver's batch cost no level when the
    driver sequences them itself (`ordered`), or applies the whole phase in one
    transaction (`transactional`: those share one level, and every dependent of any of
    them comes after it).
    """
    order = _topo_order({k: graph[k] for k in actions})
    before: dict[str, list[str]] = {k: [d for d in graph[k].deps if d in actions] for k in order}
    if reverse:
        flipped: dict[str, list[str]] = {k: [] for k in order}
        for key, deps in before.items():
            for dep in deps:
                flipped[dep].append(key)
        before, order = flipped, order[::-1]
    spec = {k: KINDS[actions[k].kind] for k in order}
    txn = {k: s.driver for k, s in spec.items() if s.transactional}

    def step(dep: str, key: str) -> int:
        same = spec[dep].driver == spec[key].driver
        return 0 if same and (spec[dep].ordered and spec[key].ordered or txn.get(dep) is not None) else 1

    depth: dict[str, int] = {}
    level: dict[str, int] = {}
    for key in order:
        depth[key] = max((depth[d] + 1 for d in before[key]), default=0)
        level[key] = max((level[d] + step(d, key) for d in before[key]), default=0)
    shared: dict[str, int] = {}
    for key, driver in txn.items():
        shared[driver] = max(shared.get(driver, 0), level[key])
    for key in order:
        if key in txn:
            level[key] = shared[txn[key]]
        else:
            level[key] = max([level[key]] + [level[d] + step(d, key) for d in before[key]])
    for key, action in actions.items():
        action.level = level[key]
    return depth


def digest(resource: Resource) -> str:
    """A fingerprint of what the file asked of a resource.  Compile builds attributes in a
    fixed order, so their repr is stable across runs (and twice as fast as canonical JSON);
    a new version that reorders them only makes one apply observe everything."""
    return hashlib.blake2b(repr(resource.attrs).encode(), digest_size=8).hexdigest()


def classify(plan: Plan, applied: dict[str, str]) -> None:
    """Mark actions caused by host drift rather than by a change of the file.

    `applied` maps keys to the digests of the last successful apply.  An action on a
    resource whose desired state is unchanged since then repairs drift; so does deleting
    something that apply never made (a leftover).
    """
    if not applied:
        return
    for action in plan.actions:
        if action.desired is not None:
            unchanged = applied.get(action.key) == digest(action.desired)
        else:
            unchanged = action.key not in applied
        action.cause = "drift" if unchanged else "config"
    # An unchanged resource made again because the file replaces or removes a parent (a route
    # re-added because its address was replaced) follows from that change: it is no drift.
    replaced: set[str] = set()
    for action in plan.actions:
        if action.cause == "drift" and action.desired is not None and \
                any(k in replaced for k in action.desired.parents):
            action.cause = "consequence"
        if action.cause != "drift" and action.op != "update":
            replaced.add(action.key)


def summarize(plan: Plan) -> str:
    c = plan.counts()
    return f"{c['create']} to create, {c['update']} to update, {c['delete']} to delete"


SYMBOLS = {"create": "+", "update": "~", "delete": "-"}


def describe(actions: Iterable[Action]) -> Iterable[str]:
    for a in actions:
        yield f"{SYMBOLS[a.op]} {a.key}{changed(a.changes)}{note(a)}"


def changed(changes: dict[str, tuple[Any, Any]]) -> str:
    """` (mtu: 1400 → 1450, …)`, or nothing without changes."""
    return " (" + ", ".join(f"{k}: {b!r} → {c!r}" for k, (b, c) in changes.items()) + ")" if changes else ""


def note(a: Action) -> str:
    """Why an action has nothing to send, or is not the file's own change."""
    return (" (removed with its parent)" if a.implicit else "") + (f" [{a.cause}]" if a.cause != "config" else "")
