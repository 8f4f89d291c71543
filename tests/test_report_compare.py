import csv
import json
import math

import pytest

from _tiny import TinyTask
from banel.cache import FolderInUse, folder_lock
from banel.cli import main
from banel.config import RunConfig, from_dict
from banel.methods import METHODS
from banel.report.compare import compare, parse_methods, parse_seeds, run_config
from banel.report.table import (
    collect,
    cumulative_best,
    geometric_mean_interval,
    mean_interval,
    table_rows,
    write_report,
)
from banel.runner import Run
from banel.tasks import TASKS

BASE = {
    "nre_budget": 60,
    "banel": {"m": 20, "negative_epochs": 3, "generator_epochs": 2},
    "eval": {"drift_samples": 200},
}


@pytest.fixture
def tiny(monkeypatch):
    monkeypatch.setitem(TASKS, "tiny", lambda options, cache: TinyTask("categorical"))


def test_parse_seeds():
    assert parse_seeds("0-4") == [0, 1, 2, 3, 4]
    assert parse_seeds("0,3,7") == [0, 3, 7]
    assert parse_seeds("0-2, 9") == [0, 1, 2, 9]
    for bad in ("4-2", "a", "1,1", "-3", "0-", ""):
        with pytest.raises(ValueError, match="seeds"):
            parse_seeds(bad)


def test_parse_methods_and_per_method_options():
    assert parse_methods("banel,rnd", list(METHODS)) == ["banel", "rnd"]
    assert parse_methods("all", list(METHODS)) == list(METHODS)
    with pytest.raises(ValueError, match="available: banel"):
        parse_methods("banel,ppo", list(METHODS))
    data = {"method_options": {"rnd": {"hidden": 8}}}
    assert run_config(data, "toy1d", "rnd", 2).method_options == {"hidden": 8}
    assert run_config(data, "toy1d", "gfn", 2).method_options == {}
    with pytest.raises(ValueError, match="method_options.METHOD.KEY"):
        run_config({"method_options": {"hidden": 8}}, "toy1d", "rnd", 2)


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


def test_compare_writes_one_reproducible_folder_per_run_and_resumes(tmp_path, tiny):
    done = []
    paths = compare("tiny", ["base", "negrl"], [0, 1], BASE, tmp_path, jobs=1, on_done=done.append)
    assert sorted((d["method"], d["seed"]) for d in done) == [
        ("base", 0),
        ("base", 1),
        ("negrl", 0),
        ("negrl", 1),
    ]
    # 60 samples asked per run; repeats of a sample already paid for are answered by the ledger for free.
    assert all(d["queries"] == 60 and 0 < d["nre_used"] <= 60 for d in done)
    assert [p.name for p in paths] == ["table.md", "table.csv", "compare.png"]
    table = paths[0].read_text()
    assert "| base | " in table and "(1.00×)" in table
    # A second call finds every run finished and runs nothing.
    again = []
    compare("tiny", ["base", "negrl"], [0, 1], BASE, tmp_path, jobs=1, on_done=again.append)
    assert again == []
    # A finished run is reused only under the settings its method reads: a baseline ignores BaNEL's
    # kappa, not the budget.
    compare("tiny", ["base", "negrl"], [0, 1], {**BASE, "banel": {**BASE["banel"], "kappa": 3.0}}, tmp_path, jobs=1)
    with pytest.raises(ValueError, match=r"base.seed0 holds a finished run with other settings \(nre_budget differ"):
        compare("tiny", ["base", "negrl"], [0, 1], {**BASE, "nre_budget": 80}, tmp_path, jobs=1)
    # `banel report` rebuilds the same table from the folders alone.
    paths[0].unlink()
    assert write_report(tmp_path)[0].read_text() == table
    # Every run is reproducible from its config.json.
    folder = tmp_path / "negrl" / "seed1"
    config = from_dict(RunConfig, json.loads((folder / "config.json").read_text())["run"])
    assert config.seed == 1 and config.banel.m == 20
    run = Run(config, TinyTask("categorical"), tmp_path / "rerun")
    run.start()
    METHODS[config.method](run)
    rerun = run.finish()
    saved = json.loads((folder / "summary.json").read_text())
    for key in ("best_success_rate", "final_success_rate", "drift_nll", "kl_to_prior", "successes_found"):
        assert rerun[key] == saved[key]


def test_cli_compare_and_report(tmp_path, tiny, capsys):
    out = tmp_path / "cmp"
    argv = ["compare", "tiny", "--methods", "base,temperature", "--seeds", "0,2", "--budget", "40"]
    argv += ["--set", "banel.m=20", "--set", "method_options.temperature.temperature=2", "--jobs", "1"]
    assert main([*argv, "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "[4/4]" in text and "| temperature |" in text
    config = json.loads((out / "temperature" / "seed2" / "config.json").read_text())["run"]
    assert config["method_options"] == {"temperature": 2} and config["nre_budget"] == 40
    assert main(["report", str(out)]) == 0
    assert main(["compare", "tiny", "--seeds", "3-1", "--out", str(out)]) == 2
    assert main(["compare", "tiny", "--set", "seed=4", "--out", str(out)]) == 2
    assert "seeds" in capsys.readouterr().err


@pytest.mark.slow
def test_compare_in_parallel_processes_on_toy1d(tmp_path, cache):
    # The workers are spawned processes: they find the prior through $BANEL_CACHE, set by the `cache` fixture.
    done = []
    data = {"nre_budget": 500, "banel": {"m": 250}}
    compare("toy1d", ["base", "gfn"], [0, 1], data, tmp_path / "cmp", jobs=2, on_done=done.append)
    assert len(done) == 4 and all(d["queries"] == 500 and d["nre_used"] <= 500 for d in done)
    assert len(collect(tmp_path / "cmp")) == 4


def test_cli_compare_applies_the_task_default_settings_like_banel_run(tmp_path, tiny, monkeypatch):
    from banel.tasks import DEFAULT_SETTINGS

    monkeypatch.setitem(DEFAULT_SETTINGS, "tiny", {"banel": {"kappa": 3.0, "m": 20}})
    out = tmp_path / "cmp"
    argv = ["compare", "tiny", "--methods", "base", "--seeds", "0", "--budget", "40", "--jobs", "1"]
    assert main([*argv, "--set", "banel.kappa=5", "--out", str(out)]) == 0
    config = json.loads((out / "base" / "seed0" / "config.json").read_text())["run"]
    assert config["banel"]["kappa"] == 5.0 and config["banel"]["m"] == 20


class Crash(Exception):
    """Stands in for a kill."""


def test_an_interrupted_comparison_resumes_its_run_with_the_paid_evaluations(tmp_path, tiny, monkeypatch, capsys):
    reference = []
    compare("tiny", ["banel"], [0], BASE, tmp_path / "ref", jobs=1, on_done=reference.append)
    with pytest.raises(ValueError, match=r"finished run with other settings \(banel.kappa differ"):
        compare("tiny", ["banel"], [0], {**BASE, "banel": {**BASE["banel"], "kappa": 3.0}}, tmp_path / "ref", jobs=1)

    end_round = Run.end_round

    def crash_in_round_1(self, *args, **kwargs):
        end_round(self, *args, **kwargs)
        if self.round_index == 2:  # round 1's history row is written and its evaluations paid, no checkpoint
            raise Crash

    monkeypatch.setattr(Run, "end_round", crash_in_round_1)
    with pytest.raises(Crash):
        compare("tiny", ["banel"], [0], BASE, tmp_path / "cmp", jobs=1)
    monkeypatch.setattr(Run, "end_round", end_round)
    folder = tmp_path / "cmp" / "banel" / "seed0"
    run_id = json.loads((folder / "config.json").read_text())["run_id"]

    # Other settings in the same folder: refused, nothing touched.
    with pytest.raises(ValueError, match="other settings .*nre_budget"):
        compare("tiny", ["banel"], [0], {**BASE, "nre_budget": 80}, tmp_path / "cmp", jobs=1)
    assert json.loads((folder / "config.json").read_text())["run_id"] == run_id

    # Another process working on the folder (here: holding its lock) keeps everyone else out of it.
    with folder_lock(folder):
        with pytest.raises(FolderInUse, match="in use by another process"):
            compare("tiny", ["banel"], [0], BASE, tmp_path / "cmp", jobs=1)
        assert main(["resume", str(folder), "--quiet", "--no-plot"]) == 2
        assert "in use by another process" in capsys.readouterr().err
    assert not (folder / "summary.json").exists()

    done = []
    compare("tiny", ["banel"], [0], BASE, tmp_path / "cmp", jobs=1, on_done=done.append)
    assert json.loads((folder / "config.json").read_text())["run_id"] == run_id  # the same run, continued
    keep = ("best_success_rate", "final_success_rate", "nre_used", "queries", "successes_found", "drift_nll")
    assert {k: done[0][k] for k in keep} == {k: reference[0][k] for k in keep}
    history = [json.loads(line) for line in (folder / "history.jsonl").read_text().splitlines()]
    assert [row["round"] for row in history] == [-1, 0, 1, 2]
