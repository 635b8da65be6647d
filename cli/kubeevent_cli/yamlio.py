"""YAML and JSON documents with the line and column of every value.

Kubernetes reads manifests as JSON-compatible YAML, so timestamps stay text here too
(``2026-11-28T10:00:00Z`` is a string, as the API server would store it).
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import UserError

Path_ = tuple[str | int, ...]
SUFFIXES = (".yaml", ".yml", ".json")
# kustomize's own file is not a cluster object: a directory's copy is skipped.
SKIPPED = frozenset({"kustomization.yaml", "kustomization.yml", "Kustomization"})
STDIN = "-"
MAX_DEPTH = 200


_PATH_PART = re.compile(r"\.?([A-Za-z_][A-Za-z0-9_]*)|\[(\d+)\]")


def parse_path(text: str) -> Path_:
    """``spec.subscriptions[0].object`` → ``("spec", "subscriptions", 0, "object")``."""
    return tuple(int(m.group(2)) if m.group(2) is not None else m.group(1)
                 for m in _PATH_PART.finditer(text))


class _Loader(yaml.SafeLoader):
    """SafeLoader without the timestamp resolver (values stay text, as in Kubernetes)."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


@dataclass(frozen=True)
class Position:
    """Where something is: 1-based line and column in ``source``."""

    source: str
    line: int
    column: int

    def __str__(self) -> str:
        return f"{self.source}:{self.line}:{self.column}"

    def as_json(self) -> dict[str, Any]:
        return {"file": self.source, "line": self.line, "column": self.column}


class YamlError(UserError):
    """A file that is not YAML (or JSON); carries where the parser stopped."""

    def __init__(self, position: Position, problem: str) -> None:
        super().__init__(f"{position}: invalid YAML: {problem}")
        self.position = position
        self.problem = " ".join(problem.split())


@dataclass
class Document:
    """One document of a file, its data, and where each of its values is written."""

    source: str
    index: int
    data: Any
    position: Position
    lines: list[str] = field(repr=False, default_factory=list)
    nodes: dict[Path_, yaml.Node] = field(repr=False, default_factory=dict)
    duplicates: list[tuple[Path_, Position]] = field(default_factory=list)
    keys: dict[Path_, yaml.Node] = field(repr=False, default_factory=dict)

    def get(self, *path: str | int) -> Any:
        value = self.data
        for key in path:
            if isinstance(value, dict) and key in value:
                value = value[key]
            elif isinstance(value, list) and isinstance(key, int) and 0 <= key < len(value):
                value = value[key]
            else:
                return None
        return value

    @property
    def kind(self) -> str:
        kind = self.get("kind")
        return kind if isinstance(kind, str) else ""

    @property
    def api_version(self) -> str:
        value = self.get("apiVersion")
        return value if isinstance(value, str) else ""

    @property
    def name(self) -> str:
        value = self.get("metadata", "name")
        return value if isinstance(value, str) else ""

    @property
    def label(self) -> str:
        """``Kind/name`` for messages (``document 2`` when there is neither)."""
        if self.kind or self.name:
            return f"{self.kind or '?'}/{self.name or '?'}"
        return f"document {self.index + 1}"

    def node(self, *path: str | int) -> yaml.Node | None:
        return self.nodes.get(tuple(path))

    def at(self, *path: str | int) -> Position:
        """Where the value at ``path`` is written (or its nearest written parent)."""
        for end in range(len(path), -1, -1):
            node = self.nodes.get(tuple(path[:end]))
            if node is not None:
                return self._mark(node)
        return self.position

    def key_at(self, *path: str | int) -> Position:
        """Where the key of the field at ``path`` is written (else ``at``)."""
        node = self.keys.get(tuple(path))
        return self._mark(node) if node is not None else self.at(*path)

    def _mark(self, node: yaml.Node) -> Position:
        return Position(self.source, node.start_mark.line + 1, node.start_mark.column + 1)


def _index(node: yaml.Node, path: Path_, nodes: dict[Path_, yaml.Node],
           duplicates: list[tuple[Path_, yaml.Node]], depth: int = 0,
           keys: dict[Path_, yaml.Node] | None = None) -> None:
    if depth > MAX_DEPTH or path in nodes:
        return
    nodes[path] = node
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag.endswith(":merge"):
                continue
            key = str(key_node.value)
            if key in seen:
                duplicates.append(((*path, key), key_node))
            seen.add(key)
            if keys is not None:
                keys.setdefault((*path, key), key_node)
            _index(value_node, (*path, key), nodes, duplicates, depth + 1, keys)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _index(item, (*path, i), nodes, duplicates, depth + 1, keys)


def _looks_like_json(text: str) -> bool:
    return text.lstrip()[:1] in ("{", "[")


def loads(text: str, source: str) -> list[Document]:
    """Every non-empty document of ``text``; ``YamlError`` if it is neither YAML nor JSON."""
    lines = text.splitlines()
    try:
        return _load_yaml(text, source, lines)
    except YamlError:
        if not _looks_like_json(text):
            raise
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise YamlError(Position(source, exc.lineno, exc.colno),
                            f"invalid JSON: {exc.msg}") from None
        except RecursionError:
            raise YamlError(Position(source, 1, 1), "nested too deeply") from None
        items = data if isinstance(data, list) and all(isinstance(d, dict) for d in data) \
            else [data]
        return [Document(source, i, item, Position(source, 1, 1), lines)
                for i, item in enumerate(items) if item is not None]


def _load_yaml(text: str, source: str, lines: list[str]) -> list[Document]:
    loader = _Loader(text)
    documents: list[Document] = []
    index = 0
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                continue
            data = loader.construct_document(node)
            if data is not None:
                nodes: dict[Path_, yaml.Node] = {}
                keys: dict[Path_, yaml.Node] = {}
                dupes: list[tuple[Path_, yaml.Node]] = []
                _index(node, (), nodes, dupes, keys=keys)
                doc = Document(source, index, data,
                               Position(source, node.start_mark.line + 1, 1), lines, nodes,
                               keys=keys)
                doc.duplicates = [(p, doc._mark(n)) for p, n in dupes]
                documents.append(doc)
            index += 1
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = Position(source, mark.line + 1, mark.column + 1) if mark else \
            Position(source, 1, 1)
        problem = exc.problem or exc.context or "unreadable"
        raise YamlError(where, problem) from None
    except yaml.YAMLError as exc:
        raise YamlError(Position(source, 1, 1), str(exc).splitlines()[0]) from None
    except RecursionError:
        raise YamlError(Position(source, 1, 1), "nested too deeply") from None
    finally:
        loader.dispose()
    return documents


def read_text(path: str) -> tuple[str, str]:
    """(name shown in messages, text) of a file, or of standard input for ``-``."""
    if path == STDIN:
        try:
            return "<stdin>", sys.stdin.read()
        except UnicodeDecodeError:
            raise UserError("<stdin>: not UTF-8 text") from None
    file = Path(path)
    if not file.exists():
        raise UserError(f"{path}: no such file or directory")
    if file.is_dir():
        raise UserError(f"{path}: is a directory, expected a file")
    try:
        return path, file.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror or exc})") from None


def expand(paths: Iterable[str]) -> list[str]:
    """Files as given; a directory becomes its ``*.yaml``/``*.yml``/``*.json`` files
    (recursively, sorted). Missing paths raise ``UserError``."""
    files: list[str] = []
    for path in paths:
        if path == STDIN:
            files.append(path)
            continue
        item = Path(path)
        if not item.exists():
            raise UserError(f"{path}: no such file or directory")
        if item.is_dir():
            found = sorted(str(p) for p in item.rglob("*")
                           if p.is_file() and p.suffix.lower() in SUFFIXES
                           and p.name not in SKIPPED)
            if not found:
                raise UserError(f"{path}: no .yaml, .yml or .json files in this directory")
            files.extend(found)
        else:
            files.append(path)
    return files


def load_file(path: str) -> list[Document]:
    source, text = read_text(path)
    return loads(text, source)


def load_all(paths: Iterable[str]) -> Iterator[Document]:
    for path in expand(paths):
        yield from load_file(path)


def content_position(doc: Document, path: Path_, line: int, column: int) -> Position:
    """The file position of (``line``, ``column``), 1-based, inside the text scalar at
    ``path`` -- e.g. where a CEL error points inside a ``cel: |`` block.

    Exact for block literals (``|``) and single-line plain or quoted scalars; for
    folded or multi-line flow scalars the first line of the value is the best guess.
    """
    node = doc.node(*path)
    if not isinstance(node, yaml.ScalarNode):
        return doc.at(*path)
    start = node.start_mark
    if node.style == "|":
        first = start.line + 1  # 0-based line of the first content line
        indent = _block_indent(doc.lines, first, node.end_mark.line)
        return Position(doc.source, first + line, indent + column)
    if node.style == ">":
        first = start.line + 1
        indent = _block_indent(doc.lines, first, node.end_mark.line)
        return Position(doc.source, first + 1, indent + 1)
    if line == 1 and start.line == node.end_mark.line:
        offset = 1 if node.style in ("'", '"') else 0
        return Position(doc.source, start.line + 1, start.column + offset + column)
    return Position(doc.source, start.line + 1, start.column + 1)


def _block_indent(lines: list[str], first: int, last: int) -> int:
    for number in range(first, min(last + 1, len(lines))):
        text = lines[number]
        if text.strip():
            return len(text) - len(text.lstrip(" "))
    return 0
