"""The costly oracle (issue 26): banel calls a task's reward only through the run's budgeted, ledgered oracle.

The counting double (banel.testing.TinyTask with count_file) appends one line per costly call, from any
process; free measurement goes through free_reward, which is never counted. Every test here ends in the
same equality: samples scored by the reward == ledger rows == NREs paid.
"""

import json
import math
import subprocess
import sys

import pytest
import torch

from _tiny import COUNTER_ENV, child_env, killed_run, read_rows, run_tiny, state_tensors
from banel.cli import main
from banel.config import EvalConfig
from banel.eval.evidence import kept_round, paid_evidence
from banel.eval.success import prior_estimate, reestimate, success_rate
from banel.methods import BUILTIN
from banel.report.paid import more_per_run_p, more_pooled_p, smallest_p
from banel.rundir import read_history
from banel.runner import load_generator
from banel.testing import TinyOptions, TinyTask, check_task, counted_calls

METHODS = sorted(BUILTIN)
SMALL = {
    "banel": {"negative_epochs": 3, "generator_epochs": 2},
    "rnd": {"hidden": 32, "layers": 2},
    "diverse": {"generator_epochs": 2},
}


def _ledger_rows(folder):
    return sum(len(read_rows(p)) for p in sorted(folder.rglob("ledger.sqlite")))


def _paid(folder):
    return sum(json.loads(p.read_text())["nre_used"] for p in sorted(folder.rglob("summary.json")))


class Unpayable(TinyTask):
    """The tiny task whose costly reward must never be called."""

    def reward(self, x):
        raise AssertionError("the costly reward was called")


# -- measurement never touches the costly reward ---------------------------------------------------------


def test_measurement_uses_the_free_reward_or_nothing():
    prior = TinyTask().prior()
    config = EvalConfig(samples=500)
    measured = Unpayable(TinyOptions(exact=False))  # free_reward declared: Monte Carlo through it
    rate = success_rate(measured, prior, config, seed=0)
    assert rate is not None and rate.n == 500 and not rate.exact
    assert prior_estimate(measured, prior, successes=3, max_samples=2000) is not None
    blind = Unpayable(TinyOptions(exact=False, free_reward=False))  # a user's lab: no free measurement
    assert success_rate(blind, prior, config, seed=0) is None
    assert reestimate(blind, prior, config, seed=0) is None
    assert prior_estimate(blind, prior) is None


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("free", [True, False])
def test_every_method_calls_the_reward_only_through_the_oracle(tmp_path, method, free):
    count = tmp_path / "calls"
    options = TinyOptions(exact=False, free_reward=free, count_file=str(count))
    settings = {"m": 10, "seed": 3, "nre_budget": 40, "eval": {"samples": 300, "drift_samples": 100}, **SMALL}
    run, summary, history = run_tiny(tmp_path / "run", method, task=TinyTask(options), **settings)
    calls, samples = counted_calls(count)
    assert samples == len(read_rows(tmp_path / "run" / "ledger.sqlite")) == summary["nre_used"] == run.oracle.used
    assert calls <= summary["rounds"]  # inline executor: at most one call a round (none when all are repeats)
    assert summary["ground_truth"] is free
    if free:
        assert summary["best_success_rate"] is not None and history[0]["success_rate"]["n"] == 300
    else:
        assert summary["best_success_rate"] is None and summary["final_success_rate"] is None
        assert all(r["success_rate"] is None for r in history)
        assert not (tmp_path / "run" / "generator-best.pt").exists()
        with pytest.raises(FileNotFoundError, match="only a task with free measurement"):
            load_generator(tmp_path / "run", "best")
    # paid evidence in every row, whatever the task declares
    last = history[-1]
    assert last["successes_found"] == summary["successes_found"]
    assert last["successes_per_1000_nre"] == pytest.approx(1000 * summary["successes_found"] / summary["nre_used"])
    assert sum(r["evaluated"] for r in history) == 40


@pytest.mark.slow
def test_resume_after_sigkill_pays_each_sample_once_and_calls_the_reward_once_per_row(tmp_path):
    count = tmp_path / "calls"
    settings = {"m": 10, "nre_budget": 60, "oracle.chunk_size": 5, "task_options.exact": False,
                "task_options.free_reward": False, "task_options.count_file": str(count),
                "banel.negative_epochs": 3, "banel.generator_epochs": 2, "keep.rule": "paid"}  # fmt: skip
    out = tmp_path / "run"
    assert killed_run(out, kill_at=5, settings=settings).returncode == -9
    before = counted_calls(count)[1]
    # the killed call answered nothing: its rows stay pending (reserved, not settled), and resume pays them
    assert before == sum(r["status"] == "ok" for r in read_rows(out / "ledger.sqlite")) > 0
    done = subprocess.run(
        [sys.executable, "-m", "banel.cli", "resume", str(out), "--quiet", "--no-plot", "--threads", "1"],
        env={**child_env(), COUNTER_ENV: str(tmp_path / ".run-calls")},  # killed_run's count: no second kill
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    rows = read_rows(out / "ledger.sqlite")
    assert counted_calls(count)[1] == len(rows) == sum(r["charged"] for r in rows) == summary["nre_used"]
    assert len({r["hash"] for r in rows}) == len(rows)
    assert (out / "generator-kept.pt").is_file() and not (out / "generator-previous.pt").exists()


@pytest.mark.slow
def test_compare_of_all_methods_calls_the_reward_once_per_paid_sample(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    count = tmp_path / "calls"
    flags = ["--set", "m=10", "--budget", "30", "--set", "task_options.exact=false"]
    flags += ["--set", "task_options.free_reward=false", "--set", f"task_options.count_file={count}"]
    flags += ["--set", "banel.negative_epochs=3", "--set", "banel.generator_epochs=2", "--set", "rnd.hidden=32"]
    methods = "banel,reinforce,negrl,npo,gfn,rnd,count,diverse,temperature,base"
    out = tmp_path / "cmp"
    args = ["compare", "banel.testing:tiny", "--methods", methods, "--seeds", "0-1", "--jobs", "2", "--out", str(out)]
    assert main([*args, *flags]) == 0
    assert counted_calls(count)[1] == _ledger_rows(out) == _paid(out) > 0
    assert not (out / "prior.json").exists()  # no free measurement: no prior estimate, no reward call for one
    table = (out / "table.md").read_text()
    assert "Paid evidence on tiny" in table and "| base | 2 |" in table and "banel vs base" in table


def test_check_task_calls_the_reward_only_when_asked(tmp_path):
    count = tmp_path / "calls"
    task = TinyTask(TinyOptions(count_file=str(count)))
    report = check_task(task, samples=400)
    assert counted_calls(count) == (0, 0) and report["reward_evaluations"] == 0
    assert "GroundTruth" in report["capabilities"] and report["successes"] == int(report["successes"])
    report = check_task(task, samples=400, reward_samples=50)
    assert counted_calls(count)[1] == 50 == report["reward_evaluations"]
    blind = TinyTask(TinyOptions(free_reward=False, count_file=str(count)))
    report = check_task(blind, samples=400)
    assert counted_calls(count)[1] == 50 and "successes" not in report  # nothing to check rewards with


# -- the keep rules ------------------------------------------------------------------------------------------


def _rows(kl, successes, evaluated=10):
    rows = [{"round": -1, "kl_to_prior": 0.0, "successes": 0, "evaluated": 0}]
    return rows + [
        {"round": i, "kl_to_prior": k, "successes": s, "evaluated": evaluated}
        for i, (k, s) in enumerate(zip(kl, successes, strict=True))
    ]


def test_keep_rules_on_a_written_out_history():
    rows = _rows([0.5, 3.0, 12.0, 8.0, 20.0], [0, 0, 0, 0, 0])
    assert kept_round(rows, "final", 9.2) == 4
    assert kept_round(rows, "drift", 9.2) == 3  # the newest within 9.2 nats
    assert kept_round(rows, "drift", 0.1) == -1  # everything drifted: the prior
    assert kept_round(rows, "paid", 9.2) == 3  # no paid success yet: as drift
    # round 3 paid 2 successes among its 10: evidence about round 2's generator; round 4 one: about round 3's
    rows = _rows([0.5, 3.0, 12.0, 8.0, 20.0], [0, 0, 0, 2, 1])
    assert kept_round(rows, "paid", 9.2) == 2  # (2 + 1) / 12 beats (1 + 1) / 12
    rows = _rows([0.5, 3.0, 12.0, 8.0, 20.0], [0, 0, 0, 1, 1])
    assert kept_round(rows, "paid", 9.2) == 3  # a tie goes to the newer generator
    unmeasured = [{k: v for k, v in r.items() if k != "kl_to_prior"} for r in rows]  # eval.drift_samples = 0
    assert kept_round(unmeasured, "drift", 9.2) == 4  # nothing to read: the newest
    assert kept_round(unmeasured, "paid", 9.2) == 3
    with pytest.raises(ValueError, match="keep.rule must be one of"):
        kept_round(rows, "best", 9.2)


@pytest.mark.parametrize("rule", ["final", "drift", "paid"])
def test_keep_rules_are_online(rule):
    # as rows arrive, the choice stays or moves to the newest round or the one before: what a run still holds
    g = torch.Generator().manual_seed(0)
    kl = (torch.rand(30, generator=g) * 15).tolist()
    wins = (torch.rand(30, generator=g) < 0.2).long().tolist()
    rows = _rows(kl, wins)
    previous = kept_round(rows[:1], rule, 9.2)
    for n in range(2, len(rows) + 1):
        chosen = kept_round(rows[:n], rule, 9.2)
        newest = rows[n - 1]["round"]
        assert chosen in (previous, newest, newest - 1)
        previous = chosen


@pytest.mark.parametrize("rule", ["drift", "paid"])
def test_the_kept_generator_is_the_chosen_rounds(tmp_path, rule):
    settings = {"m": 10, "seed": 1, "nre_budget": 80, "eval": {"drift_samples": 300}, **SMALL}
    settings["keep"] = {"rule": rule, "drift_budget": 0.05}
    settings["task_options"] = {"kind": "categorical"}  # load_generator rebuilds the task from config.json
    _, summary, history = run_tiny(tmp_path / rule, "banel", task=TinyTask(TinyOptions(kind="categorical")),
                                   **settings)  # fmt: skip
    kept = summary["kept_round"]
    assert kept == kept_round(history, rule, 0.05) == history[-1]["kept_round"]
    saved = torch.load(tmp_path / rule / "generator-kept.pt", weights_only=True)
    assert saved["round"] == kept
    rate = TinyTask().exact_success_rate(load_generator(tmp_path / rule, "kept"))
    truth = {r["round"]: r["success_rate"]["rate"] for r in history}
    assert rate == pytest.approx(truth[kept], rel=1e-9) == summary["kept_success_rate"]


def test_generator_decay_shrinks_the_distillation_epochs(tmp_path, monkeypatch):
    from banel.models.transformer import TransformerModel

    epochs = []
    fit = TransformerModel.fit

    def spy(self, x, n, *args, **kwargs):
        epochs.append(n)
        return fit(self, x, n, *args, **kwargs)

    monkeypatch.setattr(TransformerModel, "fit", spy)
    settings = {"m": 10, "seed": 0, "nre_budget": 50, "eval": {"drift_samples": 0}}
    run_tiny(tmp_path / "decay", "banel", banel={"negative_epochs": 3, "generator_epochs": 8, "generator_decay": 0.5},
             **settings)  # fmt: skip
    # round i distils for max(1, round(8 * 0.5**i)) epochs (rounds 1-4; round 0 has no filter yet); p_phi: 3
    assert [e for e in epochs if e != 3] == [4, 2, 1, 1]


# -- the paid-evidence statistics ---------------------------------------------------------------------------


def test_paid_statistics_on_enumerable_cases():
    # 2 runs against 2: 6 relabellings, only the observed one has a mean difference as large
    assert more_per_run_p([1.0, 2.0], [0.0, 0.0]) == pytest.approx(1 / 6)
    assert smallest_p(2, 2) == pytest.approx(1 / 6) and smallest_p(5, 5) == pytest.approx(1 / 252)
    assert more_per_run_p([0.0, 0.0], [0.0, 0.0]) == 1.0
    # 5 successes against 0 on equal NREs: P(Binomial(5, 1/2) >= 5) = 1/32
    assert more_pooled_p(5, 100, 0, 100) == pytest.approx(1 / 32)
    assert more_pooled_p(0, 100, 0, 100) is None
    evidence = paid_evidence(3, 1000)
    assert evidence["successes_per_1000_nre"] == 3.0 and evidence["paid_success_fraction"] == 0.003
    low, high = evidence["paid_success_interval"]
    assert low < 0.003 < high and math.isclose(high, 0.008737, rel_tol=1e-3)  # Clopper-Pearson, 3 of 1,000


def test_history_rows_carry_the_free_diagnostics(tmp_path):
    _, _, history = run_tiny(tmp_path / "run", "banel", m=10, nre_budget=40, eval={"drift_samples": 100}, **SMALL)
    assert history[0]["kl_to_prior"] == 0.0 and history[0]["kept_round"] == -1
    assert history[1]["negative_heldout_gain"] is None  # round 0 had no negative model before it
    assert all(isinstance(r["negative_heldout_gain"], float) for r in history[2:])
    assert all("log_ratio_kept" in r for r in history[1:])
    assert read_history(tmp_path / "run") == history


def test_free_measurement_changes_what_is_measured_never_what_is_paid_or_learned(tmp_path):
    settings = {"m": 10, "seed": 2, "nre_budget": 50, "eval": {"samples": 300, "drift_samples": 100}, **SMALL}
    runs = {}
    for free in (True, False):
        task = TinyTask(TinyOptions(exact=False, free_reward=free))
        runs[free] = run_tiny(tmp_path / str(free), "banel", task=task, **settings)[2]
    measured = {"success_rate", "selected_best_rate", "wall_seconds"}
    on, off = ([{k: v for k, v in r.items() if k not in measured} for r in runs[f]] for f in (True, False))
    assert on == off and all(r["success_rate"] is not None for r in runs[True])
    a, b = (torch.load(tmp_path / str(f) / "generator-final.pt", weights_only=True)["model"] for f in (True, False))
    assert state_tensors(a) and all(torch.equal(x, y) for x, y in zip(state_tensors(a), state_tensors(b), strict=True))
