"""Every markdown table banel writes renders as a table (issue 27): checked with a real markdown parser."""

from __future__ import annotations

from pathlib import Path

from _benchmarks import load
from _markdown import table_problems
from banel.eval.success import SuccessRate
from banel.report.table import delimiter_row, write_report
from test_report_table import _prior, _write_run

ROOT = Path(__file__).resolve().parents[1]


def test_the_checker_finds_what_github_would_show_as_raw_pipes():
    good = "text\n\n| a | b | c |\n|---|---|---|\n| 1 | 2 | 3 |\n"
    assert table_problems(good) == []
    assert table_problems(good.replace("|---|---|---|", "|---|")) == [
        "line 3: '| a | b | c |': not a table (a delimiter row with as many cells as the header?)"
    ]
    assert table_problems(good.replace("| 1 | 2 | 3 |", "| 1 | 2 | 3 | 4 |")) == ["line 5: 4 cells under a header of 3"]
    assert delimiter_row("| a | b | c |") == "|---|---|---|"


def test_the_comparison_table_is_valid_markdown_with_and_without_task_metrics(tmp_path):
    for seed, best in enumerate([1e-3, 3e-3, 2e-3]):
        _write_run(tmp_path / "with" / "rnd" / f"seed{seed}", "rnd", seed, best)
    _write_run(tmp_path / "with" / "banel" / "seed0", "banel", 0, 5e-3)
    _write_run(tmp_path / "without" / "banel" / "seed0", "banel", 0, 5e-3)
    (tmp_path / "without" / "banel" / "seed0" / "summary.json").write_text(
        (tmp_path / "without" / "banel" / "seed0" / "summary.json").read_text().replace('"metrics"', '"other"')
    )
    _prior(tmp_path / "without", SuccessRate(1e-3, 8e-4, 1.2e-3, False, 10_000, 10))
    for folder, columns in (("with", 17), ("without", 16)):
        md = write_report(tmp_path / folder)[0].read_text()
        assert table_problems(md) == []
        header = next(line for line in md.splitlines() if line.startswith("| Method"))
        assert header.count("|") - 1 == columns  # 16 columns and the task's one metric, or none


def test_the_failure_mode_table_is_valid_markdown():
    failures = load("benchmarks/addition/failures.py", "addition_failures")
    failure_modes, failure_table = failures.failure_modes, failures.failure_table
    groups = {"prior": failure_modes(["12+34=46", "1+1=03"]), "banel": failure_modes(["99+1=100"])}
    assert table_problems(failure_table(groups)) == []


def test_every_committed_markdown_file_has_valid_tables():
    files = [p for p in ROOT.rglob("*.md") if not {".git", ".venv", "node_modules"} & set(p.parts)]
    assert len(files) > 20  # benchmarks' tables, docs, the README
    assert {
        str(p.relative_to(ROOT)): table_problems(p.read_text()) for p in files if table_problems(p.read_text())
    } == {}
