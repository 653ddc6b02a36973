"""Every `python -m bench` command the README shows runs, as shown, in a fresh folder on the real
data: long grids on the smoke preset (configs/quick.yaml -> configs/smoke.yaml, experiment quick ->
smoke), placeholders filled (NAME, R, PART), `~` a temporary home that holds the plugin guide's
Taylor example (docs/plugins.md) as `~/my_plugins/taylor.py`. A README command this test does not
know how to run fails it, so a new command cannot go untested."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.spawns  # every test here starts interpreters

REPO = Path(__file__).resolve().parents[1]
COMMAND = re.compile(r"python -m bench [^`#\n]*[^`#\s]")
EXAMPLE = re.compile(r"<!-- example: ~/(\S+) -->\n```python\n(.*?)```\n", re.S)
# README text -> what runs: the smoke preset where the README's grid is long, placeholders filled.
SMOKE = [("configs/quick.yaml", "configs/smoke.yaml"), ("--experiment quick", "--experiment smoke"),
         ("NAME", "smoke"), ("--results-dir R", "--results-dir results"), ("PART", "part1")]
ORDER = ["methods", "plan", "run", "results", "export", "report"]  # a store before it is read


def readme_commands() -> list[str]:
    return list(dict.fromkeys(COMMAND.findall((REPO / "README.md").read_text())))


def as_run(command: str) -> str:
    for old, new in SMOKE:
        command = command.replace(old, new)
    return command.replace("python -m bench", f"{sys.executable} -m bench", 1)


@pytest.fixture(scope="module")
def ran(tmp_path_factory, data_dir):
    """Each README command, run in order in one fresh folder: {README command: completed process}."""
    home = tmp_path_factory.mktemp("home")
    for name, source in EXAMPLE.findall((REPO / "docs/plugins.md").read_text()):
        (home / name).parent.mkdir(parents=True, exist_ok=True)
        (home / name).write_text(source)
    work = tmp_path_factory.mktemp("work")
    for linked in ("configs", "tests"):  # what the commands name by relative path
        (work / linked).symlink_to(REPO / linked)
    env = {**os.environ, "HOME": str(home), "BENCH_DATA": str(data_dir),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    env.pop("BENCH_PLUGINS", None)
    env.pop("MLFLOW_TRACKING_URI", None)
    commands = sorted(readme_commands(), key=lambda c: ORDER.index(c.split()[3]))
    out = {}
    for command in commands:
        out[command] = subprocess.run(["bash", "-c", as_run(command)], cwd=work, env=env, capture_output=True,
                                      text=True, timeout=600)
    out["BENCH_PLUGINS"] = subprocess.run([sys.executable, "-m", "bench", "methods"], cwd=work, capture_output=True,
                                          text=True, timeout=600, env={**env, "BENCH_PLUGINS": str(home / "my_plugins")})
    out["work"] = work
    return out


def test_the_readme_shows_the_commands_this_test_runs():
    commands = readme_commands()
    assert all(c.split()[3] in ORDER for c in commands), commands
    runs = {c.split()[3] for c in commands}
    assert {"methods", "plan", "run", "results", "report", "export"} <= runs, runs
    assert any("--plugins ~/" in c for c in commands), "the README shows no plugin kept outside the checkout"


def test_every_readme_command_runs(ran):
    failed = {c: (p.returncode, p.stderr[-2000:]) for c, p in ran.items()
              if isinstance(p, subprocess.CompletedProcess) and p.returncode != 0}
    assert not failed, failed


def test_they_did_what_the_readme_says(ran):
    work, by_sub = ran["work"], {}
    for command, proc in ran.items():
        if command.startswith("python -m bench"):
            by_sub.setdefault(command.split()[3], []).append(proc)
    assert any("taylor" in p.stdout for p in by_sub["methods"])  # --plugins ~/my_plugins/taylor.py
    assert "taylor" in ran["BENCH_PLUGINS"].stdout  # export BENCH_PLUGINS=~/my_plugins
    assert "MDE" in by_sub["plan"][0].stdout
    table = by_sub["results"][0].stdout
    assert {"magnitude", "example_activation", "taylor"} <= set(re.findall(r"\b[a-z_]+\b", table)), table
    assert list((work / "docs/results/smoke/segments").glob("*/*.csv")), "export wrote no segment"
    assert (work / "reports/smoke/index.md").exists()
