"""Plots of a finished (or interrupted) run folder: success rate against NREs, and densities per round."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never open a window
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import LogNorm  # noqa: E402

from banel.rundir import read_history  # noqa: E402


def plot_success(run_dir: str | Path, path: str | Path | None = None) -> Path:
    """The generator's success rate at each evaluation against NREs (log scale), with the best round's
    re-estimate when the run has finished."""
    run_dir = Path(run_dir)
    rows = [r for r in read_history(run_dir) if r.get("success_rate")]
    if not rows:
        return plot_paid(run_dir, path)
    nre = np.array([r["nre_used"] for r in rows])
    rate = np.array([r["success_rate"]["rate"] for r in rows])
    low = np.array([r["success_rate"]["low"] for r in rows])
    high = np.array([r["success_rate"]["high"] for r in rows])
    config = json.loads((run_dir / "config.json").read_text())["run"]
    fig, ax = plt.subplots(figsize=(6.5, 4))
    ax.plot(nre, np.maximum(rate, 1e-300), "o-", ms=3, label="success rate at each evaluation")
    if not np.allclose(low, high):
        ax.fill_between(nre, np.maximum(low, 1e-300), high, alpha=0.25, label="95% Clopper-Pearson")
    ax.axhline(rate[0], color="grey", lw=0.8, label="prior")
    summary_path = run_dir / "summary.json"
    if summary_path.is_file():
        s = json.loads(summary_path.read_text())
        chosen = next((r for r in rows if r["round"] == s.get("best_round")), None)
        if chosen is not None:
            b_low, b_high = s["best_success_interval"]
            ax.errorbar(
                [chosen["nre_used"]],
                [max(s["best_success_rate"], 1e-300)],
                yerr=[[max(s["best_success_rate"] - b_low, 0)], [max(b_high - s["best_success_rate"], 0)]],
                fmt="s",
                color="C3",
                capsize=3,
                label=f"best round ({s['best_round']})"
                + (", exact" if s.get("success_rate_exact") else ", re-estimated on fresh samples"),
            )
    ax.set_yscale("log")
    ax.set_xlabel("reward evaluations paid (NREs)")
    ax.set_ylabel("success rate")
    ax.set_title(f"{config['task']} · {config['method']} · seed {config['seed']}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path or run_dir / "success.png")
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_paid(run_dir: str | Path, path: str | Path | None = None) -> Path:
    """A run without free measurement: distinct successes found against NREs paid, with the generator's KL
    from the prior (free) on a second axis and the kept round marked."""
    run_dir = Path(run_dir)
    rows = read_history(run_dir)
    config = json.loads((run_dir / "config.json").read_text())["run"]
    fig, ax = plt.subplots(figsize=(6.5, 4))
    ax.step([r["nre_used"] for r in rows], [r.get("successes_found", 0) for r in rows], where="post", color="C0",
            label="distinct successes found (paid)")  # fmt: skip
    ax.set_xlabel("reward evaluations paid (NREs)")
    ax.set_ylabel("successes found", color="C0")
    drift = [r for r in rows if r.get("kl_to_prior") is not None]
    if drift:
        ax2 = ax.twinx()
        ax2.plot([r["nre_used"] for r in drift], [r["kl_to_prior"] for r in drift], "o-", ms=3, color="C1")
        ax2.set_ylabel("KL(generator || prior), nats (free)", color="C1")
    kept = rows[-1].get("kept_round") if rows else None
    at = next((r["nre_used"] for r in rows if r["round"] == kept), None)
    if at is not None:
        ax.axvline(at, color="C3", ls=":", label=f"kept generator (round {kept})")
    ax.set_title(f"{config['task']} · {config['method']} · seed {config['seed']} (no free measurement)")
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    path = Path(path or run_dir / "success.png")
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _panels(files: list[Path], run_dir: Path, panels: int) -> list[Path]:
    """Snapshot files to draw: the prior, rounds spread over the run, the best round and the last one."""
    picks = [files[int(round(k))] for k in np.linspace(0, len(files) - 1, min(panels, len(files)))]
    summary = run_dir / "summary.json"
    if summary.is_file():
        best = json.loads(summary.read_text()).get("best_round")
        best_file = run_dir / "snapshots" / f"round_{best + 1:03d}.npz" if best is not None else None
        if best_file is not None and best_file.is_file() and best_file not in picks:
            picks = sorted([*picks[:-2], best_file, picks[-1]])  # the best round beside the last
    return picks


def plot_densities(run_dir: str | Path, path: str | Path | None = None, panels: int = 5) -> Path | None:
    """Prior, negative model and posterior per round (Fig. 1 / blog figure), from the saved snapshots; the
    best round is always drawn beside the last."""
    run_dir = Path(run_dir)
    files = sorted((run_dir / "snapshots").glob("round_*.npz"))
    if not files or "prior" not in np.load(files[0]).files:
        return None  # image tasks save samples, not densities (banel.report.images)
    summary = run_dir / "summary.json"
    best = json.loads(summary.read_text()).get("best_round") if summary.is_file() else None
    snaps = [(int(f.stem.split("_")[1]) - 1, dict(np.load(f))) for f in _panels(files, run_dir, panels)]
    prior = snaps[0][1]["prior"]
    task = json.loads((run_dir / "config.json").read_text()).get("task", {})
    low, high = task.get("box", [0.0, 1.0])
    fig, axes = plt.subplots(1, len(snaps), figsize=(3.3 * len(snaps), 3.2), squeeze=False)
    image = None
    for ax, (i, snap) in zip(axes[0], snaps, strict=True):
        title = "prior" if i < 0 else f"after round {i}" + (" (best)" if i == best else "")
        if prior.ndim == 1:
            grid = low + (np.arange(len(prior)) + 0.5) * (high - low) / len(prior)
            if "reward" in snap:
                ax.fill_between(
                    grid, 1e-7, 1, where=snap["reward"] > 0, color="tab:green", alpha=0.3, lw=0, label="reward 1"
                )
            ax.plot(grid, np.exp(snap["prior"]), color="grey", lw=1, label="prior")
            if "negative" in snap:
                ax.plot(grid, np.exp(snap["negative"]), "r--", lw=1, label="negative model")
            if "posterior" in snap:
                ax.plot(grid, np.exp(snap["posterior"]), "k", lw=1.2, label="posterior (generator)")
            ax.set_yscale("log")
            ax.set_ylim(1e-7, 1)
            ax.set_xlabel("x", fontsize=8)
        else:
            extent = (low, high, low, high)
            density = np.exp(snap.get("posterior", snap["prior"])).T
            image = ax.imshow(
                np.maximum(density, 1e-8), origin="lower", cmap="magma", extent=extent, norm=LogNorm(1e-8, 1)
            )
            if "reward" in snap:
                ax.contour(snap["reward"].T, levels=[0.5], colors="tab:green", linewidths=0.8, extent=extent)
            ax.set_xlabel("x1", fontsize=8)
            ax.set_ylabel("x2", fontsize=8)
            ax.tick_params(labelsize=7)
        ax.set_title(title, fontsize=9)
    if prior.ndim == 1:
        axes[0][0].set_ylabel("probability of a cell")
        handles = {}
        for ax in axes[0]:
            for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
                handles.setdefault(label, handle)
        fig.legend(handles.values(), handles.keys(), loc="lower center", ncol=len(handles), fontsize=8)
        fig.tight_layout(rect=(0, 0.08, 1, 1))
    else:
        fig.tight_layout(rect=(0, 0, 0.92, 1))
        bar = fig.add_axes((0.93, 0.15, 0.012, 0.7))
        fig.colorbar(image, cax=bar, label="probability of a cell (green: reward 1)")
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
