"""One report from several MLflow stores and committed segments, with no run counted twice.

Synthetic stores hold hand-written runs (with the artifacts and curves the report reads), so
the merge rules and the segment round trip are checked without training anything."""
from __future__ import annotations

import io
import json

import pandas as pd
import pytest

from bench import cli
from bench.report.sources import merge, open_sources
from bench.run.tracking import Tracker


def log_run(tracker: Tracker, variant: str, seed: int, acc: float, status: str = "done",
            kept: dict | None = None) -> str:
    """One run of experiment `syn` as the runner logs it: tags, params, metrics, a curve and
    (finished runs) widths.json and kept_channels.json."""
    from mlflow.entities import Metric, Param

    client = tracker.client
    run = client.create_run(tracker.experiment_id("syn"), tags={
        "run_id": f"{variant}-{seed}", "method": variant.split("@")[0], "variant": variant, "dataset": "mnist",
        "model": "lenet5", "status": status, "seed": str(seed), **({"error": "boom"} if status != "done" else {})})
    rid = run.info.run_id
    params = {"seed": seed, "target_kind": "macs", "target": 0.5, "pruning.ranking": "per_layer",
              "pruning.rounds": 1, "git_commit": "0123456789abcdef", "git_dirty": "false"}
    curve = [Metric("finetune/val_acc", acc - 0.01 * (2 - e), 1000 + e, e) for e in (1, 2)]
    metrics = {} if status != "done" else {
        "acc_base": 0.98, "acc_pruned": acc - 0.1, "acc_final": acc, "macs_base": 1000, "macs_pruned": 500,
        "macs_reduction": 0.5, "params_base": 100, "params_pruned": 60, "params_reduction": 0.4,
        "latency_cpu_b1_base_ms": 2.0, "latency_cpu_b1_pruned_ms": 1.0 + seed / 10, "latency_cpu_b64_base_ms": 20.0,
        "latency_cpu_b64_pruned_ms": 12.0, "prune_time_s": 1.0, "finetune_time_s": 5.0, "target_met": 1.0,
        "preconditions_met": 1.0}
    client.log_batch(rid, params=[Param(k, str(v)) for k, v in params.items()],
                     metrics=[Metric(k, float(v), 0, 0) for k, v in metrics.items()] + (curve if metrics else []))
    if status == "done":
        base = {"0": 6, "3": 16, "7": 10}
        kept = kept or {"0": [0, 1, 2], "3": list(range(8))}
        for name, obj in (("widths.json", {"base": base, "pruned": {"0": 3, "3": 8, "7": 10}}),
                          ("kept_channels.json", {"base_widths": base, "kept": kept})):
            path = tracker.results_dir / "tmp" / rid / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(obj))
            client.log_artifact(rid, str(path))
    return rid


def report(tmp_path, name: str, *sources: str):
    out = tmp_path / name
    assert cli.main(["report", "--experiment", "syn", "--out", str(out), *sources]) == 0
    return out


def test_two_stores_that_share_runs_count_each_once(tmp_path, capsys):
    a, b = Tracker(tmp_path / "a"), Tracker(tmp_path / "b")
    for s, acc in ((0, 0.95), (1, 0.96)):
        log_run(a, "magnitude", s, acc)
    log_run(a, "random", 0, 0.93)
    log_run(a, "random", 1, 0.0, status="failed")          # failed here ...
    log_run(b, "random", 1, 0.94)                          # ... finished on the other machine: this copy counts
    log_run(b, "magnitude", 1, 0.90)                       # finished twice: the first store's copy (0.96) counts
    merged = merge(open_sources([tmp_path / "a", tmp_path / "b"]), "syn")
    assert len(merged.frame) == 4 and merged.frame["run_id"].is_unique
    kept = merged.frame.set_index("run_id")
    assert kept.loc["random-1", "status"] == "done" and kept.loc["magnitude-1", "acc_final"] == 0.96
    assert merged.duplicates[0].startswith("2 cells were found in more than one source; each is counted once")
    assert merged.duplicates[1] == (f"1 of them finished in more than one source; kept: "
                                    f"magnitude/mnist/lenet5/MACs −50%/s1 from {a.uri}")

    out = report(tmp_path, "ab", "--results-dir", str(tmp_path / "a"), "--results-dir", str(tmp_path / "b"))
    summary = pd.read_csv(out / "summary.csv").set_index("variant")
    assert summary.loc["magnitude", "runs"] == 2 and summary.loc["random", "runs"] == summary.loc["random", "done"] == 2
    assert summary.loc["magnitude", "acc_final_pct_mean"] == pytest.approx(95.5)
    index = (out / "index.md").read_text()
    assert "1 of them finished in more than one source" in index and "4 runs (4 done)" in index
    assert "- Code of the finished runs: git commit 0123456789ab (clean): 4 runs." in index

    capsys.readouterr()
    assert cli.main(["results", "--format", "csv", "--results-dir", str(tmp_path / "a"),
                     "--results-dir", str(tmp_path / "b")]) == 0
    captured = capsys.readouterr()
    rows = pd.read_csv(io.StringIO(captured.out))
    assert len(rows) == 4 and rows["run_id"].is_unique and {"preconditions_met", "git_commit"} <= set(rows.columns)
    assert "2 cells were found in more than one source" in captured.err


def test_a_segment_reports_as_the_store_it_was_exported_from(tmp_path):
    store = Tracker(tmp_path / "store")
    for s in (0, 1):
        log_run(store, "magnitude", s, 0.95 + s / 100)
        log_run(store, "rls", s, 0.94 + s / 100, kept={"0": [1, 2, 3], "3": list(range(2, 10))})
    log_run(store, "random", 2, 0.0, status="failed")
    store.set_reference("syn", "rls")
    seg = tmp_path / "docs" / "segments" / "s0-1"
    assert cli.main(["export", "--experiment", "syn", "--results-dir", str(tmp_path / "store"), "--out", str(seg)]) == 0
    assert sorted(p.name for p in seg.iterdir()) == ["artifacts", "curves.csv", "runs.csv", "segment.json"]
    assert not list(seg.rglob("*.db"))  # never the store itself

    original = report(tmp_path, "from-store", "--results-dir", str(tmp_path / "store"))
    segment = report(tmp_path, "from-segment", "--segments", str(seg.parent))  # a folder of segments
    both = report(tmp_path, "from-both", "--results-dir", str(tmp_path / "store"), "--segments", str(seg))
    for other in (segment, both):
        for rel in ("summary.csv", "tables/paired.csv", "tables/overlap.csv", "tables/overlap.md",
                    "tables/syn_mnist_lenet5.md", "tables/syn_mnist_lenet5.csv", "tables/reproduction.csv"):
            assert (other / rel).read_text() == (original / rel).read_text(), rel
        a, b = (pd.read_csv(d / "runs.csv").drop(columns="source") for d in (original, other))
        pd.testing.assert_frame_equal(a, b)
        assert sorted(p.name for p in (other / "figures").iterdir()) == sorted(
            p.name for p in (original / "figures").iterdir())
        after = (other / "index.md").read_text().split("## Paired comparison", 1)[1]
        assert after == (original / "index.md").read_text().split("## Paired comparison", 1)[1]
    assert set(pd.read_csv(segment / "tables" / "paired.csv")["reference"]) == {"rls"}  # the tag travels along
    overlap = pd.read_csv(segment / "tables" / "overlap.csv")
    assert overlap["n"].tolist() == [2]  # magnitude vs rls, both seeds, read from the segment's artifacts
    assert "more than one source" not in (segment / "index.md").read_text()
    assert "5 cells were found in more than one source" in (both / "index.md").read_text()


def test_a_segment_holds_only_runs_that_ended(tmp_path):
    """A cell still running (or interrupted) when the segment is cut is redone by the next `bench
    run`: the segment leaves it out and says how many it left out."""
    store = Tracker(tmp_path / "store")
    log_run(store, "magnitude", 0, 0.95)
    log_run(store, "random", 0, 0.0, status="failed")
    log_run(store, "rls", 0, 0.0, status="running")
    log_run(store, "rls", 1, 0.0, status="interrupted")
    seg = tmp_path / "seg"
    assert cli.main(["export", "--experiment", "syn", "--results-dir", str(tmp_path / "store"), "--out", str(seg)]) == 0
    assert sorted(pd.read_csv(seg / "runs.csv")["status"]) == ["done", "failed"]
    assert json.loads((seg / "segment.json").read_text())["left_out_unfinished"] == 2


def test_an_own_unpruned_reference_is_tabulated_but_never_compared_or_ranked(tmp_path):
    """`rls@no_prune` cuts nothing: it shows in the tables and gives Δacc vs own unpruned, but it is
    no pruning method to test against the reference, nor an ablation of RLS, nor a ranked entry."""
    store = Tracker(tmp_path / "store")
    for s, acc in ((0, 0.95), (1, 0.96), (2, 0.94)):
        log_run(store, "magnitude", s, acc)
        log_run(store, "rls", s, acc - 0.002)
        log_run(store, "rls@no_p", s, acc - 0.003)
        log_run(store, "rls@no_prune", s, acc + 0.01, kept={"0": list(range(6)), "3": list(range(16))})
    out = report(tmp_path, "own", "--results-dir", str(tmp_path / "store"))
    assert "rls@no_prune" in set(pd.read_csv(out / "summary.csv")["variant"])
    assert set(pd.read_csv(out / "tables" / "paired.csv")["variant"]) == {"rls", "rls@no_p"}
    assert set(pd.read_csv(out / "ablations.csv")["variant"]) == {"rls@no_p"}
    assert "rls@no_prune" not in set(pd.read_csv(out / "tables" / "ranking.csv").get("variant", []))


def test_a_wide_segment_reads_without_a_fragmented_frame(tmp_path):
    """A real segment has ~100 numeric columns; converting them one at a time left a frame so
    fragmented that every report printed pandas' PerformanceWarning."""
    import warnings

    from bench.report.sources import SEGMENT_FILE, Segment

    numeric = [f"metric_{i}" for i in range(120)]
    pd.DataFrame([{"run_id": "a", "status": "done", "experiment": "syn", **{c: "1.5" for c in numeric}}]).to_csv(
        tmp_path / "runs.csv", index=False)
    (tmp_path / SEGMENT_FILE).write_text(json.dumps({"experiment": "syn", "tags": {}, "numeric": numeric}))
    frame = Segment(tmp_path).frame("syn")
    with warnings.catch_warnings():
        warnings.simplefilter("error", pd.errors.PerformanceWarning)
        frame.assign(extra=frame["status"] != "done")
    assert frame[numeric].dtypes.eq(float).all() and frame["run_id"].tolist() == ["a"]
