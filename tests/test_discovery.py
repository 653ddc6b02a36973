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
from bench.run.executors import make_executor

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


@pytest.mark.spawns
def test_a_method_of_an_installed_distribution_is_discovered_by_its_entry_point(tmp_path):
    env = installed(tmp_path, "shiny_plugin", "shiny = shiny_plugin:Shiny", "shiny_plugin", PLUGIN)
    out = subprocess.run([sys.executable, "-m", "bench", "methods"], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    line = next(x for x in out.stdout.splitlines() if x.startswith("shiny_from_entry_point"))
    assert line.split()[1:] == ["score", "a", "method", "installed", "by", "another", "distribution"]
    # without the distribution on the path the method is not there
    plain = subprocess.run([sys.executable, "-m", "bench", "methods"], cwd=REPO, capture_output=True, text=True,
                           timeout=120)
    assert "shiny_from_entry_point" not in plain.stdout


def installed(tmp_path: Path, name: str, entry_points: str, module: str = "", text: str = "") -> dict[str, str]:
    """The environment of a process that has distribution `name` installed (what pip writes)."""
    if module:
        (tmp_path / f"{module}.py").write_text(text)
    dist = tmp_path / f"{name}-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[prunebench.methods]\n{entry_points}\n")
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO)])}


@pytest.mark.spawns
def test_a_broken_entry_point_is_one_warning_and_breaks_no_other_method(tmp_path):
    env = installed(tmp_path, "broken_plugin", "broken = broken_plugin:Broken", "broken_plugin",
                    "import no_such_module\n")
    out = subprocess.run([sys.executable, "-m", "bench", "methods"], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stderr.splitlines() == [
        "warning: entry point 'broken = broken_plugin:Broken' of broken_plugin 0.1 failed to load: "
        "ModuleNotFoundError: No module named 'no_such_module'; fix or uninstall that package"]
    names = [line.split()[0] for line in out.stdout.splitlines() if not line.startswith(" ")]
    assert {"magnitude", "random"} <= set(names) and "broken" not in names
    # a grid may still name it: its options pass, and only building it (in its cells) fails
    probe = ("from bench.core.registry import get_method\n"
             "cls = get_method('broken')\n"
             "cls.validate_args({'any': 1})\n"
             "try:\n    cls(any=1)\nexcept Exception as e:\n    print(type(e).__name__, e)\n")
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.stdout.startswith("MethodUnavailable entry point 'broken = broken_plugin:Broken'"), out.stderr


@pytest.mark.parametrize("kind, options, allowed", [
    ("pool", {"bogus": 1}, "workers, gpu_ids"),
    ("local", {"gpus_per_run": 1}, "workers"),
    ("ray", {"cpu_per_run": 1}, "workers, address, cpus_per_run, gpus_per_run"),
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


@pytest.mark.spawns
def test_ci_runs_the_slow_tier_with_the_same_command():
    """`tox` / `pytest` run the fast tier only; with CI set the same command collects every tier."""
    def collected(ci: bool) -> str:
        env = {k: v for k, v in os.environ.items() if k != "CI"} | ({"CI": "1"} if ci else {})
        out = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                              "tests/test_grid.py"], cwd=REPO, env=env, capture_output=True, text=True)
        return out.stdout.strip().splitlines()[-1]
    local, ci = collected(False), collected(True)  # every test of test_grid.py needs the real data
    n = int(re.match(r"(\d+) tests? collected", ci).group(1))
    assert local.startswith(f"no tests collected ({n} deselected)"), (local, ci)
