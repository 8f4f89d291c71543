"""The regression tier: short pinned runs compared round by round with benchmarks/regression/*.json.

benchmarks/regression/pin.py wrote each reference: the run's per-round trajectory on one machine and, for every
number, a tolerance of 10x the largest difference measured between the runs it records (torch's CPU kernels,
MKL's and oneDNN's code paths, on each machine it was pinned or added on: other float rounding, as on another
CPU), at least 1e-4 relative. Rounds after the kernels' paths part are not pinned. The tests
marked `regression` run the commands (about a minute in all); the others check, without running anything, that
the comparison catches a 2x change in any pinned number. Deselect the runs with `-m "not regression"`.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from _benchmarks import load
from banel.cli import main

ROOT = Path(__file__).resolve().parents[1]
HERE = ROOT / "benchmarks" / "regression"
REFERENCES = sorted(HERE.glob("*.json"))


pin = load("benchmarks/regression/pin.py", "banel_regression_pin")


def _run(argv: list[str], tmp_path: Path, monkeypatch) -> dict:
    """The trajectory of `banel ARGV` from an empty cache (the shipped priors), in-process."""
    monkeypatch.chdir(ROOT)
    cache, out = tmp_path / "cache", tmp_path / "run"
    assert main([*argv, "--out", str(out), "--cache", str(cache), "--quiet", "--no-plot"]) == 0
    assert not list(cache.rglob("*.pt"))  # the shipped priors, nothing trained
    return pin.trajectory(out)


def test_the_references_pin_the_documented_runs_with_their_environment():
    assert [p.stem for p in REFERENCES] == sorted(pin.PINS) == ["toy1d", "toy2d"]
    for path in REFERENCES:
        reference = json.loads(path.read_text())
        env = reference["environment"]
        assert env["torch"] and env["cpu"]["model"] and env["cpu"]["flags"] and env["native_capability"]
        assert {"default", "avx2"} <= set(reference["kernels"])  # the spread is measured, not assumed
        rounds = [w for w in reference["tolerance"] if w != "summary"]
        assert len(rounds) >= 2, path.stem  # a trajectory, not one number
        for where, tolerances in reference["tolerance"].items():
            for q, tolerance in tolerances.items():
                spread = reference["spread"][where][q]
                assert tolerance == max(pin.TOLERANCE_MULTIPLE * spread, pin.TOLERANCE_FLOOR)
                assert tolerance <= pin.TOLERANCE_CEILING < 0.5  # 0.5: a factor 2


@pytest.mark.parametrize("path", REFERENCES, ids=[p.stem for p in REFERENCES])
def test_doubling_or_halving_any_pinned_number_fails(path):
    reference = json.loads(path.read_text())
    assert pin.violations(reference, reference["trajectory"]) == []
    for where, tolerances in reference["tolerance"].items():
        for q in tolerances:
            for factor in (2.0, 0.5):
                changed = copy.deepcopy(reference["trajectory"])
                row = changed["summary"] if where == "summary" else changed["rounds"][int(where.split()[1])]
                value = row[q]
                if value is None:
                    continue  # round 0's tau: a number where None is pinned fails as well
                row[q] = value * factor if value else 1
                found = pin.violations(reference, changed)
                assert len(found) == 1 and found[0].startswith(f"{where} {q}:"), (where, q, found)


def test_a_missing_round_fails():
    reference = json.loads((HERE / "toy1d.json").read_text())
    short = copy.deepcopy(reference["trajectory"])
    short["rounds"] = short["rounds"][:2]
    assert any(v.startswith("round 2 ") for v in pin.violations(reference, short))


@pytest.mark.regression
@pytest.mark.parametrize("path", REFERENCES, ids=[p.stem for p in REFERENCES])
def test_a_pinned_run_follows_its_trajectory(path, tmp_path, monkeypatch):
    reference = json.loads(path.read_text())
    found = pin.violations(reference, _run(reference["argv"], tmp_path, monkeypatch))
    assert not found, f"{reference['command']}: off its pinned trajectory:\n" + "\n".join(found)


@pytest.mark.regression
def test_a_real_change_to_the_method_fails(tmp_path, monkeypatch):
    # toy1d's kappa is 4 (the task's default); at 2 the ratio ranks other candidates from round 1 on
    reference = json.loads((HERE / "toy1d.json").read_text())
    found = pin.violations(reference, _run([*reference["argv"], "--set", "banel.kappa=2"], tmp_path, monkeypatch))
    assert any(v.startswith("round 1 tau:") for v in found), found
    assert any(" success_rate:" in v for v in found), found


def test_adding_a_machine_keeps_the_reference_and_widens_the_spread_with_its_runs(monkeypatch):
    reference = json.loads((HERE / "toy2d.json").read_text())
    pinned = copy.deepcopy(reference["trajectory"])
    other = copy.deepcopy(pinned)
    other["rounds"][3]["kl_to_prior"] *= 1.001  # another CPU's rounding, 1e-3 apart in round 3
    env = {**reference["environment"], "cpu": {**reference["environment"]["cpu"], "model": "Other CPU"}}
    env.pop("added", None)
    measured = {"trajectory": other, "kernels": {"default": pinned}, "environment": env}
    monkeypatch.setattr(pin, "pin", lambda name: copy.deepcopy(measured))
    widened = pin.with_tolerances(pin.add(copy.deepcopy(reference), "toy2d"))
    assert widened["trajectory"] == pinned  # the reference stays the one pinned
    label = f"Other CPU {env['native_capability']}"
    assert {f"{label}: native", f"{label}: default"} <= set(widened["kernels"])
    assert [e["label"] for e in widened["environment"]["added"]].count(label) == 1
    assert widened["tolerance"]["round 3"]["kl_to_prior"] == pytest.approx(10 * 0.001 / 1.001, rel=1e-3)
    again = pin.add(copy.deepcopy(widened), "toy2d")  # the same CPU again replaces, never duplicates
    assert [e["label"] for e in again["environment"]["added"]].count(label) == 1


def test_every_run_starts_from_no_code_path_selector(monkeypatch):
    class Stop(Exception):
        pass

    seen = {}

    def spawn(command, env, **kwargs):
        seen.update(env)
        raise Stop

    monkeypatch.setenv("MKL_CBWR", "AUTO")  # the caller's selector must not leak into a pinned run
    monkeypatch.setattr(pin.subprocess, "run", spawn)
    with pytest.raises(Stop):
        pin.run(["run", "toy1d"], {"ONEDNN_MAX_CPU_ISA": "SSE41"})
    assert seen["ONEDNN_MAX_CPU_ISA"] == "SSE41" and "MKL_CBWR" not in seen and seen["OMP_NUM_THREADS"] == "1"
