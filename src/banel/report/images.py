"""Pictures of image-task run folders: prior beside best posterior samples (Fig. 2), rates against NREs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never open a window
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from banel.rundir import read_history  # noqa: E402


def tile(images: np.ndarray, columns: int = 8) -> np.ndarray:
    """Images (n, H, W) tiled into one (rows*(H+1)-1, columns*(W+1)-1) array with 1-pixel grey gutters."""
    n, h, w = images.shape
    rows = math.ceil(n / columns)
    out = np.full((rows * (h + 1) - 1, columns * (w + 1) - 1), 0.5)
    for k, image in enumerate(images):
        r, c = divmod(k, columns)
        out[r * (h + 1) : r * (h + 1) + h, c * (w + 1) : c * (w + 1) + w] = image
    return out


def best_round(run_dir: str | Path) -> tuple[int, float]:
    """(round, success rate) of the evaluated round with the highest success rate (round -1 is the prior)."""
    rows = [r for r in read_history(run_dir) if r.get("success_rate")]
    best = max(rows, key=lambda r: r["success_rate"]["rate"])
    return int(best["round"]), float(best["success_rate"]["rate"])


def plot_samples(run_dir: str | Path, path: str | Path | None = None) -> Path | None:
    """Fig. 2: a grid of prior samples beside the samples of the best posterior (from snapshots/)."""
    run_dir = Path(run_dir)
    prior_file = run_dir / "snapshots" / "round_000.npz"
    if not prior_file.is_file() or "prior_samples" not in np.load(prior_file).files:
        return None
    rows = read_history(run_dir)
    i, rate = best_round(run_dir)
    post_file = run_dir / "snapshots" / f"round_{i + 1:03d}.npz"
    prior = np.load(prior_file)["prior_samples"]
    panels = [(prior, f"prior (success rate {rows[0]['success_rate']['rate']:.2e})")]
    if i >= 0 and post_file.is_file():
        panels.append((np.load(post_file)["posterior_samples"], f"posterior, round {i} ({rate:.2e})"))
    return save_panels(panels, Path(path or run_dir / "samples.png"))


def save_panels(
    panels: list[tuple[np.ndarray, str]], path: Path, title: str | None = None, height: float = 4.3, dpi: int = 120
) -> Path:
    """One row of tiled image grids (images (n, H, W), caption) saved to path, written whole or not at all."""
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), height), squeeze=False)
    for ax, (images, caption) in zip(axes[0], panels, strict=True):
        ax.imshow(tile(images), cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(caption, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=dpi)
    plt.close(fig)
    tmp.replace(path)  # a reader (or a run cut at its limit) never sees half a file
    return path


def plot_success_by_method(run_dirs: list[str | Path], path: str | Path) -> Path:
    """Exact success rate (log scale) against NREs of several runs, one colour per method."""
    fig, ax = plt.subplots(figsize=(6, 4))
    colours: dict[str, str] = {}
    for run_dir in map(Path, run_dirs):
        config = json.loads((run_dir / "config.json").read_text())["run"]
        rows = [r for r in read_history(run_dir) if r.get("success_rate")]
        method = config["method"]
        colour = colours.setdefault(method, f"C{len(colours)}")
        label = None if method in ax.get_legend_handles_labels()[1] else method
        ax.plot(
            [r["nre_used"] for r in rows],
            [r["success_rate"]["rate"] for r in rows],
            "o-",
            ms=2,
            lw=1,
            color=colour,
            label=label,
        )
    ax.set_yscale("log")
    ax.set_xlabel("reward evaluations (NREs)")
    ax.set_ylabel("exact success rate")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
