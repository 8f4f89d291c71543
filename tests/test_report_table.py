"""The comparison table: selection-free rows, one shared prior, statistics over seeds, no silent pooling."""

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

from banel.eval.success import SuccessRate, clopper_pearson
from banel.report.stats import (
    above_other_p,
    above_prior_p,
    better_than_prior,
    geometric_mean_interval,
    mean_interval,
    median_interval,
)
from banel.report.table import PRIOR_FILE, RunRecord, collect, nres_to_reach, shared_prior, table_rows, write_report


def _write_run(folder, method, seed, best, base=1e-3, history=None, settings=None):
    folder.mkdir(parents=True)
    summary = {
        "task": "t",
        "method": method,
        "seed": seed,
        "nre_used": 40,
        "base_success_rate": base,
        "best_success_rate": best,
        "selected_best_rate": best * 1.5,
        "final_success_rate": best / 2,
        "successes_found": 1,
        "prior_nll": 1.0,
        "drift_nll": 1.5,
        "kl_to_prior": 0.25,
        "metrics": {"infeasible_fraction": 0.1 * (seed + 1)},
        "prior_metrics": {"infeasible_fraction": 0.05},
    }
    (folder / "summary.json").write_text(json.dumps(summary))
    rows = history or [
        {"round": -1, "nre_used": 0, "success_rate": {"rate": base, "low": base, "high": base, "exact": True}},
        {"round": 0, "nre_used": 40, "success_rate": {"rate": best, "low": best, "high": best, "exact": True}},
    ]
    (folder / "history.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    run = {"task": "t", "method": method, "seed": seed, "nre_budget": 40, **(settings or {})}
    (folder / "config.json").write_text(json.dumps({"run": run, "run_id": f"{method}{seed}"}))


def _prior(folder: Path, estimate: SuccessRate) -> None:
    (folder / PRIOR_FILE).write_text(json.dumps({"settings": {}, "estimate": estimate.as_dict()}))


def test_table_numbers_on_hand_made_runs(tmp_path):
    for seed, best in enumerate([1e-3, 3e-3, 2e-3]):
        _write_run(tmp_path / "rnd" / f"seed{seed}", "rnd", seed, best)
    _write_run(tmp_path / "banel" / "seed0", "banel", 0, 5e-3)
    records = collect(tmp_path)
    prior, source = shared_prior(tmp_path, records)
    assert prior.rate == 1e-3 and prior.exact and "exact, the same in all 4 runs" in source
    rows = table_rows(records, prior)
    assert [r["method"] for r in rows] == ["banel", "rnd"]  # Table 2 order
    rnd = rows[1]
    assert math.isclose(rnd["mean"], 2e-3) and math.isclose(rnd["median"], 2e-3)
    assert math.isclose(rnd["std"], 1e-3)  # sample std (ddof=1) of 1, 3, 2 (x1e-3)
    assert math.isclose(rnd["mean_improvement"], 2.0) and math.isclose(rnd["drift_nll_increase"], 0.5)
    assert math.isclose(rnd["selected_mean"], 3e-3)  # the biased maxima stay visible, under their own name
    assert rows[0]["std"] == 0.0 and math.isclose(rows[0]["mean_improvement"], 5.0)
    paths = write_report(tmp_path)
    md = paths[0].read_text()
    geo = (1e-3 * 3e-3 * 2e-3) ** (1 / 3)
    assert math.isclose(rnd["geometric_mean"], geo) and rnd["geometric_low"] < geo < rnd["geometric_high"]
    assert 1e-3 <= rnd["mean_low"] < 2e-3 < rnd["mean_high"] <= 3e-3 * (1 + 1e-12)  # within the seeds' range
    assert "| rnd | 2.000e-03 (2.00×) | [" in md and f"| {geo:.3e} ({geo / 1e-3:.2f}×) | [" in md
    assert "| banel | 5.000e-03 (5.00×) | [5.00e-03, 5.00e-03] |" in md  # one seed: the interval is the value
    assert "1.500 (+0.500)" in md and "| 0.2 [0.05] |" in md  # drift, and the task's metric beside the prior's
    assert "- rnd: not shown better than the prior" in md and "- banel vs rnd: not shown higher" in md
    with open(paths[1]) as f:
        table = list(csv.DictReader(f))
    assert [r["method"] for r in table] == ["banel", "rnd"] and float(table[1]["mean"]) == 2e-3
    assert paths[2].stat().st_size > 10_000


def test_every_row_divides_by_the_one_shared_prior_estimate(tmp_path):
    for seed, best in enumerate([2e-3, 4e-3]):
        _write_run(tmp_path / "rnd" / f"seed{seed}", "rnd", seed, best, base=1e-3 * (seed + 1))
        _write_run(tmp_path / "base" / f"seed{seed}", "base", seed, 1e-3, base=5e-4)
    estimate = SuccessRate(5e-4, 4e-4, 6e-4, False, 200_000, 100)
    _prior(tmp_path, estimate)
    records = collect(tmp_path)
    prior, source = shared_prior(tmp_path, records)
    assert prior == estimate and source == "prior.json: 100 successes in 200,000 prior samples"
    rows = table_rows(records, prior)
    assert all(r["prior"] is rows[0]["prior"] for r in rows)  # one object, not a per-seed estimate
    assert [r["mean_improvement"] for r in rows] == pytest.approx([6.0, 2.0])
    md = write_report(tmp_path)[0].read_text()
    assert "one shared prior estimate, 5.000e-04 [4.00e-04, 6.00e-04] (prior.json: 100 successes" in md


def test_without_prior_json_the_runs_own_estimates_are_pooled(tmp_path):
    for seed, k in enumerate([3, 5]):
        history = [
            {
                "round": -1,
                "nre_used": 0,
                "success_rate": {"rate": k / 1e4, "low": 0, "high": 1, "exact": False, "n": 10_000, "successes": k},
            }
        ]
        _write_run(tmp_path / "base" / f"seed{seed}", "base", seed, 1e-3, history=history)
    prior, source = shared_prior(tmp_path, collect(tmp_path))
    assert (prior.successes, prior.n, prior.rate) == (8, 20_000, 4e-4) and "pooled" in source
    assert prior.low < 4e-4 < prior.high


def test_runs_with_other_settings_are_separate_labelled_rows_never_pooled(tmp_path):
    for f in (2, 4):
        for seed in range(2):
            _write_run(
                tmp_path / f"banel-f{f}" / f"seed{seed}",
                "banel",
                seed,
                1e-3 * f,
                settings={"banel": {"filter_factor": f}},
            )
    rows = table_rows(collect(tmp_path), SuccessRate(1e-3, 1e-3, 1e-3, True))
    assert [(r["method"], r["seeds"]) for r in rows] == [
        ("banel [banel.filter_factor=2]", 2),
        ("banel [banel.filter_factor=4]", 2),
    ]
    # another task setting means another prior or reward: no table can hold both
    _write_run(tmp_path / "rnd" / "seed0", "rnd", 0, 1e-3, settings={"task_options": {"targets": 10}})
    with pytest.raises(ValueError, match=r"different task settings \(task_options.targets differ"):
        collect(tmp_path)


def test_median_interval_uses_order_statistics_with_their_exact_coverage():
    # 5 seeds: [min, max] covers the median with probability 1 - 2 / 32 = 93.75% (no narrower pair reaches 95%)
    assert median_interval([5, 1, 4, 2, 3]) == (1, 5, pytest.approx(1 - 2 / 32))
    # 9 seeds: [x(2), x(8)] covers with 1 - 2 P(B(9, 1/2) <= 1) = 1 - 2 * 10/512 = 96.1%, x(3)..x(7) only 82%
    low, high, coverage = median_interval(range(1, 10))
    assert (low, high) == (2, 8) and coverage == pytest.approx(1 - 20 / 512)


def test_the_rank_tests_on_hand_computed_cases():
    # every one of 5 seeds above the prior: the one-sided signed-rank p is 1/32, the smallest there is
    assert above_prior_p(np.array([2, 3, 4, 5, 6.0]), 1.0) == pytest.approx(1 / 32)
    assert above_prior_p(np.array([1.0, 1.0]), 1.0) is None  # the prior itself: no evidence either way
    # 5 seeds all above 5 others: the one-sided rank-sum p is 1 / C(10, 5) = 1/252
    assert above_other_p(np.array([6, 7, 8, 9, 10.0]), np.array([1, 2, 3, 4, 5.0])) == pytest.approx(1 / 252)
    assert above_other_p(np.array([1, 2, 3.0]), np.array([4, 5, 6.0])) == pytest.approx(1.0)


def _record(method, seed, best, n=0):
    summary = {"task": "t", "method": method, "seed": seed, "best_success_rate": best, "final_success_rate": best,
               "best_success_samples": n, "nre_used": 7500, "successes_found": 0}  # fmt: skip
    return RunRecord(Path("."), summary, [])


def test_a_method_identical_to_the_prior_is_not_reported_better_beyond_the_tests_level():
    # Simulated comparisons of a method that IS the prior, on a Monte-Carlo task at rate 5e-4: a shared prior
    # estimate drawn until 100 successes, and each of 5 seeds re-estimated on 20,000 fresh samples. No valid
    # test can promise "never" on noisy data; the verdict needs the signed-rank test across seeds AND the
    # exact pooled test (which carries the prior estimate's own noise) to reject at 5%.
    rng = np.random.default_rng(0)
    rate, n, trials, verdicts, seeds_only = 5e-4, 20_000, 1500, 0, 0
    for _ in range(trials):
        draws = int(rng.negative_binomial(100, rate)) + 100  # draws until the 100th success
        prior = SuccessRate(100 / draws, *clopper_pearson(100, draws), False, draws, 100)
        k = rng.binomial(n, rate, size=5)
        p_seeds, _, better = better_than_prior(k / n, k.tolist(), [n] * 5, prior)
        verdicts += better
        seeds_only += p_seeds is not None and p_seeds < 0.05
    assert verdicts / trials < 0.025  # measured 1.6% over 20,000 comparisons (docs/statistics.md)
    assert verdicts < seeds_only  # the pooled test removes false positives the shared prior's noise causes
    # and on one simulated comparison, end to end through the table
    k = rng.binomial(n, rate, size=5)
    prior = SuccessRate(100 / 200_000, *clopper_pearson(100, 200_000), False, 200_000, 100)
    row = table_rows([_record("base", s, ki / n, n) for s, ki in enumerate(k)], prior)[0]
    assert not row["better_than_prior"] and row["geometric_improvement_low"] < 1 < row["geometric_improvement_high"]


def test_a_clear_improvement_is_reported_as_better():
    prior = SuccessRate(5e-4, 4.1e-4, 6.1e-4, False, 200_000, 100)
    rows = table_rows([_record("banel", s, b, 20_000) for s, b in enumerate([5e-3, 8e-3, 3e-3, 6e-3, 4e-3])], prior)
    assert rows[0]["better_than_prior"] and rows[0]["above_prior_p"] == pytest.approx(1 / 32)
    assert rows[0]["pooled_above_prior_p"] < 1e-10
    # no success anywhere is no evidence
    nothing = SuccessRate(0.0, 0.0, 3.7e-5, False, 100_000, 0)
    assert table_rows([_record("rnd", s, 0.0, 1000) for s in range(3)], nothing)[0]["pooled_above_prior_p"] == 1.0
    # the same estimates without their sample counts cannot be weighed against the prior's noise
    rows = table_rows([_record("banel", s, b) for s, b in enumerate([5e-3, 8e-3, 3e-3, 6e-3, 4e-3])], prior)
    assert not rows[0]["better_than_prior"]


def test_a_seed_that_carries_the_mean_is_named(tmp_path):
    for seed, best in enumerate([1e-6, 2e-6, 1e-3]):
        _write_run(tmp_path / "rnd" / f"seed{seed}", "rnd", seed, best, base=1e-7)
    md = write_report(tmp_path)[0].read_text()
    assert "heavy tail: seed 2 holds 100% of the sum of rnd's best rates" in md


def test_nres_to_reach_a_factor_uses_the_lower_bound_of_estimates():
    rows = [
        {"round": -1, "nre_used": 0, "success_rate": {"rate": 1e-3, "low": 8e-4, "exact": False}},
        {"round": 0, "nre_used": 250, "success_rate": {"rate": 3e-3, "low": 1e-3, "exact": False}},
        {"round": 1, "nre_used": 500, "success_rate": None},
        {"round": 2, "nre_used": 750, "success_rate": {"rate": 3e-3, "low": 2.5e-3, "exact": False}},
    ]
    assert nres_to_reach(rows, 2e-3) == 750  # round 0's estimate is 3x, but its lower bound is not 2x
    assert nres_to_reach(rows, 1e-2) is None


def test_geometric_mean_interval_is_the_t_interval_on_log_rates():
    gm, low, high = geometric_mean_interval([1e-3, 1e-1])
    # logs ln 1e-3 and ln 1e-1: mean ln 1e-2, standard error ln 10, t(0.975, 1 dof) = 12.7062
    assert math.isclose(gm, 1e-2)
    assert math.isclose(math.log10(low), -2 - 12.706204736, rel_tol=1e-9)
    assert math.isclose(math.log10(high), -2 + 12.706204736, rel_tol=1e-9)
    assert geometric_mean_interval([4e-7, 4e-7, 4e-7]) == pytest.approx((4e-7, 4e-7, 4e-7))
    assert geometric_mean_interval([1e-3, 0.0]) == (None, None, None)  # a zero rate has no logarithm


def test_mean_interval_is_a_reproducible_percentile_bootstrap():
    # two seeds: resampled means are a, (a+b)/2, b with probabilities 1/4, 1/2, 1/4, so the 2.5% and 97.5%
    # percentiles are a and b
    assert mean_interval([1.0, 3.0]) == pytest.approx((1.0, 3.0))
    values = [2.18e-6, 1.23e-11, 2.12e-8, 3.96e-11, 5.91e-10]
    low, high = mean_interval(values)
    assert min(values) <= low < sum(values) / 5 < high <= max(values)
    assert mean_interval(values) == (low, high)
    assert mean_interval([7e-9]) == (7e-9, 7e-9)


def test_the_improvement_interval_carries_the_prior_estimates_uncertainty():
    from scipy import stats

    from banel.report.stats import improvement_interval

    # log rates 0 and 2 over an exact prior of 1: centre 1, standard error 1, t(0.975, 1 dof) = 12.7062
    t = 12.706204736
    low, high = improvement_interval(np.array([1.0, math.e**2]), SuccessRate(1.0, 1.0, 1.0, True))
    assert math.log(low) == pytest.approx(1 - t) and math.log(high) == pytest.approx(1 + t)
    # a prior known to +-z * 0.5 on the log scale adds its standard error 0.5 in quadrature
    z = stats.norm.ppf(0.975)
    prior = SuccessRate(1.0, math.exp(-0.5 * z), math.exp(0.5 * z), False, 1000, 100)
    low, high = improvement_interval(np.array([1.0, math.e**2]), prior)
    assert math.log(high) - 1 == pytest.approx(t * math.sqrt(1 + 0.25))
    assert improvement_interval(np.array([1e-3]), prior) == (None, None)


def test_the_figure_says_gains_came_from_failures_only_when_something_gained():
    from banel.report.table import no_success_note

    exact = SuccessRate(1e-3, 1e-3, 1e-3, True)
    gained = [_record("banel", 0, 5e-3), _record("rnd", 0, 1e-3)]
    assert no_success_note(gained, exact) == "no run found a success:\nevery gain came from failures alone"
    flat = [_record("banel", 0, 1e-3), _record("rnd", 0, 5e-4)]
    assert no_success_note(flat, exact) == "no run found a success"
    # above the prior's point estimate but inside its interval is no gain
    estimate = SuccessRate(1e-3, 8e-4, 1.3e-3, False, 100_000, 100)
    assert no_success_note([_record("banel", 0, 1.2e-3)], estimate) == "no run found a success"
    assert no_success_note([_record("banel", 0, 1.2e-3)], None) == "no run found a success"  # paid evidence only
    found = RunRecord(Path("."), {**gained[0].summary, "successes_found": 2}, [])
    assert no_success_note([found], exact) is None


def test_mean_successes_are_printed_with_their_digits(tmp_path):
    for seed, found in enumerate([0, 0, 1]):
        _write_run(tmp_path / "rnd" / f"seed{seed}", "rnd", seed, 2e-3)
        summary = json.loads((tmp_path / "rnd" / f"seed{seed}" / "summary.json").read_text())
        summary["successes_found"] = found
        (tmp_path / "rnd" / f"seed{seed}" / "summary.json").write_text(json.dumps(summary))
    md = write_report(tmp_path)[0].read_text()
    assert "| 40 | 0.333 | 1.500 (+0.500) |" in md  # NREs, mean successes 1/3 (.1f once printed 1 in 30 as 0.0)


def test_each_interval_says_what_it_covers_and_each_test_when_it_cannot_reject(tmp_path):
    from banel.report.stats import smallest_rank_sum_p, smallest_signed_rank_p

    assert smallest_signed_rank_p(3) == 0.125 and smallest_signed_rank_p(5) == 1 / 32
    assert smallest_rank_sum_p(3, 3) == pytest.approx(1 / 20) and smallest_rank_sum_p(5, 5) == pytest.approx(1 / 252)
    for seed, best in enumerate([4e-3, 5e-3, 6e-3]):
        _write_run(tmp_path / "banel" / f"seed{seed}", "banel", seed, best)
        _write_run(tmp_path / "rnd" / f"seed{seed}", "rnd", seed, best / 4)
    md = write_report(tmp_path)[0].read_text()
    assert "| Mean CI (95% bootstrap) | Median | Median CI (its coverage) | Geo. mean | Geo. mean CI (95% t) |" in md
    assert "| 5.000e-03 (5.00×) | [4.00e-03, 6.00e-03] (75%) |" in md  # 3 seeds: [min, max] covers 1 - 2/8
    assert (
        "over 3 seeds, p = 0.125); with 3 seeds its smallest attainable p is 0.125: it cannot reject at 5%, run "
        "more seeds.\n" in md
    )
    # every BaNEL seed above every RND seed, and still no test at 5%: 1 / C(6, 3) = 0.05
    assert (
        "- banel vs rnd: not shown higher (one-sided Mann-Whitney on per-seed log rates, p = 0.05); with 3 against "
        "3 seeds its smallest attainable p is 0.05: it cannot reject at 5%, run more seeds.\n" in md
    )
    for seed in range(3, 5):
        _write_run(tmp_path / "banel" / f"seed{seed}", "banel", seed, 7e-3)
        _write_run(tmp_path / "rnd" / f"seed{seed}", "rnd", seed, 1e-3)
    md = write_report(tmp_path)[0].read_text()
    assert "- banel vs rnd: higher (one-sided Mann-Whitney on per-seed log rates, p = 0.00545).\n" in md
    # rnd's seeds 0, 3 and 4 equal the prior (1e-3): the signed-rank test has 2 seeds left, and says so
    assert "p = 0.25); with 2 seeds off the prior's rate (of 5) its smallest attainable p is 0.25: it cannot " in md
    assert md.count("cannot reject") == 1
    assert "] (93.75%) |" in md  # 5 seeds
