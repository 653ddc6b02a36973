"""Command line: `python -m bench {methods,run,plan,server,results,report,export}`."""
from __future__ import annotations

import argparse
import os
import sys

from bench import interrupts
from bench.errors import BenchError, Terminated


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _seeds(text: str) -> list[int]:
    """`0,1,2` or `3-9` (inclusive) or both: `0,3-5`."""
    try:
        out = []
        for part in _csv(text):
            lo, dash, hi = part.partition("-")
            out.extend(range(int(lo), int(hi) + 1) if dash and lo else [int(part)])
        return out
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seeds takes integers or ranges separated by commas, e.g. 0,1 or 3-9; "
                                         f"got '{text}'")


def cmd_methods(args) -> int:
    """One line per method, then its options (type, allowed values, default), indented."""
    from bench.core.options import options
    from bench.core.registry import get_method, method_names

    for name in method_names():
        cls = get_method(name)
        print(f"{name:<14} {cls.kind:<6} {cls.summary}")
        for o in options(cls):
            print(f"    {o.name}: {o.type_text} = {o.default!r}")
        if cls.pruning_defaults:
            print(f"    (pruning defaults: {cls.pruning_defaults})")
    return 0


def cmd_run(args) -> int:
    from bench.run import config
    from bench.run.grid import run_grid

    cfg = config.load(args.config)
    cfg = config.override(cfg, methods=args.methods, datasets=args.datasets, seeds=args.seeds, targets=args.targets)
    if args.data_dir:  # the flag beats BENCH_DATA, which beats the config's data_dir
        import os

        os.environ["BENCH_DATA"] = args.data_dir
        cfg.data_dir = args.data_dir
    if args.results_dir:
        cfg.results_dir = args.results_dir
    if args.threads is not None:  # before anything expands the grid: the threads are part of every run id
        cfg.threads = config.check_threads(args.threads, "--threads")
    try:
        counts = run_grid(cfg, executor=args.executor, workers=args.workers, progress=not args.no_progress,
                          address=args.ray_address, gpus_per_run=args.gpus_per_run)
        interrupts.raise_pending()  # one that something swallowed still ends the command as interrupted
    except KeyboardInterrupt as e:
        interrupts.handled()
        # its own line: a progress bar may have been left mid-line
        print("\ninterrupted: finished cells are saved; run the same command again to resume", file=sys.stderr)
        return 143 if isinstance(e, Terminated) else 130
    print("grid finished: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())), file=sys.stderr)
    if counts.get("failed") or counts.get("skipped"):
        for line in unfinished_cells(cfg):
            print(line, file=sys.stderr)
    return 1 if counts.get("failed") else 0


def unfinished_cells(cfg) -> list[str]:
    """One line per failed or skipped cell of `cfg`: its reason, and where its traceback is."""
    from pathlib import Path

    from bench.run.tracking import Tracker

    ids = {s.run_id for s in cfg.expand()}
    df = Tracker(cfg.results_dir).runs_frame()
    lines = []
    for _, r in df[df.run_id.isin(ids) & df.status.isin(["failed", "skipped"])].iterrows():
        tb = Path(cfg.results_dir) / "runs" / r["run_id"] / "traceback.txt"
        where = f" (traceback: {tb})" if r["status"] == "failed" and tb.exists() else ""
        lines.append(f"{r['status']}: {r['variant']}/{r['dataset']}/{r['model']} s{r['seed']} "
                     f"{r['target_kind']}-{r['target']:g}: {r['error']}{where}")
    return lines


def cmd_server(args) -> int:
    """A local MLflow tracking server for pool/Ray workers (loopback by default). The server replaces
    this process (exec): a SIGTERM reaches MLflow itself, which stops its uvicorn workers; a child
    process would leave them running and holding the port."""
    import os
    from pathlib import Path

    root = Path(args.results_dir).resolve()
    root.mkdir(parents=True, exist_ok=True)
    backend = args.backend_store_uri or f"sqlite:///{root / 'mlflow-server.db'}"
    cmd = [sys.executable, "-m", "mlflow", "server", "--host", args.host, "--port", str(args.port),
           "--backend-store-uri", backend, "--artifacts-destination", str(root / "server-artifacts")]
    print(f"MLflow server on http://{args.host}:{args.port}; in the shells that run grids: "
          f"export MLFLOW_TRACKING_URI=http://{args.host}:{args.port}", file=sys.stderr)
    sys.stderr.flush()
    os.execv(sys.executable, cmd)


def _stores(args) -> list[str]:
    """The --results-dir stores; the one under results/ when neither a store nor a segment is named."""
    return args.results_dir or ([] if args.segments else ["results"])


def cmd_results(args) -> int:
    from bench.report.sources import merge, open_sources

    merged = merge(open_sources(_stores(args), args.segments or []), args.experiment)
    labels = [src.label for src in merged.sources]
    df = merged.frame.assign(source=[labels[int(i)] for i in merged.frame["source"]])
    for note in merged.duplicates:
        print(note, file=sys.stderr)
    if args.format == "csv":
        df.to_csv(sys.stdout, index=False)
    elif args.format == "json":
        print(df.to_json(orient="records", indent=1))
    else:
        cols = ["status", "method", "variant", "dataset", "model", "seed", "target", "acc_base", "acc_pruned", "acc_final",
                "macs_reduction", "params_reduction", "latency_cpu_b64_base_ms", "latency_cpu_b64_pruned_ms",
                "epochs_used", "budget_met", "target_met"]
        show = df[[c for c in cols if c in df]].copy()
        for c in ("acc_base", "acc_pruned", "acc_final", "macs_reduction", "params_reduction"):
            show[c] = (show[c].astype(float) * 100).round(2)
        show["epochs_used"] = show["epochs_used"].astype(float).round(2)
        for c in ("budget_met", "target_met"):
            show[c] = show[c].astype(float).map({1.0: "yes", 0.0: "no"})
        print(show.to_string(index=False) if len(show) else "no runs yet")
        failed = df[df["status"].isin(["failed", "skipped"])]
        for _, r in failed.iterrows():
            print(f"{r['status']}: {r['variant']}/{r['dataset']}/{r['model']} s{r['seed']}: {r['error']}")
    return 0


def cmd_report(args) -> int:
    from bench.report.build import build_report

    files = build_report(_stores(args), experiment=args.experiment, out=args.out, reference=args.reference,
                         segments=args.segments or [])
    print(f"report: {files.index} ({len(files.tables)} table files, {len(files.figures)} figure files)",
          file=sys.stderr)
    return 0


def cmd_export(args) -> int:
    from bench.report.sources import export

    out = export(args.results_dir, args.experiment, args.out)
    print(f"segment: {out} (commit it; build reports from it with --segments)", file=sys.stderr)
    return 0


def _sources_args(p: argparse.ArgumentParser) -> None:
    """Where runs are read from, shared by `results` and `report`: stores and committed segments."""
    p.add_argument("--results-dir", action="append",
                   help="a folder with an MLflow store (mlflow.db); repeat it to merge stores "
                        "(default: results, unless --segments is given)")
    p.add_argument("--segments", action="append",
                   help="a segment written by `bench export`, or a folder of them; repeatable. A cell found in "
                        "several sources counts once: a finished copy first, then the first source listed")


def cmd_plan(args) -> int:
    from bench.report.plan_power import forecast_lines
    from bench.run import config
    from bench.run.executors import DEFAULT_EXECUTOR
    from bench.run.grid import default_workers
    from bench.run.plan import make_plan, render

    cfg = config.load(args.config)
    cfg = config.override(cfg, methods=args.methods, datasets=args.datasets, seeds=args.seeds, targets=args.targets)
    if args.results_dir:
        cfg.results_dir = args.results_dir
    kind = args.executor or cfg.executor.get("kind", DEFAULT_EXECUTOR)
    workers = args.workers or cfg.executor.get("workers") or default_workers(kind, cfg.threads)
    costs = render(make_plan(cfg, probe_steps=args.probe_steps),
                   executor=kind, workers=workers)
    print("\n".join([costs, *forecast_lines(cfg, args.mde)]))
    return 0


def _grid_args(p: argparse.ArgumentParser, example: str) -> None:
    """The config and the flags that narrow it, shared by `run` and `plan`."""
    p.add_argument("config", help=f"grid YAML, e.g. {example}")
    p.add_argument("--methods", type=_csv, help="comma list, narrows the config")
    p.add_argument("--datasets", type=_csv, help="comma list, narrows the config")
    p.add_argument("--seeds", type=_seeds, help="comma list of integers (or ranges 3-9): replaces the grid's seeds, "
                   "narrows a dataset's or a target's own")
    p.add_argument("--targets", type=_csv, help="comma list such as macs:0.5,params:0.3")
    _plugins_arg(p)


def _plugins_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--plugins", type=_csv, default=[],
                   help=f"comma list of method plugins kept outside methods/: .py files, folders of them, or "
                        f"importable modules (also: the BENCH_PLUGINS environment variable, entries separated by "
                        f"'{os.pathsep}')")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench", description="prunebench: fair CNN pruning comparisons")
    sub = p.add_subparsers(dest="command", required=True)
    m = sub.add_parser("methods", help="list registered pruning methods")
    _plugins_arg(m)
    m.set_defaults(fn=cmd_methods)
    r = sub.add_parser("run", help="run a grid config (finished cells are skipped)")
    _grid_args(r, "configs/quick.yaml")
    r.add_argument("--data-dir", help="folder with <dataset>.npz (default: BENCH_DATA or the config)")
    r.add_argument("--results-dir", help="where runs, checkpoints and the MLflow store go")
    r.add_argument("--no-progress", action="store_true", help="no progress bars")
    r.add_argument("--executor", choices=("local", "pool", "ray"), help="default: the config's, else pool")
    r.add_argument("--workers", type=int, help="parallel cells for pool/ray (default: 1 local; pool: as many as "
                   "the cores other processes leave free, checked between cells; one per GPU on GPUs)")
    r.add_argument("--ray-address", help="Ray cluster address ('auto' joins a running one; default: start a local one)")
    r.add_argument("--threads", type=int, help="torch threads per cell, replacing the config's `threads` (default "
                   "1): they change the numbers, so other run ids and bases")
    r.add_argument("--gpus-per-run", type=float, help="Ray: GPU share per cell, e.g. 0.25 runs 4 cells per GPU")
    r.set_defaults(fn=cmd_run)
    pl = sub.add_parser("plan", help="cells, bases, what is done and the estimated cost of the rest")
    _grid_args(pl, "configs/paper.yaml")
    pl.add_argument("--results-dir", help="the store to check for finished cells (default: the config's)")
    pl.add_argument("--executor", choices=("local", "pool", "ray"), help="default: the config's, else pool")
    pl.add_argument("--workers", type=int, help="parallel cells (default as for `run`)")
    pl.add_argument("--probe-steps", type=int, help="timed training steps per probed model (median; default 5)")
    pl.add_argument("--mde", type=float, default=1.0,
                    help="difference in pp to size the primary comparisons for: seeds needed at 80 %% power")
    pl.set_defaults(fn=cmd_plan)
    sv = sub.add_parser("server", help="start an MLflow tracking server for pool/Ray workers")
    sv.add_argument("--host", default="127.0.0.1")
    sv.add_argument("--port", type=int, default=5000)
    sv.add_argument("--results-dir", default="results")
    sv.add_argument("--backend-store-uri", help="default: sqlite under results/; PostgreSQL: postgresql://user@host/db")
    sv.set_defaults(fn=cmd_server)
    s = sub.add_parser("results", help="print one row per run from MLflow stores and segments")
    s.add_argument("--format", choices=("table", "csv", "json"), default="table")
    s.add_argument("--experiment", help="only this experiment (default: all)")
    _sources_args(s)
    s.set_defaults(fn=cmd_results)
    rp = sub.add_parser("report", help="tables, figures and index.md from the runs of stores and segments")
    rp.add_argument("--experiment", help="only this experiment (default: all)")
    rp.add_argument("--out", help="output folder (default: reports/<experiment> or reports/all)")
    rp.add_argument("--reference",
                    help="variant the others are compared with, paired over seeds (default: the grid "
                         "config's `reference:`, else magnitude)")
    _sources_args(rp)
    _plugins_arg(rp)  # their `report_extras`
    rp.set_defaults(fn=cmd_report)
    ex = sub.add_parser("export", help="write one experiment's runs as a segment to commit (CSV + small JSON)")
    ex.add_argument("--experiment", required=True, help="the experiment (grid name) to export")
    ex.add_argument("--results-dir", default="results", help="the store to read (default: results)")
    ex.add_argument("--out", required=True, help="the segment folder, e.g. docs/results/curves/segments/mnist")
    ex.set_defaults(fn=cmd_export)
    return p


def main(argv: list[str] | None = None) -> int:
    interrupts.install()  # `kill` stops as cleanly as Ctrl-C, and neither can be lost
    args = parser().parse_args(argv)
    try:
        if args.fn is cmd_run and cold_pool_grid(args):
            from bench.run.executors import warm_forkserver

            warm_forkserver()
        if hasattr(args, "plugins"):  # a command that uses methods
            _load_methods(args.plugins)
        code = args.fn(args)
        sys.stdout.flush()  # a reader that left early (`| head`) shows here, inside the try
        return code
    except BenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `... | head`: the reader has all it wants; nothing is wrong
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # the exit's own flush must not fail
        return 0


def cold_pool_grid(args) -> bool:
    """Whether `bench run` will start a pool on a fresh store, judged before anything imports torch
    (loading the methods does): then the pool's forkserver may start first. Plugins add to
    sys.path, which the forkserver copies when it starts, so with plugins it starts later, as
    before. A config that does not parse here is left to `config.load` to report."""
    import yaml

    from bench.run.executors import DEFAULT_EXECUTOR
    from bench.run.tracking import may_hold_runs

    if args.plugins or os.environ.get("BENCH_PLUGINS"):
        return False
    try:
        raw = yaml.safe_load(open(args.config))
        executor = (raw.get("executor") or {}).get("kind", DEFAULT_EXECUTOR)
        results_dir = args.results_dir or raw.get("results_dir", "results")
    except Exception:  # noqa: BLE001 - any malformed config: config.load names the problem
        return False
    return (args.executor or executor) == "pool" and not may_hold_runs(results_dir)


def _load_methods(plugins: list[str]) -> None:
    """Load the --plugins, then warn once per installed entry point that failed to load (its cells
    fail; the other methods run)."""
    from bench.core import registry

    if plugins:
        registry.add_plugins(plugins)
    for line in registry.load_errors():
        print(f"warning: {line}", file=sys.stderr)
