"""A corpus of broken stack files, generated here, through every entry point that reads one.

Each case is a stack file written from a table of mutations (every integer field too large,
negative and not a number; a newline in every string field; min above max; typos; unknown
keys at any depth; duplicate keys; aliases; documents that are not mappings; keys that are
not text; bytes that are not UTF-8; dates; bad images; reserved names; ...). Each goes
through `validate`, `render` and `preview` (``main(argv)``, in-process) and through the
Pulumi program under the mock engine (``run_stack`` with the file), and each must end the
same way: a non-zero exit (ConfigError for the program), the same lines everywhere, every
line naming the file and a key (exactly the keys the case expects), no traceback or pydantic
text, and a bounded output.
"""

from __future__ import annotations

import re
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import pytest
import yaml
from pydantic import BaseModel

from components.offline_preview import run_stack
from scaling.cli import main
from scaling.issues import MAX_REPORTED, ConfigError
from scaling.stackconfig import SECTIONS, parse
from scaling.stackyaml import MAX_BYTES, MAX_DEPTH

FORBIDDEN = ("Traceback", 'File "', "errors.pydantic.dev", "validation error for", "[type=")
MAX_OUTPUT = 16 * 1024
MAX_LINE = 600


@dataclass(frozen=True)
class Case:
    id: str
    content: bytes
    keys: frozenset[str]  # exactly the keys reported
    stack: str = "growth"
    absent: tuple[str, ...] = ()  # text that must not be echoed (secrets, the bomb)


def _config(stack: str = "growth", **values: Any) -> dict[str, Any]:
    return {"config": {"sikka:phase": stack.split("-")[0], **values}}


def _yaml(document: Any) -> bytes:
    return yaml.safe_dump(document, sort_keys=False, allow_unicode=True, width=10**6).encode()


def case(id: str, document: Any, *keys: str, stack: str = "growth", **kw: Any) -> Case:
    content = document if isinstance(document, bytes) else _yaml(document)
    return Case(id, content, frozenset(keys), stack, **kw)


def _nested(path: tuple[str, ...], value: Any) -> dict[str, Any]:
    """``("postgres", "memoryMb"), 5`` → ``{"sikka:postgres": {"memoryMb": 5}}``."""
    inner: Any = value
    for part in reversed(path[1:]):
        inner = {part: inner}
    return {f"sikka:{path[0]}": inner}


# --- generated from the model: every integer and every string field ----------------------


def _leaves(model: type[BaseModel], prefix: tuple[str, ...]) -> Iterator[tuple[tuple, Any]]:
    for name, info in model.model_fields.items():
        key = (*prefix, info.alias or name)
        annotation = info.annotation
        options = (
            get_args(annotation) if get_origin(annotation) in (Union, type(int | None)) else ()
        )
        inner = [t for t in options if t is not type(None)] or [annotation]
        if len(inner) == 1 and isinstance(inner[0], type) and issubclass(inner[0], BaseModel):
            yield from _leaves(inner[0], key)
        else:
            yield key, inner[0] if len(inner) == 1 else annotation


LEAVES = [leaf for section, model in SECTIONS.items() for leaf in _leaves(model, (section,))]
INT_FIELDS = [path for path, kind in LEAVES if kind is int]
BOOL_FIELDS = [path for path, kind in LEAVES if kind is bool]
# Strings, enums (Literal) and the subnet: all spelt as text in a stack file.
TEXT_FIELDS = [
    path
    for path, kind in LEAVES
    if kind is str or get_origin(kind) is Literal or path[-1] == "subnet"
]
GROWTH = parse({"sikka:phase": "growth"}, stack="growth")
SAMPLES = {
    "namespace": "sikka-x",
    "storageClass": "fast",
    "network": "net",
    "subnet": "10.9.0.0/24",
}


def _sample(path: tuple[str, ...]) -> str:
    value: Any = GROWTH
    for part in path:
        fields = {f.alias or n: n for n, f in type(value).model_fields.items()}
        value = getattr(value, fields[part])
    return str(value) if value is not None else SAMPLES[path[-1]]


def generated() -> Iterator[Case]:
    for path in INT_FIELDS:
        dotted = "sikka:" + ".".join(path)
        for label, value in (("huge", 10**30), ("negative", -1), ("text", "many")):
            yield case(f"{label}-{'.'.join(path)}", _config(**_nested(path, value)), dotted)
    for path in TEXT_FIELDS:
        dotted = "sikka:" + ".".join(path)
        injected = _sample(path) + "\nadmin_users = attacker"
        yield case(f"newline-{'.'.join(path)}", _config(**_nested(path, injected)), dotted)
    for path in BOOL_FIELDS:
        dotted = "sikka:" + ".".join(path)
        yield case(f"yes-{'.'.join(path)}", _config(**_nested(path, "yes")), dotted)


# --- written by hand: the rest of the table ----------------------------------------------

BOMB = (
    b'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    b"b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n"
    b"d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\n"
    b"f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\ng: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]\n"
    b"h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]\ni: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]\n"
    b"config:\n  sikka:phase: growth\n  sikka:redis: *i\n"
)
GOOD = b"config:\n  sikka:phase: growth\n"


def raw(text: str) -> bytes:
    return text.encode()


HAND: list[Case] = [
    # numbers past what a host or an operator holds, and rules across keys
    case(
        "replicas-16",
        _config(**{"sikka:postgres": {"readReplicas": 16}}),
        "sikka:postgres.readReplicas",
    ),
    case(
        "shards-3000",
        _config("scale", **{"sikka:postgres": {"shards": 3000}}),
        "sikka:postgres.shards",
        stack="scale",
    ),
    case(
        "cluster-1200-nodes",
        _config(
            "scale", **{"sikka:redis": {"masters": 600, "replicasPerMaster": 1, "storageGb": 64}}
        ),
        "sikka:redis.masters",
        stack="scale",
    ),
    case(
        "memory-5TiB",
        _config(**{"sikka:postgres": {"memoryMb": 5 * 1024 * 1024}}),
        "sikka:postgres.memoryMb",
    ),
    case("port-0", _config(**{"sikka:nginx": {"port": 0}}), "sikka:nginx.port"),
    case("port-65536", _config(**{"sikka:docker": {"httpPort": 65536}}), "sikka:docker.httpPort"),
    case("float-int", _config(**{"sikka:redis": {"maxClients": 1.5}}), "sikka:redis.maxClients"),
    case("bool-int", _config(**{"sikka:redis": {"maxClients": True}}), "sikka:redis.maxClients"),
    case(
        "inf",
        raw("config:\n  sikka:phase: growth\n  sikka:redis:\n    maxClients: .inf\n"),
        "sikka:redis.maxClients",
    ),
    case(
        "nan",
        raw("config:\n  sikka:phase: growth\n  sikka:redis:\n    maxClients: .nan\n"),
        "sikka:redis.maxClients",
    ),
    case(
        "5000-digits",
        raw("config:\n  sikka:phase: growth\n  sikka:redis:\n    maxClients: " + "9" * 5000 + "\n"),
        "sikka:redis.maxClients",
    ),
    case(
        "reserved-ge-max",
        _config(**{"sikka:postgres": {"maxConnections": 10, "superuserReservedConnections": 10}}),
        "sikka:postgres.superuserReservedConnections",
        "sikka:pooler.defaultPoolSize",
        "sikka:pooler.readPoolSize",
    ),
    case(
        "users-min-above-max",
        _config(**{"sikka:capacity": {"concurrentUsers": {"min": 9000}}}),
        "sikka:capacity.concurrentUsers.max",
    ),
    case(
        "trips-min-above-max",
        _config(**{"sikka:capacity": {"trips": {"min": 5, "max": 1}}}),
        "sikka:capacity.trips.max",
    ),
    case(
        "gateway-max-below",
        _config(**{"sikka:gateway": {"maxReplicas": 1}}),
        "sikka:gateway.maxReplicas",
    ),
    case(
        "nginx-max-below",
        _config(**{"sikka:nginx": {"replicas": 3, "maxReplicas": 2}}),
        "sikka:nginx.maxReplicas",
    ),
    case(
        "sentinels-even",
        _config(**{"sikka:redis": {"sentinels": 4, "quorum": 5}}),
        "sikka:redis.sentinels",
        "sikka:redis.quorum",
    ),
    case(
        "citus-on-docker", _config(**{"sikka:postgres": {"mode": "citus"}}), "sikka:postgres.mode"
    ),
    case(
        "autoscaling-on-docker",
        _config(**{"sikka:autoscaling": {"enabled": True}}),
        "sikka:autoscaling.enabled",
    ),
    # typos: namespaces, keys, nested keys, the project namespace, top-level keys
    case("ns-sika", _config(**{"sika:postgres": {"readReplicas": 3}}), "sika:postgres"),
    case("ns-Sikka", _config(**{"Sikka:redis": {"replicas": 3}}), "Sikka:redis"),
    case("ns-skika", _config(**{"skika:nginx": {}}), "skika:nginx"),
    case("ns-sikk", _config(**{"sikk:phase": "growth"}), "sikk:phase"),
    case("ns-project", _config(**{"sikka-scaling:phase": "growth"}), "sikka-scaling:phase"),
    case("ns-none", _config(**{"platform": "docker"}), "platform"),
    case("key-typo", _config(**{"sikka:postgress": {}}), "sikka:postgress"),
    case(
        "nested-typo",
        _config(**{"sikka:postgres": {"readReplica": 3}}),
        "sikka:postgres.readReplica",
    ),
    case(
        "two-deep",
        _config(**{"sikka:capacity": {"concurrentUsers": {"maximum": 9}}}),
        "sikka:capacity.concurrentUsers.maximum",
    ),
    case("top-level-typo", {"confg": {"sikka:phase": "growth"}}, "confg", "sikka:phase"),
    # types of whole sections and documents
    case("section-list", _config(**{"sikka:postgres": [1, 2]}), "sikka:postgres"),
    case("section-text", _config(**{"sikka:redis": "big"}), "sikka:redis"),
    case("span-number", _config(**{"sikka:capacity": {"trips": 5}}), "sikka:capacity.trips"),
    case("json-deep", _config(**{"sikka:postgres": "[" * 50_000}), "sikka:postgres"),
    case("document-list", raw("- config\n- sikka:phase\n"), "config"),
    case("document-text", raw("just some words\n"), "config"),
    case("document-number", raw("42\n"), "config"),
    case("config-list", raw("config:\n  - sikka:phase\n"), "config"),
    case("config-text", raw("config: growth\n"), "config"),
    case("two-documents", raw("config:\n  sikka:phase: growth\n---\nconfig: {}\n"), "config"),
    case("empty", b"", "sikka:phase"),
    case("phase-bad", _config(**{"sikka:phase": "huge"}), "sikka:phase"),
    case("phase-wrong", raw("config:\n  sikka:phase: launch\n"), "sikka:phase"),
    case("platform-bad", _config(**{"sikka:platform": "nomad"}), "sikka:platform"),
    case("protect-text", _config(**{"sikka:protectData": "no"}), "sikka:protectData"),
    case(
        "secret-plain",
        _config(**{"sikka:redisPassword": "hunter2"}),
        "sikka:redisPassword",
        absent=("hunter2",),
    ),
    # duplicate keys, aliases, merge keys, tags
    case(
        "dup-section",
        raw(
            "config:\n  sikka:phase: growth\n  sikka:postgres:\n    readReplicas: 2\n  sikka:postgres:\n    user: x\n"
        ),
        "sikka:postgres",
    ),
    case(
        "dup-nested",
        raw("config:\n  sikka:phase: growth\n  sikka:postgres:\n    user: a\n    user: b\n"),
        "sikka:postgres.user",
    ),
    case(
        "dup-config",
        raw("config:\n  sikka:phase: growth\nconfig:\n  sikka:phase: launch\n"),
        "config",
    ),
    case("alias-bomb", BOMB, "b.0", absent=("lollol",)),
    case(
        "alias",
        raw("config:\n  sikka:phase: growth\n  sikka:postgres: &p {user: x}\n  sikka:pooler: *p\n"),
        "sikka:pooler",
    ),
    case(
        "merge-key",
        raw("config:\n  sikka:phase: growth\n  sikka:postgres:\n    <<: {user: x}\n"),
        "sikka:postgres",
    ),
    case(
        "tag-timestamp",
        raw(
            "config:\n  sikka:phase: growth\n  sikka:redis:\n    maxClients: !!timestamp 2024-01-01\n"
        ),
        "sikka:redis.maxClients",
    ),
    case(
        "tag-binary",
        raw("config:\n  sikka:phase: growth\n  other:blob: !!binary aGVsbG8=\n"),
        "other:blob",
    ),
    case(
        "tag-python",
        raw("config:\n  sikka:phase: growth\n  sikka:postgres: !!python/object:os.system {}\n"),
        "sikka:postgres",
    ),
    case(
        "tag-set",
        raw("config:\n  sikka:phase: growth\n  sikka:postgres: !!set {a, b}\n"),
        "sikka:postgres",
    ),
    # keys that are not text
    case("key-int", raw("config:\n  sikka:phase: growth\n  123: x\n"), "123"),
    case("key-bool", raw("config:\n  sikka:phase: growth\n  true: x\n"), "true"),
    case("key-null", raw("config:\n  sikka:phase: growth\n  ~: x\n"), "~"),
    case("key-list", raw("config:\n  sikka:phase: growth\n  ? [a, b]\n  : x\n"), "config"),
    case(
        "key-nested-int",
        raw("config:\n  sikka:phase: growth\n  sikka:postgres:\n    1: 2\n"),
        "sikka:postgres.1",
    ),
    # bytes that are not UTF-8 text, and characters YAML refuses
    case(
        "utf8-value",
        b"config:\n  sikka:phase: growth\n  sikka:postgres:\n    user: \xff\xfe\n",
        "config",
    ),
    case("utf8-key", b"config:\n  sikka:ph\xc3ase: growth\n", "config"),
    case("utf8-truncated", b"config:\n  sikka:phase: growth\xe2\x82", "config"),
    case("utf16", "config:\n  sikka:phase: growth\n".encode("utf-16"), "config"),
    case("nul-byte", b"config:\n  sikka:phase: gro\x00wth\n", "config"),
    case("escape-char", b"config:\n  sikka:phase: gro\x1bwth\n", "config"),
    # dates: text to Pulumi (YAML 1.2), refused where a sikka: key wants something else
    case(
        "date-int",
        raw("config:\n  sikka:phase: growth\n  sikka:postgres:\n    maxConnections: 2024-01-01\n"),
        "sikka:postgres.maxConnections",
    ),
    case("date-phase", raw("config:\n  sikka:phase: 2024-01-01\n"), "sikka:phase"),
    case(
        "date-elsewhere",
        raw(
            "config:\n  sikka:phase: growth\n  aws:expires: 2024-01-01\n  sikka:redis:\n    replicas: -1\n"
        ),
        "sikka:redis.replicas",
    ),
    case(
        "datetime-user",
        raw("config:\n  sikka:phase: growth\n  sikka:postgres:\n    user: 2024-01-01T10:00:00Z\n"),
        "sikka:postgres.user",
    ),
    # images
    *(
        case(f"image-{label}", _config(**{"sikka:nginx": {"image": image}}), "sikka:nginx.image")
        for label, image in [
            ("double-colon", "nginx::1.29"),
            ("no-tag", "nginx"),
            ("latest", "nginx:latest"),
            ("upper", "NGINX:1.0"),
            ("empty-path", "ghcr.io//x:1"),
            ("leading-dash", "-nginx:1"),
            ("empty-tag", "nginx:"),
            ("short-digest", "nginx@sha256:abcdef"),
            ("space", " nginx:1.0"),
            ("long", "a" * 300 + ":1"),
            ("shell", "nginx:1;rm -rf /"),
            ("trailing-newline", "nginx:1.29\n"),
        ]
    ),
    # reserved and malformed names
    *(
        case(f"user-{name}", _config(**{"sikka:postgres": {"user": name}}), "sikka:postgres.user")
        for name in (
            "postgres",
            "replicator",
            "authenticator",
            "pg_monitor",
            "all",
            "public",
            "Sikka",
            "1abc",
            "a" * 64,
        )
    ),
    *(
        case(
            f"database-{name}",
            _config(**{"sikka:postgres": {"database": name}}),
            "sikka:postgres.database",
        )
        for name in (
            "postgres",
            "template0",
            "template1",
            "pgbouncer",
            "replication",
            "pg_x",
            "a" * 61,
        )
    ),
    case(
        "master-name-shell",
        _config(**{"sikka:redis": {"masterName": "a b; reboot"}}),
        "sikka:redis.masterName",
    ),
    case(
        "build-context-shell",
        _config(**{"sikka:gateway": {"buildContext": "$(reboot)"}}),
        "sikka:gateway.buildContext",
    ),
    case(
        "subnet-host-bits",
        _config(**{"sikka:docker": {"subnet": "10.9.0.1/24"}}),
        "sikka:docker.subnet",
    ),
    case("long-text", _config(**{"sikka:redis": {"mode": "x" * 50_000}}), "sikka:redis.mode"),
    # limits of the reader
    case("too-large", GOOD + b"# " + b"x" * MAX_BYTES + b"\n", "config"),
    case(
        "too-deep",
        raw(
            "config:\n  sikka:phase: growth\n  sikka:postgres: "
            + "[" * (MAX_DEPTH + 2)
            + "]" * (MAX_DEPTH + 2)
            + "\n"
        ),
        "sikka:postgres.0.0.0.0.0.0.0.0.0.0.0.0.0.0",
    ),
    case("deep-brackets", raw("config:\n  x: " + "[" * 60_000), "x"),
    case("syntax-tab", raw("config:\n\tsikka:phase: growth\n"), "config"),
    case("syntax-quote", raw("config:\n  sikka:phase: 'growth\n"), "sikka:phase"),
    case(
        "syntax-indent",
        raw("config:\n  sikka:phase: growth\n   sikka:platform: docker\n"),
        "config",
    ),
    case(
        "many-problems",
        _config(**{f"sikka:k{i}": 1 for i in range(2000)}),
        *(f"sikka:k{i}" for i in range(2000)),
    ),
]

CASES = [*generated(), *HAND]
# Cases the reader alone decides, run again through PyYAML's pure-Python parser.
PARITY = {
    "document-list",
    "document-text",
    "two-documents",
    "dup-nested",
    "dup-config",
    "alias-bomb",
    "alias",
    "merge-key",
    "tag-binary",
    "key-int",
    "key-list",
    "utf8-value",
    "nul-byte",
    "escape-char",
    "too-large",
    "too-deep",
    "syntax-tab",
    "syntax-indent",
    "date-elsewhere",
}


def _check_lines(text: str, source: str, keys: frozenset[str]) -> list[str]:
    """Every line of a report names the file and a key; returns the lines."""
    assert len(text) < MAX_OUTPUT, len(text)
    for forbidden in FORBIDDEN:
        assert forbidden not in text
    lines = text.splitlines()
    assert re.fullmatch(
        rf"\d+ problem\(s\) in {re.escape(source)}; nothing was registered:", lines[0]
    )
    reported = set()
    for line in lines[1:]:
        assert len(line) <= MAX_LINE, line
        assert line.startswith(f"  {source}: "), line
        key, sep, message = line[len(source) + 4 :].partition(": ")
        assert key and sep and message, line
        reported.add(key)
    if len(keys) > MAX_REPORTED:
        assert len(lines) == 1 + MAX_REPORTED + 1
        assert lines[-1].endswith(f"{len(keys) - MAX_REPORTED} more problem(s) not shown")
        assert reported - {"config"} <= keys
    else:
        assert reported == keys
    return lines


def _stack_file(tmp_path: Path, c: Case) -> Path:
    path = tmp_path / f"Pulumi.{c.stack}.yaml"
    path.write_bytes(c.content)
    return path


Entry = Callable[[Path, Case, Path], str]


def _cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    status = main(argv)
    out, err = capsys.readouterr()
    assert status == 1
    assert out == ""  # nothing rendered, nothing listed
    return err


@pytest.mark.parametrize("c", CASES, ids=lambda c: c.id)
def test_broken_stack_file_reports_one_line_per_problem(
    c: Case, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _stack_file(tmp_path, c)
    source = path.name
    validate = _cli(["validate", str(path)], capsys)
    lines = _check_lines(validate, source, c.keys)
    for forbidden in c.absent:
        assert forbidden not in validate

    out = tmp_path / "out"
    assert _cli(["render", str(path), "--out", str(out)], capsys) == validate
    assert not out.exists()
    assert _cli(["preview", str(path)], capsys) == validate

    with pytest.raises(ConfigError) as caught:
        run_stack(c.stack, stack_file=path)
    assert getattr(caught.value, "registered", []) == []  # before any resource
    assert str(caught.value).splitlines() == lines


def test_the_corpus_is_large_and_covers_every_field() -> None:
    assert len(CASES) >= 100
    assert len({c.id for c in CASES}) == len(CASES)
    # Every integer field of every section is bounded above, and every text field refuses
    # a line break: both come from the model, so a new field is covered when it is added.
    assert len(INT_FIELDS) >= 40 and len(TEXT_FIELDS) >= 15


def test_the_alias_bomb_is_refused_before_it_expands(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "Pulumi.growth.yaml"
    path.write_bytes(BOMB)
    assert len(BOMB) < 600  # 9**9 "lol"s once expanded, ~1.5 GB as Python objects
    tracemalloc.start()
    try:
        status = main(["validate", str(path)])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    err = capsys.readouterr().err
    assert status == 1
    assert err.splitlines()[1] == (
        "  Pulumi.growth.yaml: b.0: line 2, column 8: YAML aliases (*a) are not allowed in a "
        "stack file; write the value out"
    )
    assert len(err) < 300
    assert peak < 5 * 1024 * 1024, peak


def test_the_largest_stack_file_read_stays_small(tmp_path: Path) -> None:
    """The worst a file within the size limit can do: tens of thousands of list items."""
    items = (MAX_BYTES - 64) // 2
    path = tmp_path / "Pulumi.growth.yaml"
    path.write_bytes(GOOD + b"  other:list: [" + b"1," * items + b"]\n")
    assert path.stat().st_size <= MAX_BYTES
    tracemalloc.start()
    try:
        from scaling.stackconfig import load_stack_file

        spec = load_stack_file(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert spec.phase.value == "growth"  # other namespaces' values are not ours to refuse
    assert peak < 32 * 1024 * 1024, peak


@pytest.mark.parametrize("c", [c for c in CASES if c.id in PARITY], ids=lambda c: c.id)
def test_the_pure_python_reader_reports_the_same(c: Case, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without LibYAML (PyYAML built without it) the reader finds the same problems."""
    from scaling import stackyaml

    def problems() -> list[str]:
        try:
            return [str(i) for i in stackyaml.parse_document(c.content).issues]
        except ConfigError as error:
            return [i.key for i in error.issues]

    fast = problems()
    monkeypatch.setattr(stackyaml, "_Loader", stackyaml._PyLoader)
    assert problems() == fast


# --- the CLI's misuse: one line, a non-zero exit, never a traceback -----------------------


def _one_line_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    status = main(argv)
    out, err = capsys.readouterr()
    assert status != 0
    assert out == ""
    for forbidden in FORBIDDEN:
        assert forbidden not in err
    lines = err.splitlines()
    assert len(lines) == 1, err
    return status, lines[0]


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["validate", "{tmp}/Pulumi.gone.yaml"], "{tmp}/Pulumi.gone.yaml: no such file"),
        (["validate", "foo.yaml"], "foo.yaml: a stack file is named Pulumi.<stack>.yaml"),
        (["validate", "{tmp}"], "a stack file is named Pulumi.<stack>.yaml"),
        (["validate", "{tmp}/Pulumi.dir.yaml"], "{tmp}/Pulumi.dir.yaml: not a file"),
        (["validate", "staging"], "no Pulumi.staging.yaml here or in"),
        (["validate", "a b"], "'a b' is not a stack name"),
        (["render", "staging", "--out", "{tmp}/out"], "no Pulumi.staging.yaml"),
        (
            ["render", "launch", "--out", "{tmp}/file"],
            "render: --out {tmp}/file: is a file, not a folder",
        ),
        (
            ["render", "launch", "--out", "{tmp}/file/sub"],
            "cannot write {tmp}/file/sub: Not a directory",
        ),
        (
            ["render", "launch", "--out", "/proc/sikka-render"],
            "render: --out /proc/sikka-render: cannot write",
        ),
        (["render", "launch"], "sikka-scaling render: Missing option '--out'."),
        (["preview", "staging"], "no Pulumi.staging.yaml"),
        (["preview", "launch", "--bogus"], "sikka-scaling preview: No such option: --bogus"),
        (["validate"], "sikka-scaling validate: Missing argument 'stack'."),
        (["frobnicate"], "sikka-scaling: No such command 'frobnicate'."),
        (["local", "status", "foo.yaml"], "foo.yaml: a stack file is named Pulumi.<stack>.yaml"),
        (["local", "down", "foo.yaml"], "foo.yaml: a stack file is named Pulumi.<stack>.yaml"),
        (
            ["local", "down", "{tmp}/Pulumi.gone.yaml", "--state-dir", "{tmp}/state"],
            "no local run of 'gone'",
        ),
        (["local", "up", "{tmp}/Pulumi.gone.yaml"], "{tmp}/Pulumi.gone.yaml: no such file"),
        (["local", "up", "launch", "--set", "pooler=1", "--set", "pooler.x=2"], "pooler was set"),
        (
            ["local", "up", "launch", "--set", "pooler.enabled=*x"],
            "YAML aliases (*x) are not allowed",
        ),
        (["local", "up", "launch", "--set", "nonsense"], "expected section.key=value"),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else None,
)
def test_cli_misuse_is_one_line(
    argv: list[str], expected: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "file").write_text("not a folder")
    (tmp_path / "Pulumi.dir.yaml").mkdir()
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    _, line = _one_line_error(argv, capsys)
    assert expected.replace("{tmp}", str(tmp_path)) in line


def test_local_status_of_a_stack_never_started_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["local", "status", "launch", "--state-dir", str(tmp_path)]) == 1
    out, _ = capsys.readouterr()
    assert out.strip() == f"launch: not running (no state in {tmp_path})"


# --- one file for every command ------------------------------------------------------------


def test_preview_evaluates_the_given_file_not_the_projects(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A launch stack file elsewhere that moves launch to Kubernetes: `preview` must show
    Kubernetes objects (the project's Pulumi.launch.yaml is on Docker)."""
    import json

    path = tmp_path / "Pulumi.launch.yaml"
    path.write_text("config:\n  sikka:phase: launch\n  sikka:platform: kubernetes\n")
    assert main(["validate", str(path)]) == 0
    assert "launch phase on kubernetes" in capsys.readouterr().out
    assert main(["preview", str(path), "--json"]) == 0
    types = {r["type"] for r in json.loads(capsys.readouterr().out)["resources"]}
    assert "kubernetes:apps/v1:Deployment" in types
    assert not any(t.startswith("docker:") for t in types)


def test_the_program_reads_the_given_file_even_without_sikka_keys(tmp_path: Path) -> None:
    """A file holding only a misspelt namespace: the program must report that file's typo,
    not fall back to the project's stack file (which is valid)."""
    path = tmp_path / "Pulumi.launch.yaml"
    path.write_text("config:\n  sika:phase: launch\n")
    with pytest.raises(ConfigError) as caught:
        run_stack("launch", stack_file=path)
    assert [f"{i.key}: {i.message}" for i in caught.value.issues] == [
        "sika:phase: unknown namespace 'sika'; did you mean 'sikka:phase'?",
        "sikka:phase: is required (launch, growth or scale)",
    ]


# --- and what stays accepted: the bounds are not tighter than reality ---------------------

DIGEST = "sha256:" + "0123456789abcdef" * 4


@pytest.mark.parametrize(
    "image",
    [
        "nginx:1.29.3",
        "docker.io/library/nginx:1.29",
        "localhost:5000/team/gateway:1",
        "[::1]:5000/gateway:1",
        "Registry.Example.com:443/x_y.z/a__b/c--d:v1.0-rc_2",
        f"ghcr.io/owner/name@{DIGEST}",
        f"ghcr.io/owner/name:1.0@{DIGEST}",
        "ghcr.io/owner/name@sha512:" + "ab" * 64,
        "a" * 250 + ":" + "t" * 128,
    ],
)
def test_valid_image_references_are_accepted(image: str) -> None:
    spec = parse({"sikka:phase": "growth", "sikka:nginx": {"image": image}}, stack="growth")
    assert spec.nginx.image == image


def test_values_at_the_bounds_are_accepted() -> None:
    spec = parse(
        {
            "sikka:phase": "growth",
            "sikka:postgres": {
                "memoryMb": 4 * 1024 * 1024,
                "storageGb": 64 * 1024,
                "readReplicas": 15,
                "user": "app_" + "u" * 59,
                "database": "d" * 60,
            },
            "sikka:redis": {"maxClients": 1_048_544, "replicas": 15, "minReplicasToWrite": 15},
            "sikka:docker": {"httpPort": 65535},
            "sikka:capacity": {"concurrentUsers": {"min": 5000, "max": 5000}},
        },
        stack="growth",
    )
    assert spec.postgres.memory_mb == 4 * 1024 * 1024
    assert spec.redis.max_clients == 1_048_544


def test_what_pulumi_reads_as_text_stays_text(tmp_path: Path) -> None:
    """YAML 1.2 (Pulumi's reading): dates and yes/no are text; other namespaces' values are
    theirs; an anchor without an alias, `secure:` values and a BOM are fine."""
    from scaling.stackconfig import read_stack_document

    path = tmp_path / "Pulumi.growth.yaml"
    path.write_bytes(
        "\ufeffconfig:\n  sikka:phase: growth\n  aws:expires: 2024-01-01\n  aws:flag: yes\n"
        "  aws:octal: 0o17\n  aws:hex: 0x1F\n  other:anchored: &a {x: 1}\n"
        "  sikka:redisPassword:\n    secure: v1:abc\n  kubernetes:context: kind\n"
        "  docker:host: unix:///var/run/docker.sock\n  kafka:brokers: b1\n".encode()
    )
    document = read_stack_document(path)
    assert document.issues == []
    assert document.config["aws:expires"] == "2024-01-01"
    assert document.config["aws:flag"] == "yes"
    assert (document.config["aws:octal"], document.config["aws:hex"]) == (15, 31)
    assert document.secret_keys == {"sikka:redisPassword"}
    assert main(["validate", str(path)]) == 0


def test_an_unexpected_error_is_one_line_too(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import scaling.cli

    def explode(path: Path) -> None:
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(scaling.cli, "load_stack_file", explode)
    monkeypatch.delenv("SIKKA_DEBUG", raising=False)
    status, line = _one_line_error(["validate", "launch"], capsys)
    assert status == 70
    assert line == "sikka-scaling: unexpected error: RuntimeError: boom\\nsecond line"
