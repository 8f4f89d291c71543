"""The regression tier: pinned short runs compared with benchmarks/references/*.json (measure.py wrote them).

Each run starts from an empty cache, so it uses the priors shipped with banel; every number it pins must fall
within the band measured across seeds and written beside it. Deselect with `-m "not regression"`.
"""

import json
from pathlib import Path

import pytest

from banel.cli import main

pytestmark = pytest.mark.regression

ROOT = Path(__file__).resolve().parents[1]
REFERENCES = sorted((ROOT / "benchmarks" / "references").glob("*.json"))


def test_the_references_pin_the_documented_runs():
    assert [p.stem for p in REFERENCES] == ["digits", "toy1d"]


@pytest.mark.parametrize("path", REFERENCES, ids=[p.stem for p in REFERENCES])
def test_a_pinned_run_falls_within_the_band_measured_across_seeds(path, tmp_path, monkeypatch, capsys):
    reference = json.loads(path.read_text())
    monkeypatch.chdir(ROOT)  # commands name files under benchmarks/
    cache, out = tmp_path / "cache", tmp_path / "run"
    assert main([*reference["argv"], "--out", str(out), "--cache", str(cache), "--quiet", "--no-plot"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    outside = {
        key: (summary[key], tolerance["band"])
        for key, tolerance in reference["tolerance"].items()
        if not tolerance["band"][0] <= summary[key] <= tolerance["band"][1]
    }
    assert not outside, f"{reference['command']}: outside the measured band: {outside}"
    pinned = ["base_success_rate", "best_success_rate", "final_success_rate", "nre_used"]
    assert sorted(reference["tolerance"]) == pinned
    # the band can fail: a method that learns nothing keeps the prior's rate, below the best rate's band
    assert reference["pinned"]["base_success_rate"] < reference["tolerance"]["best_success_rate"]["band"][0]
    assert not list(cache.rglob("*.pt"))  # the shipped priors, nothing trained
