"""The dict form and the typed reading of the desc dataclasses, derived from their fields.

Written out by hand per class, `to_dict` and `from_fields` repeat every field twice more and
drift from the dataclass whenever a field is added. Here both walk `dataclasses.fields()` in
declaration order (the key order of desc files, and so of fingerprints) and read each field by
its type hint: int, float, str, bool, a `StrEnum`, a nested desc, `list[int]`, lists of descs
(items may be Optional) and Optional fields, which a file may leave out or set to null. What a
type cannot say is put in the field's metadata, `field(metadata=shape())` and the like:

- `shape()`: a `[channels, height, width]` list of ints (`list[int]`), or a list of them;
- `by_reference()`: weights (tensors) that never enter the dict; with `refs`, `to_dict` files
  them there under the desc's path and writes that path as the value, after the other fields;
- `typed_keys(conv=ConvMacroParams)`: a mapping whose named keys hold descs and whose other
  values are plain YAML scalars or lists;
- `checked(rule)`: a rule over the whole desc, `rule(desc) -> message | None`, reported at the
  field once all fields are read.
"""

from __future__ import annotations

import dataclasses
import types
from enum import StrEnum
from typing import Any, Callable, ClassVar, Mapping, Self, Union, get_args, get_origin, get_type_hints

from torch import Tensor

from archnas.descs.fields import Fields, describe

# Trainables collected by `to_dict`: a reference key -> the op's state dict.
TrainablesRefs = dict[str, dict[str, Tensor]]

_KEY = "archnas.descs"  # the metadata key under which a field's hook is stored


@dataclasses.dataclass(frozen=True)
class _Hook:
    shape: bool = False
    by_reference: bool = False
    keyed: tuple[tuple[str, type[Desc]], ...] = ()
    rule: Callable[[Any], str | None] | None = None


_NO_HOOK = _Hook()  # frozen and holding only immutable values: a constant, shared by plain fields


def shape() -> Mapping[str, _Hook]:
    return {_KEY: _Hook(shape=True)}


def by_reference() -> Mapping[str, _Hook]:
    return {_KEY: _Hook(by_reference=True)}


def typed_keys(**descs: type[Desc]) -> Mapping[str, _Hook]:
    return {_KEY: _Hook(keyed=tuple(descs.items()))}


def checked(rule: Callable[[Any], str | None]) -> Mapping[str, _Hook]:
    return {_KEY: _Hook(rule=rule)}


def _hook(fld: dataclasses.Field) -> _Hook:
    return fld.metadata.get(_KEY, _NO_HOOK)


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


class Desc:
    """Base of the desc dataclasses.

    The class keyword `path` is where `to_dict` files a desc's weights when it is called on that
    desc alone (`OpDesc(...).to_dict(refs)` -> `refs["op"]`); inside a tree each desc gets its
    place instead (`cells.0.stems.1`), the same paths `ModelDesc.named_ops` yields.
    """

    _path: ClassVar[str] = ""

    def __init_subclass__(cls, path: str = "", **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._path = path

    def to_dict(self, refs: TrainablesRefs | None = None, path: str | None = None) -> dict[str, Any]:
        """Plain data for `yaml.safe_dump` and `fingerprint()`; with `refs`, weights are collected there."""
        path = self._path if path is None else path
        fields = dataclasses.fields(self)
        out = {f.name: _plain(getattr(self, f.name), refs, _join(path, f.name))
               for f in fields if not _hook(f).by_reference}
        for f in fields:
            value = getattr(self, f.name)
            if _hook(f).by_reference and refs is not None and value is not None:
                refs[path] = value
                out[f.name] = path
        return out

    @classmethod
    def from_fields(cls, f: Fields, trainables: TrainablesRefs | None = None) -> Self:
        """Read a desc from one mapping of a desc file, refusing missing, ill-typed and unknown keys."""
        return _Reader(trainables).desc(cls, f)


def _plain(value: Any, refs: TrainablesRefs | None, path: str) -> Any:
    if isinstance(value, Desc):
        return value.to_dict(refs, path)
    if isinstance(value, (list, tuple)):
        return [_plain(v, refs, _join(path, str(i))) for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {k: _plain(v, refs, _join(path, str(k))) for k, v in value.items()}
    if isinstance(value, StrEnum):
        return value.value
    return value


def _optional(hint: Any) -> Any:
    """X for `Optional[X]` (or `X | None`), else None."""
    args = get_args(hint)
    if get_origin(hint) in (Union, types.UnionType) and len(args) == 2 and type(None) in args:
        return args[0] if args[1] is type(None) else args[1]
    return None


def _is_desc(hint: Any) -> bool:
    return get_origin(hint) is None and isinstance(hint, type) and issubclass(hint, Desc)


class _Reader:
    """One read of a desc tree: the trainables its references resolve against, and each class's
    type hints, resolved once per read instead of once per desc (a supernet has 1,000+ ops)."""

    def __init__(self, trainables: TrainablesRefs | None):
        self.trainables = trainables
        self.hints: dict[type, dict[str, Any]] = {}

    def desc(self, cls: type[Any], f: Fields) -> Any:
        if cls not in self.hints:
            self.hints[cls] = get_type_hints(cls)
        hints = self.hints[cls]
        fields = dataclasses.fields(cls)
        out = cls(**{fld.name: self.field(f, fld.name, hints[fld.name], _hook(fld)) for fld in fields})
        for fld in fields:
            rule = _hook(fld).rule
            message = None if rule is None else rule(out)
            if message is not None:
                raise f.error(fld.name, message)
        f.done()
        return out

    def field(self, f: Fields, key: str, hint: Any, hook: _Hook) -> Any:
        if hook.by_reference:
            return self.reference(f, key)
        if hook.shape:
            return _read_shapes(f.get(key, list), hint, f, f.name(key))
        inner = _optional(hint)
        if inner is not None:
            if f.get(key, object, default=None, nullable=True) is None:
                return None
            hint = inner
        origin = get_origin(hint)
        if origin is list:
            return self.sequence(f, key, get_args(hint)[0])
        if origin is dict:
            return self.mapping(f.sub(key), dict(hook.keyed))
        if _is_desc(hint):
            return self.desc(hint, f.sub(key))
        if isinstance(hint, type) and issubclass(hint, StrEnum):
            value = f.get(key, str)
            choices = [m.value for m in hint]
            if value not in choices:
                raise f.error(key, f"expected one of {', '.join(choices)}, got {value!r}")
            return hint(value)
        if hint in (int, float, str, bool):
            return f.get(key, hint)
        raise TypeError(f"desc field {key!r}: type {hint} has no reader")

    def sequence(self, f: Fields, key: str, item: Any) -> list[Any]:
        if item is int:
            return f.ints(key)
        desc = _optional(item) or item
        if not _is_desc(desc):
            raise TypeError(f"desc field {key!r}: lists of {item} have no reader")
        return [None if s is None else self.desc(desc, s) for s in f.subs(key, nullable_items=desc is not item)]

    def mapping(self, f: Fields, descs: dict[str, type[Desc]]) -> dict[Any, Any]:
        """Keys named in `descs` hold those descs; any other value must survive YAML and JSON unchanged."""
        return {key: self.desc(descs[key], f.sub(key)) if key in descs else
                _check_plain(f.get(key, object), f, f.name(key)) for key in list(f.data)}

    def reference(self, f: Fields, key: str) -> Any:
        ref = f.get(key, str, default=None, nullable=True)
        if ref is None:
            return None
        if self.trainables is None or ref not in self.trainables:
            raise f.error(key, f"refers to weights {ref!r}, but no trainables file with them was given")
        return self.trainables[ref]


def _check_plain(value: Any, f: Fields, name: str) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, list):
        return [_check_plain(v, f, f"{name}[{i}]") for i, v in enumerate(value)]
    raise f.error_at(name, f"expected YAML scalars or lists, got {describe(value)}")


def _read_shapes(value: list[Any], hint: Any, f: Fields, name: str) -> list[Any]:
    """One shape for `list[int]`, one per item for `list[list[int]]`."""
    if get_args(hint)[0] is int:
        return _check_shape(value, f, name)
    return [_check_shape(v, f, f"{name}[{i}]") for i, v in enumerate(value)]


def _check_shape(value: Any, f: Fields, name: str) -> list[int]:
    ok = isinstance(value, list) and len(value) == 3
    ok = ok and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    if not ok:
        raise f.error_at(name, f"expected [channels, height, width] ints, got {describe(value)}")
    return list(value)
