"""Compose files (the compose-spec, as `docker compose config` reads them) → netcompose data.

Loading follows Compose: variables (with `.env` or `--env-file`), anchors and merge keys,
override files merged in order, `include`, `extends` and `profiles`.  Each enabled service
becomes a container (or `scale` containers named `<service>-1..N`), each network a Linux
bridge network; the implicit `default` network exists when a service names no network.
"""
from __future__ import annotations

import copy
import ipaddress
import os
import re
from pathlib import Path
from typing import Any

from ..errors import Position, SpecError, excerpt
from ..inputs import read_text
from .. import names
from ..spec.loader import Document, parse_yaml
from . import Translation, unsupported

# Service keys that only matter to the container runtime (image, processes, storage, ...).
_NETWORK_KEYS = {"networks", "network_mode", "ports", "expose", "extra_hosts", "dns", "dns_search", "dns_opt",
                 "hostname", "domainname", "container_name", "mac_address", "sysctls", "links", "external_links",
                 "scale", "deploy", "profiles", "extends", "net"}
# Sequences an override file replaces rather than extends (compose-spec merge rules).
_REPLACED_LISTS = {"command", "entrypoint", "test"}

_DRIVER_OPTS = {
    "com.docker.network.driver.mtu": "mtu",
    "com.docker.network.bridge.enable_icc": "icc",
    "com.docker.network.bridge.enable_ip_masquerade": "nat",
    "com.docker.network.bridge.host_binding_ipv4": "host_binding",
}


# ---- loading: files, overrides, include, extends ------------------------------------
def _graft(dst: Document, dpath: tuple, src: Document, spath: tuple) -> None:
    """Copy the positions of `src` under `spath` to `dst` under `dpath`."""
    n = len(spath)
    for table_dst, table_src in ((dst.values, src.values), (dst.keys, src.keys)):
        for path, pos in list(table_src.items()):
            if path[:n] == spath:
                table_dst[dpath + path[n:]] = pos


def _merge(dst: Document, dpath: tuple, base: Any, src: Document, spath: tuple, over: Any, key: Any = None) -> Any:
    """Compose's override merge: mappings merge key by key, sequences extend (without
    duplicates), scalars and `command`-like sequences are replaced."""
    if isinstance(base, dict) and isinstance(over, dict):
        for k, v in over.items():
            if k in base:
                base[k] = _merge(dst, dpath + (k,), base[k], src, spath + (k,), v, k)
            else:
                base[k] = v
                _graft(dst, dpath + (k,), src, spath + (k,))
        return base
    if isinstance(base, list) and isinstance(over, list) and key not in _REPLACED_LISTS:
        for i, v in enumerate(over):
            if v not in base:
                base.append(v)
                _graft(dst, dpath + (len(base) - 1,), src, spath + (i,))
        return base
    _graft(dst, dpath, src, spath)
    return over


def _normalize_service_networks(doc: Document) -> None:
    """A service's `networks: [a, b]` as the map `{a: null, b: null}`, so overrides merge."""
    for name, svc in (doc.data.get("services") or {}).items():
        if isinstance(svc, dict) and isinstance(svc.get("networks"), list):
            listed = svc["networks"]
            if all(isinstance(n, str) for n in listed):
                svc["networks"] = {n: None for n in listed}
                for i, n in enumerate(listed):
                    at = doc.values.get(("services", name, "networks", i))
                    if at:
                        doc.keys[("services", name, "networks", n)] = doc.values[("services", name, "networks", n)] = at


class _Loader:
    def __init__(self, env: dict[str, str]):
        self.env = env
        self.sources: list[Path] = []
        self.reading: list[str] = []     # the files being read, outermost first (an include cycle)

    def read(self, path: Path, at: Position | None, root: Path | None = None, name: str | None = None) -> Document:
        """Read a Compose file.  A file given with -f (no `root`) may be anywhere; what it
        pulls in (include, extends' file) is confined to its folder, as the netcompose
        loader confines includes to the topology's folder."""
        text = read_text(path, at, confined_to=root, name=name)
        real = os.path.realpath(path)
        if real in self.reading:
            raise SpecError(at, f"{excerpt(name or str(path), 80)} is already being read (an include or extends cycle)",
                            "break the cycle")
        self.reading.append(real)
        try:
            return self.parse(text, path, root or path.parent)
        finally:
            self.reading.pop()

    def parse(self, text: str, path: Path, root: Path) -> Document:
        """One Compose file's document, with what it includes and extends (inside `root`)."""
        doc = parse_yaml(text, str(path), self.env, unset_is_empty=True)
        self.sources.append(path)
        if doc.data is None:
            doc.data = {}
        if not isinstance(doc.data, dict):
            raise SpecError(doc.where(()), "a Compose file must be a mapping", "start with services:")
        for section in ("services", "networks"):
            value = doc.data.get(section)
            if value is not None and not isinstance(value, dict):
                raise SpecError(doc.where((section,)), f"{section}: must be a mapping", f"write {section}: {{name: ...}}")
        _normalize_service_networks(doc)
        self.includes(doc, path.parent, root)
        self.extends(doc, path.parent, root)
        return doc

    def includes(self, doc: Document, folder: Path, root: Path) -> None:
        entries = doc.data.pop("include", None) or []
        if not isinstance(entries, list):
            raise SpecError(doc.where(("include",)), "include: must be a list", "write include: [other.yaml]")
        for i, entry in enumerate(entries):
            files = entry if isinstance(entry, str) else (entry or {}).get("path") if isinstance(entry, dict) else None
            files = [files] if isinstance(files, str) else files
            if not files or not all(isinstance(f, str) for f in files):
                raise SpecError(doc.where(("include", i)), "include entry needs a file path",
                                "write - other.yaml or - path: other.yaml")
            included = self.read(folder / files[0], doc.where(("include", i)), root, files[0])
            for extra in files[1:]:
                over = self.read(folder / extra, doc.where(("include", i)), root, extra)
                _merge(included, (), included.data, over, (), over.data)
            for section in ("services", "networks"):
                for name, value in (included.data.get(section) or {}).items():
                    mine = doc.data.setdefault(section, {})
                    if name in mine:
                        raise SpecError(included.where((section, name), key=True),
                                        f"{section}.{name} is defined twice (also at {doc.where((section, name), key=True)})",
                                        "define it in one file only")
                    mine[name] = value
                    _graft(doc, (section, name), included, (section, name))

    def extends(self, doc: Document, folder: Path, root: Path) -> None:
        services = doc.data.get("services") or {}
        done: set[str] = set()

        def resolve(name: str, stack: tuple[str, ...]) -> None:
            svc = services[name]
            if name in done or not isinstance(svc, dict) or "extends" not in svc:
                done.add(name)
                return
            if name in stack:
                raise SpecError(doc.where(("services", name, "extends")), f"service '{name}' extends itself",
                                "break the cycle")
            spec = svc.pop("extends")
            path = ("services", name, "extends")
            base_name = spec if isinstance(spec, str) else spec.get("service") if isinstance(spec, dict) else None
            if not isinstance(base_name, str):
                raise SpecError(doc.where(path), "extends needs a service", "write extends: {service: NAME}")
            if isinstance(spec, dict) and spec.get("file"):
                if not isinstance(spec["file"], str):
                    raise SpecError(doc.where(path + ("file",)), "extends' file must be a file name",
                                    "write extends: {file: base.yaml, service: NAME}")
                other = self.read(folder / spec["file"], doc.where(path + ("file",)), root, spec["file"])
                base_doc, pool = other, other.data.get("services") or {}
            else:
                resolve(base_name, stack + (name,)) if base_name in services else None
                base_doc, pool = doc, services
            if base_name not in pool:
                raise SpecError(doc.where(path), f"extends names unknown service '{base_name}'",
                                f"use one of: {', '.join(pool) or 'none'}")
            mine = Document(None, doc.file)
            _graft(mine, (), doc, ("services", name))
            merged = copy.deepcopy(pool[base_name]) or {}
            _graft(doc, ("services", name), base_doc, ("services", base_name))
            services[name] = _merge(doc, ("services", name), merged, mine, (), svc)
            for table_doc, table_mine in ((doc.values, mine.values), (doc.keys, mine.keys)):
                table_doc[("services", name)] = table_mine[()]
            done.add(name)

        for name in list(services):
            resolve(name, ())


def load(paths: list[Path], env: dict[str, str]) -> tuple[Document, list[Path]]:
    loader = _Loader(env)
    doc = loader.read(paths[0], None)
    for path in paths[1:]:
        over = loader.read(path, None)
        doc.data = _merge(doc, (), doc.data, over, (), over.data)
    return doc, loader.sources


# ---- translation ------------------------------------------------------------------------
def project_name(explicit: str | None, env: dict[str, str], doc: Document, first: Path) -> str:
    """-p, then COMPOSE_PROJECT_NAME, then `name:`: lowercased, keeping only letters, digits,
    '_' and '-' (Compose's normalisation); else the folder, named as for netcompose's own
    files (folders "a.b" and "ab" are two projects, not one that prunes the other)."""
    for candidate in (explicit, env.get("COMPOSE_PROJECT_NAME"), doc.data.get("name")):
        if candidate:
            name = re.sub(r"[^a-z0-9_-]", "", str(candidate).lower()).lstrip("_-")
            if name:
                return name[:32]
    return names.folder_project(first.resolve().parent.name)


class _Compose:
    def __init__(self, doc: Document, tr: Translation, profiles: list[str]):
        self.doc, self.tr = doc, tr
        self.profiles = set(profiles)
        self.networks_used: dict[str, Position] = {}
        self.link_aliases: dict[str, list[tuple[str, Position]]] = {}

    def at(self, *path: Any) -> Position:
        return self.doc.where(path)

    def key_at(self, *path: Any) -> Position:
        return self.doc.where(path, key=True)

    def fail(self, path: tuple, what: str, why: str) -> SpecError:
        return unsupported(self.doc.where(path), what, why)

    def enabled(self, name: str, svc: dict) -> bool:
        wanted = svc.get("profiles")
        if not wanted:
            return True
        return bool(self.profiles & set(map(str, wanted))) or "*" in self.profiles

    def run(self) -> None:
        data = self.doc.data
        for key in data:
            if key not in ("name", "version", "services", "networks", "include") and not str(key).startswith("x-"):
                self.tr.ignore(key, self.key_at(key))
        services = {n: s or {} for n, s in (data.get("services") or {}).items()}
        enabled = {n: s for n, s in services.items() if self.enabled(n, s)}
        for name, svc in enabled.items():
            for i, link in enumerate(svc.get("links") or []):
                target, _, alias = str(link).partition(":")
                if target not in enabled:
                    raise SpecError(self.at("services", name, "links", i), f"link to unknown service '{target}'",
                                    f"use one of: {', '.join(enabled)}")
                self.link_aliases.setdefault(target, []).append((alias or target, self.at("services", name, "links", i)))
        self.tr.section("networks", {}, self.key_at("networks") if "networks" in data else self.key_at("services"))
        self.tr.section("containers", {}, self.key_at("services"))
        for name, svc in enabled.items():
            self.service(name, svc, enabled)
        declared = data.get("networks") or {}
        for name, where in self.networks_used.items():
            if name not in declared and name != "default" and name != "bridge":
                raise SpecError(where, f"service uses undefined network '{name}'",
                                "declare it under the top-level networks:")
            self.network(name, declared.get(name) or {}, where)

    # -- networks -------------------------------------------------------------------------
    def network(self, name: str, net: dict, used_at: Position) -> None:
        path = ("networks", name)
        at = self.at(*path) if name in (self.doc.data.get("networks") or {}) else used_at
        self.tr.set(path, {}, at, self.key_at(*path) if at is not used_at else used_at)
        if name == "bridge" and "bridge" not in (self.doc.data.get("networks") or {}):
            # Docker's default bridge: the project's legacy bridge network, on Docker's subnet.
            self.tr.set(path + ("subnet",), "172.17.0.0/16", used_at)
            return
        for key, value in net.items():
            here = path + (key,)
            if key == "driver":
                if value in (None, "bridge", "default"):
                    continue
                why = {"overlay": "it spans hosts and needs a swarm",
                       "macvlan": "it needs a parent interface of the host; use a bridge network",
                       "ipvlan": "it needs a parent interface of the host; use a bridge network",
                       "host": "use network_mode: host", "none": "use network_mode: none"}
                raise self.fail(here, f"driver: {value}", why.get(value, "only the bridge driver is built here"))
            elif key == "driver_opts":
                self.driver_opts(name, value or {})
            elif key == "ipam":
                self.ipam(name, value or {})
            elif key == "internal":
                self.tr.set(("networks", name, "internal"), bool(value), self.at(*here))
            elif key == "enable_ipv6":
                if value:
                    self.tr.set(("networks", name, "enable_ipv6"), True, self.at(*here))
            elif key == "external":
                if value:
                    raise self.fail(here, "external network", "netcompose only builds the networks it owns "
                                    "for now; declare the network without external:")
            elif key in ("name", "labels", "attachable"):
                self.tr.ignore(f"networks.{key}", self.key_at(*here))
            elif not str(key).startswith("x-"):
                self.tr.ignore(f"networks.{key}", self.key_at(*here))

    def driver_opts(self, name: str, opts: dict) -> None:
        for opt, value in opts.items():
            here = ("networks", name, "driver_opts", opt)
            target = _DRIVER_OPTS.get(opt)
            if opt == "com.docker.network.bridge.name":
                raise self.fail(here, f"driver_opts {opt}", "netcompose names its bridges itself "
                                "(the network's name is in the bridge's alias)")
            if target == "mtu":
                self.tr.set(("networks", name, "mtu"), int(value), self.at(*here))
            elif target in ("icc", "nat"):
                self.tr.set(("networks", name, target), str(value).lower() in ("true", "1", "yes"), self.at(*here))
            elif target != "host_binding":
                self.tr.ignore(f"driver_opts.{opt}", self.key_at(*here))

    def ipam(self, name: str, ipam: dict) -> None:
        base = ("networks", name, "ipam")
        if ipam.get("driver") not in (None, "default"):
            raise self.fail(base + ("driver",), f"ipam driver {ipam['driver']}", "only the default IPAM is built here")
        seen_v4 = False
        for i, entry in enumerate(ipam.get("config") or []):
            here = base + ("config", i)
            subnet = (entry or {}).get("subnet")
            try:
                version = ipaddress.ip_network(str(subnet), strict=False).version if subnet else 4
            except ValueError:
                raise SpecError(self.at(*here, "subnet"), f"'{subnet}' is not a subnet", "write it like 10.1.0.0/24") from None
            if version == 6:
                mapping = {"subnet": "subnet6", "gateway": "gateway6"}
            else:
                if seen_v4:
                    raise self.fail(here, "a second IPv4 subnet", "a netcompose network has one IPv4 subnet")
                seen_v4 = True
                mapping = {"subnet": "subnet", "gateway": "gateway", "ip_range": "ip_range",
                           "aux_addresses": "aux_addresses"}
            for key, value in (entry or {}).items():
                if key in mapping:
                    self.tr.set(("networks", name, mapping[key]), value, self.at(*here, key))
                elif version == 6 and key in ("ip_range", "aux_addresses"):
                    raise self.fail(here + (key,), f"ipam {key} of an IPv6 subnet",
                                    "IPv6 addresses come from the whole subnet")
                else:
                    raise self.fail(here + (key,), f"ipam {key}", "not an IPAM setting netcompose knows")
        for key in ipam:
            if key not in ("driver", "config"):
                self.tr.ignore(f"ipam.{key}", self.key_at(*base, key))

    # -- services -------------------------------------------------------------------------
    def service(self, name: str, svc: dict, enabled: dict[str, dict]) -> None:
        base = ("services", name)
        for key in svc:
            if key not in _NETWORK_KEYS and not str(key).startswith("x-"):
                self.tr.ignore(key, self.key_at(*base, key))
        for key in ("expose", "dns_opt", "net"):
            if key in svc:
                self.tr.ignore(key, self.key_at(*base, key))
        if svc.get("external_links"):
            raise self.fail(base + ("external_links",), "external_links",
                            "they name containers outside the project, which netcompose does not know")
        mode = svc.get("network_mode")
        attachments = svc.get("networks")
        if mode is not None and attachments:
            raise SpecError(self.key_at(*base, "network_mode"), f"service '{name}' has both network_mode and networks",
                            "keep one of the two (as Compose requires)")
        replicas = self.replicas(name, svc)
        if mode is not None:
            mode = str(mode)
            if mode == "host":
                self.tr.notes.append(f"service {name} runs in the host namespace (network_mode: host): no sandbox")
                return
            if mode.startswith("service:"):
                other = mode.partition(":")[2]
                if other not in enabled:
                    raise SpecError(self.at(*base, "network_mode"), f"network_mode names unknown service '{other}'",
                                    f"use one of: {', '.join(enabled)}")
                self.tr.notes.append(f"service {name} shares the sandbox of {other} (network_mode: {mode})")
                return
            if mode.startswith("container:"):
                attachments = None
            elif mode == "bridge":
                attachments = {"bridge": None}
            elif mode != "none":
                raise SpecError(self.at(*base, "network_mode"), f"unknown network_mode '{mode}'",
                                "use host, none, bridge, service:NAME or container:NAME")
        elif attachments is None:
            attachments = {"default": None}
        if attachments is not None and not isinstance(attachments, dict):
            raise SpecError(self.at(*base, "networks"), "networks: must be a list or a mapping",
                            "write networks: [a, b] or networks: {a: {...}}")
        attachments = {n: (v or {}) for n, v in (attachments or {}).items()}
        order = sorted(attachments, key=lambda n: (-int(attachments[n].get("priority") or 0), n))
        for net in order:
            self.networks_used.setdefault(net, self.key_at(*base, "networks", net)
                                          if net in (svc.get("networks") or {}) else self.key_at(*base))
        names = [name] if replicas == 1 else [f"{name}-{i}" for i in range(1, replicas + 1)]
        for cname in names:
            self.container(cname, name, svc, mode, attachments, order, replicas)

    def replicas(self, name: str, svc: dict) -> int:
        base = ("services", name)
        count = svc.get("scale")
        deploy = svc.get("deploy") or {}
        if count is None and isinstance(deploy, dict):
            count = deploy.get("replicas")
        where = self.at(*base, "scale") if "scale" in svc else self.at(*base, "deploy", "replicas")
        if count is None:
            return 1
        if not isinstance(count, int) or count < 0:
            raise SpecError(where, f"replicas must be a whole number, not {count!r}", "write scale: 2")
        if count > 1 and svc.get("container_name"):
            raise SpecError(where, f"service '{name}' has container_name and {count} replicas",
                            "remove container_name or scale (as Compose requires)")
        return count

    def container(self, cname: str, service: str, svc: dict, mode: str | None, attachments: dict,
                  order: list[str], replicas: int) -> None:
        base = ("services", service)
        cpath = ("containers", cname)
        self.tr.set(cpath, {}, self.at(*base), self.key_at(*base))
        if mode and mode.startswith("container:"):
            self.tr.set(cpath + ("netns",), mode.partition(":")[2], self.at(*base, "network_mode"))
        if attachments:
            self.tr.set(cpath + ("networks",), {}, self.at(*base, "networks") if svc.get("networks") else self.at(*base))
        # Docker's default gateway: the highest gw_priority among networks that are not internal.
        declared = self.doc.data.get("networks") or {}
        routed = [n for n in order if not (declared.get(n) or {}).get("internal")]
        best = max(routed, key=lambda n: int(attachments[n].get("gw_priority") or 0)) if routed else None
        for index, net in enumerate(order):
            self.endpoint(cname, service, net, attachments[net], svc, index == 0, replicas)
        if best is not None and best != order[0]:
            self.tr.set(cpath + ("default_route",), best, self.at(*base, "networks", best))
        aliases = [(service, self.key_at(*base))] if replicas > 1 else []
        for key in ("hostname", "container_name"):
            if svc.get(key):
                aliases.append((str(svc[key]), self.at(*base, key)))
        if svc.get("hostname") and svc.get("domainname"):
            aliases.append((f"{svc['hostname']}.{svc['domainname']}", self.at(*base, "domainname")))
        aliases += self.link_aliases.get(service, [])
        names = []
        for alias, where in aliases:
            if alias != cname and alias not in names:
                names.append(alias)
                self.tr.set(cpath + ("aliases",), [], where) if len(names) == 1 else None
                self.tr.set(cpath + ("aliases", len(names) - 1), alias, where)
        if attachments:  # name resolution and DNS settings only mean something with a network
            self.dns(cpath, base, svc)
            self.extra_hosts(cpath, base, svc.get("extra_hosts"))
        self.sysctls(cpath, base, svc.get("sysctls"))
        host_binding = self.host_binding(order[0]) if order else None
        self.ports(cpath, base, svc.get("ports") or [], host_binding)

    def endpoint(self, cname: str, service: str, net: str, spec: dict, svc: dict, primary: bool,
                 replicas: int) -> None:
        base = ("services", service, "networks", net)
        epath = ("containers", cname, "networks", net)
        self.tr.set(epath, {}, self.at(*base) if net in (svc.get("networks") or {}) else self.at("services", service))
        mac = spec.get("mac_address") or (svc.get("mac_address") if primary else None)
        for key, value in spec.items():
            here = base + (key,)
            if key == "ipv4_address" and value:
                if replicas > 1:
                    raise SpecError(self.at(*here), f"service '{service}' has a static address and {replicas} "
                                    "replicas", "remove ipv4_address or scale")
                self.tr.set(epath + ("ipv4_address",), value, self.at(*here))
            elif key == "ipv6_address" and value:
                self.tr.set(epath + ("ipv6_address",), value, self.at(*here))
            elif key == "aliases":
                for i, alias in enumerate(value or []):
                    self.tr.set(epath + ("aliases",), [], self.at(*here)) if i == 0 else None
                    self.tr.set(epath + ("aliases", i), alias, self.at(*here, i))
            elif key == "interface_name":
                self.tr.set(epath + ("ifname",), value, self.at(*here))
            elif key == "link_local_ips" and value:
                raise self.fail(here, "link_local_ips", "extra link-local addresses are not managed")
            elif key in ("priority", "gw_priority", "mac_address", "driver_opts", "link_local_ips", "ipv4_address",
                         "ipv6_address"):
                if key == "driver_opts":
                    self.tr.ignore("networks.driver_opts", self.key_at(*here))
            else:
                self.tr.ignore(f"networks.{key}", self.key_at(*here))
        if mac:
            where = self.at(*base, "mac_address") if spec.get("mac_address") else self.at("services", service,
                                                                                          "mac_address")
            if replicas > 1:
                raise SpecError(where, f"service '{service}' has a MAC address and {replicas} replicas",
                                "remove mac_address or scale")
            self.tr.set(epath + ("mac_address",), mac, where)

    def dns(self, cpath: tuple, base: tuple, svc: dict) -> None:
        for key in ("dns", "dns_search"):
            value = svc.get(key)
            if value is None:
                continue
            values = [value] if isinstance(value, str) else list(value)
            self.tr.set(cpath + (key,), [], self.at(*base, key))
            for i, item in enumerate(values):
                where = self.at(*base, key, i) if not isinstance(value, str) else self.at(*base, key)
                self.tr.set(cpath + (key, i), item, where)

    def extra_hosts(self, cpath: tuple, base: tuple, hosts: Any) -> None:
        if not hosts:
            return
        path = base + ("extra_hosts",)
        if isinstance(hosts, dict):
            pairs = [(h, ip, self.at(*path, h)) for h, ip in hosts.items()]
        elif isinstance(hosts, list):
            pairs = []
            for i, entry in enumerate(hosts):
                text = str(entry)
                host, sep, ip = text.partition("=") if "=" in text else text.partition(":")
                if not sep:
                    raise SpecError(self.at(*path, i), f"extra_hosts entry '{text}' is not HOST:IP",
                                    "write it like db:10.0.0.5 or db=10.0.0.5")
                pairs.append((host, ip, self.at(*path, i)))
        else:
            raise SpecError(self.at(*path), "extra_hosts must be a list or a mapping", "write extra_hosts: [db:10.0.0.5]")
        self.tr.set(cpath + ("extra_hosts",), {}, self.at(*path))
        for host, ip, where in pairs:
            ip = str(ip).strip("[]")
            self.tr.set(cpath + ("extra_hosts", host), ip, where)

    def sysctls(self, cpath: tuple, base: tuple, sysctls: Any) -> None:
        if not sysctls:
            return
        path = base + ("sysctls",)
        if isinstance(sysctls, list):
            items = [(str(s).partition("=")[0], str(s).partition("=")[2], self.at(*path, i))
                     for i, s in enumerate(sysctls)]
        else:
            items = [(k, v, self.at(*path, k)) for k, v in sysctls.items()]
        network = [(k, v, w) for k, v, w in items if str(k).startswith("net.")]
        if len(network) < len(items):
            self.tr.ignore("sysctls (other than net.*)", self.key_at(*path))
        if network:
            self.tr.set(cpath + ("sysctls",), {}, self.at(*path))
            for key, value, where in network:
                self.tr.set(cpath + ("sysctls", key), str(value), where)

    def host_binding(self, net: str) -> str | None:
        opts = ((self.doc.data.get("networks") or {}).get(net) or {}).get("driver_opts") or {}
        return opts.get("com.docker.network.bridge.host_binding_ipv4")

    def ports(self, cpath: tuple, base: tuple, ports: list, host_binding: str | None) -> None:
        out = []
        for i, entry in enumerate(ports):
            where = self.at(*base, "ports", i)
            for mapping in expand_port(entry, where):
                if "host_ip" not in mapping and host_binding:
                    mapping["host_ip"] = host_binding
                out.append((mapping, where))
        if out:
            self.tr.set(cpath + ("ports",), [], self.at(*base, "ports"))
            for i, (mapping, where) in enumerate(out):
                self.tr.set(cpath + ("ports", i), mapping, where)


_SHORT = re.compile(r"^(?:(?P<ip>\[[^\]]*\]|\d+\.\d+\.\d+\.\d+|[0-9a-fA-F:]*::[0-9a-fA-F:]*):)?"
                    r"(?:(?P<published>\d*(?:-\d+)?):)?(?P<target>\d+(?:-\d+)?)(?:/(?P<proto>\w+))?$")


def _range(text: str) -> list[int]:
    low, _, high = text.partition("-")
    return list(range(int(low), int(high or low) + 1))


def expand_port(entry: Any, where: Position) -> list[dict]:
    """One mapping per port of a Compose `ports:` entry (short or long syntax, ranges)."""
    if isinstance(entry, int):
        return [{"target": entry}]
    if isinstance(entry, dict):
        published = entry.get("published")
        short = f"{published}:{entry.get('target')}" if published not in (None, "") else str(entry.get("target"))
        if entry.get("host_ip"):
            ip = str(entry["host_ip"])
            short = f"[{ip}]:{short}" if ":" in ip else f"{ip}:{short}"
        if entry.get("protocol"):
            short += f"/{entry['protocol']}"
        return expand_port(short, where)
    match = _SHORT.match(str(entry).strip())
    if not match:
        raise SpecError(where, f"port '{entry}' is not [HOST_IP:][PUBLISHED:]TARGET[/PROTOCOL]",
                        'write it like "8080:80" or "127.0.0.1:53:53/udp"')
    ip, protocol = match["ip"], (match["proto"] or "tcp").lower()
    if protocol not in ("tcp", "udp"):
        raise unsupported(where, f"protocol {protocol}", "published ports are tcp or udp")
    targets = _range(match["target"])
    published = _range(match["published"]) if match["published"] else None
    if published and len(published) != len(targets):
        raise unsupported(where, f"the port range {entry}", "a published range must be as long as the target range")
    out = []
    for i, target in enumerate(targets):
        mapping: dict[str, Any] = {"target": target}
        if published:
            mapping["published"] = published[i]
        if protocol != "tcp":
            mapping["protocol"] = protocol
        if ip:
            mapping["host_ip"] = ip.strip("[]")
        out.append(mapping)
    return out


def translate(paths: list[Path], env: dict[str, str], profiles: list[str], project: str | None) -> Translation:
    doc, sources = load(paths, env)
    tr = Translation(Document({}, str(paths[0])), sources)
    name = project_name(project, env, doc, paths[0])
    tr.set(("name",), name, doc.where(("name",)) if "name" in doc.data else Position(str(paths[0]), 1, 1))
    active = list(profiles) or [p for p in env.get("COMPOSE_PROFILES", "").split(",") if p]
    _Compose(doc, tr, active).run()
    return tr
