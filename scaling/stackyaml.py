"""Reading a stack file's YAML: only what a stack file needs, each problem with its key.

A Pulumi stack file is a small mapping (``config:`` and a few keys Pulumi writes) of config
keys to plain values. This reader holds a file to that, so that reading it stays cheap and
means what Pulumi means:

- at most :data:`MAX_BYTES` bytes, UTF-8, one document, nested at most :data:`MAX_DEPTH`;
- no aliases (``*name``): they are what lets a 500-byte file expand to gigabytes ("billion
  laughs"), and a stack file has no use for them (anchors without aliases are harmless);
- no duplicate keys (YAML forbids them; PyYAML would silently keep the last one);
- keys are text; no merge keys (``<<``) and no tags beyond the core types;
- scalars are resolved by the YAML 1.2 core schema, as Pulumi (Go, yaml.v3) reads them:
  ``yes``/``on`` and dates such as ``2024-01-01`` stay text, so ``validate`` and
  ``pulumi up`` see the same values.

Problems that leave nothing to read (not UTF-8, bad syntax, an alias, too large, not a
mapping) raise :class:`ConfigError` at once; the rest are returned with the values, so that
the caller reports them together with what validation finds.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml.composer import Composer
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.parser import Parser
from yaml.reader import Reader
from yaml.resolver import BaseResolver
from yaml.scanner import Scanner

from scaling.issues import ConfigError, ConfigIssue

# A stack file holds a few kilobytes (a few dozen keys, encrypted secrets of ~100 bytes):
# 64 KiB is far beyond any real one, and reading the worst 64 KiB (~30,000 flow-list items)
# takes a quarter of a second and ~10 MB.
MAX_BYTES = 64 * 1024
# config → sikka:section → key → value: four levels; lists of mappings add a few more.
MAX_DEPTH = 16
# The key under which whole-file problems are reported: the stack file's top-level key.
DOCUMENT_KEY = "config"
# The top-level keys of a Pulumi stack file (ProjectStack in Pulumi's schema).
TOP_LEVEL_KEYS = ("config", "secretsprovider", "encryptedkey", "encryptionsalt", "environment")

_STR = "tag:yaml.org,2002:str"
_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
_BOOL = "tag:yaml.org,2002:bool"
_NULL = "tag:yaml.org,2002:null"
_MAP = "tag:yaml.org,2002:map"
_SEQ = "tag:yaml.org,2002:seq"
_MERGE = "tag:yaml.org,2002:merge"


class _CoreResolver(BaseResolver):
    """YAML 1.2 core schema: null, true/false, base 10/8/16 integers, floats; all else is
    text (YAML 1.1's yes/no/on/off, sexagesimal numbers and timestamps are not)."""


_CoreResolver.add_implicit_resolver(
    _BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_CoreResolver.add_implicit_resolver(
    _INT, re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$"), list("-+0123456789")
)
_CoreResolver.add_implicit_resolver(
    _FLOAT,
    re.compile(
        r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
    list("-+.0123456789"),
)
_CoreResolver.add_implicit_resolver(
    _NULL, re.compile(r"^(?:~|null|Null|NULL|)$"), ["~", "n", "N", ""]
)
# Recognised only to be refused with its own message.
_CoreResolver.add_implicit_resolver(_MERGE, re.compile(r"^(?:<<)$"), ["<"])


class _Refused(yaml.YAMLError):
    def __init__(self, message: str, mark: Any) -> None:
        super().__init__(message)
        self.message = message
        self.mark = mark


class _Guard(Composer, _CoreResolver):
    """Composes nodes only (values are built by :func:`_build`), refusing aliases and deep
    nesting, and remembering the key being read so that a syntax error can name it."""

    path: list[str]
    depth: int

    def _start(self) -> None:
        Composer.__init__(self)
        _CoreResolver.__init__(self)
        self.path = []
        self.depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        label = (
            index.value
            if isinstance(index, ScalarNode)
            else str(index)
            if isinstance(index, int)
            else None
        )
        if label is not None:
            self.path.append(label)
        if self.check_event(yaml.AliasEvent):  # type: ignore[attr-defined]
            event = self.peek_event()  # type: ignore[attr-defined]
            raise _Refused(
                f"YAML aliases (*{event.anchor}) are not allowed in a stack file; "
                "write the value out",
                event.start_mark,
            )
        if self.depth >= MAX_DEPTH:
            mark = self.peek_event().start_mark  # type: ignore[attr-defined]
            raise _Refused(f"is nested deeper than {MAX_DEPTH} levels", mark)
        self.depth += 1
        node = super().compose_node(parent, index)
        self.depth -= 1
        if label is not None:
            self.path.pop()  # kept on failure: the error then names the key being read
        return node


class _PyLoader(_Guard, Reader, Scanner, Parser):
    def __init__(self, text: str) -> None:
        Reader.__init__(self, text)
        Scanner.__init__(self)
        Parser.__init__(self)
        self._start()


if yaml.__with_libyaml__:  # LibYAML's scanner and parser: ~5x faster, same events
    from yaml._yaml import CParser

    class _CLoader(_Guard, CParser):
        def __init__(self, text: str) -> None:
            CParser.__init__(self, text)
            self._start()

    _Loader: Callable[[str], _Guard] = _CLoader
else:  # pragma: no cover - PyYAML's wheels ship LibYAML
    _Loader = _PyLoader


@dataclass
class StackDocument:
    """A stack file's ``config`` mapping, its secret keys, and problems found reading it."""

    config: dict[str, Any] = field(default_factory=dict)
    secret_keys: set[str] = field(default_factory=set)
    issues: list[ConfigIssue] = field(default_factory=list)


def dotted(path: list[str] | tuple[str, ...]) -> str:
    """``["config", "sikka:postgres", "user"]`` → ``"sikka:postgres.user"``."""
    parts = list(path)
    if parts[:1] == [DOCUMENT_KEY] and len(parts) > 1:
        parts = parts[1:]
    return ".".join(parts) or DOCUMENT_KEY


def _where(mark: Any) -> str:
    return f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""


def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        before = data[: error.start]
        line = before.count(b"\n") + 1
        column = error.start - (before.rfind(b"\n") + 1) + 1
        raise _Failed(
            DOCUMENT_KEY,
            f"is not UTF-8 text: byte 0x{data[error.start]:02x} at line {line}, "
            f"column {column} cannot be decoded",
        ) from None


class _Failed(Exception):
    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key
        self.message = message


def _compose(text: str) -> Node | None:
    path: list[str] = []
    try:
        loader: Any = _Loader(text)  # PyYAML's own reader checks the characters here
        path = loader.path
        try:
            return loader.get_single_node()
        finally:
            loader.dispose()
    except _Refused as error:
        raise _Failed(dotted(path), f"{_where(error.mark)}{error.message}") from None
    except yaml.reader.ReaderError as error:
        line = text.count("\n", 0, error.position) + 1
        char = error.character
        code = ord(char) if isinstance(char, str) else int(char)
        raise _Failed(
            DOCUMENT_KEY, f"line {line}: the character U+{code:04X} is not allowed in YAML"
        ) from None
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        problem = error.problem or error.context or "is not valid YAML"
        raise _Failed(dotted(path), f"{_where(mark)}is not valid YAML: {problem}") from None
    except yaml.YAMLError as error:  # pragma: no cover - every YAML error PyYAML raises is marked
        raise _Failed(DOCUMENT_KEY, f"is not valid YAML: {type(error).__name__}") from None


def _kind(node: Node) -> str:
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    return {
        _STR: "text",
        "!": "text",
        _INT: "a number",
        _FLOAT: "a number",
        _BOOL: "true/false",
        _NULL: "null",
    }.get(node.tag, f"a value tagged {node.tag}")


def _scalar(node: ScalarNode) -> Any:
    """A scalar by the core schema; raises ValueError for a number Python refuses to hold."""
    text, tag = node.value, node.tag
    if tag in (_STR, "!"):
        return text
    if tag == _NULL:
        return None
    if tag == _BOOL:
        return text.lower() == "true"
    if tag == _INT:
        if text.startswith("0o"):
            return int(text[2:], 8)
        if text.startswith("0x"):
            return int(text[2:], 16)
        return int(text, 10)  # ValueError past 4,300 digits (sys.int_info)
    if tag == _FLOAT:
        lowered = text.lower()
        if lowered.endswith(".inf"):
            return float("-inf") if lowered.startswith("-") else float("inf")
        if lowered == ".nan":
            return float("nan")
        return float(text)
    raise LookupError(tag)


def _build(node: Node, path: tuple[str, ...], issues: list[ConfigIssue]) -> Any:
    """Plain values from a node tree; problems go to ``issues`` and the value is dropped."""
    where = f"line {node.start_mark.line + 1}"
    if isinstance(node, ScalarNode):
        try:
            return _scalar(node)
        except LookupError:
            issues.append(
                ConfigIssue(
                    dotted(path),
                    f"{where}: the YAML tag {node.tag!r} is not allowed in a stack file",
                )
            )
        except ValueError:
            issues.append(ConfigIssue(dotted(path), f"{where}: is not a number a config can hold"))
        return _DROPPED
    if isinstance(node, SequenceNode):
        if node.tag != _SEQ:
            issues.append(
                ConfigIssue(dotted(path), f"{where}: the YAML tag {node.tag!r} is not allowed")
            )
            return _DROPPED
        items = (_build(item, (*path, str(i)), issues) for i, item in enumerate(node.value))
        return [item for item in items if item is not _DROPPED]
    assert isinstance(node, MappingNode)
    if node.tag != _MAP:
        issues.append(
            ConfigIssue(dotted(path), f"{where}: the YAML tag {node.tag!r} is not allowed")
        )
        return _DROPPED
    result: dict[str, Any] = {}
    first_line: dict[str, int] = {}
    for key_node, value_node in node.value:
        line = key_node.start_mark.line + 1
        if isinstance(key_node, ScalarNode) and key_node.tag == _MERGE:
            issues.append(
                ConfigIssue(dotted(path), f"line {line}: merge keys (<<) are not allowed")
            )
            continue
        if not isinstance(key_node, ScalarNode):
            issues.append(
                ConfigIssue(dotted(path), f"line {line}: keys must be text, not {_kind(key_node)}")
            )
            continue
        if key_node.tag not in (_STR, "!"):
            issues.append(
                ConfigIssue(
                    dotted((*path, key_node.value)),
                    f"line {line}: keys must be text, not {_kind(key_node)}; quote it",
                )
            )
            continue
        key = key_node.value
        if key in first_line:
            issues.append(
                ConfigIssue(
                    dotted((*path, key)),
                    f"line {line}: duplicate key (first at line {first_line[key]}); keep one",
                )
            )
            continue
        first_line[key] = line
        value = _build(value_node, (*path, key), issues)
        if value is not _DROPPED:
            result[key] = value
    return result


_DROPPED = object()


def _document(data: bytes) -> tuple[dict[str, Any], list[ConfigIssue]]:
    if len(data) > MAX_BYTES:
        raise _Failed(
            DOCUMENT_KEY,
            f"the file is larger than {MAX_BYTES // 1024} KiB; a stack file holds a few kilobytes",
        )
    node = _compose(_decode(data))
    if node is None:
        return {}, []
    if not isinstance(node, MappingNode):
        raise _Failed(
            DOCUMENT_KEY,
            f"a stack file is a mapping with a 'config' key, not {_kind(node)}",
        )
    issues: list[ConfigIssue] = []
    document = _build(node, (), issues)
    if document is _DROPPED:
        raise _Failed(DOCUMENT_KEY, issues[0].message)
    for key in document:
        if key not in TOP_LEVEL_KEYS:
            hint = difflib.get_close_matches(key, TOP_LEVEL_KEYS, n=1)
            suffix = f"; did you mean '{hint[0]}'?" if hint else ""
            issues.append(ConfigIssue(key, f"unknown top-level key of a stack file{suffix}"))
    return document, issues


def parse_document(data: bytes) -> StackDocument:
    """The stack file held in ``data``. Raises ConfigError (source ``"stack file"``) when
    nothing can be read; callers re-raise it with their file's name."""
    try:
        document, issues = _document(data)
    except _Failed as failed:
        raise ConfigError("stack file", [ConfigIssue(failed.key, failed.message)]) from None
    config = document.get(DOCUMENT_KEY)
    if config is None:
        config = {}
    if not isinstance(config, dict):
        raise ConfigError(
            "stack file",
            [
                ConfigIssue(
                    DOCUMENT_KEY,
                    "must be a mapping of keys such as 'sikka:phase' to values "
                    f"(got {'a list' if isinstance(config, list) else 'a single value'})",
                )
            ],
        )
    secret_keys = {
        key for key, value in config.items() if isinstance(value, dict) and set(value) == {"secure"}
    }
    return StackDocument(config, secret_keys, issues)


def read_document(path: Path) -> StackDocument:
    """Reads at most MAX_BYTES + 1 bytes of ``path`` (it may be a pipe or a device)."""
    with path.open("rb") as stream:
        data = stream.read(MAX_BYTES + 1)
    try:
        return parse_document(data)
    except ConfigError as error:
        raise ConfigError(path.name, error.issues) from None


def load_value(text: str) -> Any:
    """One value typed on a command line (``--set key=VALUE``), by the same rules as a stack
    file. Raises ValueError with a one-line reason."""
    try:
        node = _compose(text)
    except _Failed as failed:
        raise ValueError(failed.message) from None
    if node is None:
        return None
    issues: list[ConfigIssue] = []
    value = _build(node, (), issues)
    if issues:
        raise ValueError(issues[0].message)
    return value
