"""Whole BaNEL runs against misbehaving oracles: the run finishes, every paid evaluation is in the ledger,
failed ones are uncharged errors, and the budget holds."""

from __future__ import annotations

import json
import math
import threading
import time

import pytest
import torch

from _tiny import TinyTask, charged_rows, run_tiny
from banel.oracle.ledger import Ledger
from banel.sequences import Sequences
from banel.tasks import task_factory
from banel.testing import TinyOptions
from banel.testing import TinyTask as OptionsTinyTask

BUDGET, M = 60, 10


class RaisesOnEveryTenthCall(TinyTask):
    """10% of oracle calls raise (a flaky simulator); retried ones succeed."""

    def __init__(self, kind: str = "transformer") -> None:
        super().__init__(kind)
        self.calls, self.lock = 0, threading.Lock()

    def reward(self, x: Sequences) -> torch.Tensor:
        with self.lock:
            self.calls += 1
            n = self.calls
        if n % 10 == 0:
            raise ConnectionError("simulated outage")
        return super().reward(x)


class HangsOnTokenTwo(TinyTask):
    """Every sample that starts with token 2 hangs far past the timeout."""

    def reward(self, x: Sequences) -> torch.Tensor:
        if (x.tokens[:, 0] == 2).any():
            time.sleep(5)
        return super().reward(x)


class GarbageOnTokenOne(TinyTask):
    """Samples that start with token 1 get 0.5 or NaN: malformed rewards."""

    def reward(self, x: Sequences) -> torch.Tensor:
        r = super().reward(x)
        first = x.tokens[:, 0]
        r[first == 1] = torch.where(x.tokens[first == 1, 1] % 2 == 0, 0.5, math.nan).double()
        return r


class RaisesOnTokenTwo(TinyTask):
    """A batched simulator that crashes on any call holding a sample that starts with token 2."""

    def reward(self, x: Sequences) -> torch.Tensor:
        if (x.tokens[:, 0] == 2).any():
            raise RuntimeError("simulator crashed")
        return super().reward(x)


CASES = {
    "raises": (RaisesOnEveryTenthCall, {"chunk_size": 1, "retries": 2}, None),
    # default chunking: one call per batch, which a bad sample fails; only the bad samples may be lost
    "raises_in_batch": (RaisesOnTokenTwo, {"retries": 1}, "2"),
    "hangs": (
        HangsOnTokenTwo,
        {"executor": "thread", "workers": 4, "chunk_size": 1, "timeout": 0.2, "retries": 0},
        "2",
    ),
    # a quarter of the samples answered out of contract: errors, as long as it never reaches 5 in a row (the
    # generator learns to favour token 1 here, and does), so the stop is turned off to see the errors recorded
    "garbage": (GarbageOnTokenOne, {"chunk_size": 1, "retries": 1, "max_out_of_contract": 0}, "1"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_run_finishes_against_a_misbehaving_oracle_and_the_ledger_holds_every_paid_evaluation(tmp_path, case):
    cls, oracle_config, failing_prefix = CASES[case]
    task = cls("transformer")
    out = tmp_path / case
    settings = {"seed": 1, "nre_budget": BUDGET, "m": M, "eval": {"drift_samples": 50}, "oracle": oracle_config}
    _, summary, history = run_tiny(out, "banel", task, banel={"negative_epochs": 2, "generator_epochs": 1}, **settings)

    rows = Ledger(out / "ledger.sqlite").rows()
    ok = [r for r in rows if r["status"] == "ok"]
    errors = [r for r in rows if r["status"] == "error"]
    assert summary["rounds"] == BUDGET // M and summary["queries"] == BUDGET
    assert summary["nre_used"] == len(ok) == sum(r["charged"] for r in rows) <= BUDGET
    assert all(r["reward"] in (0.0, 1.0) for r in ok)
    assert all(r["charged"] == 0 and r["reward"] is None for r in errors)
    assert not [r for r in rows if r["status"] in ("pending", "lost")]
    if failing_prefix is None:  # every outage was retried successfully
        assert not errors and task.calls > len(ok)
    else:  # exactly the bad samples are errors, and none of them was paid for
        assert errors and {r["tokens"].split(",")[0] for r in errors} == {failing_prefix}
        assert all(r["tokens"].split(",")[0] != failing_prefix for r in ok)
    assert sum(h.get("evaluation_errors", 0) for h in history) >= len({r["hash"] for r in errors})
    assert not math.isnan(summary["best_success_rate"])


class Switch:
    """Whether the oracle of `down_tiny` is down (module level: the CLI builds the task by import path)."""

    down_after = 0
    calls = 0


@task_factory("the tiny task whose oracle goes down after Switch.down_after calls", {}, TinyOptions)
def down_tiny(options: TinyOptions, cache) -> OptionsTinyTask:
    """The tiny task; its reward raises ConnectionError from call Switch.down_after + 1 on, while down_after > 0."""

    class Down(OptionsTinyTask):
        def reward(self, x: Sequences) -> torch.Tensor:
            Switch.calls += 1
            if Switch.down_after and Switch.calls > Switch.down_after:
                raise ConnectionError("connection refused")
            return super().reward(x)

    return Down(options)


DOWN_SETTINGS = {
    "m": 10,
    "banel.negative_epochs": 2,
    "banel.generator_epochs": 1,
    "eval.drift_samples": 50,
    "oracle.chunk_size": 2,
    "oracle.dedupe": "false",  # every sample paid: a round is 5 calls of 2
    "oracle.max_consecutive_failures": 5,
}
DOWN_ARGS = ["--budget", "40", "--quiet", "--no-plot", "--threads", "1"]
DOWN_ARGS += [arg for key, value in DOWN_SETTINGS.items() for arg in ("--set", f"{key}={value}")]


def test_a_failing_oracle_stops_the_run_and_resume_continues_once_it_works(tmp_path, capsys):
    from banel.cli import main

    reference = tmp_path / "reference"
    Switch.down_after, Switch.calls = 0, 0
    assert main(["run", "test_oracle_faults_run:down_tiny", "--out", str(reference), *DOWN_ARGS]) == 0
    capsys.readouterr()

    out = tmp_path / "run"
    Switch.down_after, Switch.calls = 7, 0  # a round is 5 calls of 2 samples: down from round 1's 3rd call
    assert main(["run", "test_oracle_faults_run:down_tiny", "--out", str(out), *DOWN_ARGS]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == (
        "banel: error: the oracle is failing: 5 calls in a row failed (the last: ConnectionError: connection "
        f"refused); the run stopped, continue it with `banel resume {out}` once the oracle works"
    )
    assert not (out / "summary.json").exists()  # not a "finished" run on nothing
    rows = Ledger(out / "ledger.sqlite").rows()
    # round 0 paid; of round 1 the 2 calls that answered; the failed ones were released (errors are free)
    assert [(r["round"], r["status"], r["charged"]) for r in rows] == [(0, "ok", 1)] * 10 + [(1, "ok", 1)] * 4
    paid_before = {r["id"] for r in rows}

    Switch.down_after = 0  # the oracle works again
    assert main(["resume", str(out), "--quiet", "--no-plot", "--threads", "1"]) == 0
    resumed = json.loads((out / "summary.json").read_text())
    expected = json.loads((reference / "summary.json").read_text())
    assert {k: v for k, v in resumed.items() if k != "wall_seconds"} == {
        k: v for k, v in expected.items() if k != "wall_seconds"
    }
    rows = Ledger(out / "ledger.sqlite").rows()
    assert charged_rows(rows) == charged_rows(Ledger(reference / "ledger.sqlite").rows())  # nothing paid twice
    assert paid_before <= {r["id"] for r in rows} and resumed["nre_used"] == len(rows)


class Scores:
    """Whether the reward of `scoring_tiny` answers with a probability instead of 0/1 (module level: the CLI
    builds the task by import path)."""

    on = False
    calls = 0


@task_factory("the tiny task whose reward answers 0.3 or NaN while Scores.on", {}, TinyOptions)
def scoring_tiny(options: TinyOptions, cache) -> OptionsTinyTask:
    """The tiny task; while Scores.on its reward returns 0.3 for samples starting with an even token, NaN else."""

    class Scoring(OptionsTinyTask):
        def reward(self, x: Sequences) -> torch.Tensor:
            Scores.calls += 1
            if Scores.on:
                return torch.where(x.tokens[:, 0] % 2 == 0, 0.3, math.nan).double()
            return super().reward(x)

    return Scoring(options)


def test_an_oracle_out_of_contract_stops_the_run_in_one_line_and_resume_pays_nothing_twice(tmp_path, capsys):
    from banel.cli import main

    settings = {k: v for k, v in DOWN_SETTINGS.items() if k != "oracle.max_consecutive_failures"}
    args = DOWN_ARGS[:6] + [arg for key, value in settings.items() for arg in ("--set", f"{key}={value}")]
    reference = tmp_path / "reference"
    Scores.on = False
    assert main(["run", "test_oracle_faults_run:scoring_tiny", "--out", str(reference), *args]) == 0
    out_lines = capsys.readouterr().out.splitlines()
    assert "paid 40 NREs of the 40 budget for 40 samples asked: 0 answered free from the ledger, 0 evaluation " in (
        "\n".join(out_lines)
    )

    out = tmp_path / "run"
    Scores.on, Scores.calls = True, 0  # a score from the first call on: the run stops in its first round
    assert main(["run", "test_oracle_faults_run:scoring_tiny", "--out", str(out), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[-1].startswith("banel: error: the oracle answered ") and err[-1].endswith(
        "; banel expects 0 or 1 (5 samples in a row answered out of contract: a score or a probability instead "
        f"of a reward?); the run stopped, continue it with `banel resume {out}` once the oracle works"
    )
    assert any(f"answered {v} for sample " in err[-1] for v in ("0.3", "nan"))
    # calls of 2 samples, each answered out of contract the first time: 3 calls hold the 5 samples in a row
    assert Scores.calls == 3 and not (out / "summary.json").exists()
    rows = Ledger(out / "ledger.sqlite").rows()
    assert [(r["status"], r["charged"]) for r in rows] == []  # nothing paid, nothing recorded as an answer

    Scores.on = False  # the reward fixed
    assert main(["resume", str(out), "--quiet", "--no-plot", "--threads", "1"]) == 0
    resumed = json.loads((out / "summary.json").read_text())
    expected = json.loads((reference / "summary.json").read_text())
    assert {k: v for k, v in resumed.items() if k != "wall_seconds"} == {
        k: v for k, v in expected.items() if k != "wall_seconds"
    }
    rows = Ledger(out / "ledger.sqlite").rows()
    assert charged_rows(rows) == charged_rows(Ledger(reference / "ledger.sqlite").rows())  # nothing paid twice
    assert resumed["nre_used"] == len(rows) == 40 and resumed["evaluation_errors"] == 0
