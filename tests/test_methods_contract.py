"""The method contract, for every method alike: budget, identical fields, faults, the free check, resume
after a crash or a SIGKILL, and the best and final generators."""

import ast
import inspect
import itertools
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import banel
from _tiny import TinyTask, run_tiny, state_tensors, tiny_config
from banel.cli import main
from banel.methods import BUILTIN, resolve_method
from banel.oracle.budget import BudgetedOracle, BudgetExceeded
from banel.oracle.ledger import Ledger
from banel.rundir import read_history
from banel.runner import SUMMARY_FIELDS, Run, load_generator
from banel.testing import CheckedTinyTask, TinyOptions

METHODS = sorted(BUILTIN)
SMALL = {
    "banel": {"negative_epochs": 3, "generator_epochs": 2},
    "rnd": {"hidden": 32, "layers": 2},
    "diverse": {"generator_epochs": 2},
}


def _settings(budget=45, **extra):
    return {"m": 10, "seed": 3, "nre_budget": budget, "eval": {"drift_samples": 200}, **SMALL, **extra}


def _strip(rows):
    return [{k: v for k, v in r.items() if k != "wall_seconds"} for r in rows]


def _same(a, b):
    return {k: v for k, v in a.items() if k != "wall_seconds"} == {k: v for k, v in b.items() if k != "wall_seconds"}


@pytest.mark.parametrize("method", METHODS)
def test_every_method_spends_whole_rounds_within_budget_and_writes_the_same_fields(tmp_path, method):
    run, summary, history = run_tiny(tmp_path / method, method, **_settings())
    # 45 NREs pay for 4 rounds of m = 10; the last 5 are never requested. Repeats are answered from the
    # ledger for free (oracle.dedupe), so NREs used can be fewer than the 40 samples asked.
    assert summary["queries"] == 40 == run.oracle.queries and summary["rounds"] == 4
    assert [r["queries"] for r in history] == [0, 10, 20, 30, 40]
    assert summary["nre_used"] == run.oracle.used <= 40
    assert set(SUMMARY_FIELDS) <= set(summary)
    assert summary["trained_on_successes"] is False and summary["method"] == method
    assert summary["kl_to_prior"] is not None and summary["drift_nll"] > 0
    assert all(r["success_rate"] is not None for r in history)  # eval.every = 1
    assert json.loads((tmp_path / method / "summary.json").read_text()) == summary
    # Reproducible from the config alone: a second run gives the same history.
    _, again, history2 = run_tiny(tmp_path / (method + "-again"), method, **_settings())
    assert _strip(history2) == _strip(history) and _same(again, summary)


def test_summary_fields_are_identical_across_methods(tmp_path):
    # The run writes every summary, so one set of names is no news; a method whose rounds the run misreads
    # shows as a field of another kind (None where the others hold a number, a list for a float).
    summaries = {m: run_tiny(tmp_path / m, m, **_settings(budget=20))[1] for m in METHODS}
    kinds = {m: {k: type(v).__name__ for k, v in s.items()} for m, s in summaries.items()}
    assert {m: k for m, k in kinds.items() if k != kinds["banel"]} == {}
    assert set(SUMMARY_FIELDS) <= set(kinds["banel"])
    numbers = ("best_round", "best_success_rate", "final_success_rate", "kl_to_prior", "nre_used")
    assert all(kinds["banel"][k] in ("int", "float") for k in numbers), kinds["banel"]
    assert {m: s["rounds"] for m, s in summaries.items()} == dict.fromkeys(METHODS, 2)


@pytest.mark.parametrize("method", METHODS)
def test_an_oracle_with_less_budget_than_the_config_stops_the_method(tmp_path, method):
    # The method only sees the run's oracle: a budget of 25 allows 2 rounds even though the config says 45.
    oracle = BudgetedOracle(TinyTask().reward, 25)
    _, summary, _ = run_tiny(tmp_path / method, method, use_oracle=oracle, **_settings())
    assert summary["nre_used"] == 20 == oracle.used and summary["rounds"] == 2
    with pytest.raises(BudgetExceeded):
        oracle(TinyTask().prior().sample(10, 0))


def test_no_method_module_holds_a_budget_loop_or_knows_the_run():
    # One round loop in the package (Run.execute): a method steps one round and never looks at the budget.
    for name in METHODS:
        source = inspect.getsource(inspect.getmodule(resolve_method(name).cls))
        tree = ast.parse(source)
        attributes = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
        imports = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert not {"remaining", "budget", "used"} & attributes, name
        assert not {"banel.runner", "banel.sweep", "banel.oracle.ledger"} & imports, name


class BrokenOnZeroTask(TinyTask):
    """The tiny task whose oracle crashes on every sample starting with token 0 (a quarter of the space)."""

    def reward(self, x):
        if (x.tokens[:, 0] == 0).any():
            raise RuntimeError("simulator crashed")
        return super().reward(x)


@pytest.mark.parametrize("train_on_successes", [False, True])
@pytest.mark.parametrize("method", METHODS)
def test_every_method_finishes_when_the_oracle_fails_on_some_samples(tmp_path, method, train_on_successes):
    # Failed evaluations come back as NaN, uncharged; a method must neither crash nor learn from them.
    settings = _settings(budget=40, train_on_successes=train_on_successes, oracle={"chunk_size": 1, "retries": 0})
    settings["eval"] = {"drift_samples": 50}
    _, summary, history = run_tiny(tmp_path / method, method, task=BrokenOnZeroTask(), **settings)
    rows = Ledger(tmp_path / method / "ledger.sqlite").rows()
    errors = [r for r in rows if r["status"] == "error"]
    assert errors and all(r["charged"] == 0 and r["tokens"].startswith("0") for r in errors)
    assert summary["nre_used"] == sum(r["charged"] for r in rows) <= 40
    assert summary["trained_on_successes"] is train_on_successes
    assert sum(h.get("evaluation_errors", 0) for h in history) >= len(errors)
    for value in (summary["final_success_rate"], summary["best_success_rate"], summary["drift_nll"]):
        assert value == value  # not NaN: nothing was learned from a failed evaluation


class Crash(Exception):
    """Stands in for a kill."""


@pytest.mark.parametrize("method", METHODS)
def test_every_method_resumes_from_its_checkpoint_as_if_never_killed(tmp_path, method):
    _, reference, ref_history = run_tiny(tmp_path / "reference", method, **_settings())

    def crash(row: dict) -> None:
        if row["round"] == 2:  # round 2's history row is written, its checkpoint not yet
            raise Crash

    config = tiny_config(method, **_settings())
    out = tmp_path / "killed"
    run = Run(config, TinyTask(), out, on_round=crash)
    run.start()
    with pytest.raises(Crash):
        run.execute()
    run.oracle.close()
    paid = len(Ledger(out / "ledger.sqlite").rows())

    run_id = json.loads((out / "config.json").read_text())["run_id"]
    resumed = Run(config, TinyTask(), out, run_id=run_id)
    resumed.resume()
    assert resumed.round_index == 2  # continues after round 1's checkpoint, not from the start
    summary = resumed.execute()
    rows = Ledger(out / "ledger.sqlite").rows()
    assert paid <= len(rows) == summary["nre_used"] and len({r["hash"] for r in rows}) == len(rows)  # none twice
    assert _strip(read_history(out)) == _strip(ref_history)
    assert _same(summary, reference)


@pytest.mark.parametrize("method", METHODS)
def test_feasible_only_never_pays_for_what_the_task_rules_out(tmp_path, method):
    task = CheckedTinyTask(TinyOptions(feasible=True))
    run, summary, history = run_tiny(tmp_path / method, method, task=task, **_settings(budget=40, feasible_only=True))
    paid = Ledger(tmp_path / method / "ledger.sqlite").rows()
    assert paid and all(row["tokens"].split(",")[0] != "0" for row in paid)
    assert summary["queries"] == run.oracle.queries <= 40 and summary["nre_used"] <= 40
    # the methods did draw such samples: at least one round asked fewer than m = 10 samples (diverse ranks
    # every round's 20 candidates with the check, so it finds 10 feasible ones and asks for all of them)
    asked = [b["queries"] - a["queries"] for a, b in itertools.pairwise(history)]
    assert min(asked) < 10 or (method == "diverse" and all(r["kept"] == 10 < r["candidates"] for r in history[1:]))
    # the task has a free check, so every evaluation reports the generator's infeasible fraction
    assert all(0 <= r["metrics"]["infeasible_fraction"] <= 1 for r in history)
    assert summary["metrics"]["infeasible_fraction"] == history[-1]["metrics"]["infeasible_fraction"]
    assert summary["prior_metrics"] == history[0]["metrics"]
    with pytest.raises(ValueError, match="has none"):
        run_tiny(tmp_path / (method + "-nocheck"), method, **_settings(budget=40, feasible_only=True))


@pytest.mark.parametrize("method", METHODS)
def test_best_and_final_generators_are_saved_and_load_for_every_method(tmp_path, method, cache):
    out = tmp_path / method
    run, summary, history = run_tiny(out, method, **_settings())
    rates = {r["round"]: r["success_rate"]["rate"] for r in history if r["round"] >= 0}
    # the first round with the highest rate, from round 1 on: after round 0 BaNEL's generator is the prior
    best_round = max((i for i in rates if i >= 1), key=lambda i: (rates[i], -i))
    assert summary["best_round"] == best_round and summary["selected_best_rate"] == rates[best_round]
    assert summary["best_success_rate"] == rates[best_round]  # exact rates: the re-estimate is the rate
    best = torch.load(out / "generator-best.pt", weights_only=True)
    final = torch.load(out / "generator-final.pt", weights_only=True)
    assert best["round"] == best_round and best["success_rate"]["rate"] == rates[best_round]
    assert final["round"] == summary["rounds"] - 1 and final["method"] == method
    # rebuilt from the folder alone, the saved generators have the rates the run measured
    task = TinyTask()
    assert task.exact_success_rate(load_generator(out, "best")) == pytest.approx(rates[best_round], rel=1e-6)
    assert task.exact_success_rate(load_generator(out, "final")) == pytest.approx(
        summary["final_success_rate"], rel=1e-6
    )


def _env() -> dict[str, str]:
    env = dict(os.environ)
    src = str(Path(banel.__file__).resolve().parents[1])
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _ledger(out: Path) -> list[dict]:
    db = sqlite3.connect(out / "ledger.sqlite")
    db.row_factory = sqlite3.Row
    return [dict(r) for r in db.execute("SELECT * FROM evaluations ORDER BY id")]


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
def test_every_method_killed_by_sigkill_mid_round_resumes_bit_identically(tmp_path, method, cache):
    # A slow oracle (0.3 s a call, one call a round) so that the kill lands in round 2, after its rewards are
    # committed to the ledger and before its checkpoint (a kill inside a call is the ledger's business).
    args = ["run", "banel.testing:tiny", "--method", method, "--budget", "60", "--set", "m=10", "--quiet", "--no-plot"]
    args += ["--set", "task_options.delay=0.3", "--threads", "1"]
    args += ["--set", "rnd.hidden=32", "--set", "banel.negative_epochs=3", "--set", "banel.generator_epochs=2"]
    out = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, "-m", "banel.cli", *args, "--out", str(out)],
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"run ended before it could be killed: {proc.stderr.read().decode()[-2000:]}")
            try:
                if any(r["round"] == 2 and r["status"] == "ok" for r in _ledger(out)):
                    break
            except sqlite3.Error:
                pass  # not created yet
            time.sleep(0.01)
        else:
            pytest.fail("round 2 never started")
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL and not (out / "summary.json").exists()
    done = subprocess.run(
        [sys.executable, "-m", "banel.cli", "resume", str(out), "--quiet", "--no-plot", "--threads", "1"],
        env=_env(),
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    ref = tmp_path / "reference"
    assert main([*args, "--out", str(ref)]) == 0
    resumed, reference = (json.loads((p / "summary.json").read_text()) for p in (out, ref))
    rows = _ledger(out)
    assert len({r["hash"] for r in rows}) == len(rows), "a sample was evaluated twice"
    assert sum(r["charged"] for r in rows) == resumed["nre_used"] <= 60
    assert _same(resumed, reference) and _strip(read_history(out)) == _strip(read_history(ref))
    for name in ("generator-best.pt", "generator-final.pt"):
        a, b = (torch.load(p / name, weights_only=True) for p in (out, ref))
        assert a["round"] == b["round"] and all(
            torch.equal(x, y) for x, y in zip(state_tensors(a["model"]), state_tensors(b["model"]), strict=True)
        )
