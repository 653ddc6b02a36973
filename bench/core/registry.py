"""Method registration by name; discovery from the `methods/` package, from plugin files, folders or
modules named by `--plugins` (kept in BENCH_PLUGINS, so pool and Ray workers load them too) and
from the `prunebench.methods` entry-point group (so a third-party package can add a method).

An entry point that fails to load breaks nothing else: its name stands for a method whose cells
fail with the load error, and `load_errors()` lets the CLI warn once."""
from __future__ import annotations

import importlib
import os
import pkgutil
import sys
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Iterable

from bench.core.method import Method
from bench.core.options import check_declarations
from bench.errors import ConfigError, MethodUnavailable, UnknownMethod

PLUGINS_ENV = "BENCH_PLUGINS"
ENTRY_POINTS = "prunebench.methods"

_REGISTRY: dict[str, type[Method]] = {}
_BROKEN: dict[str, str] = {}  # entry-point name -> why it failed to load
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


def add_plugins(entries: Iterable[str]) -> None:
    """Load plugin files (`mine.py`), folders of them or importable modules, here and in every
    worker this process starts (through BENCH_PLUGINS). Paths are made absolute first."""
    new = [str(Path(e).resolve()) if Path(e).exists() else e for e in entries]
    os.environ[PLUGINS_ENV] = os.pathsep.join(dict.fromkeys(_plugin_entries() + new))
    if _discovered:
        for entry in new:
            _load_plugin(entry)


def _plugin_entries() -> list[str]:
    return [e for e in os.environ.get(PLUGINS_ENV, "").split(os.pathsep) if e]


def _load_plugin(entry: str) -> None:
    """Import one `--plugins` entry; a file's folder joins sys.path, so the module keeps its plain
    name (its file stem) and a pool worker, forked with this sys.path, imports it by that name."""
    path = Path(entry)
    if path.is_dir():
        files = [p for p in sorted(path.glob("*.py")) if not p.name.startswith("_")]
    elif path.suffix == ".py" and path.is_file():
        files = [path]
    elif path.suffix == ".py" or os.sep in entry:
        raise ConfigError(f"--plugins {entry}: no such file or folder")
    else:
        _import(entry, entry)
        return
    for file in files:
        folder = str(file.parent.resolve())
        if folder not in sys.path:
            sys.path.append(folder)
        module = _import(file.stem, entry)
        if Path(module.__file__ or "").resolve() != file.resolve():
            raise ConfigError(f"--plugins {file}: the module name '{file.stem}' is taken by {module.__file__}; "
                              f"rename the plugin file")


def _import(module: str, entry: str):
    try:
        return importlib.import_module(module)
    except Exception as e:  # a plugin the user named: any failure ends the command with its reason
        raise ConfigError(f"--plugins {entry}: {type(e).__name__}: {e}") from e


def discover() -> None:
    """Import every module of `methods/`, the BENCH_PLUGINS entries and every entry point, once."""
    global _discovered
    if _discovered:
        return
    _discovered = True
    import methods

    for info in pkgutil.iter_modules(methods.__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"methods.{info.name}")
    for entry in _plugin_entries():
        _load_plugin(entry)
    for ep in metadata.entry_points(group=ENTRY_POINTS):
        try:
            obj = ep.load()
            if isinstance(obj, type) and issubclass(obj, Method):
                register(obj)
            elif not isinstance(obj, ModuleType):
                raise TypeError(f"{obj!r} is neither a Method subclass nor a module")
        except Exception as e:  # another package's bug must not stop the methods that work
            dist = f" of {ep.dist.name} {ep.dist.version}" if ep.dist else ""
            _BROKEN[ep.name] = (f"entry point '{ep.name} = {ep.value}'{dist} failed to load: {type(e).__name__}: {e}; "
                                f"fix or uninstall that package")


def load_errors() -> list[str]:
    """One line per entry point that failed to load (for the CLI to warn about once)."""
    discover()
    return list(_BROKEN.values())


def method_names() -> list[str]:
    discover()
    return sorted(_REGISTRY)


def get_method(name: str) -> type[Method]:
    """The registered class; for a broken entry point of that name, a stand-in whose cells fail with
    the load error, so a grid's other methods still run."""
    discover()
    if name in _REGISTRY:
        return _REGISTRY[name]
    if name in _BROKEN:
        return _unavailable(name, _BROKEN[name])
    raise UnknownMethod(f"method '{name}' is not registered; allowed: {', '.join(sorted(_REGISTRY))}. "
                        "A new method is one file in methods/ with a @register class, or a file or module "
                        "passed with --plugins.")


def _unavailable(name: str, reason: str) -> type[Method]:
    """A method that accepts any options (they cannot be checked) and fails when built."""

    class Unavailable(Method):
        kind = "unavailable"
        summary = reason

        @classmethod
        def validate_args(cls, args, where=None) -> None:
            pass

    def refuse(self, **options) -> None:
        raise MethodUnavailable(reason)

    Unavailable.name = name
    Unavailable.__init__ = refuse  # after class creation: Method's option check would reject **options
    return Unavailable
