"""Typed reading of one mapping of a desc file, so that every error names the file and the field.

Desc files are edited by hand and passed between machines; a wrong type deep in the tree must
be reported as `final_desc.yaml: cells[3].nodes[0].edges[1].op_desc.name: expected str, got int 7`,
not as a TypeError from inside a module constructor.
"""

from __future__ import annotations

from typing import Any

from archnas.errors import DescError

_REQUIRED = object()
_TYPE_NAMES = {int: "int", float: "number", str: "str", bool: "bool", list: "list", dict: "mapping"}


def _matches(value: Any, kind: type) -> bool:
    if kind is int:  # YAML booleans are ints to Python; a desc field that wants a count does not
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, kind)


def describe(value: Any) -> str:
    return f"{type(value).__name__} {value!r}" if not isinstance(value, (dict, list)) else type(value).__name__


class Fields:
    """One mapping in a desc tree. `where` is the file (or `<dict>`), `path` the dotted field path."""

    def __init__(self, data: Any, where: str, path: str = ""):
        self.where = where
        self.path = path
        if not isinstance(data, dict):
            raise self.error_at(path or "top level", f"expected a mapping, got {describe(data)}")
        self.data = data
        self._read: set[str] = set()

    def error_at(self, name: str, message: str) -> DescError:
        """An error at a full dotted name, for values below a key (list items, nested lists)."""
        return DescError(f"{self.where}: {name}: {message}")

    def name(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def error(self, key: str, message: str) -> DescError:
        return self.error_at(self.name(key), message)

    def get(self, key: str, kind: type, default: Any = _REQUIRED, nullable: bool = False) -> Any:
        self._read.add(key)
        if key not in self.data:
            if default is _REQUIRED:
                raise self.error(key, "missing")
            return default
        value = self.data[key]
        if value is None and nullable:
            return None
        if not _matches(value, kind):
            raise self.error(key, f"expected {_TYPE_NAMES.get(kind, kind.__name__)}, got {describe(value)}")
        return value

    def ints(self, key: str) -> list[int]:
        values = self.get(key, list)
        for i, v in enumerate(values):
            if not _matches(v, int):
                raise self.error_at(f"{self.name(key)}[{i}]", f"expected int, got {describe(v)}")
        return list(values)

    def sub(self, key: str, nullable: bool = False) -> "Fields | None":
        value = self.get(key, dict, nullable=nullable)
        return None if value is None else Fields(value, self.where, self.name(key))

    def subs(self, key: str, nullable_items: bool = False) -> list["Fields | None"]:
        """A list of mappings; with `nullable_items`, null entries stay None."""
        out: list[Fields | None] = []
        for i, item in enumerate(self.get(key, list)):
            out.append(None if item is None and nullable_items else Fields(item, self.where, f"{self.name(key)}[{i}]"))
        return out

    def done(self) -> None:
        """Refuse keys nobody read: a typo in a hand-edited desc must not be silently ignored."""
        unknown = sorted(set(self.data) - self._read, key=str)
        if unknown:
            raise self.error(str(unknown[0]), f"unknown field (known here: {', '.join(sorted(self._read))})")
