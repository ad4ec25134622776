"""The shell commands the docs show, so that a test runs each one as written.

A test that runs a documented command takes its argv from here: ``documented(text)`` fails unless
``text`` is a command line of a ```sh block in README.md or a docs/ page, and returns it split as the
shell would (placeholders such as ``results/<run>`` replaced by the caller's values). The test may
append overrides that shrink the run. tests/test_docs.py checks the other way round: every command
of a ```sh block is such a call's literal, or stands in a block marked ``<!-- not run by the tests:
REASON -->``.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FENCE = re.compile(r"^(\s*)(```+|~~~+)\s*([\w+-]*)")
MARK = re.compile(r"<!--\s*not run by the tests:\s*(.*?)\s*-->")


@dataclass(frozen=True)
class Command:
    """One command line of a ```sh block.

    Attributes:
        page: the file, relative to the repository (``README.md``, ``docs/cluster.md``).
        line: its line number there (1-based).
        argv: the command split as the shell would, without its comment.
        not_run: the mark's reason when the block is marked as not run by the tests, else "".
    """

    page: str
    line: int
    argv: tuple[str, ...]
    not_run: str = ""


@dataclass(frozen=True)
class Block:
    """A fenced code block: its language (``""`` when it names none), page and first line."""

    page: str
    line: int
    language: str
    lines: tuple[str, ...]
    not_run: str


def doc_pages() -> list[Path]:
    """README.md and every Markdown page under docs/."""
    return [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]


def blocks(path: Path) -> Iterator[Block]:
    """The fenced code blocks of ``path``, each with the not-run mark standing just before it, if any."""
    lines = path.read_text().splitlines()
    page = str(path.relative_to(REPO))
    mark, index = "", 0
    while index < len(lines):
        opened = FENCE.match(lines[index])
        if not opened:
            found = MARK.search(lines[index])
            if found:
                mark = found.group(1) or "(no reason given)"
            elif lines[index].strip():
                mark = ""  # a mark applies to the block right after it, with at most blank lines between
            index += 1
            continue
        fence, start, body = opened.group(2), index + 1, []
        index += 1
        while index < len(lines) and not lines[index].strip().startswith(fence):
            body.append(lines[index])
            index += 1
        yield Block(page, start, opened.group(3).lower(), tuple(body), mark)
        mark, index = "", index + 1


def commands(block: Block) -> Iterator[Command]:
    """The command lines of a ```sh block: comments and blank lines skipped, ``\\`` continuations joined."""
    pending, first = "", 0
    for offset, text in enumerate(block.lines):
        if not pending:
            first = block.line + 1 + offset
        pending += text
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        argv = tuple(shlex.split(pending, comments=True))
        pending = ""
        if argv:
            yield Command(block.page, first, argv, block.not_run)


def shell_commands() -> list[Command]:
    """Every command line of every ```sh block in README.md and docs/."""
    return [c for path in doc_pages() for b in blocks(path) if b.language == "sh" for c in commands(b)]


def documented(command: str, substitutions: Mapping[str, str] | None = None) -> list[str]:
    """The argv of ``command``, which must be a command line of a ```sh block of the docs as written.

    Args:
        command: the command exactly as the docs show it, placeholders included.
        substitutions: placeholder -> value, replaced in every argument (``{"results/<run>": str(run)}``).
    """
    argv = tuple(shlex.split(command))
    shown = [c for c in shell_commands() if c.argv == argv]
    assert shown, (f"the docs show no command {command!r} in a ```sh block (README.md, docs/*.md): "
                   "update the docs or the test")
    result = list(argv)
    for placeholder, value in (substitutions or {}).items():
        result = [arg.replace(placeholder, value) for arg in result]
    return result
