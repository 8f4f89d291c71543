import csv
import json
import math

import pytest

from banel.report.table import (
    collect,
    cumulative_best,
    geometric_mean_interval,
    mean_interval,
    table_rows,
    write_report,
)


def _write_run(folder, method, seed, best, base=1e-3, history=None):
    folder.mkdir(parents=True)
    summary = {
        "task": "t",
        "method": method,
        "seed": seed,
        "nre_used": 40,
        "base_success_rate": base,
        "best_success_rate": best,
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
        {"nre_used": 0, "success_rate": {"rate": base}},
        {"nre_used": 40, "success_rate": {"rate": best}},
    ]
    (folder / "history.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_table_numbers_on_hand_made_runs(tmp_path):
    for seed, best in enumerate([1e-3, 3e-3, 2e-3]):
        _write_run(tmp_path / "rnd" / f"seed{seed}", "rnd", seed, best)
    _write_run(tmp_path / "banel" / "seed0", "banel", 0, 5e-3)
    rows = table_rows(collect(tmp_path))
    assert [r["method"] for r in rows] == ["banel", "rnd"]  # Table 2 order
    rnd = rows[1]
    assert math.isclose(rnd["mean"], 2e-3) and math.isclose(rnd["median"], 2e-3)
    assert math.isclose(rnd["std"], 1e-3)  # sample std (ddof=1) of 1, 3, 2 (x1e-3)
    assert math.isclose(rnd["mean_improvement"], 2.0) and math.isclose(rnd["drift_nll_increase"], 0.5)
    assert rows[0]["std"] == 0.0 and math.isclose(rows[0]["mean_improvement"], 5.0)
    paths = write_report(tmp_path)
    md = paths[0].read_text()
    geo = (1e-3 * 3e-3 * 2e-3) ** (1 / 3)
    assert math.isclose(rnd["geometric_mean"], geo) and rnd["geometric_low"] < geo < rnd["geometric_high"]
    assert 1e-3 <= rnd["mean_low"] < 2e-3 < rnd["mean_high"] <= 3e-3 * (1 + 1e-12)  # within the seeds' range
    assert "| rnd | 2.000e-03 (2.00×) | [" in md and f"| 2.000e-03 (2.00×) | {geo:.3e} ({geo / 1e-3:.2f}×) | [" in md
    assert "| banel | 5.000e-03 (5.00×) | [5.00e-03, 5.00e-03] |" in md  # one seed: the interval is the value
    assert "1.500 (+0.500)" in md
    with open(paths[1]) as f:
        table = list(csv.DictReader(f))
    assert [r["method"] for r in table] == ["banel", "rnd"] and float(table[1]["mean"]) == 2e-3
    assert paths[2].stat().st_size > 10_000


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


def test_cumulative_best_skips_unevaluated_rounds(tmp_path):
    rows = [
        {"nre_used": 0, "success_rate": {"rate": 2.0}},
        {"nre_used": 10, "success_rate": {"rate": 1.0}},
        {"nre_used": 20, "success_rate": None},
        {"nre_used": 30, "success_rate": {"rate": 3.0}},
    ]
    nre, best = cumulative_best(rows)
    assert nre.tolist() == [0, 10, 30] and best.tolist() == [2.0, 2.0, 3.0]


def test_the_task_metrics_are_columns_of_the_table(tmp_path):
    for seed in range(3):
        _write_run(tmp_path / "rnd" / f"seed{seed}", "rnd", seed, 1e-3)
    rows = table_rows(collect(tmp_path))
    assert math.isclose(rows[0]["metric.infeasible_fraction"], 0.2)  # mean of 0.1, 0.2, 0.3
    md = write_report(tmp_path)[0].read_text()
    assert "| infeasible_fraction |" in md and "| 0.2 [0.05] |" in md
