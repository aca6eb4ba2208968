"""netcompose's own records and logs never follow a link planted at their paths."""
from __future__ import annotations

from pathlib import Path

import pytest

from netcompose import statefiles
from netcompose.logwriter import open_log

from .conftest import needs_root


@pytest.fixture
def ours(tmp_path):
    """A folder laid out as /run/netcompose/<project>, and a file outside it."""
    project = tmp_path / "run" / "netcompose" / "p"
    project.mkdir(parents=True)
    outside = tmp_path / "outside.txt"
    outside.write_text("not netcompose's\n")
    return project, outside


def test_reads_see_nothing_through_a_link(ours):
    project, outside = ours
    (project / "applied.json").symlink_to(outside)
    assert statefiles.read_bytes(str(project / "applied.json")) is None
    assert statefiles.read_json(str(project / "applied.json")) is None


def test_a_write_replaces_a_planted_link_and_never_writes_through_it(ours):
    project, outside = ours
    (project / "journal.json").symlink_to(outside)
    statefiles.write_json(str(project / "journal.json"), {"creates": []}, sync=True)
    assert outside.read_text() == "not netcompose's\n"
    assert not (project / "journal.json").is_symlink()
    assert statefiles.read_json(str(project / "journal.json")) == {"creates": []}
    assert [p.name for p in project.iterdir()] == ["journal.json"]   # no temporary copy left


def test_a_linked_folder_is_refused(ours):
    project, outside = ours
    elsewhere = outside.parent / "elsewhere"
    elsewhere.mkdir()
    (project / "processes").symlink_to(elsewhere)
    with pytest.raises(OSError, match="not a folder of netcompose's"):
        statefiles.write_json(str(project / "processes" / "web.json"), {})
    assert statefiles.names_in(str(project / "processes")) == []
    assert statefiles.read_json(str(project / "processes" / "web.json")) is None
    assert list(elsewhere.iterdir()) == []


def test_a_log_is_never_appended_through_a_link(ours):
    project, outside = ours
    (project / "web.log").symlink_to(outside)
    with pytest.raises(OSError):
        open_log(str(project / "web.log"))
    assert outside.read_text() == "not netcompose's\n"


@needs_root
@pytest.mark.kernel
def test_up_and_down_with_links_planted_at_every_record(topo, project_name, tmp_path):
    folder = Path("/run/netcompose") / project_name
    folder.mkdir(parents=True)
    outside = tmp_path / "outside.txt"
    outside.write_text("not netcompose's\n")
    for name in ("applied.json", "journal.json", "allocations.json", "project.json"):
        (folder / name).symlink_to(outside)
    project = topo("networks: {n: {subnet: 10.68.3.0/24}}\ncontainers: {web: {networks: [n]}}\n")
    project.up()
    assert not project.plan().plan
    assert not (folder / "applied.json").is_symlink() and not (folder / "allocations.json").is_symlink()
    project.down()
    assert outside.read_text() == "not netcompose's\n"


def test_exec_records_never_follow_a_link(ours, monkeypatch):
    from types import SimpleNamespace

    from netcompose.drivers import execs
    project, outside = ours
    monkeypatch.setattr(execs, "STATE_ROOT", str(project.parent))
    (project / "exec").mkdir()
    for name in ("web.json", "web.json.tmp"):   # the record and the old fixed temporary name
        (project / "exec" / name).symlink_to(outside)
    driver = execs.ExecDriver()
    driver.project = "p"
    create = SimpleNamespace(op="create", resource=SimpleNamespace(attrs={"ns": "p-web", "container": "web",
                                                                          "commands": []}))
    driver.apply([create])
    assert outside.read_text() == "not netcompose's\n"
    assert statefiles.read_json(str(project / "exec" / "web.json"))["container"] == "web"


def test_relay_records_and_port_records_never_follow_a_link(ours, monkeypatch):
    from netcompose import ports
    from netcompose.drivers import proxies
    project, outside = ours
    elsewhere = outside.parent / "elsewhere"
    elsewhere.mkdir()
    attrs = {"protocol": "tcp", "listen": "::1", "port": 8080}
    relay = elsewhere / "tcp-__1-8080.json"
    relay.write_text('{"pid": 1, "start": 0, "attrs": {}}')
    (project / "proxies").symlink_to(elsewhere)
    monkeypatch.setattr(proxies, "STATE_DIR", str(project.parent))
    driver = proxies.ProxiesDriver()
    driver.project = "p"
    driver._stop(attrs)
    assert relay.exists()   # not unlinked through the linked folder
    assert driver._records() == []
    (elsewhere / "applied.json").write_text('{"facts": {"ports": [["web", "10.0.0.2:80/tcp", 61000]]}}')
    (project / "applied.json").symlink_to(elsewhere / "applied.json")
    assert ports.recorded(str(project.parent)) == {}


def test_logs_never_read_through_a_link_or_a_fifo(ours, monkeypatch):
    import os

    from netcompose import logs
    from netcompose.drivers import processes
    project, outside = ours
    outside.write_text("2026-01-01T00:00:00 secret\n")
    log_root = project.parent.parent / "log" / "netcompose"
    (log_root / "p").mkdir(parents=True)
    monkeypatch.setattr(processes, "LOG_ROOT", str(log_root))
    (log_root / "p" / "web.log").symlink_to(outside)
    assert logs.history("p", "web") == []
    os.mkfifo(log_root / "p" / "web.log.1")   # would block a plain open
    (log_root / "p" / "web.log.2").write_text("2026-01-01T00:00:01 ours\n")
    assert [line.text for line in logs.history("p", "web")] == ["ours"]
    followed = logs._Followed("web", str(log_root / "p" / "web.log"))
    assert followed.read() == []


def test_forgetting_a_project_never_removes_through_a_link(ours, monkeypatch):
    from netcompose import engine, workload
    from netcompose.drivers import processes
    project, outside = ours
    elsewhere = outside.parent / "elsewhere"
    (elsewhere / "p" / "sub").mkdir(parents=True)
    (elsewhere / "p" / "keep").write_text("not netcompose's\n")
    (elsewhere / "p" / "lock").write_text("")
    # The state folder swapped for a link after the lock was taken: nothing through it goes.
    project.rmdir()
    project.symlink_to(elsewhere / "p")
    lock = engine.Lock.__new__(engine.Lock)
    lock.path = str(project / "lock")
    lock.remove_folder()
    # The log root a link: the project's logs are not looked for through it.
    log_root = outside.parent / "log" / "netcompose"
    log_root.parent.mkdir()
    log_root.symlink_to(elsewhere)
    monkeypatch.setattr(processes, "LOG_ROOT", str(log_root))
    workload.forget("p")
    (elsewhere / "p" / "web.log").write_text("not netcompose's\n")
    processes.remove_logs("p", "web")
    assert (elsewhere / "p" / "web.log").exists()
    assert (elsewhere / "p" / "keep").read_text() == "not netcompose's\n" and (elsewhere / "p" / "sub").is_dir()


@pytest.mark.parametrize("attrs", [
    {"protocol": "tcp", "listen": "::1", "port": 8080, "target": "10.0.0.2", "target_port": 80, "weight": 1},
    {"protocol": "tcp", "listen": "::1", "port": "8080", "target": "10.0.0.2", "target_port": 80},
    {"protocol": "tcp"},
    ["tcp", "::1", 8080],
])
def test_a_malformed_relay_record_is_no_traceback(ours, monkeypatch, attrs):
    """A record whose attrs this version did not write (unexpected or missing keys, wrong
    types) never becomes a relay of what was never asked for: while its process runs with our
    mark it is ours without a target, so `up` replaces it and `down` stops it; once the process
    is gone it is nothing."""
    import json
    import subprocess

    from netcompose import resources as r
    from netcompose.drivers import Scope, proxies, processes
    from netcompose.plan import make_plan
    project, _ = ours
    (project / "proxies").mkdir()
    monkeypatch.setattr(proxies, "STATE_DIR", str(project.parent))
    relay = subprocess.Popen(["sleep", "60"], env={proxies.MARK: "p/tcp-__1-8080"}, start_new_session=True)
    try:
        record = {"pid": relay.pid, "start": processes.stat(relay.pid)[2], "attrs": attrs}
        (project / "proxies" / "tcp-__1-8080.json").write_text(json.dumps(record))
        driver = proxies.ProxiesDriver()
        [seen] = driver.observe(Scope("p"))
        assert seen.key == "proxy:tcp/[::1]:8080" and seen.owner == "p" and seen.attrs["target"] == ""
        wanted = r.port_proxy("::1", 8080, "tcp", "10.0.0.2", 80)
        assert [a.op for a in make_plan({wanted.key: wanted}, {seen.key: seen}, "p").actions] == ["delete", "create"]
        down = make_plan({}, {seen.key: seen}, "p").actions
        assert not driver.apply(down).errors
        assert not processes.alive(relay.pid, record["start"])   # stopped: it carried our mark
        assert driver.observe(Scope("p")) == [] and not (project / "proxies" / "tcp-__1-8080.json").exists()
        (project / "proxies" / "tcp-__1-8080.json").write_text(json.dumps(record))   # its process is gone
        assert driver.observe(Scope("p")) == []
    finally:
        relay.kill()
        relay.wait()


def test_the_validation_memo_never_follows_a_link_nor_trusts_a_shared_folder(tmp_path, monkeypatch):
    """The memo's folders under /var/cache/netcompose are made and entered without following
    a link planted in their place; a folder others may write is not used either."""
    import os

    from netcompose.spec import memo
    from netcompose.spec.loader import parse_yaml
    cache = tmp_path / "cache"
    cache.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    monkeypatch.setattr(memo, "CACHE_DIR", str(cache / "netcompose" / "validated"))
    text = "networks: {a: {}}\n"
    doc = parse_yaml(text, str(tmp_path / "topo.yaml"), {})
    records = memo.Record(networks={})

    def remembered() -> bool:
        """Stores the records as a run does; True when they were found without validating."""
        validated: list = []
        assert memo.validated(doc, "p", lambda data: validated.append(data) or records, text)[0] == records
        return not validated

    (cache / "netcompose").symlink_to(outside)            # the top folder
    assert not remembered() and not remembered() and memo.by_text(text, doc.file, "p") is None
    assert list(outside.iterdir()) == []
    (cache / "netcompose").unlink()
    (cache / "netcompose").mkdir()
    (cache / "netcompose" / "validated").symlink_to(outside)   # the folder below it
    assert not remembered() and not remembered() and memo.by_text(text, doc.file, "p") is None
    assert list(outside.iterdir()) == []

    (cache / "netcompose" / "validated").unlink()
    assert not remembered() and remembered()               # the real thing works
    assert memo.by_text(text, doc.file, "p")[0] == records
    os.chmod(cache / "netcompose" / "validated", 0o777)   # others may write: not trusted
    assert not remembered() and memo.by_text(text, doc.file, "p") is None


def test_the_record_of_an_apply_is_read_up_to_its_first_line_unless_entries_are_needed(tmp_path):
    """A run whose file is unchanged reads only the first line of applied.json (the source, the
    ports, where tables and qdiscs are); the entries after it are parsed by an edit.  The file
    stays one JSON object (other projects read its ports); an unreadable or older one is no
    record, which costs a full observation and nothing else."""
    import json
    from netcompose.compile import Desired
    from netcompose.engine import AppliedState
    from netcompose.spec import load
    from netcompose.spec.resolve import resolve
    path = tmp_path / "t.yaml"
    path.write_text("networks: {n: {subnet: 10.1.0.0/24}}\n"
                    "containers:\n  a: {networks: [n], firewall: {ingress: [{from: any}]}}\n  b: {networks: [n]}\n")
    spec = load(path, "p")
    desired = Desired(resolve(spec.topology, spec.doc, "p"))
    everything = desired.complete()
    record = AppliedState("p")
    record.path = str(tmp_path / "applied.json")
    record.write(desired, {}, "source-1")
    whole = json.loads(Path(record.path).read_text())
    assert whole["facts"] == {"ports": []} and set(whole["units"]) == {"a", "b"}
    head = AppliedState("p")
    head.path = record.path
    assert head.read() == {"format": AppliedState.FORMAT, "source": "source-1", "facts": {"ports": []},
                           "held": {"tables": ["", "p-a"], "qdiscs": []}, "keys": len(everything)}
    assert set(head.entries()) == set(everything) and head.units()["a"][0] == desired.units["a"].digest
    first, _, rest = Path(record.path).read_text().partition("\n")
    Path(record.path).write_text(first + "\n" + rest[: len(rest) // 2])   # entries cut short
    cut = AppliedState("p")
    cut.path = record.path
    assert cut.read()["source"] == "source-1" and cut.entries() == {} and cut.units() == {}
    Path(record.path).write_text(json.dumps({**whole, "format": 5}))   # the layout of an older version
    older = AppliedState("p")
    older.path = record.path
    assert older.read() == {} and older.entries() == {}
