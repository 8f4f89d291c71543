"""benchmarks/gpu/check.py: its CPU smoke mode end to end (the files a GPU run returns, and their schema), and a
step past its deadline killed and recorded."""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from pathlib import Path
from types import ModuleType

from _benchmarks import load
from _mnist_files import write_mnist
from banel.config import parse_overrides
from banel.runner import parse_config

ROOT = Path(__file__).resolve().parents[1]


def _check() -> ModuleType:
    """The check script as a module (benchmarks/ is not a package)."""
    return load("benchmarks/gpu/check.py", "gpu_check")


def test_smoke_runs_every_step_and_writes_the_summary_files(tmp_path: Path, cache: Path) -> None:
    check = _check()
    write_mnist(tmp_path / "mnist", n=60)  # 6 zeros for the prior, 6 sixes for the targets
    out, work = tmp_path / "out", tmp_path / "work"
    argv = ["--smoke", "--out", str(out), "--work", str(work), "--mnist", str(tmp_path / "mnist")]
    assert check.main(argv) == 0
    names = {p.name for p in out.iterdir()}
    assert names <= set(check.OUT_FILES) and len(check.OUT_FILES) <= 8 and all(p.is_file() for p in out.iterdir())
    assert {"summary.json", "summary.md", "steps.log", "parity.json", "table2.md", "table2-runs.json"} <= names

    summary = json.loads((out / "summary.json").read_text())
    assert summary["mode"] == "smoke" and [s["name"] for s in summary["steps"]] == list(check.STEPS)
    gsm8k_ran = importlib.util.find_spec("transformers") and importlib.util.find_spec("peft")
    for step in summary["steps"]:
        expected = "skipped" if step["name"] == "gsm8k" and not gsm8k_ran else "passed"
        assert step["status"] == expected, step
        assert step["status"] == "skipped" or (step["returncode"] == 0 and 0 < step["seconds"] <= step["budget"])
        assert f"===== {step['name']}: " in (out / "steps.log").read_text()

    parity = summary["results"]["parity"]
    assert parity["passed"] and set(parity["tasks"]) == {"toy1d"}
    checks = parity["tasks"]["toy1d"]["checks"]
    assert set(checks) == {"prior_logp", "prior_exact_rate", "best_success_rate", "final_success_rate"}
    assert checks["prior_logp"]["max_abs_diff"] == 0.0  # the same CPU, the same weights: bit for bit
    assert (
        checks["prior_exact_rate"]["cpu"] == summary["results"]["parity"]["tasks"]["toy1d"]["run"]["base_success_rate"]
    )
    (run,) = summary["results"]["table2"]
    assert run["method"] == "banel" and run["finished"] and run["rounds_done"] == 2
    if gsm8k_ran:
        assert [r["question"] for r in summary["results"]["gsm8k"]["base_rates"]] == [0]
    table = (out / "summary.md").read_text()
    assert "| devices | passed |" in table and "| toy1d | prior_logp | max abs diff 0 |" in table


def test_a_step_past_its_deadline_is_killed_and_the_next_one_runs(tmp_path: Path) -> None:
    check = _check()
    log = tmp_path / "steps.log"
    sleeper = check.Step("slow", [sys.executable, "-c", "import time; time.sleep(60)"], budget=600)
    quick = check.Step("quick", [sys.executable, "-c", "print('ran')"], budget=600)
    started = time.time()
    check.run_step(sleeper, time.time() + 6, log)
    check.run_step(quick, time.time() + 30, log)
    assert sleeper.status == "timeout" and time.time() - started < 30
    assert quick.status == "passed" and quick.returncode == 0 and "ran" in log.read_text()


def test_the_gpu_plan_passes_each_script_arguments_it_accepts(tmp_path: Path) -> None:
    check = _check()
    steps = {s.name: s for s in check.plan(check.build_parser().parse_args(["--out", str(tmp_path)]), tmp_path)}
    assert list(steps) == list(check.STEPS) and steps["table2"].budget == 0  # table2: what the others leave
    assert sum(s.budget for s in steps.values()) < 60 * 9

    table2 = load("benchmarks/mnist/gpu_table2.py", "gpu_table2")
    args = table2.build_parser().parse_args(steps["table2"].command[2:])
    settings = table2.settings_for(args, tmp_path)
    assert settings["nre_budget"] == 15 * 250 and settings["banel"] == table2.PAPER["banel"]  # 15 paper rounds

    recipe = steps["gsm8k"].command
    overrides = parse_overrides([recipe[i + 1] for i, a in enumerate(recipe) if a == "--set"])
    assert overrides.pop("task_options") == {"max_new_tokens": 128}
    config = parse_config({"task": "toy1d", **overrides})  # the run settings the recipe passes on are valid
    assert config.rounds == 3 and config.eval.samples == 256
