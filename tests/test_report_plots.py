"""Run plots: the best round is drawn beside the last, every curve is labelled."""

import json

import numpy as np

from banel.report.plots import _panels, plot_densities


def test_the_densities_show_the_best_round_beside_the_last_with_a_legend_of_every_curve(tmp_path):
    (tmp_path / "snapshots").mkdir()
    grid = np.log(np.full(8, 1 / 8))
    for i in range(-1, 12):  # the prior and rounds 0..11
        arrays = {"prior": grid, "reward": (np.arange(8) == 3).astype(float)}
        if i >= 0:
            arrays.update(posterior=grid, negative=grid)
        np.savez(tmp_path / "snapshots" / f"round_{i + 1:03d}.npz", **arrays)
    (tmp_path / "config.json").write_text(json.dumps({"run": {}, "task": {"box": [0, 1]}}))
    (tmp_path / "summary.json").write_text(json.dumps({"best_round": 5}))
    files = sorted((tmp_path / "snapshots").glob("round_*.npz"))
    picks = [p.name for p in _panels(files, tmp_path, 5)]
    assert picks[0] == "round_000.npz" and picks[-1] == "round_012.npz" and "round_006.npz" in picks
    assert len(picks) == 5
    path = plot_densities(tmp_path)
    assert path.stat().st_size > 10_000
