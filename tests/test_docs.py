"""The docs: every command they show is run by a test or marked as not run, their links resolve, and
``mkdocs build --strict`` builds them (and fails on a broken link, a broken anchor or a page left out)."""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import shlex
import shutil
import subprocess
import sys
import unicodedata
from pathlib import Path

import pandas as pd
import pytest

from tests.doc_commands import REPO, FENCE, blocks, doc_pages, documented, shell_commands

# A shell command belongs in a ```sh block, where it is checked; output goes in ```text.
UNCHECKED_SHELL_LABELS = ("", "bash", "shell", "console", "zsh", "shell-session")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")


def documented_literals() -> dict[tuple[str, ...], str]:
    """argv -> where, for the literal first argument of every ``documented("...")`` call under tests/."""
    found = {}
    for path in sorted((REPO / "tests").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call) or not node.args:
                continue
            name = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", "")
            first = node.args[0]
            if name == "documented" and isinstance(first, ast.Constant) and isinstance(first.value, str):
                found[tuple(shlex.split(first.value))] = f"{path.relative_to(REPO)}:{node.lineno}"
    return found


def test_every_shell_command_in_the_docs_is_run_by_a_test_or_marked_not_run():
    run_by_tests = documented_literals()
    unchecked = [f"{c.page}:{c.line}: {shlex.join(c.argv)}" for c in shell_commands()
                 if not c.not_run and c.argv not in run_by_tests]
    assert not unchecked, ("commands no test runs (take their argv from tests.doc_commands.documented, or mark the "
                           "block <!-- not run by the tests: REASON -->):\n" + "\n".join(unchecked))


def test_every_mark_gives_a_reason_and_every_command_is_in_an_sh_block():
    problems = []
    for path in doc_pages():
        for block in blocks(path):
            where = f"{block.page}:{block.line}"
            if block.not_run == "(no reason given)":
                problems.append(f"{where}: a not-run mark without its reason")
            if block.not_run and block.language != "sh":
                problems.append(f"{where}: a not-run mark before a ```{block.language} block")
            if block.language in UNCHECKED_SHELL_LABELS:
                problems.append(f"{where}: a ```{block.language or '(unlabelled)'} block: label commands sh, "
                                "output text")
    assert not problems, "\n".join(problems)


def test_every_command_a_test_takes_from_the_docs_is_in_the_docs():
    """Also for the tests that are skipped here (a GPU's): the docs still show what they run."""
    shown = {c.argv for c in shell_commands()}
    missing = [f"{where}: {shlex.join(argv)}" for argv, where in documented_literals().items() if argv not in shown]
    assert not missing, "documented(...) calls naming commands the docs no longer show:\n" + "\n".join(missing)


def test_documented_refuses_a_command_the_docs_do_not_show():
    assert documented("python -m search.report results/<run>", {"results/<run>": "/tmp/r"}) == [
        "python", "-m", "search.report", "/tmp/r"]
    absent = "python -m search trials=123456"  # not a literal argument: the static checks above skip it
    with pytest.raises(AssertionError, match="the docs show no command"):
        documented(absent)


# --- links ---

def mkdocs_slug(text: str) -> str:
    """The anchor MkDocs (Python-Markdown's toc) gives a heading."""
    value = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    value = re.sub(r"[^\w\s-]", "", value).strip().lower()
    return re.sub(r"[-\s]+", "-", value)


def github_slug(text: str) -> str:
    """The anchor GitHub gives a heading, where the README is read."""
    return re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")


def prose_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, text) outside fenced code blocks, inline code removed."""
    kept, fence = [], None
    for number, line in enumerate(path.read_text().splitlines(), 1):
        opened = FENCE.match(line)
        if opened and fence is None:
            fence = opened.group(2)
        elif fence is not None and line.strip().startswith(fence):
            fence = None
        elif fence is None:
            kept.append((number, re.sub(r"`[^`]*`", "", line)))
    return kept


def anchors(path: Path) -> set[str]:
    """The anchors both MkDocs and GitHub give the page's headings (a link must work in both)."""
    found = set()
    for _, line in prose_lines(path):
        heading = HEADING.match(line)
        if heading:
            text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.group(2)).replace("`", "")
            if mkdocs_slug(text) == github_slug(text):
                found.add(mkdocs_slug(text))
    return found


def broken_links(path: Path) -> list[str]:
    problems = []
    for number, line in prose_lines(path):
        for target in LINK.findall(line):
            if re.match(r"^[a-z]+:", target):  # http:, https:, mailto:
                continue
            file_part, _, anchor = target.partition("#")
            linked = (path.parent / file_part).resolve() if file_part else path
            where = f"{path.relative_to(REPO)}:{number}: {target}"
            if not linked.exists():
                problems.append(f"{where}: no such file")
            elif anchor and (linked.suffix != ".md" or anchor not in anchors(linked)):
                problems.append(f"{where}: no heading with that anchor (in MkDocs and on GitHub alike)")
    return problems


def test_links_of_the_readme_and_the_pages_resolve_anchors_included():
    problems = [p for page in doc_pages() for p in broken_links(page)]
    assert not problems, "\n".join(problems)


def test_the_link_check_finds_a_broken_file_and_a_broken_anchor(tmp_path, monkeypatch):
    page = tmp_path / "page.md"
    page.write_text("# A page, with a heading\n\n[ok](#a-page-with-a-heading) [gone](other.md) [bad](#nothing)\n")
    monkeypatch.setattr("tests.test_docs.REPO", tmp_path)
    found = broken_links(page)
    assert len(found) == 2 and "other.md: no such file" in found[0] and "#nothing" in found[1]


# --- the site ---

def mkdocs_or_skip() -> None:
    if importlib.util.find_spec("mkdocs") is None:
        if os.environ.get("OPTSEARCH_REQUIRE_DOCS"):
            pytest.fail("OPTSEARCH_REQUIRE_DOCS is set but MkDocs is not installed (pip install -e '.[docs]')")
        pytest.skip("MkDocs is not installed (pip install -e '.[docs]'); set OPTSEARCH_REQUIRE_DOCS=1 to make "
                    "this a failure")


def build_site(config_dir: Path, site: Path) -> subprocess.CompletedProcess:
    argv = documented("mkdocs build --strict")
    return subprocess.run([sys.executable, "-m", *argv, "--site-dir", str(site)], cwd=config_dir,
                          capture_output=True, text=True, timeout=120)


def test_the_docs_build_with_mkdocs_strict_and_every_page_is_in_the_site(tmp_path):
    mkdocs_or_skip()
    built = build_site(REPO, tmp_path / "site")
    assert built.returncode == 0, built.stderr[-3000:]
    for page in sorted((REPO / "docs").glob("*.md")):
        html = tmp_path / "site" / ("index.html" if page.stem == "index" else f"{page.stem}/index.html")
        assert html.exists(), f"{page.name} was not built"


@pytest.mark.parametrize(("change", "says"), [
    ("broken link", "contains a link 'no-such-page.md'"),
    ("broken anchor", "does not contain an anchor '#no-such-heading'"),
    ("page left out of the nav", "not included in the \"nav\" configuration"),
])
def test_a_broken_link_a_broken_anchor_or_a_page_left_out_fails_the_build(tmp_path, change, says):
    mkdocs_or_skip()
    shutil.copy2(REPO / "mkdocs.yml", tmp_path / "mkdocs.yml")
    docs = shutil.copytree(REPO / "docs", tmp_path / "docs")
    home = docs / "index.md"
    if change == "broken link":
        home.write_text(home.read_text() + "\n[gone](no-such-page.md)\n")
    elif change == "broken anchor":
        home.write_text(home.read_text() + "\n[gone](results.md#no-such-heading)\n")
    else:
        (docs / "orphan.md").write_text("# An orphan\n")
    built = build_site(tmp_path, tmp_path / "site")
    assert built.returncode != 0 and says in built.stderr, built.stderr[-2000:]


# --- the quick start ---

@pytest.mark.slow
def test_the_quick_start_search_and_pick_choose_the_fastest_member_at_097(finished_digits_run, tmp_path, capsys):
    """conftest's finished_digits_run is the quick start's ``python -m search``, shrunk to 3 trials; the pick
    that follows it chooses the fastest front member with accuracy >= 0.97, or says that none has it."""
    from search.pick import main as pick_main

    assert documented("python -m search") == ["python", "-m", "search"]
    for name in ("pareto.html", "pareto.png", "trials.csv", "pareto.csv", "study.db", "config.yaml"):
        assert (finished_digits_run / name).exists(), name
    out = tmp_path / "chosen"
    argv = documented("python -m search.pick results/<run> --min-accuracy 0.97 --sort latency_ms --out chosen/",
                      {"results/<run>": str(finished_digits_run), "chosen/": str(out)})
    code = pick_main(argv[3:])
    front = pd.read_csv(finished_digits_run / "pareto.csv")
    qualify = front[(front["state"] == "COMPLETE") & (front["accuracy"] >= 0.97)]
    if qualify.empty:
        assert code == 2 and "--min-accuracy 0.97" in capsys.readouterr().err and not out.exists()
    else:
        fastest = int(qualify.sort_values(["latency_ms", "trial"])["trial"].iloc[0])
        assert code == 0 and (out / f"trial-{fastest}.onnx").exists() and (out / "verify.py").exists()
