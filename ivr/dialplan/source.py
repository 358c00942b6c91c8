"""YAML that remembers where each value came from, so that every error names file and line.

PyYAML quietly keeps the last of two equal keys; here a key given twice (a digit used twice in
a menu) is an error at the line of the second one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

Path_ = tuple[str | int, ...]


@dataclass(frozen=True)
class Problem:
    """One reason a dialplan is refused, at a file and line."""

    file: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.reason}"


@dataclass
class SourceFile:
    """A parsed YAML file: its data, and the line of every key and list item."""

    name: str
    data: Any
    lines: dict[Path_, int] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)

    def line_of(self, path: Path_) -> int:
        """The line of the longest prefix of ``path`` that the file has (1 if none)."""
        for end in range(len(path), 0, -1):
            line = self.lines.get(tuple(path[:end]))
            if line is not None:
                return line
        return 1

    def problem(self, path: Path_, reason: str) -> Problem:
        return Problem(self.name, self.line_of(path), reason)


def _walk(loader: yaml.SafeLoader, node: yaml.Node, path: Path_, source: SourceFile) -> Any:
    if isinstance(node, yaml.MappingNode):
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = str(loader.construct_object(key_node, deep=True))
            here = (*path, key)
            if key in result:
                source.problems.append(Problem(source.name, key_node.start_mark.line + 1,
                                               f"{_where(path)}'{key}' is given twice"))
                continue
            source.lines[here] = key_node.start_mark.line + 1
            result[key] = _walk(loader, value_node, here, source)
        return result
    if isinstance(node, yaml.SequenceNode):
        items = []
        for index, item in enumerate(node.value):
            source.lines[(*path, index)] = item.start_mark.line + 1
            items.append(_walk(loader, item, (*path, index), source))
        return items
    return loader.construct_object(node, deep=True)


def _where(path: Path_) -> str:
    return f"in {'.'.join(str(p) for p in path)}: " if path else ""


def parse(text: str, name: str) -> SourceFile:
    source = SourceFile(name, None)
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        source.data = _walk(loader, node, (), source) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        source.problems.append(Problem(name, line, f"not valid YAML: {exc.problem or exc}"))
    finally:
        loader.dispose()
    return source


def read(path: Path, name: str | None = None) -> SourceFile:
    return parse(path.read_text(encoding="utf-8"), name or path.name)
