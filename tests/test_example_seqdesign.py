"""The user's task of examples/ end to end: the contract check, the CLI by import path, and the same table
from the process and Ray backends (the issue's must-show)."""

import json
from pathlib import Path

import pytest
import torch

from banel.cli import main
from banel.tasks import make_task, resolve_task
from banel.testing import TaskCheckFailed, check_task

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = "examples.seqdesign:make"
# The small prior of examples/README.md (about 3 s to pre-train) and a threshold with a rate of ~1e-3
SMALL = {"prior_samples": 8000, "prior_epochs": 3, "prior_width": 32, "threshold": -1.4}
SETTINGS = [f"task_options.{k}={v}" for k, v in SMALL.items()] + [
    "m=20",
    "nre_budget=60",
    "eval.samples=2000",
    "eval.drift_samples=200",
    "eval.metric_samples=500",
    "banel.negative_epochs=3",
    "banel.generator_epochs=2",
    "rnd.hidden=32",
    "rnd.layers=2",
]


@pytest.fixture
def at_root(monkeypatch):
    """Run from the repository root, where `examples.seqdesign` is importable (as a user would)."""
    monkeypatch.chdir(ROOT)
    monkeypatch.syspath_prepend(str(ROOT))


def _flags(settings):
    return [a for pair in settings for a in ("--set", pair)]


def test_the_example_task_keeps_the_contract(at_root, cache):
    task = make_task(EXAMPLE, SMALL, cache)
    report = check_task(task, samples=20_000)
    assert {"Feasibility", "Decode", "Describe", "Metrics"} <= set(report["capabilities"])
    assert 0.01 < report["infeasible_fraction"] < 0.1  # examples/README.md: 3.88% for this prior
    assert 3 <= report["successes"] <= 60  # README: 16-22 in 20,000 draws at this threshold (rate ~1e-3)
    assert set(report["metrics"]) >= {"mean_energy", "energy_p01", "unique_fraction"}
    assert resolve_task(EXAMPLE)[1].description  # a line for `banel tasks`


class WinsWhereItIsInfeasible:
    """A broken task: its free check rules out sequences that do win."""

    name = "broken"

    def __init__(self, task):
        self.task = task

    def prior(self, device="cpu"):
        return self.task.prior(device)

    def reward(self, x):
        return torch.ones(len(x), dtype=torch.float64)

    def feasible(self, x):
        return x.tokens[:, 0] != 0


class HalfRewards(WinsWhereItIsInfeasible):
    """A broken task: its reward is not 0/1."""

    def reward(self, x):
        return torch.full((len(x),), 0.5, dtype=torch.float64)


def test_check_task_fails_clearly_on_a_broken_task(at_root, cache):
    task = make_task(EXAMPLE, SMALL, cache)
    with pytest.raises(TaskCheckFailed, match="feasible.. rules out got reward 1"):
        check_task(WinsWhereItIsInfeasible(task), samples=500, reward_samples=500)
    with pytest.raises(TaskCheckFailed, match=r"task 'broken': reward: .*returned 0.5 .*expected 0 or 1"):
        check_task(HalfRewards(task), samples=500, reward_samples=500)
    with pytest.raises(TaskCheckFailed, match="lacks prior, reward"):
        check_task(type("NoCore", (), {"name": "x"})())


def test_the_example_runs_end_to_end_from_the_cli_by_import_path(at_root, tmp_path, cache):
    out = tmp_path / "run"
    assert main(["run", EXAMPLE, "--out", str(out), "--quiet", "--no-plot", *_flags(SETTINGS)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["task"] == "seqdesign" and summary["rounds"] == 3 and summary["nre_used"] <= 60
    assert summary["success_rate_exact"] is False  # a Monte-Carlo task
    history = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    for row in history:  # the user's metrics and the infeasible fraction at every evaluation
        assert {"infeasible_fraction", "mean_energy", "energy_p01", "unique_fraction"} <= set(row["metrics"])
    assert summary["metrics"] == history[-1]["metrics"] and summary["prior_metrics"] == history[0]["metrics"]


@pytest.mark.slow
def test_compare_on_the_example_writes_identical_tables_with_processes_and_ray(at_root, tmp_path, cache):
    pytest.importorskip("ray")
    argv = ["compare", EXAMPLE, "--methods", "banel,rnd,count,base", "--seeds", "0-2", "--jobs", "2"]
    argv += _flags(SETTINGS)
    assert main([*argv, "--out", str(tmp_path / "process")]) == 0
    assert main([*argv, "--backend", "ray", "--out", str(tmp_path / "ray")]) == 0
    for name in ("table.md", "table.csv"):
        assert (tmp_path / "ray" / name).read_text() == (tmp_path / "process" / name).read_text()
    table = (tmp_path / "process" / "table.md").read_text()
    assert "infeasible_fraction" in table and "mean_energy" in table  # the task's metrics are columns
    for method in ("banel", "rnd", "count", "base"):
        for seed in range(3):
            a, b = (
                json.loads((tmp_path / k / method / f"seed{seed}" / "summary.json").read_text())
                for k in ("process", "ray")
            )
            assert {k: v for k, v in a.items() if k != "wall_seconds"} == {
                k: v for k, v in b.items() if k != "wall_seconds"
            }
