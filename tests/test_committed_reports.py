"""The reports README.md and docs/*.md quote are committed (a `results/` ignore rule once hid
docs/results/), and every relative link in them leads to a file of the repository (and to a
heading there, when it names one)."""
import ast
import io
import re
import subprocess
import tokenize
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def ignored(paths: list[str]) -> list[str]:
    out = subprocess.run(["git", "check-ignore", *paths], cwd=REPO, capture_output=True, text=True).stdout
    return out.split()


def anchor(heading: str) -> str:
    """GitHub's anchor of a markdown heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(doc: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", doc.read_text(), flags=re.S)
    return {anchor(m.group(1)) for m in re.finditer(r"^#+ (.+)$", text, re.M)}


def test_every_report_the_docs_quote_is_in_the_repository():
    quoted = sorted({p for doc in DOCS for p in re.findall(r"docs/results/[\w./-]*[\w/]", doc.read_text())
                     if not re.search(r"/[A-Z]+(/|$)", p)})  # not a placeholder (docs/results/NAME/...)
    assert quoted, "README and docs quote no committed report"
    missing = [p for p in quoted if not (REPO / p).exists()]
    assert not missing, f"quoted but missing: {missing}"
    assert not ignored(quoted), f"quoted but ignored by git, so never committed: {ignored(quoted)}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_lead_to_committed_files_and_headings(doc):
    broken, targets = [], []
    for link in LINK.findall(re.sub(r"```.*?```", "", doc.read_text(), flags=re.S)):
        if re.match(r"[a-z]+:", link):
            continue  # http:, https:, mailto:
        path, _, fragment = link.partition("#")
        target = (doc.parent / path).resolve() if path else doc
        if not target.exists() or REPO not in target.parents:
            broken.append(link)
            continue
        targets.append(str(target.relative_to(REPO)))
        if fragment and target.suffix == ".md" and fragment not in anchors(target):
            broken.append(link)
    assert not broken, f"{doc.name}: broken links {broken}"
    assert not ignored(targets), f"{doc.name}: links into git-ignored files {ignored(targets)}"


def prose(path: Path) -> list[tuple[int, str]]:
    """(line, text) of what a file says to its reader: every line of a document or config, the
    comments and docstrings of a Python file."""
    text = path.read_text(errors="replace")
    if path.suffix != ".py":
        return list(enumerate(text.splitlines(), 1))
    tree = ast.parse(text)
    out = [(tok.start[0], tok.string) for tok in tokenize.generate_tokens(io.StringIO(text).readline)
           if tok.type == tokenize.COMMENT]
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) \
                and ast.get_docstring(node, clean=False):
            first = node.body[0]
            out += [(first.lineno + i, line) for i, line in enumerate(ast.get_docstring(node, clean=False).splitlines())]
    return out


def test_no_reference_leaves_the_repository():
    """The method specs and the architecture live in docs/ (docs/methods.md, docs/architecture.md): no
    comment, docstring or document points at a spec outside the repository instead."""
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                           capture_output=True, text=True).stdout.split()
    files = [f for f in files if Path(f).suffix in {".md", ".py", ".yaml", ".toml", ".ini"}
             and not f.startswith("docs/results/") and (REPO / f).exists()]
    outside = re.compile(r"shared/[\w-]+\.md|(?<![\w/.-])design\.md")
    bare = re.compile(r"(?<![\w/.-])methods\.md")  # docs/ pages link it relatively
    hits = [f"{f}:{i}: {line.strip()[:80]}" for f in files for i, line in prose(REPO / f)
            if outside.search(line) or (not f.startswith("docs/") and bare.search(line))]
    assert not hits, "references to specs outside the repository:\n" + "\n".join(hits)
