"""The one validator of method options, driven by each method's typed `__init__` signature.

A method declares an option once, as a constructor parameter with a type and a default:
`Literal[...]` for choices, `Annotated[float, Range(0, 1)]` for bounds, `X | None` for "null means
the method's own default". This module checks config values against those declarations and
describes them for `python -m bench methods`, so no method hand-writes a validator.
"""
from __future__ import annotations

import functools
import inspect
import math
import types
import typing
from dataclasses import dataclass
from typing import Any, Annotated, Literal, Mapping, Union

from bench.errors import ConfigError


@dataclass(frozen=True)
class Range:
    """Bounds of a numeric option; `lo_open`/`hi_open` exclude the bound itself."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False

    def contains(self, v: float) -> bool:
        if self.lo is not None and (v <= self.lo if self.lo_open else v < self.lo):
            return False
        return not (self.hi is not None and (v >= self.hi if self.hi_open else v > self.hi))

    def describe(self) -> str:
        if self.lo is not None and self.hi is not None:
            return f"in {'(' if self.lo_open else '['}{self.lo:g}, {self.hi:g}{')' if self.hi_open else ']'}"
        if self.lo is not None:
            return f"{'>' if self.lo_open else '>='} {self.lo:g}"
        if self.hi is not None:
            return f"{'<' if self.hi_open else '<='} {self.hi:g}"
        return "any value"


@dataclass(frozen=True)
class Option:
    name: str
    type: Any
    default: Any

    @property
    def type_text(self) -> str:
        return describe(self.type)


@functools.lru_cache(maxsize=None)
def options(cls: type) -> tuple[Option, ...]:
    """The declared options of a method class: its constructor's keyword parameters, typed."""
    init = cls.__init__
    if init is object.__init__:
        return ()
    hints = typing.get_type_hints(init, include_extras=True)
    out = []
    for p in list(inspect.signature(init).parameters.values())[1:]:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if p.name not in hints:
            raise TypeError(f"{cls.__qualname__}.__init__: option '{p.name}' needs a type annotation")
        out.append(Option(p.name, hints[p.name], p.default))
    return tuple(out)


def _parts(tp: Any) -> tuple[Any, tuple]:
    return typing.get_origin(tp), typing.get_args(tp)


def _is_union(origin: Any) -> bool:
    return origin is Union or origin is types.UnionType


def accepts(tp: Any, v: Any) -> bool:
    """Whether value `v` (as parsed from YAML) fits the declared type `tp`."""
    origin, args = _parts(tp)
    if tp is Any:
        return True
    if tp is None or tp is type(None):
        return v is None
    if _is_union(origin):
        return any(accepts(a, v) for a in args)
    if origin is Literal:
        return any(v == a and type(v) is type(a) for a in args)
    if origin is Annotated:
        base, *meta = args
        return accepts(base, v) and all(m.contains(v) for m in meta if isinstance(m, Range))
    if tp is bool:
        return isinstance(v, bool)
    if tp is int:
        return isinstance(v, int) and not isinstance(v, bool)
    if tp is float:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    if tp is str:
        return isinstance(v, str)
    if origin in (list, tuple):
        return isinstance(v, (list, tuple)) and all(accepts(args[0], x) for x in v) if args else isinstance(v, (list, tuple))
    if isinstance(tp, type):
        return isinstance(v, tp)
    raise TypeError(f"option type {tp!r} is not supported; use bool, int, float, str, Literal, Annotated, None")


def describe(tp: Any) -> str:
    """Human text of a declared type, e.g. `greedy, independent` or `float > 0 or null`."""
    origin, args = _parts(tp)
    if tp is None or tp is type(None):
        return "null"
    if _is_union(origin):
        return " or ".join(describe(a) for a in args)
    if origin is Literal:
        return ", ".join(str(a) for a in args)
    if origin is Annotated:
        base, *meta = args
        return " ".join([describe(base)] + [m.describe() for m in meta if isinstance(m, Range)])
    if origin in (list, tuple):
        return f"list of {describe(args[0])}" if args else "list"
    return getattr(tp, "__name__", str(tp))


def validate(cls: type, args: Mapping[str, Any], where: str) -> None:
    """Reject unknown option names and values outside the declared types, naming field and allowed values."""
    declared = {o.name: o for o in options(cls)}
    for k, v in args.items():
        if k not in declared:
            raise ConfigError(f"{where}.{k}: unknown option of method '{getattr(cls, 'name', cls.__name__)}'; "
                              f"allowed: {', '.join(declared) or '(none)'}")
        if not accepts(declared[k].type, v):
            raise ConfigError(f"{where}.{k}: {v!r} is invalid; allowed: {describe(declared[k].type)}")


def check_declarations(cls: type) -> None:
    """Fail at registration when a default does not fit its own declared type (a typo in the plugin)."""
    for o in options(cls):
        if o.default is inspect.Parameter.empty:
            raise TypeError(f"{cls.__qualname__}: option '{o.name}' needs a default")
        if not accepts(o.type, o.default):
            raise TypeError(f"{cls.__qualname__}: default {o.default!r} of option '{o.name}' "
                            f"is not a {describe(o.type)}")
