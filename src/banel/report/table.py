"""Table 2 and the cumulative-best figure of a comparison, from its run folders alone (`banel report`)."""

from __future__ import annotations

import csv
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from banel.rundir import read_history

log = logging.getLogger(__name__)

CONFIDENCE = 0.95
"""Level of the intervals over seeds in the table."""
BOOTSTRAP_SEED = 0
"""Seed of the bootstrap resampling, so a table is reproducible from its run folders."""

ORDER = ("banel", "rnd", "count", "reinforce", "negrl", "gfn", "temperature", "base")
"""Row order of the table (Table 2 puts BaNEL first); other methods follow alphabetically."""


@dataclass(frozen=True)
class RunRecord:
    """A finished run folder: its summary and its history rows."""

    path: Path
    summary: dict[str, Any]
    history: list[dict[str, Any]]

    @property
    def method(self) -> str:
        """The method's name."""
        return str(self.summary["method"])


def collect(folder: str | Path) -> list[RunRecord]:
    """Every finished run (a folder with summary.json) under `folder`, sorted by method then seed."""
    records = []
    for path in sorted(Path(folder).rglob("summary.json")):
        run_dir = path.parent
        records.append(RunRecord(run_dir, json.loads(path.read_text()), read_history(run_dir)))
    tasks = {r.summary["task"] for r in records}
    if len(tasks) > 1:
        raise ValueError(f"{folder} mixes runs of several tasks: {', '.join(sorted(tasks))}")
    return sorted(records, key=lambda r: (_rank(r.method), r.summary["seed"]))


def _rank(method: str) -> tuple[int, str]:
    return (ORDER.index(method), "") if method in ORDER else (len(ORDER), method)


def _mean(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return float(np.mean(vals)) if vals else None


def mean_interval(values: np.ndarray, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Percentile-bootstrap interval of the mean over seeds (the mean itself for one seed or equal values)."""
    values = np.asarray(values, dtype=float)
    if len(values) < 2 or np.all(values == values[0]):
        return float(values.mean()), float(values.mean())
    result = stats.bootstrap(
        (values,),
        np.mean,
        confidence_level=confidence,
        method="percentile",
        rng=np.random.default_rng(BOOTSTRAP_SEED),
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def geometric_mean_interval(
    values: np.ndarray, confidence: float = CONFIDENCE
) -> tuple[float, float, float] | tuple[None, None, None]:
    """Geometric mean over seeds and its Student-t interval on log rates (None if a rate is not positive)."""
    values = np.asarray(values, dtype=float)
    if not len(values) or np.any(values <= 0) or not np.all(np.isfinite(values)):
        return None, None, None
    logs = np.log(values)
    centre = float(logs.mean())
    if len(values) < 2 or np.all(logs == logs[0]):
        return math.exp(centre), math.exp(centre), math.exp(centre)
    low, high = stats.t.interval(confidence, len(logs) - 1, loc=centre, scale=stats.sem(logs))
    return math.exp(centre), math.exp(low), math.exp(high)


def table_rows(records: list[RunRecord]) -> list[dict[str, Any]]:
    """One row per method: best success rate over rounds, its mean, median, geometric mean and std over seeds
    (95% intervals for the means), and drift."""
    base = _mean([r.summary["base_success_rate"] for r in records])
    rows = []
    for method in dict.fromkeys(r.method for r in records):
        runs = [r for r in records if r.method == method]
        best = np.array([r.summary["best_success_rate"] for r in runs], dtype=float)
        final = np.array([r.summary["final_success_rate"] for r in runs], dtype=float)
        prior_nll = _mean([r.summary.get("prior_nll") for r in runs])
        drift_nll = _mean([r.summary.get("drift_nll") for r in runs])
        mean_low, mean_high = mean_interval(best)
        geo, geo_low, geo_high = geometric_mean_interval(best)
        rows.append(
            {
                "method": method,
                "seeds": len(runs),
                "mean": float(best.mean()),
                "mean_low": mean_low,
                "mean_high": mean_high,
                "median": float(np.median(best)),
                "geometric_mean": geo,
                "geometric_low": geo_low,
                "geometric_high": geo_high,
                "std": float(best.std(ddof=1)) if len(best) > 1 else 0.0,
                "mean_improvement": float(best.mean()) / base if base else None,
                "median_improvement": float(np.median(best)) / base if base else None,
                "geometric_improvement": geo / base if geo is not None and base else None,
                "final_mean": float(final.mean()),
                "nre_used": float(np.mean([r.summary["nre_used"] for r in runs])),
                "successes_found": float(np.mean([r.summary["successes_found"] for r in runs])),
                "prior_nll": prior_nll,
                "drift_nll": drift_nll,
                "drift_nll_increase": None if drift_nll is None or prior_nll is None else drift_nll - prior_nll,
                "kl_to_prior": _mean([r.summary.get("kl_to_prior") for r in runs]),
                "base_success_rate": base,
                **{
                    f"metric.{name}": _mean([r.summary.get("metrics", {}).get(name) for r in runs])
                    for name in metric_names(records)
                },
            }
        )
    return rows


def metric_names(records: list[RunRecord]) -> list[str]:
    """The task's extra metrics (e.g. infeasible_fraction) found in the summaries, in first-seen order."""
    return list(dict.fromkeys(name for r in records for name in r.summary.get("metrics") or {}))


def _factor(x: float | None) -> str:
    if x is None or not math.isfinite(x):
        return "-"
    return f"{x:,.0f}×" if x >= 100 else f"{x:.2f}×"


def _num(x: float | None, fmt: str = ".3e") -> str:
    return "-" if x is None else format(x, fmt)


def _interval(low: float | None, high: float | None) -> str:
    return "-" if low is None or high is None else f"[{low:.2e}, {high:.2e}]"


def write_table(
    rows: list[dict[str, Any]], folder: str | Path, task: str, prior_metrics: dict[str, float] | None = None
) -> tuple[Path, Path]:
    """DIR/table.md (Table 2 layout, improvement factors in parentheses) and DIR/table.csv (raw numbers)."""
    folder = Path(folder)
    base = rows[0]["base_success_rate"] if rows else None
    seeds = sorted({r["seeds"] for r in rows})
    metrics = [k.removeprefix("metric.") for k in (rows[0] if rows else {}) if k.startswith("metric.")]
    prior_metrics = prior_metrics or {}
    lines = [
        f"Best mean, median, geometric mean and standard deviation (over seeds) of the success rate on {task}, "
        f"{'/'.join(map(str, seeds))} seeds per method; the best is taken over the rounds of each run. "
        f"Improvement factors over the prior ({_num(base)}) in parentheses. {CONFIDENCE:.0%} intervals over "
        "seeds: percentile bootstrap for the mean, Student t on log rates for the geometric mean (with few "
        "seeds and heavy tails the bootstrap interval is too narrow). Drift is the final model's: "
        "held-out prior NLL (nats/token; the prior's own value in the last column) and KL(model || prior) "
        "(nats/sequence, from samples)."
        + (
            " The task's metrics are the final model's, mean over seeds (the prior's in brackets): "
            f"{', '.join(metrics)}."
            if metrics
            else ""
        ),
        "",
        "| Method | Mean | Mean CI | Median | Geo. mean | Geo. mean CI | Std | Final mean | NREs | Drift NLL (Δ) "
        "| KL to prior | Prior NLL |" + "".join(f" {m} |" for m in metrics),
        "|---|---|---|---|---|---|---|---|---|---|---|---|" + "---|" * len(metrics),
    ]
    for r in rows:
        dnll = "-" if r["drift_nll"] is None else f"{r['drift_nll']:.3f} ({r['drift_nll_increase']:+.3f})"
        lines.append(
            f"| {r['method']} | {_num(r['mean'])} ({_factor(r['mean_improvement'])}) "
            f"| {_interval(r['mean_low'], r['mean_high'])} "
            f"| {_num(r['median'])} ({_factor(r['median_improvement'])}) "
            f"| {_num(r['geometric_mean'])} ({_factor(r['geometric_improvement'])}) "
            f"| {_interval(r['geometric_low'], r['geometric_high'])} | {_num(r['std'])} "
            f"| {_num(r['final_mean'])} | {r['nre_used']:.0f} | {dnll} | {_num(r['kl_to_prior'], '.3f')} "
            f"| {_num(r['prior_nll'], '.3f')} |"
            + "".join(f" {_num(r[f'metric.{m}'], '.4g')} [{_num(prior_metrics.get(m), '.4g')}] |" for m in metrics)
        )
    md = folder / "table.md"
    md.write_text("\n".join(lines) + "\n")
    path = folder / "table.csv"
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["method"])
        writer.writeheader()
        writer.writerows(rows)
    return md, path


def cumulative_best(history: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    """(NREs used, best success rate so far) at every evaluated round of one run."""
    rows = [r for r in history if r.get("success_rate")]
    nre = np.array([r["nre_used"] for r in rows], dtype=float)
    best = np.maximum.accumulate(np.array([r["success_rate"]["rate"] for r in rows], dtype=float))
    return nre, best


def plot_compare(records: list[RunRecord], path: str | Path) -> Path:
    """Cumulative-best success rate against NREs: median over seeds per method, min-max band (as Fig. 4)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for k, method in enumerate(dict.fromkeys(r.method for r in records)):
        curves = [cumulative_best(r.history) for r in records if r.method == method]
        grid = np.unique(np.concatenate([nre for nre, _ in curves]))
        # Step interpolation: the best known after spending x NREs is the last value at or before x.
        stacked = np.stack(
            [best[np.clip(np.searchsorted(nre, grid, side="right") - 1, 0, None)] for nre, best in curves]
        )
        color = f"C{k % 10}"
        ax.plot(
            grid,
            np.median(stacked, 0),
            drawstyle="steps-post",
            marker="o",
            ms=2,
            color=color,
            label=f"{method} ({len(curves)})",
        )
        if len(curves) > 1:
            ax.fill_between(grid, stacked.min(0), stacked.max(0), step="post", color=color, alpha=0.2, lw=0)
    if records:
        ax.axhline(records[0].summary["base_success_rate"], color="grey", lw=0.8, ls=":", label="prior")
        ax.set_title(f"{records[0].summary['task']}: cumulative best success rate (median, min-max over seeds)")
    ax.set_yscale("log")
    ax.set_xlabel("reward evaluations paid (NREs; repeats of a paid sample are free)")
    ax.set_ylabel("best success rate so far")
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_report(folder: str | Path) -> list[Path]:
    """Rebuild DIR/table.md, DIR/table.csv and DIR/compare.png from the run folders under DIR."""
    folder = Path(folder)
    records = collect(folder)
    if not records:
        raise ValueError(f"no finished runs (summary.json) under {folder}")
    rows = table_rows(records)
    prior_metrics = records[0].summary.get("prior_metrics") or {}
    md, csv_path = write_table(rows, folder, records[0].summary["task"], prior_metrics)
    return [md, csv_path, plot_compare(records, folder / "compare.png")]
