"""Where the report's runs come from: MLflow stores and committed segments, merged so that no run
counts twice.

A grid may outlive the machine that runs it, and its store with it; a user may run one grid on
two machines without a shared server. So finished parts of a grid are exported as *segments*
(`python -m bench export`): the runs frame (runs.csv), the stepped metrics (curves.csv) and each
finished run's small JSON artifacts, as text that git can diff and keep. A store is never
committed: a SQLite file changes as a whole and cannot be merged. The report and `bench results`
read any mix of stores and segments; a cell found more than once (same spec hash `run_id`) is kept
once: a finished copy before an unfinished one, then the copy of the first source listed.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol, Sequence

import pandas as pd

from bench.errors import BenchError

# The per-run artifacts the report reads (widths figure, channel overlap); a segment carries them.
ARTIFACTS = ("widths.json", "kept_channels.json")
CURVE_COLUMNS = ["mlflow_run_id", "key", "step", "value", "timestamp"]
SEGMENT_FILE = "segment.json"


class Source(Protocol):
    label: str

    def frame(self, experiment: str | None) -> pd.DataFrame: ...

    def curves(self, runs: pd.DataFrame) -> pd.DataFrame: ...

    def artifact(self, mlflow_run_id: str, name: str) -> Any: ...

    def tags(self) -> dict[str, dict[str, str]]: ...


class Store:
    """One MLflow store (a results folder's SQLite file, or the server MLFLOW_TRACKING_URI names)."""

    def __init__(self, results_dir: str | os.PathLike):
        from bench.run.tracking import Tracker, may_hold_runs

        if not may_hold_runs(results_dir):
            raise BenchError(f"no MLflow store at {Path(results_dir) / 'mlflow.db'}; pass the --results-dir a grid "
                             "wrote to, a committed segment with --segments, or set MLFLOW_TRACKING_URI")
        self.tracker = Tracker(results_dir)
        self.label = self.tracker.uri

    def frame(self, experiment: str | None) -> pd.DataFrame:
        df = self.tracker.runs_frame(experiment)
        names = {e.experiment_id: e.name for e in self.tracker.client.search_experiments()}
        df["experiment"] = [names.get(str(i), str(i)) for i in df.get("experiment_id", pd.Series(dtype=str))]
        return df

    def curves(self, runs: pd.DataFrame) -> pd.DataFrame:
        """Every stepped metric (a name with a `/`) of the finished runs, in long form."""
        rows = []
        keys = [c for c in runs.columns if "/" in c]
        for _, r in runs[runs["status"] == "done"].iterrows():
            for key in keys:
                if pd.isna(r.get(key)):
                    continue
                for m in self.tracker.client.get_metric_history(r["mlflow_run_id"], key):
                    rows.append((r["mlflow_run_id"], key, int(m.step), float(m.value), int(m.timestamp)))
        return pd.DataFrame(rows, columns=CURVE_COLUMNS)

    def artifact(self, mlflow_run_id: str, name: str) -> Any:
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one bar per run is noise
        with tempfile.TemporaryDirectory() as tmp:
            return json.loads(Path(self.tracker.client.download_artifacts(mlflow_run_id, name, tmp)).read_text())

    def tags(self) -> dict[str, dict[str, str]]:
        return {e.name: {k: v for k, v in e.tags.items() if not k.startswith("mlflow.")}
                for e in self.tracker.client.search_experiments()}


class Segment:
    """One exported segment folder (see `export`)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.meta = json.loads((self.path / SEGMENT_FILE).read_text())
        self.label = f"segment {self.path.as_posix()}"

    def frame(self, experiment: str | None) -> pd.DataFrame:
        df = pd.read_csv(self.path / "runs.csv", dtype=str, keep_default_na=False, na_values=[""])
        numeric = list(self.meta["numeric"])  # converted in one concat: a column at a time fragments the frame
        df = pd.concat([df.drop(columns=numeric), df[numeric].apply(pd.to_numeric)], axis=1)[df.columns]
        return df[df["experiment"] == experiment].reset_index(drop=True) if experiment else df

    def curves(self, runs: pd.DataFrame) -> pd.DataFrame:
        c = pd.read_csv(self.path / "curves.csv", dtype={"mlflow_run_id": str, "key": str})
        done = runs.loc[runs["status"] == "done", "mlflow_run_id"]
        return c[c["mlflow_run_id"].isin(done)].reset_index(drop=True)

    def artifact(self, mlflow_run_id: str, name: str) -> Any:
        return json.loads((self.path / "artifacts" / mlflow_run_id / name).read_text())

    def tags(self) -> dict[str, dict[str, str]]:
        return {self.meta["experiment"]: self.meta["tags"]}


def segment_dirs(path: str | os.PathLike) -> list[Path]:
    """`path` itself when it is a segment, else its child segments in name order (a folder such as
    docs/results/curves/segments holds one per finished part of the grid)."""
    p = Path(path)
    if (p / SEGMENT_FILE).exists():
        return [p]
    found = sorted(c for c in p.iterdir() if (c / SEGMENT_FILE).exists()) if p.is_dir() else []
    if not found:
        raise BenchError(f"{p} is not a segment (no {SEGMENT_FILE}) and holds none; write one with "
                         "python -m bench export")
    return found


def open_sources(results_dirs: Sequence[str | os.PathLike] = (), segments: Sequence[str | os.PathLike] = ()
                 ) -> list[Source]:
    """Stores first, then segments, each in the order given: the order that breaks ties."""
    sources: list[Source] = [Store(d) for d in results_dirs]
    sources += [Segment(s) for path in segments for s in segment_dirs(path)]
    if not sources:
        raise BenchError("no source of runs: pass --results-dir and/or --segments")
    return sources


@dataclass
class Merged:
    """The runs of several sources, one row per cell (`run_id`), and where each row came from."""

    sources: list[Source]
    frame: pd.DataFrame                     # raw runs frame (Tracker.runs_frame columns) + experiment, source
    duplicates: list[str] = field(default_factory=list)  # what the de-duplication dropped, for index.md

    def _by_source(self, runs: pd.DataFrame):
        for i, g in runs.groupby("source", sort=True):
            yield self.sources[int(i)], g

    def curves(self, runs: pd.DataFrame) -> pd.DataFrame:
        """Stepped metrics of the finished runs among `runs`, in long form (CURVE_COLUMNS)."""
        parts = [src.curves(g) for src, g in self._by_source(runs)]
        parts = [p for p in parts if len(p)]
        return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=CURVE_COLUMNS)

    def artifacts(self, runs: pd.DataFrame, name: str) -> tuple[dict[str, Any], list[str]]:
        """{mlflow_run_id: parsed JSON} of artifact `name` of every finished run among `runs`, and
        the run labels where it could not be read (an older harness, a lost artifact store)."""
        from bench.report.load import run_label

        found, missing = {}, []
        for src, g in self._by_source(runs):
            for _, r in g[g["status"] == "done"].iterrows():
                try:
                    found[r["mlflow_run_id"]] = src.artifact(r["mlflow_run_id"], name)
                except Exception as e:  # noqa: BLE001 - listed in index.md instead of failing the report
                    missing.append(f"{run_label(r)}: {type(e).__name__}")
        return found, missing

    def tag(self, experiment: str | None, key: str) -> str | None:
        """An experiment tag (the grid's `reference`, its `design`) where every source that has
        the experiment(s) agrees; None otherwise."""
        exps = {experiment} if experiment else set(self.frame["experiment"])
        values = {t.get(key) for src in self.sources for name, t in src.tags().items() if name in exps} - {None}
        return values.pop() if len(values) == 1 else None


def merge(sources: list[Source], experiment: str | None = None) -> Merged:
    """All runs of `experiment` (None: all) from every source, each cell once (`dedupe`)."""
    frames = [src.frame(experiment).assign(source=i) for i, src in enumerate(sources)]
    frames = [f for f in frames if len(f)]
    if experiment and not frames:
        names = sorted({n for src in sources for n in src.tags()})
        raise BenchError(f"no runs of experiment '{experiment}' in {', '.join(s.label for s in sources)}; "
                         f"experiments there: {', '.join(names) or 'none'}")
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["run_id", "status", "source"])
    kept, notes = dedupe(frame, [s.label for s in sources])
    return Merged(sources, kept, notes)


def dedupe(frame: pd.DataFrame, labels: Sequence[str]) -> tuple[pd.DataFrame, list[str]]:
    """One row per `run_id`: a finished copy before an unfinished one, then the first source
    listed (then the MLflow run id, so the choice never depends on read order). Returns the rows
    kept and one line per kind of drop, naming the cells that were finished twice."""
    if frame.empty:
        return frame, []
    order = frame.assign(_unfinished=frame["status"] != "done").sort_values(
        ["_unfinished", "source", "mlflow_run_id"], kind="stable")
    has_id = order["run_id"].notna()
    first = order[has_id].drop_duplicates("run_id", keep="first")
    kept = pd.concat([first, order[~has_id]]).drop(columns="_unfinished").sort_index()
    extra = order[has_id & ~order.index.isin(first.index)]
    if extra.empty:
        return kept.reset_index(drop=True), []
    notes = [f"{extra['run_id'].nunique()} cells were found in more than one source; each is counted once "
             f"({len(extra)} copies left out): a finished copy before an unfinished one, then the first "
             "source listed."]
    twice = extra[extra["status"] == "done"]
    if len(twice):
        from bench.report.load import run_label, tidy

        shown = tidy(first[first["run_id"].isin(twice["run_id"])].drop(columns="_unfinished"))
        notes.append(f"{twice['run_id'].nunique()} of them finished in more than one source; kept: "
                     + "; ".join(f"{run_label(r)} from {labels[int(r['source'])]}" for _, r in shown.iterrows()))
    return kept.reset_index(drop=True), notes


UNFINISHED = ("running", "interrupted")


def export(results_dir: str | os.PathLike, experiment: str, out: str | os.PathLike) -> Path:
    """Write one experiment of a store as a segment under `out`: runs.csv (every run, every
    column of `Tracker.runs_frame`), curves.csv (stepped metrics of the finished runs),
    artifacts/<mlflow run id>/{widths,kept_channels}.json and segment.json (the experiment's tags,
    which columns are numbers, where and when it was exported). An earlier export there is replaced.
    Runs still running or interrupted are left out (counted in segment.json): the next `bench run`
    redoes them, so a committed segment holds only cells that ended."""
    store = Store(results_dir)
    everything = store.frame(experiment)
    runs = everything[~everything["status"].isin(UNFINISHED)].reset_index(drop=True)
    if runs.empty:
        raise BenchError(f"no ended runs of experiment '{experiment}' at {store.label}")
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not (out / SEGMENT_FILE).exists():
        raise BenchError(f"{out} is not empty and not a segment: choose a new folder")
    for name in ("runs.csv", "curves.csv", SEGMENT_FILE):
        (out / name).unlink(missing_ok=True)
    shutil.rmtree(out / "artifacts", ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    runs.to_csv(out / "runs.csv", index=False)
    store.curves(runs).to_csv(out / "curves.csv", index=False)
    for _, r in runs[runs["status"] == "done"].iterrows():
        for name in ARTIFACTS:
            try:
                obj = store.artifact(r["mlflow_run_id"], name)
            except Exception:  # noqa: BLE001 - an older harness: the report lists the run as missing it
                continue
            path = out / "artifacts" / r["mlflow_run_id"] / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(obj, indent=1))
    meta = {"experiment": experiment, "tags": store.tags().get(experiment, {}), "exported_from": store.label,
            "exported_at": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "runs": len(runs),
            "left_out_unfinished": len(everything) - len(runs),
            "numeric": [c for c in runs.columns if pd.api.types.is_numeric_dtype(runs[c])]}
    (out / SEGMENT_FILE).write_text(json.dumps(meta, indent=1) + "\n")
    return out
