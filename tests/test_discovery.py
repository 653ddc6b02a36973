"""Third-party methods arrive through the `prunebench.methods` entry-point group; the tox
environments share one install."""
import configparser
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bench.errors import ConfigError
from bench.executors import make_executor

REPO = Path(__file__).resolve().parents[1]

PLUGIN = '''
from bench.api import ScoreMethod


class Shiny(ScoreMethod):
    """Scores every filter alike."""

    name = "shiny_from_entry_point"
    summary = "a method installed by another distribution"

    def score(self, model, task):
        return {}
'''


def test_a_method_of_an_installed_distribution_is_discovered_by_its_entry_point(tmp_path):
    (tmp_path / "shiny_plugin.py").write_text(PLUGIN)
    dist = tmp_path / "shiny_plugin-0.1.dist-info"  # what pip writes for an installed distribution
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: shiny-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[prunebench.methods]\nshiny = shiny_plugin:Shiny\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO)])}
    out = subprocess.run([sys.executable, "-m", "bench", "methods"], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    line = next(x for x in out.stdout.splitlines() if x.startswith("shiny_from_entry_point"))
    assert line.split()[1:] == ["score", "a", "method", "installed", "by", "another", "distribution"]
    # without the distribution on the path the method is not there
    plain = subprocess.run([sys.executable, "-m", "bench", "methods"], cwd=REPO, capture_output=True, text=True,
                           timeout=120)
    assert "shiny_from_entry_point" not in plain.stdout


@pytest.mark.parametrize("kind, options, allowed", [
    ("pool", {"bogus": 1}, "workers, threads, gpu_ids"),
    ("local", {"gpus_per_run": 1}, "workers, threads"),
    ("ray", {"cpu_per_run": 1}, "workers, threads, address, cpus_per_run, gpus_per_run"),
])
def test_unknown_executor_options_fail_naming_the_allowed_ones(kind, options, allowed):
    key = next(iter(options))
    with pytest.raises(ConfigError, match=f"^executor.{key}: unknown option of executor '{kind}'; allowed: {allowed}$"):
        make_executor(kind, **options)


def test_tox_quick_uses_the_test_environment_instead_of_installing_torch_again():
    ini = configparser.ConfigParser(interpolation=None)
    ini.read(REPO / "tox.ini")
    assert ini["tox"]["env_list"].strip() == "py"
    assert ini["testenv:quick"]["env_dir"] == "{work_dir}{/}py"  # the default env `py` lives there
    assert "extras" not in ini["testenv:quick"]  # same install as [testenv]: tox never rebuilds it
    assert ini["testenv"]["commands"].strip().endswith("pytest {posargs:-q}")  # tiers come from CI (conftest)


def test_ci_runs_the_slow_tier_with_the_same_command():
    """`tox` / `pytest` deselect the real-data tests; with CI set the same command collects them."""
    def collected(ci: bool) -> str:
        env = {k: v for k, v in os.environ.items() if k != "CI"} | ({"CI": "1"} if ci else {})
        out = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                              "tests/test_grid.py"], cwd=REPO, env=env, capture_output=True, text=True)
        return out.stdout.strip().splitlines()[-1]
    local, ci = collected(False), collected(True)  # every test of test_grid.py needs the real data
    n = int(re.match(r"(\d+) tests? collected", ci).group(1))
    assert local.startswith(f"no tests collected ({n} deselected)"), (local, ci)
