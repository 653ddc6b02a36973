"""Grid config (YAML + CLI overrides) -> validated, frozen run specs (bench.core.spec) whose hash is the run id.

Validation errors name the field and the allowed values, so a typo never reaches training.
The spec types themselves live in bench.core.spec, so training and the driver can read them
without importing this parser (and through it the registry and YAML).
"""
from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bench.core.spec import (PRECISIONS, RANKINGS, SCHEDULES, TARGET_KINDS, LatencyConfig, PruningConfig,
                              RunSpec, TrainConfig)
from bench.errors import ConfigError


@dataclass
class DatasetEntry:
    name: str
    models: list[tuple[str, tuple]]
    pretrain: TrainConfig
    finetune: TrainConfig
    train_subset: int | None = None
    test_subset: int | None = None
    # a dataset's own design, replacing the grid's: seeds, and targets each with optional seeds of
    # its own (e.g. 10 seeds at the primary target, 3 at the secondary ones)
    seeds: list[int] | None = None
    targets: list[tuple[str, float, tuple[int, ...] | None]] | None = None

    def cells(self, grid_targets: list[tuple[str, float]], grid_seeds: list[int]) -> list[tuple[str, float, list[int]]]:
        """(kind, amount, seeds) of every target this dataset runs."""
        seeds = self.seeds if self.seeds is not None else grid_seeds
        targets = self.targets if self.targets is not None else [(k, a, None) for k, a in grid_targets]
        return [(k, a, list(own) if own is not None else seeds) for k, a, own in targets]


@dataclass(frozen=True)
class Design:
    """The pre-registered analysis (issue 27): per dataset one primary contrast against the grid's
    reference, either one target (`macs:0.5`) or `mean` (each seed's mean over the targets), and
    the equivalence margin in percentage points. Everything else the report shows is secondary."""

    primary: tuple[tuple[str, str], ...] = ()   # (dataset, "mean" or "kind:amount"); missing -> "mean"
    margin_pp: float = 0.5

    def primary_of(self, dataset: str) -> str:
        return dict(self.primary).get(dataset, "mean")

    def to_json(self) -> str:
        return json.dumps({"primary": dict(self.primary), "margin_pp": self.margin_pp}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | None) -> "Design":
        raw = json.loads(text) if text else {}
        return cls(tuple(sorted(raw.get("primary", {}).items())), float(raw.get("margin_pp", 0.5)))


DEFAULT_REFERENCE = "magnitude"  # what a grid compares every method with unless its config names another


def target_label(kind: str, amount: float) -> str:
    """The one spelling of a target in configs, designs and reports: macs:0.5."""
    return f"{kind}:{amount:g}"


@dataclass
class GridConfig:
    name: str
    methods: dict[str, dict]         # variant key ("name" or "name@label") -> method options
    datasets: list[DatasetEntry]
    seeds: list[int]
    targets: list[tuple[str, float]]
    pruning: PruningConfig = PruningConfig()
    val_size: int = 5000
    data_dir: str | None = None
    results_dir: str = "results"
    executor: dict = field(default_factory=dict)
    latency: LatencyConfig = LatencyConfig()
    threads: int = 1                 # torch threads of every cell; the pool runs cores // threads cells at once
    # the variant the report compares every other with, paired over seeds (an experiment tag in MLflow)
    reference: str = DEFAULT_REFERENCE
    # variant key -> its method's pruning_defaults overridden by its own `pruning:` (applied over `pruning`)
    method_pruning: dict[str, dict] = field(default_factory=dict)
    design: Design = Design()

    def expand(self) -> list[RunSpec]:
        """Every (method x dataset x model x target x seed) cell, in a stable order.

        A cell's pruning settings: the grid's, overridden by the method's `pruning_defaults`
        (its paper protocol, e.g. PLS+VIP's global threshold and K rounds)."""
        specs = []
        for ds in self.datasets:
            for model, margs in ds.models:
                for kind, amount, seeds in ds.cells(self.targets, self.seeds):
                    for seed in seeds:
                        for key, args in self.methods.items():
                            specs.append(RunSpec(
                                method=plugin_name(key), variant=key, dataset=ds.name, model=model, seed=seed,
                                target_kind=kind, target=amount,
                                method_args=tuple(sorted(args.items())), model_args=margs,
                                pretrain=ds.pretrain, finetune=ds.finetune,
                                pruning=dataclasses.replace(self.pruning, **self.method_pruning.get(key, {})),
                                val_size=self.val_size, train_subset=ds.train_subset,
                                test_subset=ds.test_subset, experiment=self.name, latency=self.latency,
                                threads=self.threads))
        return specs


VARIANT_LABEL = re.compile(r"[A-Za-z0-9_.-]+")


def plugin_name(key: str) -> str:
    """The plugin of a `methods:` key: "pls_vip@per_layer" -> "pls_vip"."""
    return key.partition("@")[0]


def _parse_method(key: Any, raw: Any, grid_pruning: dict) -> tuple[dict, dict]:
    """One `methods:` entry -> (validated options, its pruning overrides of the grid's). Precedence:
    the grid's `pruning:` < the method's `pruning_defaults` < the variant's own `pruning:`."""
    from bench.core.registry import get_method

    where = f"methods.{key}"
    name, at, label = str(key).partition("@")
    if at and not VARIANT_LABEL.fullmatch(label):
        raise ConfigError(f"{where}: a variant is written name@label with a label of letters, digits, _ . -; "
                          f"e.g. pls_vip@per_layer")
    cls = get_method(name)  # raises UnknownMethod naming the allowed ones
    if not isinstance(raw or {}, dict):
        raise ConfigError(f"{where}: expected a mapping of options, got {raw!r}")
    args = dict(raw or {})
    own = args.pop("pruning", None)
    if own is not None and not isinstance(own, dict):
        raise ConfigError(f"{where}.pruning: expected a mapping of pruning settings, got {own!r}")
    cls.validate_args(args, where=where)
    overrides = {**cls.pruning_defaults, **(own or {})}
    at = f"{where}.pruning" if own else "pruning"
    built = _check_pruning(_build(PruningConfig, {**grid_pruning, **overrides}, at), at)
    return args, {k: getattr(built, k) for k in overrides}  # typed as the built config has them


def _check_pruning(p: PruningConfig, where: str) -> PruningConfig:
    if p.ranking not in RANKINGS:
        raise ConfigError(f"{where}.ranking: '{p.ranking}' is unknown; allowed: {', '.join(RANKINGS)}")
    if p.rounds < 1 or not 0 < p.max_layer_prune < 1 or p.round_to < 1:
        raise ConfigError(f"{where}: rounds and round_to must be >= 1 and max_layer_prune in (0, 1)")
    return p


def check_threads(value: Any, where: str) -> int:
    """Torch threads per cell: an integer >= 1 (they change the numbers, so never 'auto')."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{where}: expected an integer >= 1 (torch threads per cell), got {value!r}")
    return value


def _check_latency(lat: LatencyConfig) -> LatencyConfig:
    if min(lat.repeats_b1, lat.repeats_b64) < 1 or lat.warmup < 0:
        raise ConfigError(f"latency: repeats_b1 and repeats_b64 must be >= 1 and warmup >= 0, got "
                          f"{lat.repeats_b1}, {lat.repeats_b64} and {lat.warmup}")
    return lat


def _fields(cls) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls)}


def _build(cls, raw: Any, where: str, base=None):
    """Build a frozen dataclass from a mapping, naming the bad field and the allowed ones."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(raw).__name__}")
    allowed = _fields(cls)
    unknown = sorted(set(raw) - set(allowed))
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}: unknown field; allowed: {', '.join(allowed)}")
    base = base or cls()
    values = {}
    for k, v in raw.items():
        default = getattr(base, k)
        expected = type(default)
        if expected is bool and not isinstance(v, bool):
            raise ConfigError(f"{where}.{k}: expected true/false, got {v!r}")
        if expected in (int, float) and (isinstance(v, bool) or not isinstance(v, (int, float))):
            raise ConfigError(f"{where}.{k}: expected a number, got {v!r}")
        if expected is int and isinstance(v, float) and not v.is_integer():
            raise ConfigError(f"{where}.{k}: expected an integer, got {v!r}")
        values[k] = expected(v) if expected in (int, float) else v
    return dataclasses.replace(base, **values)


def _check_train(tc: TrainConfig, where: str) -> None:
    if tc.epochs < 0:
        raise ConfigError(f"{where}.epochs: must be >= 0, got {tc.epochs}")
    if tc.lr <= 0 or tc.batch_size <= 0:
        raise ConfigError(f"{where}: lr and batch_size must be > 0")
    if tc.schedule not in SCHEDULES:
        raise ConfigError(f"{where}.schedule: '{tc.schedule}' is unknown; allowed: {', '.join(SCHEDULES)}")
    if tc.precision not in PRECISIONS:
        raise ConfigError(f"{where}.precision: '{tc.precision}' is unknown; allowed: {', '.join(PRECISIONS)}")


def parse_target(raw: Any, where: str) -> tuple[str, float]:
    """`0.5`, `"macs:0.5"` or `{kind: macs, reduction: 0.5}` -> ("macs", 0.5)."""
    if isinstance(raw, (int, float)) and not isinstance(raw, bool):
        kind, amount = "macs", float(raw)
    elif isinstance(raw, str) and ":" in raw:
        kind, _, num = raw.partition(":")
        try:
            amount = float(num)
        except ValueError:
            raise ConfigError(f"{where}: '{raw}' is not KIND:FRACTION, e.g. macs:0.5") from None
    elif isinstance(raw, dict) and set(raw) <= {"kind", "reduction"} and "reduction" in raw:
        kind, amount = raw.get("kind", "macs"), float(raw["reduction"])
    else:
        raise ConfigError(f"{where}: '{raw}' is not a target; write 0.5, macs:0.5 or {{kind: macs, reduction: 0.5}}")
    if kind not in TARGET_KINDS:
        raise ConfigError(f"{where}: target kind '{kind}' is unknown; allowed: {', '.join(TARGET_KINDS)}")
    if not 0 < amount < 1:
        raise ConfigError(f"{where}: reduction {amount} must be a fraction in (0, 1), e.g. 0.5 for -50%")
    return kind, amount


def _parse_models(raw: Any, where: str) -> list[tuple[str, tuple]]:
    from bench.core.models import MODELS

    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"{where}: expected a non-empty list of models; allowed: {', '.join(sorted(MODELS))}")
    out = []
    for i, entry in enumerate(raw):
        if isinstance(entry, str):
            name, args = entry, {}
        elif isinstance(entry, dict) and "name" in entry:
            args = {k: v for k, v in entry.items() if k != "name"}
            name = entry["name"]
        else:
            raise ConfigError(f"{where}[{i}]: write a model name or {{name: vgg, depth: 11, width: 0.25}}")
        if name not in MODELS:
            raise ConfigError(f"{where}[{i}]: model '{name}' is unknown; allowed: {', '.join(sorted(MODELS))}")
        out.append((name, tuple(sorted(args.items()))))
    return out


def _as_list(v: Any, where: str) -> list:
    if v is None:
        raise ConfigError(f"{where}: required")
    return v if isinstance(v, list) else [v]


GRID_FIELDS = ("name", "methods", "datasets", "seeds", "targets", "pruning", "val_size",
               "data_dir", "results_dir", "executor", "latency", "reference", "design", "threads")
DATASET_FIELDS = ("models", "pretrain", "finetune", "train_subset", "test_subset", "seeds", "targets")


def from_dict(raw: dict, name: str = "grid") -> GridConfig:
    """Validate a parsed YAML mapping into a GridConfig."""
    from bench.core.datasets import DATASETS
    from bench.core.registry import method_names

    if not isinstance(raw, dict):
        raise ConfigError("config: the top level must be a mapping")
    unknown = sorted(set(raw) - set(GRID_FIELDS))
    if unknown:
        raise ConfigError(f"{unknown[0]}: unknown field; allowed: {', '.join(GRID_FIELDS)}")

    methods_raw = raw.get("methods")
    if isinstance(methods_raw, list):
        methods_raw = {m: {} for m in methods_raw}
    if not isinstance(methods_raw, dict) or not methods_raw:
        raise ConfigError(f"methods: expected a mapping of method -> args; allowed: {', '.join(method_names())}")
    grid_pruning = raw.get("pruning") or {}
    pruning = _check_pruning(_build(PruningConfig, grid_pruning, "pruning"), "pruning")
    methods, method_pruning = {}, {}
    for key, args in methods_raw.items():
        methods[key], method_pruning[key] = _parse_method(key, args, grid_pruning)

    ds_raw = raw.get("datasets")
    if not isinstance(ds_raw, dict) or not ds_raw:
        raise ConfigError(f"datasets: expected a mapping of dataset -> settings; allowed: {', '.join(DATASETS)}")
    datasets = []
    for d, settings in ds_raw.items():
        where = f"datasets.{d}"
        if d not in DATASETS:
            raise ConfigError(f"{where}: dataset '{d}' is unknown; allowed: {', '.join(DATASETS)}")
        settings = settings or {}
        extra = sorted(set(settings) - set(DATASET_FIELDS))
        if extra:
            raise ConfigError(f"{where}.{extra[0]}: unknown field; allowed: {', '.join(DATASET_FIELDS)}")
        pre = _build(TrainConfig, settings.get("pretrain"), f"{where}.pretrain", DATASETS[d].pretrain)
        ft = _build(TrainConfig, settings.get("finetune"), f"{where}.finetune", DATASETS[d].finetune)
        _check_train(pre, f"{where}.pretrain")
        _check_train(ft, f"{where}.finetune")
        datasets.append(DatasetEntry(d, _parse_models(settings.get("models"), f"{where}.models"), pre, ft,
                                     settings.get("train_subset"), settings.get("test_subset"),
                                     _parse_seeds(settings["seeds"], f"{where}.seeds") if "seeds" in settings else None,
                                     _parse_dataset_targets(settings["targets"], f"{where}.targets")
                                     if "targets" in settings else None))

    seeds = _parse_seeds(raw.get("seeds", [0]), "seeds")
    targets = [parse_target(t, f"targets[{i}]") for i, t in enumerate(_as_list(raw.get("targets", [0.5]), "targets"))]
    val_size = raw.get("val_size", 5000)
    if not isinstance(val_size, int) or val_size < 1:
        raise ConfigError(f"val_size: expected a positive integer, got {val_size!r}")
    executor = raw.get("executor") or {}
    if not isinstance(executor, dict):
        raise ConfigError("executor: expected a mapping such as {kind: local}")
    latency = _check_latency(_build(LatencyConfig, raw.get("latency"), "latency"))
    threads = check_threads(raw.get("threads", 1), "threads")
    reference = raw.get("reference", DEFAULT_REFERENCE)
    if "reference" in raw and reference not in methods:
        raise ConfigError(f"reference: {reference!r} is not a method of this grid; allowed: {', '.join(methods)}")
    cfg = GridConfig(name=str(raw.get("name", name)), methods=methods, datasets=datasets, seeds=seeds,
                     targets=targets, pruning=pruning, method_pruning=method_pruning, val_size=val_size,
                     data_dir=raw.get("data_dir"), results_dir=str(raw.get("results_dir", "results")),
                     executor=executor, latency=latency, reference=reference, threads=threads)
    cfg.design = _parse_design(raw.get("design"), cfg)
    return cfg


def _parse_seeds(raw: Any, where: str) -> list[int]:
    seeds = _as_list(raw, where)
    if not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise ConfigError(f"{where}: expected a list of integers, got {raw!r}")
    return seeds


def _parse_dataset_targets(raw: Any, where: str) -> list[tuple[str, float, tuple[int, ...] | None]]:
    """Items: a target (`macs:0.5`) or `{target: macs:0.3, seeds: [0, 1, 2]}`."""
    out = []
    for i, item in enumerate(_as_list(raw, where)):
        if isinstance(item, dict) and "target" in item:
            extra = sorted(set(item) - {"target", "seeds"})
            if extra:
                raise ConfigError(f"{where}[{i}].{extra[0]}: unknown field; allowed: target, seeds")
            kind, amount = parse_target(item["target"], f"{where}[{i}].target")
            own = tuple(_parse_seeds(item["seeds"], f"{where}[{i}].seeds")) if "seeds" in item else None
        else:
            (kind, amount), own = parse_target(item, f"{where}[{i}]"), None
        out.append((kind, amount, own))
    return out


def _parse_design(raw: Any, cfg: GridConfig) -> Design:
    """`design: {primary: {cifar10: macs:0.5, mnist: mean}, margin_pp: 0.5}`, checked against the grid."""
    if raw is None:
        return Design()
    if not isinstance(raw, dict):
        raise ConfigError("design: expected a mapping such as {primary: {cifar10: macs:0.5}, margin_pp: 0.5}")
    extra = sorted(set(raw) - {"primary", "margin_pp"})
    if extra:
        raise ConfigError(f"design.{extra[0]}: unknown field; allowed: primary, margin_pp")
    margin = raw.get("margin_pp", 0.5)
    if isinstance(margin, bool) or not isinstance(margin, (int, float)) or margin <= 0:
        raise ConfigError(f"design.margin_pp: expected a number of percentage points > 0, got {margin!r}")
    primary_raw = raw.get("primary") or {}
    if not isinstance(primary_raw, dict):
        raise ConfigError("design.primary: expected a mapping of dataset -> target or mean")
    have = {d.name: d for d in cfg.datasets}
    primary = {}
    for d, contrast in primary_raw.items():
        if d not in have:
            raise ConfigError(f"design.primary.{d}: not a dataset of this grid; allowed: {', '.join(have)}")
        if contrast == "mean":
            primary[d] = "mean"
            continue
        kind, amount = parse_target(contrast, f"design.primary.{d}")
        runs = [target_label(k, a) for k, a, _ in have[d].cells(cfg.targets, cfg.seeds)]
        if target_label(kind, amount) not in runs:
            raise ConfigError(f"design.primary.{d}: {target_label(kind, amount)} is not a target of {d}; "
                              f"allowed: mean, {', '.join(runs)}")
        primary[d] = target_label(kind, amount)
    return Design(tuple(sorted(primary.items())), float(margin))


def load(path: str | Path) -> GridConfig:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file {path} not found; the presets are configs/smoke.yaml, configs/quick.yaml")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e})") from e
    return from_dict(raw, name=path.stem)


def override(cfg: GridConfig, *, methods: list[str] | None = None, datasets: list[str] | None = None,
             seeds: list[int] | None = None, targets: list[str] | None = None) -> GridConfig:
    """Narrow a grid from the CLI. A name outside the config is an error, not a silent no-op.
    `methods` takes variant keys of the config (`pls_vip@per_layer`) or any registered method name."""
    cfg = dataclasses.replace(cfg)
    if methods:
        chosen, pruning = {}, {}
        for m in methods:
            if m in cfg.methods:
                chosen[m], pruning[m] = cfg.methods[m], cfg.method_pruning.get(m, {})
            elif "@" in m:
                raise ConfigError(f"--methods: variant '{m}' is not in this config; allowed: {', '.join(cfg.methods)}")
            else:
                chosen[m], pruning[m] = _parse_method(m, {}, dataclasses.asdict(cfg.pruning))
        cfg.methods, cfg.method_pruning = chosen, pruning
    if datasets:
        have = {d.name: d for d in cfg.datasets}
        missing = [d for d in datasets if d not in have]
        if missing:
            raise ConfigError(f"--datasets: '{missing[0]}' is not in this config; allowed: {', '.join(have)}")
        cfg.datasets = [have[d] for d in datasets]
    if seeds:
        cfg.seeds = list(seeds)
    if targets:
        cfg.targets = [parse_target(float(t) if t.replace('.', '', 1).isdigit() else t, "--targets") for t in targets]
    if seeds or targets:  # a dataset's own design is narrowed, never widened, by the CLI
        cfg.datasets = [_narrow(d, seeds, cfg.targets if targets else None) for d in cfg.datasets]
    return cfg


def _narrow(ds: DatasetEntry, seeds: list[int] | None, targets: list[tuple[str, float]] | None) -> DatasetEntry:
    keep_seed = (lambda s: s in seeds) if seeds else (lambda s: True)
    own_seeds = ds.seeds if ds.seeds is None else [s for s in ds.seeds if keep_seed(s)]
    own_targets = ds.targets
    if own_targets is not None:
        own_targets = [(k, a, own if own is None else tuple(s for s in own if keep_seed(s)))
                       for k, a, own in own_targets if targets is None or (k, a) in targets]
    return dataclasses.replace(ds, seeds=own_seeds, targets=own_targets)
