"""The reports the README quotes are committed (a `results/` ignore rule once hid docs/results/)."""
import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_every_report_the_readme_quotes_is_in_the_repository():
    quoted = sorted(set(re.findall(r"docs/results/[\w./-]*[\w/]", (REPO / "README.md").read_text())))
    assert quoted, "the README quotes no committed report"
    missing = [p for p in quoted if not (REPO / p).exists()]
    assert not missing, f"quoted but missing: {missing}"
    ignored = subprocess.run(["git", "check-ignore", *quoted], cwd=REPO, capture_output=True, text=True).stdout
    assert not ignored, f"quoted but ignored by git, so never committed: {ignored.split()}"
