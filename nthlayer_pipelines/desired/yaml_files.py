"""Definition files read as plain, bounded YAML, with the line of every key and list item.

A definitions repo is input from many hands, so reading it must never run code, hang or eat memory:
files are size-capped and must be UTF-8, nesting is bounded before libyaml composes it (its composer
recurses natively and its parser slows down quadratically with depth), aliases may not expand a
document beyond a node budget, and only the plain YAML tags are accepted.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from nthlayer_pipelines.core.model import ValidationProblem

Location = tuple[str | int, ...]

_BaseLoader: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

_TAG = "tag:yaml.org,2002:"
_MERGE_TAG = _TAG + "merge"
_PLAIN_TAGS = frozenset(
    _TAG + name for name in ("null", "bool", "int", "float", "str", "seq", "map", "merge")
)
_SCALAR_KINDS = {
    _TAG + "null": "null",
    _TAG + "bool": "a boolean",
    _TAG + "int": "an integer",
    _TAG + "float": "a number",
}
_UNDEFINED_ALIAS = re.compile(r"\*([^\s,\[\]{}]+)")


class _Loader(_BaseLoader):  # type: ignore[misc, valid-type]
    """The safe loader minus implicit timestamps: definitions hold no dates; `2024-13-01` must not crash."""

    yaml_implicit_resolvers = {
        first: [(tag, pattern) for tag, pattern in resolvers if tag != _TAG + "timestamp"]
        for first, resolvers in _BaseLoader.yaml_implicit_resolvers.items()
    }


@dataclass(frozen=True)
class ReadLimits:
    """Bounds on what one definitions file may cost to read."""

    max_file_bytes: int = 1_048_576
    max_depth: int = 32  # a Team document nests 4 deep (spec.members[i].email)
    max_nodes: int = 100_000  # per document, counting every alias expansion


DEFAULT_LIMITS = ReadLimits()


@dataclass(frozen=True)
class Issue:
    """A problem with its position, kept until all problems are sorted and turned into ValidationProblems."""

    file: str
    location: Location
    message: str
    line: int = 0  # 1-based; 0 when the problem has no position in a file
    column: int = 0
    show_line: bool = True  # false when the message already says where

    def to_problem(self) -> ValidationProblem:
        message = self.message
        if self.line and self.show_line:
            message = f"{message} (line {self.line})"
        return ValidationProblem(file=self.file, path=format_location(self.location), message=message)


def format_location(location: Location) -> str:
    """("documents", 1, "spec", "members", 2) -> "documents[1].spec.members[2]"."""
    text = ""
    for part in location:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else part
    return text


@dataclass
class YamlDocument:
    """One document of a definitions file; `root` prefixes every location in it."""

    file: str
    index: int
    root: Location
    data: Any
    positions: dict[Location, int] = field(default_factory=dict)  # location -> 1-based line

    def line_of(self, location: Location) -> int:
        """The line of the closest enclosing key or item that exists in the file."""
        for end in range(len(location), 0, -1):
            line = self.positions.get(location[:end])
            if line is not None:
                return line
        return self.positions.get((), 0)

    def issue(self, location: Location, message: str) -> Issue:
        return Issue(self.file, location, message, line=self.line_of(location))


def find_definition_files(root: Path) -> tuple[list[tuple[Path, str]], list[Issue]]:
    """Every *.yaml / *.yml file under root (or root itself) with its path relative to root, in path order,
    and the folders that could not be searched.

    Hidden folders and files (.git, .github workflows) are not definitions and are skipped. A folder that
    cannot be listed, or a link to a folder, is a problem: skipping it would silently drop its teams.
    """
    if not root.is_dir():
        return [(root, root.name)], []
    found: list[tuple[str, Path]] = []
    issues: list[Issue] = []

    def unreadable(error: OSError) -> None:
        folder = Path(error.filename or root)
        relative = folder.relative_to(root).as_posix() if folder.is_relative_to(root) else str(folder)
        issues.append(Issue(relative, (), f"cannot list the folder: {error.strerror or error}"))

    for folder, subfolders, files in os.walk(root, onerror=unreadable):
        subfolders[:] = [name for name in subfolders if not name.startswith(".")]
        for name in subfolders:
            if Path(folder, name).is_symlink():
                relative = Path(folder, name).relative_to(root).as_posix()
                issues.append(
                    Issue(relative, (), "a link to a folder: links are not followed, so move the files here")
                )
        for name in files:
            if not name.startswith(".") and name.lower().endswith((".yaml", ".yml")):
                path = Path(folder, name)
                found.append((path.relative_to(root).as_posix(), path))
    return [(path, relative) for relative, path in sorted(found)], issues


def read_definition_file(
    path: Path, name: str, limits: ReadLimits = DEFAULT_LIMITS
) -> tuple[list[YamlDocument], list[Issue]]:
    """The documents of one file, or the reasons it cannot be read as plain YAML."""
    try:
        status = path.stat()
        if not stat.S_ISREG(status.st_mode):
            return [], [Issue(name, (), "not a regular file")]
        if status.st_size > limits.max_file_bytes:
            return [], [_too_big(name, status.st_size, limits)]
        with path.open("rb") as stream:
            raw = stream.read(limits.max_file_bytes + 1)
    except OSError as error:
        return [], [Issue(name, (), f"cannot read the file: {error.strerror or error}")]
    if len(raw) > limits.max_file_bytes:
        return [], [_too_big(name, len(raw), limits)]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line = raw.count(b"\n", 0, error.start) + 1
        column = error.start - (raw.rfind(b"\n", 0, error.start) + 1) + 1
        message = (
            f"not UTF-8: byte 0x{raw[error.start]:02x} at line {line}, column {column} cannot be decoded; "
            "save the file as UTF-8"
        )
        return [], [Issue(name, (), message, line=line, column=column, show_line=False)]
    return parse_definition_text(text, name, limits)


def parse_definition_text(
    text: str, name: str, limits: ReadLimits = DEFAULT_LIMITS
) -> tuple[list[YamlDocument], list[Issue]]:
    """Parse YAML text (already size-checked and decoded) into documents with positions."""
    try:
        too_deep = _first_event_beyond_depth(text, limits.max_depth)
        if too_deep is not None:
            return [], [
                Issue(
                    name,
                    (),
                    f"nested deeper than {limits.max_depth} levels at line {too_deep.line + 1}, "
                    f"column {too_deep.column + 1}: definitions are never that deep",
                    line=too_deep.line + 1,
                    column=too_deep.column + 1,
                    show_line=False,
                )
            ]
        loader = _Loader(text)
        try:
            nodes: list[yaml.Node] = []
            while loader.check_node():
                nodes.append(loader.get_node())
            documents: list[YamlDocument] = []
            issues: list[Issue] = []
            for index, node in enumerate(nodes):
                root: Location = ("documents", index) if len(nodes) > 1 else ()
                document = YamlDocument(name, index, root, None)
                inspection = _inspect(node, document, limits)
                issues.extend(inspection.issues)
                if not inspection.readable:
                    continue
                try:
                    document.data = loader.construct_document(node)
                except (yaml.YAMLError, ValueError, TypeError) as error:
                    reason = str(error).split(";")[0]
                    issues.append(document.issue(root, f"a value cannot be read: {reason}"))
                    continue
                documents.append(document)
            return documents, issues
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as error:
        return [], [_syntax_issue(name, text, error)]
    except yaml.reader.ReaderError as error:
        line, column = _line_and_column(text, error.position)
        character = f"#x{error.character:04x}"
        message = f"malformed YAML at line {line}, column {column}: character {character} is not allowed"
        return [], [Issue(name, (), message, line=line, column=column, show_line=False)]
    except yaml.YAMLError as error:
        return [], [Issue(name, (), f"malformed YAML: {error}")]


def _line_and_column(text: str, position: int) -> tuple[int, int]:
    """1-based line and column of a reader error; libyaml reports its position in UTF-8 bytes."""
    if _BaseLoader is yaml.SafeLoader:
        before = text[:position]
    else:
        before = text.encode("utf-8")[:position].decode("utf-8", errors="replace")
    line_start = before.rfind("\n") + 1
    return before.count("\n") + 1, len(before) - line_start + 1


def _too_big(name: str, size: int, limits: ReadLimits) -> Issue:
    return Issue(
        name,
        (),
        f"file is {size:,} bytes, over the {limits.max_file_bytes:,}-byte limit for one definitions file; "
        "split it into smaller files",
    )


def _first_event_beyond_depth(text: str, max_depth: int) -> yaml.Mark | None:
    depth = 0
    for event in yaml.parse(text, Loader=_Loader):
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > max_depth:
                return event.start_mark
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1
    return None


_PARSER_DEPTH_LIMIT = "exceeded maximum nesting depth"


def _syntax_issue(name: str, text: str, error: yaml.MarkedYAMLError) -> Issue:
    mark = error.problem_mark or error.context_mark
    problem = error.problem or "cannot be parsed"
    if mark is not None and problem == "found undefined alias":
        alias = _UNDEFINED_ALIAS.match(text, mark.index)
        if alias:
            problem = f"found undefined alias '{alias.group(1)}'"
    if mark is not None and problem.startswith(_PARSER_DEPTH_LIMIT):
        # libyaml (since 0.2.6, in PyYAML 6.0.4's wheels) has a depth limit of its own, which its scanner
        # can reach before our event count does: the same refusal, in our words.
        line, column = mark.line + 1, mark.column + 1
        message = f"nested too deeply at line {line}, column {column}: definitions are never that deep"
        return Issue(name, (), message, line, column, show_line=False)
    if error.context:
        context = error.context
        if error.context_mark is not None and error.context_mark is not mark:
            context += (
                f" started at line {error.context_mark.line + 1}, column {error.context_mark.column + 1}"
            )
        problem = f"{problem} ({context})"
    if mark is None:
        return Issue(name, (), f"malformed YAML: {problem}")
    line, column = mark.line + 1, mark.column + 1
    return Issue(
        name, (), f"malformed YAML at line {line}, column {column}: {problem}", line, column, show_line=False
    )


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [child for pair in node.value for child in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _measure(root: yaml.Node, limits: ReadLimits) -> tuple[str, yaml.Node] | None:
    """Why the node graph, every alias expanded, is too big, too deep or endless, and where; None if fine.

    Iterative and memoised on shared nodes, so a billion-laughs document is measured in a few steps.
    """
    sizes: dict[int, int] = {}
    heights: dict[int, int] = {}
    in_progress: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        key = id(node)
        if finished:
            in_progress.discard(key)
            children = _children(node)
            sizes[key] = min(1 + sum(sizes[id(child)] for child in children), limits.max_nodes + 1)
            heights[key] = 1 + max((heights[id(child)] for child in children), default=0)
            if sizes[key] > limits.max_nodes:
                reason = (
                    f"aliases expand this document to more than {limits.max_nodes:,} values; "
                    "write the values out instead"
                )
                return reason, node
            if heights[key] > limits.max_depth:
                return f"aliases nest this document deeper than {limits.max_depth} levels", node
            continue
        if key in sizes:
            continue
        if key in in_progress:
            return "an alias refers to a value that contains it, so the document never ends", node
        in_progress.add(key)
        stack.append((node, True))
        stack.extend((child, False) for child in _children(node) if id(child) not in sizes)
    return None


def _describe_tag(tag: str) -> str:
    return "!!" + tag.removeprefix(_TAG) if tag.startswith(_TAG) else tag


@dataclass
class _Inspection:
    document: YamlDocument
    issues: list[Issue] = field(default_factory=list)
    readable: bool = True  # false when constructing the document would be unsafe or fail


def _inspect(root: yaml.Node, document: YamlDocument, limits: ReadLimits) -> _Inspection:
    """Bounds, tags, duplicate and non-string keys of one document; records the line of every location."""
    inspection = _Inspection(document)
    document.positions[document.root] = root.start_mark.line + 1
    too_much = _measure(root, limits)
    if too_much is not None:
        reason, node = too_much
        inspection.issues.append(Issue(document.file, document.root, reason, line=node.start_mark.line + 1))
        inspection.readable = False
    else:
        _walk(root, document.root, inspection)
    return inspection


def _walk(node: yaml.Node, location: Location, inspection: _Inspection) -> None:
    # Depth is bounded by _measure, so recursion is safe here.
    document, issues = inspection.document, inspection.issues
    if node.tag not in _PLAIN_TAGS:
        inspection.readable = False
        issues.append(
            document.issue(
                location,
                f"YAML tag '{_describe_tag(node.tag)}' is not allowed: definitions are plain YAML "
                "(mappings, lists, strings, numbers, booleans)",
            )
        )
        return
    if isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            document.positions[(*location, index)] = item.start_mark.line + 1
            _walk(item, (*location, index), inspection)
        return
    if not isinstance(node, yaml.MappingNode):
        return
    first_seen: dict[str, int] = {}
    for key_node, value_node in node.value:
        if key_node.tag == _MERGE_TAG:
            _walk(value_node, location, inspection)
            continue
        line = key_node.start_mark.line + 1
        if not isinstance(key_node, yaml.ScalarNode) or key_node.tag != _TAG + "str":
            shown = repr(key_node.value) if isinstance(key_node, yaml.ScalarNode) else "a list or mapping"
            kind = _SCALAR_KINDS.get(key_node.tag, "not a string")
            issues.append(
                Issue(
                    document.file,
                    location,
                    f"field name {shown} is read as {kind}, not a string: quote it",
                    line,
                    key_node.start_mark.column + 1,
                )
            )
            if key_node.tag not in _PLAIN_TAGS:
                _walk(key_node, location, inspection)
            _walk(value_node, location, inspection)
            continue
        key = key_node.value
        if key in first_seen:
            issues.append(
                Issue(
                    document.file,
                    (*location, key),
                    f"duplicate key '{key}' (first at line {first_seen[key]}): YAML would silently keep "
                    "only the last one",
                    line,
                    key_node.start_mark.column + 1,
                )
            )
        else:
            first_seen[key] = line
        document.positions[(*location, key)] = line
        _walk(value_node, (*location, key), inspection)
