"""Markdown tables checked with a real parser (markdown-it-py, as GitHub renders GFM tables)."""

from __future__ import annotations

import re

from markdown_it import MarkdownIt

_PARSER = MarkdownIt("commonmark").enable("table")


def cells(line: str) -> int:
    """The cells of a table row written `| a | b |` (a `\\|` is part of a cell)."""
    return len(re.split(r"(?<!\\)\|", line.strip().strip("|")))


def table_problems(text: str) -> list[str]:
    """Why the pipe tables of a markdown text would not render as written: every block of lines starting with
    `|` must be one table of the parser's, each row with as many cells as its header."""
    lines = text.splitlines()
    tokens = _PARSER.parse(text)
    tables = {tuple(t.map): t for t in tokens if t.type == "table_open" and t.map}
    blocks, start = [], None
    for i, line in enumerate([*lines, ""]):
        if line.lstrip().startswith("|") and start is None:
            start = i
        elif not line.lstrip().startswith("|") and start is not None:
            blocks.append((start, i))
            start = None
    problems = []
    for begin, end in blocks:
        where = f"line {begin + 1}: {lines[begin][:60]!r}"
        if (begin, end) not in tables:
            problems.append(f"{where}: not a table (a delimiter row with as many cells as the header?)")
            continue
        width = cells(lines[begin])
        heads = 0
        i = tokens.index(tables[(begin, end)])
        while tokens[i].type != "thead_close":
            heads += tokens[i].type == "th_open"
            i += 1
        if heads != width:
            problems.append(f"{where}: the parser read {heads} header cells of {width}")
        problems += [
            f"line {k + 1}: {cells(lines[k])} cells under a header of {width}"
            for k in range(begin + 2, end)
            if cells(lines[k]) != width
        ]
    return problems
