"""benchmarks/mnist/gpu_table2.py: its --smoke mode end to end on CPU on synthesised IDX files, and its errors."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import ModuleType

import pytest
import torch

from _benchmarks import load
from _mnist_files import write_mnist

ROOT = Path(__file__).resolve().parents[1]


def _recipe() -> ModuleType:
    """The recipe script as a module (benchmarks/ is not a package)."""
    return load("benchmarks/mnist/gpu_table2.py", "gpu_table2")


@pytest.mark.slow
def test_smoke_writes_every_artefact_into_one_flat_folder_and_a_rerun_keeps_the_runs(tmp_path: Path, capsys) -> None:
    recipe = _recipe()
    write_mnist(tmp_path / "mnist", n=60)  # 6 zeros to train the prior on, 6 sixes to make the targets from
    work, out = tmp_path / "work", tmp_path / "out"
    argv = ["--smoke", "--data", str(tmp_path / "mnist"), "--work", str(work), "--out", str(out)]
    assert recipe.main(argv) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(recipe.OUT_FILES)  # flat: files only, nothing else
    assert all(p.stat().st_size > 0 for p in out.iterdir())

    runs = json.loads((out / "runs.json").read_text())
    assert [(r["method"], r["seed"]) for r in runs] == [("banel", 0), ("count", 0), ("rnd", 0)]
    for r in runs:
        summary = json.loads((work / r["method"] / "seed0" / "summary.json").read_text())
        assert r["finished"] and r["summary"]["nre_used"] == summary["nre_used"] == 40  # 2 rounds of m = 20
        assert [c["round"] for c in r["curve"]] == [-1, 0, 1]  # smoke: an exact rate after every round
        assert r["curve"][-1]["rate"] == summary["final_success_rate"]

    table = (out / "table.md").read_text()
    prior = json.loads((work / "prior.json").read_text())["estimate"]["rate"]
    assert f"| prior | - | {prior:.3e} (1×) |" in table and "8e-26 (1×)" in table
    best = {r["method"]: r["summary"]["best_success_rate"] for r in runs}
    paper_means = {"banel": ("BaNEL", "1.080e-21"), "rnd": ("RND", "1.082e-23"), "count": ("count-based", "2.674e-24")}
    for method, (label, paper) in paper_means.items():
        assert f"| {method} | {best[method]:.3e}" in table  # banel report's row
        line = next(x for x in table.splitlines() if x.startswith(f"| {label} | 1 |"))  # the paper-table row
        assert line.startswith(f"| {label} | 1 | {best[method]:.3e}") and paper in line

    timing = json.loads((out / "timing.json").read_text())
    assert timing["mode"] == "smoke" and timing["settings"]["banel"]["filter_factor"] == 2
    assert {"runs", "prior exact rate", "artefacts"} <= set(timing["phases"])
    for t in timing["runs"]:
        summary = json.loads((work / t["method"] / "seed0" / "summary.json").read_text())
        assert t["wall_seconds"] == summary["wall_seconds"] and len(t["round_seconds"]) == t["rounds"] == 2
    log = (out / "progress.log").read_text()
    assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ \[", log) and "finished banel seed 0" in log

    capsys.readouterr()
    assert recipe.main(argv) == 0  # resumes: every run is found finished and kept
    assert "3 runs already finished" in capsys.readouterr().out
    assert json.loads((out / "runs.json").read_text()) == runs


def test_arguments_are_checked_before_any_work(tmp_path: Path, capsys) -> None:
    recipe = _recipe()
    write_mnist(tmp_path / "mnist", n=20)
    data = ["--data", str(tmp_path / "mnist")]
    cases = [
        (["--smoke", "--data", str(tmp_path / "none")], "cp /work/shared/data/mnist/*-ubyte.gz"),
        (["--smoke", *data, "--jobs", "0"], "--jobs must be >= 1, got 0"),
        (["--smoke", *data, "--eval-every", "0"], "--eval-every must be >= 1"),
        (["--smoke", *data, "--rounds", "0"], "--rounds must be >= 1, got 0"),
        (["--smoke", *data, "--seeds", "0,0"], "lists a seed twice"),
        (["--smoke", *data, "--methods", "banel,nope"], "unknown method 'nope'"),
        (["--smoke", *data, "--work", str(tmp_path / "w"), "--out", str(tmp_path / "w")], "--out must differ"),
    ]
    if not torch.cuda.is_available():
        cases.append(([*data], "torch sees no CUDA device"))
    for argv, message in cases:
        assert recipe.main(argv) == 2, argv
        assert message in capsys.readouterr().err
    assert not (tmp_path / "w").exists()
