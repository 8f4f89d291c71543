"""The benchmark scripts still run: their tiny --smoke versions, end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def smoke(tmp_path: Path, script: str, *args: str, **env: str) -> subprocess.CompletedProcess:
    """Run benchmarks/SCRIPT with `args` from the repository root, an empty cache under tmp_path; asserts success."""
    env = {**os.environ, "BANEL_CACHE": str(tmp_path / "cache"), **env}
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done


@pytest.mark.slow
def test_scaling_sweep_smoke_writes_its_table_and_figure(tmp_path: Path) -> None:
    out = tmp_path / "scaling"
    smoke(tmp_path, "mnist/scaling.py", "--smoke", "--out", str(out), "--jobs", "2")
    table = json.loads((out / "scaling.json").read_text())["sweep"]
    assert [row["negative_epochs"] for row in table] == [1, 2]
    for row in table:
        summary = json.loads((out / f"digits-negepochs{row['negative_epochs']}-seed0" / "summary.json").read_text())
        assert row["best"] == [summary["best_success_rate"]] and summary["nre_used"] <= 40
        assert row["improvement"] == pytest.approx(summary["best_success_rate"] / summary["base_success_rate"])
    assert (out / "scaling.png").stat().st_size > 0


@pytest.mark.slow
def test_gsm8k_recipe_smoke_runs_every_step_on_a_tiny_model(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    pytest.importorskip("peft")
    out = tmp_path / "gsm8k"
    done = smoke(tmp_path, "gsm8k/recipe.py", "--smoke", "--out", str(out))
    summary = json.loads((out / "summary.json").read_text())
    assert [r["question"] for r in summary["base_rates"]] == [0, 1]
    assert [r["question"] for r in summary["results"]] == [0, 1]
    for r in summary["results"]:
        assert set(r["runs"]) == {"banel-seed0", "rnd-seed0"} and all(v["nre_used"] <= 16 for v in r["runs"].values())
    assert "base-rate pass" in done.stdout and (out / "summary.md").read_text().count("| 0 |") == 2


@pytest.mark.slow
def test_zoo_recipe_smoke_writes_each_table_and_the_summary(tmp_path: Path) -> None:
    out = tmp_path / "zoo"
    smoke(tmp_path, "zoo/run.py", "--smoke", "--tasks", "constrained", "--out", str(out), PYTHONPATH=str(ROOT / "src"))
    assert (out / "constrained" / "table.md").is_file()
    summary = (out / "summary.md").read_text()
    rows = [line for line in summary.splitlines() if line.startswith("| constrained |")]
    assert [row.split(" | ")[1] for row in rows] == ["banel", "rnd", "count", "temperature", "base"]
    banel = json.loads((out / "constrained" / "banel" / "seed0" / "summary.json").read_text())
    assert banel["nre_used"] <= 40 and "infeasible_fraction" in banel["metrics"]


@pytest.mark.slow
def test_stopping_benchmark_smoke_scores_every_rule_from_the_run_folders(tmp_path: Path) -> None:
    out = tmp_path / "stopping"
    smoke(tmp_path, "stopping/run.py", "--smoke", "--out", str(out), "--seeds", "0-1", "--variants", "default")
    table = (out / "stopping.md").read_text()
    for task in ("toy1d", "zoo-typical"):
        rows = [line for line in table.splitlines() if line.startswith(f"| {task} | 2 | default |")]
        assert [r.split(" | ")[3] for r in rows] == ["final", "drift", "paid", "drift@0.5", "drift@3"]
    # the final rule keeps the final generator: its kept / final ratio is exactly 1
    assert all(line.split(" | ")[8] == "1" for line in table.splitlines() if " | final | " in line)


@pytest.mark.slow
def test_controls_benchmark_smoke_tables_every_method_and_variant_with_verdicts_against_banel(tmp_path: Path) -> None:
    out = tmp_path / "controls"
    smoke(tmp_path, "controls/run.py", "--smoke", "--out", str(out), "--seeds", "0")
    rows = [line.split(" | ") for line in (out / "controls.md").read_text().splitlines()[2:]]
    methods = [r[1] for r in rows]
    assert methods[0] == "banel" and {"npo", "negrl", "rnd", "count", "base"} <= set(methods)
    assert sorted(m for m in methods if m.startswith("diverse")) == [
        "diverse [diverse.distil=false]",
        "diverse [diverse.distil=true]",
    ]
    # every other row carries both verdicts against BaNEL; BaNEL's own row none
    assert rows[0][7:9] == ["-", "- |"] and all(r[7] != "-" and r[8] != "- |" for r in rows[1:])
    # base is the prior itself: its rates are the prior's and it never moves from it
    base = rows[methods.index("base")]
    assert base[3] == base[4] == "1×" and base[6] == "0"
