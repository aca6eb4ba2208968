"""Ownership by proof and file safety, against the real kernel: objects named like ours
but not carrying our mark are conflicts (exit 1, one line, nothing changed), never
adopted or deleted; nothing under /etc/netns is written through a symlink we did not make."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from netcompose.drivers import namespaces

from .conftest import REPO, needs_root, run_cli
from .test_kernel import ip, link_facts

pytestmark = [needs_root, pytest.mark.kernel]

NAT_TOPO = """
networks:
  front: {subnet: 10.151.0.0/24}
containers:
  web:
    networks: {front: {ipv4_address: 10.151.0.10}}
    ports: ["8151:80"]
"""


def host_snapshot(prefix: str) -> dict:
    """Everything a test project could have touched: its namespaces, host links, nft
    tables, /etc/netns entries (folders walked without following links)."""
    tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout.split("\n")
    listed = {}
    for line in tables:
        parts = line.split()
        if len(parts) == 3 and prefix in parts[2]:
            listed[line] = subprocess.run(["nft", "list", "table", parts[1], parts[2]],
                                          capture_output=True, text=True).stdout
    etc = {}
    for folder, dirs, files in os.walk("/etc/netns"):
        for name in dirs + files:
            path = os.path.join(folder, name)
            if prefix in path:
                etc[path] = os.readlink(path) if os.path.islink(path) else (
                    "dir" if os.path.isdir(path) else Path(path).read_text())
    return {"netns": [n for n in namespaces.list_named() if n.startswith(prefix)],
            "links": sorted((l.name, l.alias) for l in link_facts().values() if l.name.startswith(prefix)),
            "nft": listed, "etc": etc}


def cli(project_name: str, path: Path, *args: str) -> subprocess.CompletedProcess:
    return run_cli(args[0], "-f", str(path), "-p", project_name, *args[1:])


def one_line_conflict(result: subprocess.CompletedProcess, *words: str) -> None:
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    for word in words:
        assert word in lines[0], lines[0]


@pytest.mark.parametrize("family", ["inet", "ip"])
def test_hand_made_nft_table_with_our_name_is_a_conflict(tmp_path, project_name, family, blocks):
    table = f"netcompose-{project_name}"
    subprocess.run(["nft", "add", "table", family, table], check=True)
    subprocess.run(["nft", "add", "chain", family, table, "keep", "{ type filter hook forward priority 5; }"],
                   check=True)
    path = tmp_path / "topo.yaml"
    path.write_text(blocks(NAT_TOPO))
    before = host_snapshot(project_name)
    one_line_conflict(cli(project_name, path, "up"), table, "another tool")
    assert host_snapshot(project_name) == before
    assert cli(project_name, path, "down").returncode == 0
    assert host_snapshot(project_name) == before


def test_our_nft_table_carries_its_mark_and_goes_with_down(tmp_path, project_name, blocks):
    path = tmp_path / "topo.yaml"
    path.write_text(blocks(NAT_TOPO))
    assert cli(project_name, path, "up").returncode == 0
    listing = subprocess.run(["nft", "list", "table", "inet", f"netcompose-{project_name}"],
                             capture_output=True, text=True, check=True).stdout
    assert f'comment "netcompose project={project_name}"' in listing
    assert cli(project_name, path, "plan", "--detailed-exitcode").returncode == 0
    assert cli(project_name, path, "down").returncode == 0
    assert not host_snapshot(project_name)["nft"]


LINK_TOPO = """
networks: {front: {subnet: 10.152.0.0/24}}
containers: {web: {networks: [front]}}
"""


def test_foreign_links_with_netcompose_looking_aliases(tmp_path, project_name, blocks):
    """Aliases copied onto devices of the wrong kind or name are not ours: plan, up and down
    work around them and leave them as they were; one at a name we need is a conflict."""
    p = project_name
    decoys = {f"{p}-ifb": ("ifb", f"netcompose:{p}:ep:web/front"),
              f"{p}-tap": ("tap", f"netcompose:{p}:net:front"),
              f"{p}-br": ("bridge", f"netcompose:{p}:ep-int:web/front"),
              f"{p}-v1": ("veth", f"netcompose:{p}:gw:front"),
              f"{p}-v2": ("veth", f"netcompose:{p}:ns"),
              f"{p}-v3": ("veth", f"netcompose:{p}:link-peer:x:y:z")}
    for name, (kind, alias) in decoys.items():
        if kind == "tap":
            subprocess.run(["ip", "tuntap", "add", name, "mode", "tap"], check=True)
        elif kind == "veth":
            ip("link", "add", name, "type", "veth", "peer", "name", f"{name}p")
        else:
            ip("link", "add", name, "type", kind)
        ip("link", "set", name, "alias", alias)
    path = tmp_path / "topo.yaml"
    path.write_text(blocks(LINK_TOPO))

    def decoy_facts():
        links = link_facts()
        return {name: (links[name].kind, links[name].alias, links[name].index) for name in decoys}
    before = decoy_facts()
    for command in ("plan", "up", "plan", "down", "plan"):
        result = cli(p, path, command)
        assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert decoy_facts() == before

    # The same kind of copy, at the host name the endpoint needs: a conflict, nothing made.
    from netcompose import Project
    endpoint = Project.load(path, project=p).resolved().containers["web"].endpoints[0].host_ifname
    ip("link", "add", endpoint, "type", "ifb")
    ip("link", "set", endpoint, "alias", f"netcompose:{p}:ep:web/front")
    snapshot = host_snapshot(p)
    one_line_conflict(cli(p, path, "up"), endpoint, "another tool")
    assert host_snapshot(p) == snapshot
    assert cli(p, path, "down").returncode == 0 and host_snapshot(p) == snapshot


def test_exec_refuses_a_namespace_plan_calls_foreign(tmp_path, project_name, blocks):
    path = tmp_path / "topo.yaml"
    path.write_text(blocks(LINK_TOPO))
    namespaces.create(f"{project_name}-web")   # ours by name only
    exec_ = run_cli("exec", "-f", str(path), "-p", project_name, "web", "--", "true")
    one_line_conflict(exec_, f"{project_name}-web", "another tool")
    one_line_conflict(cli(project_name, path, "plan"), f"{project_name}-web", "another tool")
    namespaces.delete(f"{project_name}-web")
    missing = run_cli("exec", "-f", str(path), "-p", project_name, "web", "--", "true")
    assert missing.returncode == 1 and "not up" in missing.stderr, missing.stderr
    assert cli(project_name, path, "up").returncode == 0
    inside = run_cli("exec", "-f", str(path), "-p", project_name, "web", "--", "ip", "-br", "addr")
    assert inside.returncode == 0 and blocks("10.152.0.2") in inside.stdout, inside.stderr


PLANT_TOPO = """
networks: {front: {subnet: 10.153.0.0/24}}
containers:
  web: {networks: [front], dns: [10.153.0.1]}
  db: {networks: [front]}
"""

# Runs inside `unshare --net --mount` with tmpfs over /etc/netns, /run/netns and
# /run/netcompose: a private host, so links planted at shared places cannot disturb
# anyone else's run.  Learns every path a cold `up` creates under /etc/netns (temporary
# names included), then for each: a clean host, a symlink to an outside file or folder
# planted there, `up`, and the outcome.
PLANTER = r"""
import json, os, shutil, subprocess, sys
topo, project, outside = sys.argv[1:4]
for place in ("/etc/netns", "/run/netns", "/run/netcompose"):
    os.makedirs(place, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", place], check=True)
subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
from netcompose import Project

def where(name, dir_fd):
    base = os.readlink(f"/proc/self/fd/{dir_fd}") if dir_fd is not None else os.getcwd()
    return os.path.normpath(os.path.join(base, os.fsdecode(name)))

created = {}
def recording(fn, kind, name_at, fd_key):
    def wrapper(*args, **kwargs):
        path = where(args[name_at], kwargs.get(fd_key))
        if path.startswith("/etc/netns/") and (kind != "open" or args[1] & os.O_CREAT):
            created.setdefault(path, kind)
        return fn(*args, **kwargs)
    return wrapper
os.mkdir = recording(os.mkdir, "dir", 0, "dir_fd")
os.open = recording(os.open, "open", 0, "dir_fd")
os.symlink = recording(os.symlink, "link", 1, "dir_fd")
os.rename = recording(os.rename, "rename", 1, "dst_dir_fd")
project_ = Project.load(topo, project=project)
project_.up()
project_.down()
results = []
for path, kind in sorted(created.items()):
    shutil.rmtree("/etc/netns/.netcompose", ignore_errors=True)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    os.symlink(os.path.join(outside, "folder" if kind == "dir" else "file"), path)
    run = subprocess.run([sys.executable, "-m", "netcompose", "up", "-f", topo, "-p", project],
                         capture_output=True, text=True)
    results.append({"path": path, "kind": kind, "rc": run.returncode, "stderr": run.stderr})
    if os.path.islink(path):
        os.unlink(path)
    Project.load(topo, project=project).down()
print(json.dumps(results))
"""


def outside_snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else "dir", p.stat().st_mtime_ns)
            for p in [folder, *folder.rglob("*")]}


def test_symlinks_planted_where_up_writes_never_lead_outside(tmp_path, project_name, blocks):
    outside = tmp_path / "outside"
    (outside / "folder").mkdir(parents=True)
    (outside / "file").write_text("precious\n")
    (outside / "folder" / "kept").write_text("also precious\n")
    path = tmp_path / "topo.yaml"
    path.write_text(blocks(PLANT_TOPO))
    before = outside_snapshot(outside)
    run = subprocess.run(["unshare", "--net", "--mount", "--", "python3", "-c", PLANTER, str(path), project_name,
                          str(outside)], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert run.returncode == 0, run.stderr
    results = json.loads(run.stdout)
    planted = {r["path"] for r in results}
    shared = f"/etc/netns/.netcompose/{project_name}"
    assert {"/etc/netns/.netcompose", shared, f"/etc/netns/{project_name}-web", f"/etc/netns/{project_name}-db",
            f"{shared}/front/hosts"} <= planted, planted
    assert any(os.path.basename(p).startswith(".tmp-") for p in planted), planted
    assert outside_snapshot(outside) == before
    for result in results:
        assert result["rc"] in (0, 1) and "Traceback" not in result["stderr"], result
        if result["rc"]:
            assert len(result["stderr"].strip().splitlines()) == 1, result


def test_down_removes_the_project_state_folder_and_the_lock_stays_exclusive(tmp_path, project_name, blocks):
    import threading
    from netcompose.engine import Lock
    from netcompose.errors import LockTimeout
    path = tmp_path / "topo.yaml"
    path.write_text(blocks(LINK_TOPO))
    state = Path(f"/run/netcompose/{project_name}")
    assert cli(project_name, path, "up").returncode == 0 and (state / "applied.json").exists()
    assert cli(project_name, path, "down").returncode == 0 and not state.exists()
    assert cli(project_name, path, "down").returncode == 0 and not state.exists()   # nothing to do: still none

    # A run waiting on the lock of a `down` that removes the folder locks the new file, alone.
    first = Lock(project_name, 5).__enter__()
    second = Lock(project_name, 5)
    waiter = threading.Thread(target=second.__enter__)
    waiter.start()
    def opened(path: str) -> int:
        count = 0
        for fd in os.listdir("/proc/self/fd"):
            try:
                count += os.readlink(f"/proc/self/fd/{fd}") == path
            except OSError:
                pass
        return count
    while opened(first.path) < 2:   # until the waiter has the old file open
        pass
    first.remove_folder()
    first.__exit__()
    waiter.join()
    assert os.stat(second.path).st_ino == os.fstat(second.fd).st_ino
    with pytest.raises(LockTimeout):
        Lock(project_name, 0.2).__enter__()
    second.__exit__()


def ovs_topo_text(project: str, datapath: str = "netdev") -> str:
    return f"""
networks:
  t: {{driver: ovs, subnet: 10.154.0.0/24, ovs: {{bridge: {project}-br, datapath_type: {datapath}}}}}
containers:
  a: {{networks: [t]}}
"""


def test_a_port_added_to_our_ovs_bridge_just_before_down_commits_survives(topo, project_name, private_ovs,
                                                                          monkeypatch, blocks):
    import ovs.db.idl
    bridge, intruder = f"{project_name}-br", f"{project_name}-fp"
    project = topo(blocks(ovs_topo_text(project_name)), ovsdb=private_ovs.remote)
    try:
        project.up()
        # Every row netcompose inserts carries its mark, the bridge-local Port and Interface too.
        for table in ("Bridge", "Port", "Interface"):
            assert private_ovs.vsctl("get", table, bridge, "external_ids:netcompose-project") == project_name
        commit = ovs.db.idl.Transaction.commit_block
        sneaked = []

        def racing_commit(txn):
            if not sneaked:   # another tool adds a port after netcompose read the rows
                sneaked.append(private_ovs.vsctl("add-port", bridge, intruder, "--", "set", "interface", intruder,
                                                 "type=internal"))
            return commit(txn)
        monkeypatch.setattr(ovs.db.idl.Transaction, "commit_block", racing_commit)
        project.down()
        monkeypatch.undo()
        assert sneaked and private_ovs.vsctl("list-ports", bridge).split() == [intruder]
        assert not project.plan(down=True).plan     # the bridge stays while someone else uses it
        private_ovs.vsctl("del-port", bridge, intruder)
        project.down()
        assert bridge not in private_ovs.vsctl("list-br").split()
    finally:
        private_ovs.vsctl("--if-exists", "del-br", bridge)


@pytest.mark.skipif(os.path.exists("/sys/module/openvswitch"), reason="the kernel datapath works here")
def test_kernel_datapath_missing_fails_with_what_ovs_rows_show(topo, project_name, private_ovs, blocks):
    from netcompose.errors import ApplyError
    bridge = f"{project_name}-br"
    project = topo(blocks(ovs_topo_text(project_name, "system")), ovsdb=private_ovs.remote)
    try:
        with pytest.raises(ApplyError) as failure:
            project.up()
        message = str(failure.value)
        assert f"OVS bridge {bridge}: ovs-vswitchd could not open its kernel datapath" in message, message
        assert "netdev" in message and "rolled back: the host is as it was before" in message, message
        assert bridge not in private_ovs.vsctl("list-br").split()
        assert not host_snapshot(project_name)["links"] and not host_snapshot(project_name)["netns"]
    finally:
        private_ovs.vsctl("--if-exists", "del-br", bridge)


@needs_root
def test_a_file_where_a_namespace_goes_is_removed_only_when_it_is_our_placeholder(topo, project_name, blocks):
    """A create that died before its mount leaves its file, holding the namespace's mark;
    any other file at that path is someone else's."""
    from netcompose import names
    path = Path("/run/netns") / f"{project_name}-web"
    project = topo(blocks("networks: {n: {subnet: 10.67.9.0/24}}\ncontainers: {web: {networks: [n]}}\n"))
    path.write_text("someone's notes\n")
    try:
        with pytest.raises(Exception, match="did not make"):
            project.up()
        assert path.read_text() == "someone's notes\n"
    finally:
        path.unlink()
    path.write_text(names.alias(project_name, "ns", "web"))   # what a crashed create leaves
    project.up()
    assert not project.plan().plan
    project.down()


@needs_root
def test_a_create_killed_at_any_moment_leaves_no_file_or_a_marked_one(project_name):
    """kill -9 while the placeholder is being written: before, an empty file stayed at
    /run/netns/<name> that nobody could prove ours, and every later up refused it."""
    path = f"/run/netns/{project_name}-killed"
    child = os.fork()
    if child == 0:   # dies as kill -9 would, in the middle of writing the mark
        os.write = lambda fd, data: os._exit(9)
        try:
            namespaces._place_marked_file(path, "mark")
        finally:
            os._exit(0)
    _, status = os.waitpid(child, 0)
    try:
        assert os.waitstatus_to_exitcode(status) == 9
        assert not os.path.lexists(path)
    finally:
        if os.path.lexists(path):
            os.unlink(path)
    namespaces._place_marked_file(path, "mark")
    try:
        assert open(path).read() == "mark"
    finally:
        os.unlink(path)


@needs_root
def test_down_removes_folders_a_killed_run_left_empty_and_keeps_what_others_put_there(topo, project_name, blocks):
    shared = Path("/etc/netns/.netcompose") / project_name
    project = topo(blocks("networks: {n: {subnet: 10.67.10.0/24}}\ncontainers: {web: {networks: [n]}}\n"))
    project.up()
    (shared / "left-empty").mkdir()            # made, then the run was killed before its file
    project.down()
    assert not shared.exists()
    project.up()
    (shared / "kept").mkdir()
    (shared / "kept" / "notes").write_text("someone's\n")
    try:
        project.down()
        assert (shared / "kept" / "notes").read_text() == "someone's\n"
        assert sorted(p.name for p in shared.iterdir()) == ["kept"]
    finally:
        shutil.rmtree(shared, ignore_errors=True)


UPGRADE_TOPO = """
networks: {front: {}}
containers:
  web: {networks: [front], dns: [192.0.2.53]}
"""


def age_etc_netns(project_name: str) -> dict[str, str]:
    """Move the project's /etc/netns files to the folder an older netcompose used
    (/etc/netns/<project>-.etc), its links with them."""
    new, old = Path(f"/etc/netns/.netcompose/{project_name}"), Path(f"/etc/netns/{project_name}-.etc")
    os.rename(new, old)
    links = {}
    for entry in Path("/etc/netns").glob(f"{project_name}-*"):
        if entry.is_symlink():
            links[entry.name] = os.readlink(entry).replace(str(new), str(old))
            entry.unlink()
            entry.symlink_to(links[entry.name])
    try:
        os.rmdir("/etc/netns/.netcompose")
    except OSError:
        pass   # another project's folder is there
    return links


def test_a_lab_of_an_older_netcompose_is_migrated_where_its_marks_prove_it(tmp_path, project_name):
    """What an older netcompose made: /etc/netns files in <project>-.etc (their marker proves
    them ours, and the links to them) are moved on the next up and removed by down; nft
    tables and addresses it made carried no mark, so each is a conflict saying how to resolve it."""
    path = tmp_path / "topo.yaml"
    path.write_text(UPGRADE_TOPO)
    web, table = f"{project_name}-web", f"netcompose-{project_name}"
    assert cli(project_name, path, "up").returncode == 0
    address = ip("-4", "-o", "addr", "show", "dev", "eth0", ns=web).split()[3]
    bridge = next(name for name, _ in host_snapshot(project_name)["links"]
                  if ip("-o", "-4", "addr", "show", "dev", name).strip())
    gateway = ip("-4", "-o", "addr", "show", "dev", bridge).split()[3]

    # Aged: the table without its owner chain, addresses without protocol 157, the old layout.
    for command in (["nft", "flush", "chain", "inet", table, "netcompose-owner"],
                    ["nft", "delete", "chain", "inet", table, "netcompose-owner"],
                    ["ip", "-n", web, "addr", "del", address, "dev", "eth0"],
                    ["ip", "-n", web, "addr", "add", address, "dev", "eth0"],
                    ["ip", "addr", "del", gateway, "dev", bridge], ["ip", "addr", "add", gateway, "dev", bridge]):
        subprocess.run(command, check=True)
    links = age_etc_netns(project_name)
    assert links == {web: f"/etc/netns/{project_name}-.etc/{links[web].rsplit('/', 1)[1]}"}
    aged = host_snapshot(project_name)

    resolved = []
    for _ in range(4):   # one conflict at a time, each resolved by the command its message gives
        result = cli(project_name, path, "up")
        if result.returncode == 0:
            break
        one_line_conflict(result, "already exists and belongs to another tool", "no owner mark")
        assert host_snapshot(project_name) == aged
        command = result.stderr.split("`")[1]
        subprocess.run(command.split(), check=True)
        resolved.append(command)
        aged = host_snapshot(project_name)
    assert sorted(resolved) == sorted([f"nft delete table inet {table}", f"ip addr del {gateway} dev {bridge}",
                                       f"ip -n {web} addr del {address} dev eth0"]), resolved
    assert result.returncode == 0, result.stderr
    assert os.readlink(f"/etc/netns/{web}") == links[web].replace(f"{project_name}-.etc", f".netcompose/{project_name}")
    assert not os.path.lexists(f"/etc/netns/{project_name}-.etc")
    assert "nameserver 192.0.2.53" in subprocess.run(["ip", "netns", "exec", web, "cat", "/etc/resolv.conf"],
                                                      capture_output=True, text=True, check=True).stdout
    assert cli(project_name, path, "plan", "--detailed-exitcode").returncode == 0

    # down removes the old layout too (proven ours); the rest went with the links.
    age_etc_netns(project_name)
    assert cli(project_name, path, "down").returncode == 0
    assert host_snapshot(project_name) == {"netns": [], "links": [], "nft": {}, "etc": {}}

    # A folder named like the old one whose files lack the marker proves nothing: a conflict.
    foreign = Path(f"/etc/netns/{project_name}-.etc/front")
    foreign.mkdir(parents=True)
    (foreign / "hosts").write_text("127.0.0.1 localhost\n")
    os.symlink(foreign, f"/etc/netns/{web}")
    before = host_snapshot(project_name)
    one_line_conflict(cli(project_name, path, "up"), f"/etc/netns/{web}", "another tool")
    assert host_snapshot(project_name) == before
