"""Method registration by name; discovery from the `methods/` package and the
`prunebench.methods` entry-point group (so a third-party package can add a method)."""
from __future__ import annotations

import importlib
import pkgutil
from importlib import metadata

from bench.api import Method
from bench.errors import UnknownMethod
from bench.options import check_declarations

_REGISTRY: dict[str, type[Method]] = {}
_discovered = False


def register(cls: type[Method]) -> type[Method]:
    """Class decorator: `@register class Magnitude(ScoreMethod): name = "magnitude"`."""
    if not cls.name:
        raise ValueError(f"{cls.__qualname__} must set a class attribute `name`")
    check_declarations(cls)
    existing = _REGISTRY.get(cls.name)
    if existing is not None and _where(existing) != _where(cls):
        raise ValueError(f"method name '{cls.name}' is taken by {_where(existing)}; "
                         f"{_where(cls)} cannot register under it: choose another `name`")
    _REGISTRY[cls.name] = cls  # the same class re-imported (e.g. a reloaded module) replaces itself
    return cls


def _where(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def discover() -> None:
    """Import every module of `methods/` and every entry point once."""
    global _discovered
    if _discovered:
        return
    _discovered = True
    import methods

    for info in pkgutil.iter_modules(methods.__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"methods.{info.name}")
    for ep in metadata.entry_points(group="prunebench.methods"):
        obj = ep.load()
        if isinstance(obj, type) and issubclass(obj, Method):
            register(obj)


def method_names() -> list[str]:
    discover()
    return sorted(_REGISTRY)


def get_method(name: str) -> type[Method]:
    discover()
    if name not in _REGISTRY:
        raise UnknownMethod(f"method '{name}' is not registered; allowed: {', '.join(sorted(_REGISTRY))}. "
                            "A new method is one file in methods/ with a @register class.")
    return _REGISTRY[name]
