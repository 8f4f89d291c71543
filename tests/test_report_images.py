"""End-to-end: a tiny `banel run digits` writes sample snapshots, and the Fig. 2 grid is drawn from them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from banel.cli import main
from banel.report.images import best_round, plot_samples, plot_success_by_method, tile

TINY = [
    "m=20",
    "nre_budget=40",
    "banel.negative_epochs=1",
    "banel.generator_epochs=1",
    "task_options.targets=300",
    "task_options.prior_training.augment=200",
    "task_options.prior_training.epochs=1",
]


def test_tile_puts_images_in_a_grid_with_gutters() -> None:
    images = np.stack([np.zeros((2, 2)), np.ones((2, 2)), np.ones((2, 2))])
    grid = tile(images, columns=2)
    assert grid.shape == (5, 5)
    assert grid[0, 0] == 0 and grid[0, 3] == 1 and grid[3, 0] == 1 and grid[0, 2] == 0.5 and grid[3, 3] == 0.5


@pytest.mark.slow
def test_tiny_digits_run_writes_snapshots_and_pictures(tmp_path: Path) -> None:
    out = tmp_path / "run"
    argv = ["run", "digits", "--out", str(out), "--cache", str(tmp_path / "cache"), "--quiet"]
    for pair in TINY:
        argv += ["--set", pair]
    assert main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["queries"] == 40 and summary["nre_used"] <= 40 and summary["rounds"] == 2
    assert 0 < summary["base_success_rate"] < 1
    prior = np.load(out / "snapshots" / "round_000.npz")["prior_samples"]
    post = np.load(out / "snapshots" / "round_002.npz")["posterior_samples"]
    assert prior.shape == post.shape == (64, 8, 8) and set(np.unique(prior)) <= {0, 1}
    assert (out / "samples.png").is_file() and (out / "success.png").is_file()
    i, rate = best_round(out)
    assert -1 <= i <= 1 and rate >= summary["base_success_rate"]
    assert plot_samples(out, tmp_path / "again.png").stat().st_size > 0
    assert plot_success_by_method([out, out], tmp_path / "methods.png").stat().st_size > 0
