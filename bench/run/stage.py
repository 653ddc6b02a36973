"""A cell's stage: what a killed run keeps under results/runs/<run_id>/stage-<code key>/ to resume,
and the objects the runner hands a method's `Task` to write it.

The code key names the folder. It hashes the source of every module a cell runs: the harness
(all of bench/ but the report layer, which the run and core layers never import:
tests/test_imports.py) and the method's module with every module of the method's own package
or folder that it imports, directly or through each other (methods/_*.py helpers, a plugin
file's sibling modules). So a fix in a helper, in bench/core/merge.py or bench/core/models.py
never resumes from a stage that the old code made.

What `Task` holds comes from here, not from the runner, and on purpose holds neither test data nor
an MLflow client (issue 29): a method walking its task's attributes, closures and globals finds
train/val splits, a journal file and a list of pending log entries. The runner alone holds the
MLflow run and the test split, and forwards the pending entries (`LogSink.drain`) when the
method's phase ends. The journal is written at once, so a kill loses nothing.
"""
from __future__ import annotations

import ast
import dataclasses
import hashlib
import importlib.util
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bench.core.datasets import TrainVal
from bench.core.spec import RunSpec
from bench.core.training import fit
from bench.utils import atomic_write

BENCH = Path(__file__).resolve().parents[1]
NOT_RUN = ("report",)  # bench/ subpackages a cell never imports (the layer rule keeps it so)


# -- the code key ---------------------------------------------------------------------------------
def harness_files() -> list[Path]:
    """Every module of bench/ that a cell may run: all but the report layer."""
    return sorted(p for p in BENCH.rglob("*.py")
                  if p.relative_to(BENCH).parts[0] not in NOT_RUN and "__pycache__" not in p.parts)


def _imported_names(tree: ast.AST, package: str) -> list[str]:
    """Absolute names of the modules `tree` imports anywhere (functions included), and of the
    submodules a `from X import y` may mean."""
    out: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                parts = a.name.split(".")
                out += [".".join(parts[:i]) for i in range(1, len(parts) + 1)]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1] if package else []
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod:
                out.append(mod)
                out += [f"{mod}.{a.name}" for a in node.names if a.name != "*"]
    return out


def _module_file(name: str) -> Path | None:
    module = sys.modules.get(name)
    if module is not None:
        file = getattr(module, "__file__", None)
    else:
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError, AttributeError):
            return None
        file = spec.origin if spec is not None else None
    return Path(file).resolve() if file and str(file).endswith(".py") else None


def _home(module_name: str, file: Path) -> tuple[Path, str | None]:
    """(the folder the method's own modules live in, its top-level package or None): the package's
    folder for a module in a package, else the file's folder (a plugin file and its siblings)."""
    top = module_name.split(".")[0]
    package = sys.modules.get(top) if "." in module_name else None
    if package is not None:
        paths = [Path(package.__file__).parent] if getattr(package, "__file__", None) else \
            [Path(p) for p in getattr(package, "__path__", [])]
        if paths:
            return paths[0].resolve(), top
    return file.parent, None


def method_files(cls: type) -> dict[str, Path]:
    """{path under the method's home: file} of the method's module and of every module of its own
    package or folder that it imports, directly or through one another (a name a plugin imports
    with importlib is not followed). Third-party and bench modules are not the method's."""
    start = _module_file(cls.__module__)
    if start is None:  # defined where no file holds it (an interactive session): nothing to hash
        return {}
    home, package = _home(cls.__module__, start)

    def own(name: str) -> bool:
        top = name.split(".")[0]
        if package is not None:
            return top == package
        return (home / f"{top}.py").is_file() or (home / top / "__init__.py").is_file()

    todo, seen = [(cls.__module__, start)], {start}
    while todo:
        name, file = todo.pop()
        where = name if file.name == "__init__.py" else name.rpartition(".")[0]
        for dep in _imported_names(ast.parse(file.read_bytes()), where):
            path = _module_file(dep) if own(dep) else None
            if path is not None and path not in seen and path.is_relative_to(home):
                seen.add(path)
                todo.append((dep, path))
    return {p.relative_to(home).as_posix(): p for p in sorted(seen)}


def code_key(cls: type) -> str:
    """Hash of the harness's and the method's source (paths and bytes): a staged artifact is reused
    only by the very code that made it."""
    harness = {f"bench/{p.relative_to(BENCH).as_posix()}": p for p in harness_files()}
    method = {f"method:{rel}": p for rel, p in method_files(cls).items()}
    h = hashlib.sha256()
    for label, path in {**harness, **method}.items():
        h.update(label.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:12]


def stage_dir(workdir: Path, cls: type) -> Path:
    return workdir / f"stage-{code_key(cls)}"


# -- what Task holds --------------------------------------------------------------------------------
class LogSink:
    """Write-only: what the method logs through `Task` (and `Task.train` its curves).

    Metrics and params go to a journal file in the stage at once, and wait in `pending` until the
    runner forwards them to MLflow (`drain`). A killed run's MLflow run is deleted on rerun, but the
    method's metrics from before the kill (logged by hooks in epochs the rerun restores instead of
    repeating) must survive: the sink starts with the journal's entries pending, and drops each
    repeated (key, value, step) that the rerun logs again, so the record equals an uninterrupted
    run's. It holds no MLflow client, so nothing a method reaches through its task leads to one.
    """

    def __init__(self, path: Path):
        self._path = path
        self._replayed: Counter = Counter()
        self._pending: list[tuple] = []
        if path.exists():
            for line in path.read_text().splitlines():
                try:
                    entry = tuple(json.loads(line))
                except json.JSONDecodeError:  # the line a kill cut short
                    continue
                self._pending.append(entry)
                self._replayed[entry] += 1

    def _record(self, entry: tuple) -> None:
        if self._replayed[entry]:
            self._replayed[entry] -= 1
            return
        with open(self._path, "a") as fh:
            fh.write(json.dumps(entry) + "\n")
        self._pending.append(entry)

    def metric(self, key: str, value: float, step: int | None = None) -> None:
        self._record(("metric", key, float(value), step or 0))

    def param(self, key: str, value: Any) -> None:
        self._record(("param", key, str(value), None))

    def curve(self, prefix: str, history: list[dict]) -> None:
        """A training curve: not journaled, since a rerun logs it again (a finished `Task.train`
        call returns its saved result, curve included)."""
        self._pending.append(("curve", prefix, history, None))

    def drain(self) -> list[tuple]:
        """The entries logged since the last drain, oldest first: (kind, key, value, step)."""
        out, self._pending = self._pending, []
        return out


class StagedReferences(dict):
    """`Task.references` that survive a kill: each model is written to the stage when the method
    hands it over (RLS does so mid-training, in an epoch a resumed run restores rather than
    repeats), and a rerun starts with the ones already written."""

    def __init__(self, stage: Path):
        super().__init__()
        self.stage = stage
        for path in sorted(stage.glob("reference-*.pt")):
            super().__setitem__(path.stem.removeprefix("reference-"), torch.load(path, weights_only=False))

    def __setitem__(self, key: str, model: nn.Module) -> None:
        with atomic_write(self.stage / f"reference-{key}.pt") as tmp:
            torch.save(model, tmp)
        super().__setitem__(key, model)


class Trainer:
    """Task.train: the fine-tune recipe (or the pretrain recipe for methods that start from scratch).

    The n-th call of a run checkpoints into `stage`/train<n>-<desc>.ckpt every epoch. A method
    is deterministic, so a rerun makes the same calls in the same order: calls that had finished
    return their saved result at once, the one a kill cut short resumes from its last epoch.
    `resumed_s` sums the training time restored from before a kill; `curves` keeps each call's
    curve, staged with the pruned model so a rerun past the pruning logs them again. `log` needs
    only `curve(prefix, history)`: a `LogSink` in a run.
    """

    def __init__(self, spec: RunSpec, data: TrainVal, device: str, log, progress: bool, stage: Path):
        self.spec, self.data, self.device, self.log = spec, data, device, log
        self.progress, self.stage = progress, stage
        self.calls = 0
        self.resumed_s = 0.0
        self.curves: list[tuple[str, list[dict]]] = []

    def __call__(self, model, epochs, *, hooks=(), make_optimizer=None, lr=None, loss="ce", desc="train",
                 from_scratch=False):
        spec = self.spec
        cfg = spec.pretrain if from_scratch else spec.finetune
        if lr is not None:
            cfg = dataclasses.replace(cfg, lr=lr)
        self.calls += 1
        ckpt = self.stage / f"train{self.calls:02d}-{desc}.ckpt"
        result = fit(model, self.data, cfg, seed=spec.seed, epochs=epochs, hooks=hooks, make_optimizer=make_optimizer,
                     loss=loss, device=self.device, desc=f"{spec.method} {desc}", progress=self.progress,
                     checkpoint=ckpt)
        self.resumed_s += result.resumed_s
        self.curves.append((desc, result.history))
        self.log.curve(desc, result.history)
        return result

