import itertools
import json

import pytest

from _tiny import TinyTask
from banel.config import BanelConfig, EvalConfig, OracleConfig, RunConfig, from_dict
from banel.methods import DESCRIPTIONS, METHODS
from banel.oracle.budget import BudgetedOracle, BudgetExceeded
from banel.oracle.ledger import Ledger
from banel.runner import SUMMARY_FIELDS, Run, read_history

SMALL = {"rnd": {"hidden": 32, "layers": 2}}


def _run(tmp_path, method, budget=45, name=None, oracle=None, task=None, feasible_only=False):
    config = RunConfig(
        task="tiny",
        method=method,
        seed=3,
        nre_budget=budget,
        banel=BanelConfig(m=10, negative_epochs=3, generator_epochs=2, feasible_only=feasible_only),
        eval=EvalConfig(drift_samples=200),
        method_options=SMALL.get(method, {}),
    )
    task = task or TinyTask("transformer")
    out = tmp_path / (name or method)
    run = Run(config, task, out, oracle=oracle)
    run.start()
    METHODS[method](run)
    return run, run.finish(), read_history(out)


def _strip(rows):
    return [{k: v for k, v in r.items() if k != "wall_seconds"} for r in rows]


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_spends_whole_rounds_within_budget_and_writes_the_same_fields(tmp_path, method):
    run, summary, history = _run(tmp_path, method)
    assert set(DESCRIPTIONS) == set(METHODS)
    # 45 NREs pay for 4 rounds of m = 10; the last 5 are never requested. Repeats are answered from the
    # ledger for free (oracle.dedupe), so NREs used can be fewer than the 40 samples asked.
    assert summary["queries"] == 40 == run.oracle.queries and summary["rounds"] == 4
    assert [r["queries"] for r in history] == [0, 10, 20, 30, 40]
    assert summary["nre_used"] == run.oracle.used <= 40
    assert set(SUMMARY_FIELDS) <= set(summary)
    assert summary["trained_on_successes"] is False
    assert summary["kl_to_prior"] is not None and summary["drift_nll"] > 0
    assert all(r["success_rate"] is not None for r in history)  # eval.every = 1
    assert json.loads((tmp_path / method / "summary.json").read_text()) == summary
    # Reproducible from the config alone: a second run gives the same history.
    _, again, history2 = _run(tmp_path, method, name=method + "-again")
    assert _strip(history2) == _strip(history)
    assert {k: v for k, v in again.items() if k != "wall_seconds"} == {
        k: v for k, v in summary.items() if k != "wall_seconds"
    }


def test_summary_fields_are_identical_across_methods(tmp_path):
    keys = {m: set(_run(tmp_path, m, budget=10)[1]) for m in ("banel", "base", "negrl", "count")}
    assert len({frozenset(k) for k in keys.values()}) == 1


@pytest.mark.parametrize("method", ["reinforce", "count"])
def test_an_oracle_with_less_budget_than_the_config_stops_the_method(tmp_path, method):
    # The method only sees run.oracle: a budget of 25 allows 2 rounds even though the config says 45.
    oracle = BudgetedOracle(TinyTask().reward, 25)
    run, summary, _ = _run(tmp_path, method, oracle=oracle)
    assert summary["nre_used"] == 20 and oracle.used == 20
    with pytest.raises(BudgetExceeded):
        oracle(TinyTask().prior().sample(10, 0))


class BrokenOnZeroTask(TinyTask):
    """The tiny task whose oracle crashes on every sample starting with token 0 (a quarter of the space)."""

    def reward(self, x):
        if (x.tokens[:, 0] == 0).any():
            raise RuntimeError("simulator crashed")
        return super().reward(x)


@pytest.mark.parametrize("train_on_successes", [False, True])
@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_finishes_when_the_oracle_fails_on_some_samples(tmp_path, method, train_on_successes):
    # Failed evaluations come back as NaN, uncharged; a method must neither crash nor learn from them.
    options = dict(SMALL.get(method, {}))
    if method not in ("banel", "base", "temperature"):
        options["train_on_successes"] = train_on_successes
    config = RunConfig(
        task="tiny",
        method=method,
        seed=3,
        nre_budget=40,
        banel=BanelConfig(m=10, negative_epochs=2, generator_epochs=1, train_on_successes=train_on_successes),
        eval=EvalConfig(drift_samples=50),
        method_options=options,
        oracle=OracleConfig(chunk_size=1, retries=0),
    )
    run = Run(config, BrokenOnZeroTask("transformer"), tmp_path / method)
    run.start()
    METHODS[method](run)
    summary = run.finish()
    rows = Ledger(tmp_path / method / "ledger.sqlite").rows()
    errors = [r for r in rows if r["status"] == "error"]
    assert errors and all(r["charged"] == 0 and r["tokens"].startswith("0") for r in errors)
    assert summary["nre_used"] == sum(r["charged"] for r in rows) <= 40
    assert sum(h.get("evaluation_errors", 0) for h in read_history(tmp_path / method)) >= len(errors)
    for value in (summary["final_success_rate"], summary["best_success_rate"], summary["drift_nll"]):
        assert value == value  # not NaN: nothing was learned from a failed evaluation


class Crash(Exception):
    """Stands in for a kill."""


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_resumes_from_its_checkpoint_as_if_never_killed(tmp_path, method):
    _, reference, ref_history = _run(tmp_path, method, name="reference")

    def crash(row: dict) -> None:
        if row["round"] == 2:  # round 2's history row is written, its checkpoint not yet
            raise Crash

    config = from_dict(RunConfig, json.loads((tmp_path / "reference" / "config.json").read_text())["run"])
    out = tmp_path / "killed"
    run = Run(config, TinyTask("transformer"), out, on_round=crash)
    run.start()
    with pytest.raises(Crash):
        METHODS[method](run)
    run.oracle.close()
    paid = len(Ledger(out / "ledger.sqlite").rows())

    run_id = json.loads((out / "config.json").read_text())["run_id"]
    resumed = Run(config, TinyTask("transformer"), out, run_id=run_id)
    resumed.resume()
    assert resumed.round_index == 2  # continues after round 1's checkpoint, not from the start
    METHODS[method](resumed)
    summary = resumed.finish()
    rows = Ledger(out / "ledger.sqlite").rows()
    assert paid <= len(rows) == summary["nre_used"] and len({r["hash"] for r in rows}) == len(rows)  # none twice
    assert _strip(read_history(out)) == _strip(ref_history)
    assert {k: v for k, v in summary.items() if k != "wall_seconds"} == {
        k: v for k, v in reference.items() if k != "wall_seconds"
    }


class NoLeadingZeroTask(TinyTask):
    """The tiny task with a free check: a sequence starting with token 0 cannot win (a quarter of the space)."""

    def feasible(self, x):
        return x.tokens[:, 0] != 0


@pytest.mark.parametrize("method", sorted(METHODS))
def test_feasible_only_never_pays_for_what_the_task_rules_out(tmp_path, method):
    run, summary, history = _run(tmp_path, method, budget=40, task=NoLeadingZeroTask(), feasible_only=True)
    paid = Ledger(tmp_path / method / "ledger.sqlite").rows()
    assert paid and all(row["tokens"].split(",")[0] != "0" for row in paid)
    assert summary["queries"] == run.oracle.queries <= 40 and summary["nre_used"] <= 40
    # the methods did draw such samples: at least one round asked fewer than m = 10 samples
    asked = [b["queries"] - a["queries"] for a, b in itertools.pairwise(history)]
    assert min(asked) < 10
    with pytest.raises(ValueError, match="has no feasibility check"):
        _run(tmp_path, method, budget=40, name=method + "-nocheck", feasible_only=True)
