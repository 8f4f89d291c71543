"""Failure-mode statistics of addition attacks, checked on hand-written strings."""

from __future__ import annotations

import json

import pytest

from _benchmarks import load

_failures = load("benchmarks/addition/failures.py", "addition_failures")
failure_modes, failure_table = _failures.failure_modes, _failures.failure_table
plot_failure_modes, read_successes = _failures.plot_failure_modes, _failures.read_successes


def test_failure_modes_on_hand_written_strings() -> None:
    texts = ["1+2=", "999+1=", "01+5=", "a+b=", "1+2"]
    s = failure_modes(texts)
    assert s["n"] == 5 and s["valid"] == 3
    assert s["invalid_rate"] == pytest.approx(2 / 5)
    assert s["leading_zero_share"] == pytest.approx(1 / 3)
    assert s["carry_chain_hist"][:4] == [2, 0, 0, 1]  # 1+2 and 01+5 carry nothing; 999+1 carries 3 times
    assert s["carry_chain_mean"] == pytest.approx(1.0)
    assert s["operand_length_hist"][:4] == [0, 4, 1, 1]  # operands 1,2,999,1,01,5
    assert s["operand_length_mean"] == pytest.approx(9 / 6)


def test_failure_modes_of_only_garbage() -> None:
    s = failure_modes(["", "++", "zz"])
    assert s["invalid_rate"] == 1.0 and s["valid"] == 0


def test_table_plot_and_successes(tmp_path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    rows = [{"round": 0, "sample": "01+2=", "tokens": ""}, {"round": 3, "sample": "99+1=", "tokens": ""}]
    (run / "successes.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    texts = read_successes([run, tmp_path / "missing"])
    assert texts == ["01+2=", "99+1="]
    groups = {"successes": failure_modes(texts), "prior": failure_modes(["1+2=", "x"])}
    table = failure_table(groups)
    assert "| successes | 2 | 0.000 | 0.500 | 1.00 |" in table
    assert plot_failure_modes(groups, tmp_path / "f.png").stat().st_size > 1000
