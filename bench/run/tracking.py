"""MLflow tracking: one MLflow run per grid cell, found again by the spec hash.

Default store: SQLite under `results/` (embedded, nothing to start). `MLFLOW_TRACKING_URI`
points it at a server instead. The cell's `run_id` tag is the hash of its spec: a cell whose
latest run ended `done` is skipped on rerun; any other leftover (killed, failed, skipped) is
deleted before the cell is redone, so the store never holds two live runs of one spec.
"""
from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd


STATUS_DONE, STATUS_FAILED, STATUS_SKIPPED, STATUS_RUNNING = "done", "failed", "skipped", "running"
STATUS_INTERRUPTED = "interrupted"  # Ctrl-C / SIGTERM: redone (resumed) by the next run of the grid

RESULT_COLUMNS = [
    "run_id", "status", "method", "variant", "dataset", "model", "seed", "target_kind", "target",
    "acc_base", "acc_pruned", "acc_final", "macs_base", "macs_pruned", "macs_reduction",
    "params_base", "params_pruned", "params_reduction", "latency_cpu_b1_base_ms",
    "latency_cpu_b1_pruned_ms", "latency_cpu_b64_base_ms", "latency_cpu_b64_pruned_ms",
    "prune_time_s", "finetune_time_s", "error", "epochs_used", "budget_met", "target_met", "preconditions_met",
    "git_commit", "git_dirty", "threads",
]


def tracking_uri(results_dir: str | os.PathLike) -> str:
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    path = Path(results_dir).resolve()
    path.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path / 'mlflow.db'}"


def may_hold_runs(results_dir: str | os.PathLike) -> bool:
    """False only when the store surely holds no run yet: the SQLite default not created. A
    server (MLFLOW_TRACKING_URI) may hold runs whatever the folder holds."""
    return bool(os.environ.get("MLFLOW_TRACKING_URI")) or (Path(results_dir) / "mlflow.db").exists()


def _quiet_mlflow() -> None:
    for name in ("mlflow", "alembic", "alembic.runtime.migration"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _enable_wal(db: Path) -> None:
    """WAL journal: readers never block the writer, so pool workers sharing the embedded store
    do not hit 'database is locked' (measured in tests/test_executors.py). The mode is stored in the
    file, so setting it once per process is cheap and idempotent."""
    import sqlite3

    db.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(db, timeout=60) as con:
        con.execute("PRAGMA journal_mode=WAL")


class Tracker:
    """Thin wrapper over MlflowClient with the bench's naming and dedup rules."""

    def __init__(self, results_dir: str | os.PathLike = "results", uri: str | None = None):
        _quiet_mlflow()
        from mlflow.tracking import MlflowClient

        self.results_dir = Path(results_dir)
        self.uri = uri or tracking_uri(results_dir)
        if self.uri.startswith("sqlite:///"):
            _enable_wal(Path(self.uri[len("sqlite:///"):]))
        self.client = MlflowClient(tracking_uri=self.uri)
        self._exp_ids: dict[str, str] = {}

    def experiment_id(self, name: str) -> str:
        if name in self._exp_ids:
            return self._exp_ids[name]
        exp = self.client.get_experiment_by_name(name)
        if exp is None:
            location = None
            if self.uri.startswith("sqlite:"):
                location = (self.results_dir.resolve() / "artifacts" / name).as_uri()
            try:
                exp_id = self.client.create_experiment(name, artifact_location=location)
            except Exception:  # another worker created it first
                exp_id = self.client.get_experiment_by_name(name).experiment_id
        else:
            exp_id = exp.experiment_id
        self._exp_ids[name] = exp_id
        return exp_id

    def runs_of(self, experiment: str, run_id: str):
        return self.client.search_runs([self.experiment_id(experiment)], f"tags.run_id = '{run_id}'",
                                       max_results=100)

    def is_done(self, experiment: str, run_id: str) -> bool:
        return any(r.data.tags.get("status") == STATUS_DONE for r in self.runs_of(experiment, run_id))

    def start(self, spec) -> "RunLogger":
        """Delete leftovers of this spec (killed/failed/skipped), then open a fresh MLflow run."""
        for old in self.runs_of(spec.experiment, spec.run_id):
            self.client.delete_run(old.info.run_id)
        tags = {"run_id": spec.run_id, "method": spec.method, "variant": spec.variant, "dataset": spec.dataset,
                "model": spec.model_label, "target": f"{spec.target_kind}-{spec.target:g}",
                "seed": str(spec.seed), "status": STATUS_RUNNING, "mlflow.runName": spec.label}
        run = self.client.create_run(self.experiment_id(spec.experiment), tags=tags, run_name=spec.label)
        logger = RunLogger(self.client, run.info.run_id)
        logger.params(spec.flat_params())
        return logger

    def set_reference(self, experiment: str, reference: str) -> None:
        """The grid's `reference` variant, kept with the experiment so its report compares against it."""
        self.client.set_experiment_tag(self.experiment_id(experiment), "reference", reference)

    def set_design(self, experiment: str, design_json: str) -> None:
        """The grid's pre-registered design (`bench.run.config.Design`), kept like the reference."""
        self.client.set_experiment_tag(self.experiment_id(experiment), "design", design_json)

    def design(self, experiment: str | None) -> str | None:
        """The design JSON the grid(s) of `experiment` recorded, if they agree."""
        exps = [self.client.get_experiment_by_name(experiment)] if experiment else self.client.search_experiments()
        found = {e.tags.get("design") for e in exps if e is not None} - {None}
        return found.pop() if len(found) == 1 else None

    def reference(self, experiment: str | None) -> str | None:
        """The reference the grid(s) of `experiment` (all experiments: None) recorded, if they agree."""
        exps = [self.client.get_experiment_by_name(experiment)] if experiment else self.client.search_experiments()
        refs = {e.tags.get("reference") for e in exps if e is not None} - {None}
        return refs.pop() if len(refs) == 1 else None

    def runs_frame(self, experiment: str | None = None) -> pd.DataFrame:
        """One row per live run: the RESULT_COLUMNS first, then every other metric."""
        import pandas as pd  # on use: pool workers never need it, and it costs their start-up

        if experiment:
            exp = self.client.get_experiment_by_name(experiment)
            exp_ids = [exp.experiment_id] if exp else []
        else:
            exp_ids = [e.experiment_id for e in self.client.search_experiments()]
        rows = []
        for exp_id in exp_ids:
            token = None
            while True:
                page = self.client.search_runs([exp_id], max_results=1000, page_token=token)
                for r in page:
                    rows.append(_row(r, exp_id))
                token = page.token
                if not token:
                    break
        df = pd.DataFrame(rows)
        if df.empty:
            return pd.DataFrame(columns=RESULT_COLUMNS)
        rest = sorted(c for c in df.columns if c not in RESULT_COLUMNS)
        return df.reindex(columns=RESULT_COLUMNS + rest).sort_values(["dataset", "model", "variant", "target", "seed"],
                                                      kind="stable").reset_index(drop=True)


def _row(run, exp_id: str) -> dict[str, Any]:
    tags, params, metrics = run.data.tags, run.data.params, run.data.metrics
    row: dict[str, Any] = {
        "run_id": tags.get("run_id"), "status": tags.get("status"), "method": tags.get("method"),
        "dataset": tags.get("dataset"), "model": tags.get("model"),
        "seed": int(params.get("seed", tags.get("seed", -1))),
        "target_kind": params.get("target_kind"), "target": float(params.get("target", "nan")),
        "error": tags.get("error", ""), "experiment_id": exp_id, "mlflow_run_id": run.info.run_id,
        "variant": tags.get("variant") or params.get("variant") or tags.get("method"),
    }
    row.update({k: v for k, v in params.items() if k.startswith("pruning.")})  # the protocol, for the report
    # provenance, and the settings that change numbers without being the method's (report_tables)
    row.update({k: params[k] for k in ("git_commit", "git_dirty", "threads", "pretrain.precision",
                                       "finetune.precision") if k in params})
    if "test_subset" in params:  # the test split's size sets the accuracy's resolution (report_compare)
        row["test_subset"] = params["test_subset"]
    row.update({k: v for k, v in params.items() if k.startswith("check.")})  # a precondition's rule, for footnotes
    # method options become columns (arg.mode, arg.strategy, ...) so results of variants stay apart
    row.update({f"arg.{k[len('method_args.'):]}": v for k, v in params.items() if k.startswith("method_args.")})
    row.update(metrics)
    return row


class RunLogger:
    """Logs into one MLflow run; what the runner and methods write through `Task.log_*`."""

    def __init__(self, client, mlflow_run_id: str):
        self.client = client
        self.id = mlflow_run_id

    def param(self, key: str, value: Any) -> None:
        self.client.log_param(self.id, key, str(value)[:6000])

    def params(self, values: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)[:6000]) for k, v in values.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.id, params=items[i:i + 100])

    def metric(self, key: str, value: float, step: int | None = None) -> None:
        self.client.log_metric(self.id, key, float(value), step=step or 0)

    def metrics(self, values: dict[str, float], step: int = 0) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step) for k, v in values.items() if v is not None]
        for i in range(0, len(items), 500):
            self.client.log_batch(self.id, metrics=items[i:i + 500])

    def curve(self, prefix: str, history: list[dict]) -> None:
        """Per-epoch training curve as stepped metrics (prefix/val_acc at step = epoch)."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(f"{prefix}/{k}", float(v), now, int(h["epoch"]))
                 for h in history for k, v in h.items() if k != "epoch"]
        for i in range(0, len(items), 500):
            self.client.log_batch(self.id, metrics=items[i:i + 500])

    def tag(self, key: str, value: str) -> None:
        self.client.set_tag(self.id, key, value)

    def artifact(self, path: str | os.PathLike) -> None:
        self.client.log_artifact(self.id, str(path))

    def json_artifact(self, name: str, obj: Any, workdir: Path) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        p = workdir / name
        p.write_text(json.dumps(obj, indent=2, default=str))
        self.artifact(p)

    def finish(self, status: str, error: str = "") -> None:
        self.tag("status", status)
        if error:
            self.tag("error", error[:4000])
        self.client.set_terminated(self.id, "FAILED" if status == STATUS_FAILED else "FINISHED")
