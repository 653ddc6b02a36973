"""Method registration by name; discovery from the `methods/` package and the
`prunebench.methods` entry-point group (so a third-party package can add a method)."""
from __future__ import annotations

import importlib
import pkgutil
from importlib import metadata

from bench.api import Method
from bench.errors import UnknownMethod

_REGISTRY: dict[str, type[Method]] = {}
_discovered = False


def register(cls: type[Method]) -> type[Method]:
    """Class decorator: `@register class Magnitude(ScoreMethod): name = "magnitude"`."""
    if not cls.name:
        raise ValueError(f"{cls.__qualname__} must set a class attribute `name`")
    existing = _REGISTRY.get(cls.name)
    if existing is not None and existing.__qualname__ != cls.__qualname__:
        raise ValueError(f"method name '{cls.name}' is taken by {existing.__module__}.{existing.__qualname__}")
    _REGISTRY[cls.name] = cls
    return cls


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
