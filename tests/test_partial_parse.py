"""An edited file parses only its new parts (spec/loader.py parse_reusing): whatever the
text, the data equals a whole parse's, and so does the file:line:col of every key and value."""
from __future__ import annotations

import marshal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netcompose.errors import SpecError
from netcompose.spec.loader import PartlyParsedDocument, _names_line, parse_reusing, parse_yaml

FILE = "topo.yaml"

odd_names = ["web", "db.1", "a-b", "x_y", "1a", "007", "true", "null", "on", "c1 ", "é"]
names = st.integers(0, 300).flatmap(lambda i: st.just(f"c{i}") if i < 290 else st.sampled_from(odd_names))
scalars = st.sampled_from(["net1", "lan", "10.0.0.5/24", "'quoted'", '"dq"', "yes", "8080:80", "1.5", "", "~", "a b",
                           "'multi\n    line'", "x # comment", "[a,\n      b]", "{}", "[]", "-1"])
flow = st.builds(lambda keys, values: "{" + ", ".join(f"{k}: {v}" for k, v in zip(keys, values)) + "}",
                 st.lists(st.sampled_from(["networks", "command", "aliases", "networks"]), max_size=3),
                 st.lists(scalars, min_size=3, max_size=3))


@st.composite
def entry(draw, indent: int) -> str:
    name = draw(names)
    pad = " " * indent
    style = draw(st.sampled_from(["flow"] * 8 + ["block"] * 6 + ["list"] * 2 + ["scalar", "odd"]))
    if style == "flow":
        body = f" {draw(flow)}\n"
    elif style == "block":
        body = "\n" + "".join(f"{pad}  {key}: {draw(scalars)}\n"
                              for key in draw(st.lists(st.sampled_from(["networks", "command", "ports"]), max_size=3)))
    elif style == "list":
        body = "\n" + "".join(f"{pad}  - {draw(scalars)}\n" for _ in range(draw(st.integers(0, 3))))
    elif style == "scalar":
        body = f" {draw(scalars)}\n"
    else:   # what may cross into the next part, or is not YAML at all
        body = draw(st.sampled_from([" {networks: [a,\n", " 'open\n", " &anchor {}\n", " *anchor\n", " |\n    text\n",
                                     "\n\tnetworks: []\n", " {}\n  # a comment at the entries' indentation\n",
                                     " {}\n# a comment at the top level\n\n", " x\n " + pad + "continued\n",
                                     " {}\n" + pad[:-1] + "misplaced: 1\n" if indent > 1 else " {}\n"]))
    return f"{pad}{name}:{body}"


@st.composite
def topology(draw) -> str:
    text = draw(st.sampled_from(["", "", "", "# a topology\n\n"] * 2 + ["---\n"]))
    keys = draw(st.lists(st.sampled_from(["name", "networks", "containers", "links", "vars"]), min_size=1, max_size=4,
                         unique=True))
    for key in keys + draw(st.sampled_from([[]] * 9 + [keys[:1]])):   # now and then, a key twice
        if key in ("networks", "containers") and draw(st.booleans()):
            indent = draw(st.sampled_from([1, 2, 4]))
            text += f"{key}:{draw(st.sampled_from(['', '  ', ' # entries']))}\n"
            text += "".join(draw(entry(indent)) for _ in range(draw(st.integers(0, 8))))
        elif key == "links":
            text += "links:\n  - [a, b]\n  - {a: x,\n     b: y}\n"
        else:
            text += f"{key}: {draw(scalars)}\n"
    return text


@st.composite
def edited(draw, text: str) -> str:
    """The text with a line or an entry added, removed or changed, anywhere."""
    lines = text.splitlines(keepends=True)
    at = draw(st.integers(0, len(lines)))
    change = draw(st.sampled_from(["add entry", "add line", "remove", "change"]))
    if change == "add entry":
        lines.insert(at, draw(entry(2)))
    elif change == "add line":
        lines.insert(at, draw(st.sampled_from(["  added: {networks: [lan]}\n", "\n", "# note\n", "x: 1\n", "  - 1\n"])))
    elif lines:
        del lines[min(at, len(lines) - 1)]
        if change == "change":
            lines.insert(min(at, len(lines)), draw(entry(2)))
    return "".join(lines)


def same_as_whole(text: str, known: dict) -> bytes | None:
    """parse_reusing gives what parse_yaml gives: data, every position, or the same error;
    returns what it keeps for the next parse."""
    try:
        whole = parse_yaml(text, FILE, None)
    except SpecError as exc:
        with pytest.raises(SpecError) as error:
            parse_reusing(text, FILE, None, lambda: dict(known))
        assert str(error.value) == str(exc)
        return None
    doc = parse_reusing(text, FILE, None, lambda: dict(known))
    assert doc.data == whole.data and repr(doc.data) == repr(whole.data)   # the same order too
    for path in whole.values:   # each from the path's part, shifted, before any whole parse
        assert doc.where(path) == whole.where(path), path
    for path in whole.keys:
        assert doc.where(path, key=True) == whole.where(path, key=True), path
    assert doc.values == whole.values and doc.keys == whole.keys
    return doc.reusable


@settings(max_examples=600, deadline=None)
@given(st.data())
def test_a_text_parsed_in_parts_is_the_whole_text_parsed(data):
    text = data.draw(topology())
    first = same_as_whole(text, {})
    again = data.draw(edited(text))
    same_as_whole(again, marshal.loads(first) if first else {})


words = st.sampled_from(["lan", "net5", "web.1", "a-b", "x_y", "e5", "yes", "No", "null", "on", "1", "0x1", "-a", "a:b",
                         "'q'", "~", "a b", "é", "#c", ""])
flows = st.recursive(words, lambda inner: st.one_of(
    st.lists(inner, max_size=3).map(lambda items: "[" + ", ".join(items) + "]"),
    st.lists(st.tuples(words, inner), max_size=3).map(lambda pairs: "{" + ", ".join(f"{k}: {v}" for k, v in pairs) + "}")),
    max_leaves=6)
noise = st.lists(st.sampled_from(["{", "}", "[", "]", ",", ": ", ":", " ", "lan", "yes", "1", "#", "'", "\n"]), max_size=8)


@settings(max_examples=600, deadline=None)
@given(flows, noise, st.sampled_from(["", " ", "\n", "  \n"]), st.sampled_from(["new", "c1", "yes", "null", "Off"]))
def test_a_line_of_names_reads_as_pyyaml_reads_it(value, more, end, key):
    """The one-line parts read without PyYAML read as PyYAML reads them (or go to PyYAML)."""
    for line in (f"  {key}: {value}{end}", f"  {key}: {value}{''.join(more)}{end}", f"{key}:{''.join(more)}"):
        found = _names_line(line, key)
        if found is not None:
            doc = parse_yaml(line, FILE, None)
            assert found == (doc.data[key], len(doc.values) - 1) and list(doc.data) == [key], line
    assert _names_line("  web3: {networks: [lan, back], command: sleep}\n", "web3") == (
        {"networks": ["lan", "back"], "command": "sleep"}, 5)


def lab(n: int) -> str:
    return ("name: lab\nnetworks:\n  lan: {subnet: 10.9.0.0/16}\ncontainers:\n"
            + "".join(f"  c{i}: {{networks: [lan]}}\n" for i in range(n)) + "links:\n  - endpoints: [c1, c2]\n")


def test_an_edit_parses_only_its_new_parts():
    """Adding a container at the end or in the middle parses that line only; an edit that
    leaves the simple shape (an anchor) parses the whole text, with the same result."""
    base = parse_reusing(lab(40), FILE, None, dict)
    assert not isinstance(base, PartlyParsedDocument) and base.reusable   # nothing known: parsed whole
    known = marshal.loads(base.reusable)
    lines = lab(40).splitlines(keepends=True)
    for at in (24, 4 + 40):   # the middle of containers:, and its end
        text = "".join(lines[:at] + ["  new: {networks: [lan], command: sleep}\n"] + lines[at:])
        doc = parse_reusing(text, FILE, None, lambda: dict(known))
        assert isinstance(doc, PartlyParsedDocument) and set(doc.parts) - {("name",), ("networks", "lan")} == \
            {("containers", f"c{i}") for i in range(40)} | {("containers", "new"), ("links",)}
        assert doc.data == parse_yaml(text, FILE, None).data
        assert str(doc.where(("containers", "new", "command"))) == f"{FILE}:{at + 1}:35"
        assert str(doc.where(("links", 0, "endpoints", 1))) == f"{FILE}:{len(lines) + 1}:21"
        assert doc._parsed is None   # positions from the parts alone
        assert set(marshal.loads(doc.reusable)) == {part[1] for part in doc.parts.values()}
    anchored = lab(40).replace("[lan]}\n", "&a [lan]}\n", 1)
    assert not isinstance(parse_reusing(anchored, FILE, None, lambda: dict(known)), PartlyParsedDocument)


def test_errors_in_an_edited_file_point_at_their_line(tmp_path, monkeypatch):
    """The errors of an edit (the models', resolve's, YAML's) are where the whole parse puts them."""
    from netcompose.spec import load, memo
    from netcompose.spec.resolve import resolve
    monkeypatch.setattr(memo, "CACHE_DIR", str(tmp_path / "netcompose" / "validated"))
    path = tmp_path / "lab.yaml"
    path.write_text(lab(30))
    load(path, "tparts")
    lines = lab(30).splitlines(keepends=True)

    def error(line: str, at: int = 20) -> str:
        path.write_text("".join(lines[:at] + [line] + lines[at:]))
        with pytest.raises(SpecError) as caught:
            spec = load(path, "tparts")
            resolve(spec.topology, spec.doc, "tparts")
        return str(caught.value)
    assert error("  new: {networks: [wan]}\n").startswith(f"{path}:21:20: container 'new' uses undefined network")
    assert error("  new: {networks: [lan], mtu: 9000}\n").startswith(f"{path}:21:26: unknown key 'mtu'")
    assert error("  new: {networks: [lan}\n").startswith(f"{path}:21:23: invalid YAML")
    assert error("  new: {networks: [lan], dns: [1.2.3.4, nope]}\n", at=10).startswith(
        f"{path}:11:41: containers.new.dns.1:")
