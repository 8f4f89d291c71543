"""Plots of a finished (or interrupted) run folder: success rate against NREs, and densities per round."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never open a window
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from banel.rundir import read_history  # noqa: E402


def plot_success(run_dir: str | Path, path: str | Path | None = None) -> Path:
    """Success rate (and cumulative best) of the run's model against NREs used, log scale."""
    run_dir = Path(run_dir)
    rows = [r for r in read_history(run_dir) if r.get("success_rate")]
    nre = np.array([r["nre_used"] for r in rows])
    rate = np.array([r["success_rate"]["rate"] for r in rows])
    low = np.array([r["success_rate"]["low"] for r in rows])
    high = np.array([r["success_rate"]["high"] for r in rows])
    best = np.maximum.accumulate(rate)
    config = json.loads((run_dir / "config.json").read_text())["run"]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(nre, rate, "o-", ms=3, label="success rate")
    if not np.allclose(low, high):
        ax.fill_between(nre, np.maximum(low, 1e-300), high, alpha=0.25, label="95% Clopper-Pearson")
    ax.plot(nre, best, "--", label="cumulative best")
    ax.axhline(rate[0], color="grey", lw=0.8, label="prior")
    ax.set_yscale("log")
    ax.set_xlabel("reward evaluations (NREs)")
    ax.set_ylabel("success rate")
    ax.set_title(f"{config['task']} · {config['method']} · seed {config['seed']}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path or run_dir / "success.png")
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_densities(run_dir: str | Path, path: str | Path | None = None, panels: int = 5) -> Path | None:
    """Prior, negative model and posterior per round (Fig. 1 / blog figure), from the saved snapshots."""
    run_dir = Path(run_dir)
    files = sorted((run_dir / "snapshots").glob("round_*.npz"))
    if not files or "prior" not in np.load(files[0]).files:
        return None  # image tasks save samples, not densities (banel.report.images)
    picks = [files[int(round(k))] for k in np.linspace(0, len(files) - 1, min(panels, len(files)))]
    snaps = [(int(f.stem.split("_")[1]) - 1, dict(np.load(f))) for f in picks]
    prior = snaps[0][1]["prior"]
    task = json.loads((run_dir / "config.json").read_text()).get("task", {})
    low, high = task.get("box", [0.0, 1.0])
    fig, axes = plt.subplots(1, len(snaps), figsize=(3.2 * len(snaps), 3), squeeze=False)
    for ax, (i, snap) in zip(axes[0], snaps, strict=True):
        title = "prior" if i < 0 else f"after round {i}"
        if prior.ndim == 1:
            grid = low + (np.arange(len(prior)) + 0.5) * (high - low) / len(prior)
            if "reward" in snap:
                ax.fill_between(grid, 1e-7, 1, where=snap["reward"] > 0, color="tab:green", alpha=0.3, lw=0)
            ax.plot(grid, np.exp(snap["prior"]), color="grey", lw=1, label="prior")
            if "negative" in snap:
                ax.plot(grid, np.exp(snap["negative"]), "r--", lw=1, label="negative")
            if "posterior" in snap:
                ax.plot(grid, np.exp(snap["posterior"]), "k", lw=1.2, label="posterior")
            ax.set_yscale("log")
            ax.set_ylim(1e-7, 1)
            ax.set_xlabel("x", fontsize=8)
        else:
            extent = (low, high, low, high)
            ax.imshow(np.exp(snap.get("posterior", snap["prior"])).T, origin="lower", cmap="magma", extent=extent)
            if "reward" in snap:
                ax.contour(snap["reward"].T, levels=[0.5], colors="tab:green", linewidths=0.8, extent=extent)
            ax.set_xticks([])
            ax.set_yticks([])
        ax.set_title(title, fontsize=9)
    axes[0][0].legend(fontsize=7) if prior.ndim == 1 else None
    fig.tight_layout()
    path = Path(path or run_dir / "densities.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_run(run_dir: str | Path) -> list[Path]:
    """Every plot a single run folder supports."""
    out = [plot_success(run_dir)]
    dens = plot_densities(run_dir)
    if dens:
        out.append(dens)
    from banel.report.images import plot_samples

    samples = plot_samples(run_dir)
    if samples:
        out.append(samples)
    return out
