"""Whole BaNEL runs against misbehaving oracles: the run finishes, every paid evaluation is in the ledger,
failed ones are uncharged errors, and the budget holds."""

from __future__ import annotations

import math
import threading
import time

import pytest
import torch

from _tiny import TinyTask, run_tiny
from banel.oracle.ledger import Ledger
from banel.sequences import Sequences

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
    "garbage": (GarbageOnTokenOne, {"chunk_size": 1, "retries": 1}, "1"),
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
