"""Table 2 and its figure, from a comparison's run folders alone (`banel report DIR`).

What every number is, how it is estimated and when to trust it: docs/statistics.md. In short:
- a row is a method *and* the settings it read: runs whose settings differ are separate, labelled rows;
- each run contributes its selection-free best (the best round's generator re-estimated on fresh samples)
  and its final rate;
- every improvement factor divides by one shared prior estimate (`prior.json`, made once per comparison);
- across seeds: mean (bootstrap interval), median (distribution-free order-statistic interval), geometric
  mean (t interval on log rates); a one-sided signed-rank test of each method against the prior, and a
  one-sided rank-sum test of BaNEL against every other method, with the verdicts in words.
"""

from __future__ import annotations

import csv
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from banel.config import RUN_SETTINGS
from banel.eval.success import SuccessRate
from banel.report.paid import paid_lines, paid_row
from banel.report.stats import (
    ALPHA,
    CONFIDENCE,
    above_other_p,
    better_than_prior,
    geometric_mean_interval,
    improvement_interval,
    mean_interval,
    median_interval,
    smallest_rank_sum_p,
    smallest_signed_rank_p,
)
from banel.rundir import CONFIG, SUMMARY, read_history

log = logging.getLogger(__name__)

PRIOR_FILE = "prior.json"
"""A comparison's shared prior estimate, written by the sweep (banel.sweep) before its runs."""
FACTORS = (2.0, 10.0)
"""k of the "NREs to reach k x the prior" columns."""
CARRIED = 0.5
"""A seed holding more than this share of a method's sum of best rates carries its mean (a warning)."""
SEED_INDEPENDENT = ("seed",)
"""Settings that differ between the runs of one row by design."""

ORDER = ("banel", "diverse", "rnd", "count", "reinforce", "negrl", "npo", "gfn", "temperature", "base")
"""Row order of the table (Table 2 puts BaNEL first; each issue-29 control after what it controls for); other
methods follow alphabetically."""


@dataclass(frozen=True)
class RunRecord:
    """A finished run folder: its summary, its history rows and its settings (config.json's run)."""

    path: Path
    summary: dict[str, Any]
    history: list[dict[str, Any]]
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def method(self) -> str:
        """The method's name."""
        return str(self.summary["method"])


@dataclass(frozen=True)
class Group:
    """The runs of one table row: one method with one set of settings, over seeds."""

    label: str
    method: str
    runs: list[RunRecord]


def collect(folder: str | Path) -> list[RunRecord]:
    """Every finished run (a folder with summary.json) under `folder`, sorted by method then seed."""
    records = []
    for path in sorted(Path(folder).rglob(SUMMARY)):
        run_dir = path.parent
        config = run_dir / CONFIG
        settings = json.loads(config.read_text()).get("run", {}) if config.is_file() else {}
        history = read_history(run_dir)
        records.append(RunRecord(run_dir, json.loads(path.read_text()), history, settings))
    tasks = {r.summary["task"] for r in records}
    if len(tasks) > 1:
        raise ValueError(f"{folder} mixes runs of several tasks: {', '.join(sorted(tasks))}")
    shared = [_task_settings(r) for r in records if r.settings]
    differ = sorted({k for s in shared for k in _differing(shared[0], s)}) if shared else []
    if differ:
        raise ValueError(
            f"{folder} mixes runs of one task with different task settings ({', '.join(differ)} differ): their "
            "priors or rewards differ, so no table can compare them; move one set to another folder"
        )
    return sorted(records, key=lambda r: (_rank(r.method), r.summary["seed"]))


def _task_settings(record: RunRecord) -> dict[str, Any]:
    return {k: record.settings.get(k) for k in ("task", "task_options")}


def _rank(method: str) -> tuple[int, str]:
    return (ORDER.index(method), "") if method in ORDER else (len(ORDER), method)


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """Nested settings as {'banel.kappa': 2.0, ...}."""
    if isinstance(data, dict) and data:
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: data}


def _differing(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """Dotted names of the settings that differ between two nested dicts."""
    fa, fb = _flatten(a), _flatten(b)
    return [k for k in sorted(set(fa) | set(fb)) if fa.get(k) != fb.get(k)]


def settings_read(settings: dict[str, Any], method: str) -> dict[str, Any]:
    """The settings a run of `method` read: the run-level ones and its own method's table."""
    return {k: v for k, v in settings.items() if k in RUN_SETTINGS or k == method}


def groups(records: list[RunRecord]) -> list[Group]:
    """One group per method and distinct settings (seed aside); rows of a method with several settings are
    labelled with the settings that tell them apart, never pooled."""
    out = []
    for method in dict.fromkeys(r.method for r in records):
        runs = [r for r in records if r.method == method]
        keyed: dict[str, list[RunRecord]] = {}
        for r in runs:
            read = {k: v for k, v in settings_read(r.settings, method).items() if k not in SEED_INDEPENDENT}
            keyed.setdefault(json.dumps(read, sort_keys=True, default=str), []).append(r)
        if len(keyed) == 1:
            out.append(Group(method, method, runs))
            continue
        sets = [json.loads(k) for k in keyed]
        differ = sorted({k for s in sets for k in _differing(sets[0], s)})
        log.warning("%s runs with different settings are separate rows (%s differ)", method, ", ".join(differ))
        for key, members in keyed.items():
            flat = _flatten(json.loads(key))
            label = ", ".join(f"{k}={json.dumps(flat.get(k))}" for k in differ)
            out.append(Group(f"{method} [{label}]", method, members))
    return out


# -- the shared prior ---------------------------------------------------------------------------------


def shared_prior(folder: str | Path, records: list[RunRecord]) -> tuple[SuccessRate, str]:
    """The comparison's one prior estimate and where it comes from: prior.json, else the runs' own prior
    estimates pooled (successes and samples summed; exact rates agree)."""
    path = Path(folder) / PRIOR_FILE
    if path.is_file():
        saved = json.loads(path.read_text())
        estimate = SuccessRate(**saved["estimate"])
        how = "exact" if estimate.exact else f"{estimate.successes} successes in {estimate.n:,} prior samples"
        return estimate, f"{PRIOR_FILE}: {how}"
    first = [r.history[0]["success_rate"] for r in records if r.history and r.history[0].get("round") == -1]
    if not first:
        raise ValueError(f"no {PRIOR_FILE} in {folder} and no run recorded its prior's success rate")
    if all(f.get("exact") for f in first):
        rates = {f["rate"] for f in first}
        if max(rates) - min(rates) > 1e-12 * max(rates):
            raise ValueError(f"the runs under {folder} measured different exact prior rates: not one prior")
        rate = first[0]["rate"]
        return SuccessRate(rate, rate, rate, True), f"exact, the same in all {len(first)} runs"
    k, n = sum(f["successes"] for f in first), sum(f["n"] for f in first)
    low, high = stats.binomtest(k, n).proportion_ci(CONFIDENCE, method="exact")
    return SuccessRate(k / n, float(low), float(high), False, n, k), (
        f"the {len(first)} runs' own prior estimates pooled: {k} successes in {n:,} samples"
    )


def nres_to_reach(history: list[dict[str, Any]], target: float) -> float | None:
    """NREs paid when a round's success rate first reached `target` (its lower 95% bound, for estimates)."""
    for row in history:
        sr = row.get("success_rate")
        if row.get("round", -1) >= 0 and sr and (sr["rate"] if sr.get("exact") else sr["low"]) >= target:
            return float(row["nre_used"])
    return None


def _mean(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return float(np.mean(vals)) if vals else None


def _ratio(x: float | None, prior: SuccessRate) -> float | None:
    return x / prior.rate if x is not None and prior.rate > 0 else None


def table_rows(records: list[RunRecord], prior: SuccessRate) -> list[dict[str, Any]]:
    """One row per group: selection-free best rates over seeds with intervals, factors over the shared prior,
    the test against the prior, budget efficiency, drift and the task's metrics."""
    rows = []
    names = metric_names(records)
    for group in groups(records):
        runs = group.runs
        best = np.array([r.summary["best_success_rate"] for r in runs], dtype=float)
        final = np.array([r.summary["final_success_rate"] for r in runs], dtype=float)
        selected = [r.summary.get("selected_best_rate") for r in runs]
        mean_low, mean_high = mean_interval(best)
        med_low, med_high, med_cover = median_interval(best)
        geo, geo_low, geo_high = geometric_mean_interval(best)
        ns = [int(r.summary.get("best_success_samples") or 0) for r in runs]
        ks = [
            int(r.summary.get("best_success_successes") or round(b * n)) for r, b, n in zip(runs, best, ns, strict=True)
        ]
        p, p_pooled, beats = better_than_prior(best, ks, ns, prior)
        prior_nll, drift_nll = (
            _mean([r.summary.get("prior_nll") for r in runs]),
            _mean([r.summary.get("drift_nll") for r in runs]),
        )
        share = float(best.max() / best.sum()) if len(best) >= 3 and best.sum() > 0 else 0.0
        row: dict[str, Any] = {
            "method": group.label,
            "seeds": len(runs),
            "seed_list": [r.summary["seed"] for r in runs],
            "best": best.tolist(),
            "mean": float(best.mean()),
            "mean_low": mean_low,
            "mean_high": mean_high,
            "median": float(np.median(best)),
            "median_low": med_low,
            "median_high": med_high,
            "median_coverage": med_cover,
            "geometric_mean": geo,
            "geometric_low": geo_low,
            "geometric_high": geo_high,
            "std": float(best.std(ddof=1)) if len(best) > 1 else 0.0,
            "mean_improvement": _ratio(float(best.mean()), prior),
            "median_improvement": _ratio(float(np.median(best)), prior),
            "geometric_improvement": _ratio(geo, prior),
            "geometric_improvement_low": improvement_interval(best, prior)[0],
            "geometric_improvement_high": improvement_interval(best, prior)[1],
            "above_prior_p": p,
            "pooled_above_prior_p": p_pooled,
            "better_than_prior": beats,
            "carried_by_seed": int(runs[int(best.argmax())].summary["seed"]) if share > CARRIED else None,
            "carried_share": share,
            "selected_mean": _mean(selected),
            "final_mean": float(final.mean()),
            "nre_used": float(np.mean([r.summary["nre_used"] for r in runs])),
            "successes_found": float(np.mean([r.summary["successes_found"] for r in runs])),
            "prior_nll": prior_nll,
            "drift_nll": drift_nll,
            "drift_nll_increase": None if drift_nll is None or prior_nll is None else drift_nll - prior_nll,
            "kl_to_prior": _mean([r.summary.get("kl_to_prior") for r in runs]),
            "prior": prior,
        }
        for k in FACTORS:
            reached = [nres_to_reach(r.history, k * prior.rate) for r in runs]
            hits = sorted(v for v in reached if v is not None)
            # the median over seeds counts a seed that never got there as infinitely late
            row[f"nres_to_{k:g}x"] = hits[(len(runs) - 1) // 2] if len(hits) > (len(runs) - 1) // 2 else None
            row[f"reached_{k:g}x"] = len(hits)
        for name in names:
            row[f"metric.{name}"] = _mean([(r.summary.get("metrics") or {}).get(name) for r in runs])
        rows.append(row)
    return rows


def metric_names(records: list[RunRecord]) -> list[str]:
    """The task's extra metrics (e.g. infeasible_fraction) found in the summaries, in first-seen order."""
    return list(dict.fromkeys(name for r in records for name in r.summary.get("metrics") or {}))


def comparisons(rows: list[dict[str, Any]], reference: str = "banel") -> list[dict[str, Any]]:
    """The reference method's rows against every other row: one-sided rank-sum p-value and verdict."""
    out = []
    for ref in (r for r in rows if r["method"].split(" [")[0] == reference):
        for other in rows:
            if other is ref:
                continue
            p = above_other_p(np.array(ref["best"]), np.array(other["best"]))
            out.append(
                {"method": ref["method"], "other": other["method"], "p": p, "better": p is not None and p < ALPHA}
            )
    return out


# -- writing ----------------------------------------------------------------------------------------------


def _factor(x: float | None) -> str:
    if x is None or not math.isfinite(x):
        return "-"
    if x >= 1e5 or 0 < x < 1e-2:
        mantissa, exponent = f"{x:.1e}".split("e")
        return f"{mantissa}e{int(exponent)}×"
    return f"{x:,.0f}×" if x >= 100 else f"{x:.2f}×"


def _num(x: float | None, fmt: str = ".3e") -> str:
    return "-" if x is None else format(x, fmt)


def _interval(low: float | None, high: float | None) -> str:
    return "-" if low is None or high is None else f"[{low:.2e}, {high:.2e}]"


def _p(p: float | None) -> str:
    return "-" if p is None else f"{p:.3g}"


def delimiter_row(header: str) -> str:
    """The markdown delimiter row under a header row: one cell per header cell (counted, not typed by hand: a
    count typed by hand once left two cells out, and GitHub then shows the table as raw pipes)."""
    return "|" + "---|" * (header.strip().strip("|").count("|") + 1)


def write_table(
    rows: list[dict[str, Any]], folder: str | Path, task: str, prior: SuccessRate, source: str, prior_metrics: dict
) -> tuple[Path, Path]:
    """DIR/table.md (the table, the tests in words, warnings) and DIR/table.csv (every number of every row)."""
    folder = Path(folder)
    metrics = [k.removeprefix("metric.") for k in (rows[0] if rows else {}) if k.startswith("metric.")]
    seeds = sorted({r["seeds"] for r in rows})
    prior_text = f"{prior.rate:.3e} (exact)" if prior.exact else f"{prior.rate:.3e} [{prior.low:.2e}, {prior.high:.2e}]"
    header = (
        f"| Method | Mean | Mean CI ({CONFIDENCE:.0%} bootstrap) | Median | Median CI (its coverage) | Geo. mean "
        f"| Geo. mean CI ({CONFIDENCE:.0%} t) | vs prior | Selected | Final mean "
        + "| "
        + " | ".join(f"NREs to {k:g}×" for k in FACTORS)
        + " | NREs | Successes | Drift NLL (Δ) | KL to prior |"
        + "".join(f" {m} |" for m in metrics)
    )
    lines = [
        f"Success rates on {task}, {'/'.join(map(str, seeds))} seeds per row. Each run contributes its "
        "selection-free best: the generator of its best round (chosen on the evaluation samples, from round 1 "
        "on) re-estimated on fresh samples (exact rates need no second look). Factors are over one shared "
        f"prior estimate, {prior_text} ({source}). Intervals over seeds, each labelled with what it covers: "
        f"percentile bootstrap for the mean (nominal {CONFIDENCE:.0%}, less with few seeds), order statistics "
        "for the median (beside each, the exact probability it covers the median: with 3 seeds [min, max] "
        f"covers 75%, with 5 93.75%), Student t on log rates for the geometric mean ({CONFIDENCE:.0%} if log "
        "rates are normal). 'Selected' is the mean of the maxima the best rounds were chosen on "
        "(biased upward, for reference). 'NREs to k×': median over seeds of the NREs paid when a round's rate "
        "(its lower 95% bound, for estimates) first reached k× the prior, with how many seeds got there. Drift "
        "is the final model's held-out prior NLL (nats/token) and KL(model || prior) (nats/sequence)."
        + (
            " The task's metrics are the final model's, mean over seeds (the prior's in brackets): "
            f"{', '.join(metrics)}."
            if metrics
            else ""
        ),
        "",
        header,
        delimiter_row(header),
    ]
    for r in rows:
        dnll = "-" if r["drift_nll"] is None else f"{r['drift_nll']:.3f} ({r['drift_nll_increase']:+.3f})"
        reach = " | ".join(
            f"{_num(r[f'nres_to_{k:g}x'], ',.0f')} ({r[f'reached_{k:g}x']}/{r['seeds']})" for k in FACTORS
        )
        lines.append(
            f"| {r['method']} | {_num(r['mean'])} ({_factor(r['mean_improvement'])}) "
            f"| {_interval(r['mean_low'], r['mean_high'])} "
            f"| {_num(r['median'])} ({_factor(r['median_improvement'])}) "
            f"| {_interval(r['median_low'], r['median_high'])} ({100 * r['median_coverage']:.4g}%) "
            f"| {_num(r['geometric_mean'])} ({_factor(r['geometric_improvement'])}) "
            f"| {_interval(r['geometric_low'], r['geometric_high'])} "
            f"| {'**better**' if r['better_than_prior'] else 'not shown'} "
            f"| {_num(r['selected_mean'])} | {_num(r['final_mean'])} | {reach} | {r['nre_used']:.0f} "
            f"| {r['successes_found']:.3g} | {dnll} | {_num(r['kl_to_prior'], '.3f')} |"
            + "".join(f" {_num(r[f'metric.{m}'], '.4g')} [{_num(prior_metrics.get(m), '.4g')}] |" for m in metrics)
        )
    lines += ["", "In words:", ""] + _verdicts(rows, prior)
    md = folder / "table.md"
    md.write_text("\n".join(lines) + "\n")
    plain = [{k: (v.rate if isinstance(v, SuccessRate) else v) for k, v in r.items()} for r in rows]
    path = _write_csv(plain, folder / "table.csv")
    return md, path


def _verdicts(rows: list[dict[str, Any]], prior: SuccessRate) -> list[str]:
    """The tests of the table, a line each."""
    out = []
    for r in rows:
        geo = (
            f"geometric mean {_factor(r['geometric_improvement'])} "
            f"[{_factor(r['geometric_improvement_low'])}, {_factor(r['geometric_improvement_high'])}]"
        )
        if r["better_than_prior"]:
            verdict = "better than the prior"
        elif r["above_prior_p"] is not None and r["above_prior_p"] < ALPHA:
            verdict = "above the prior's estimate across seeds, not beyond the estimates' noise: not shown better"
        else:
            verdict = "not shown better than the prior"
        pooled = r["pooled_above_prior_p"]
        pooled = (
            "" if pooled is None else f"; pooled re-estimates against the prior's samples, exact test, p = {_p(pooled)}"
        )
        # the signed-rank test drops seeds equal to the prior: what it can reach depends on the others only
        off = int(np.sum(np.array(r["best"], dtype=float) != prior.rate))
        ties = "" if off == r["seeds"] else f" off the prior's rate (of {r['seeds']})"
        out.append(
            f"- {r['method']}: {verdict} ({geo}; one-sided Wilcoxon signed-rank on log rates over "
            f"{r['seeds']} seed{'s' if r['seeds'] != 1 else ''}, p = {_p(r['above_prior_p'])}{pooled})"
            + _cannot_reject(smallest_signed_rank_p(off), f"{off} seed{'s' if off != 1 else ''}{ties}")
            + "."
        )
        if r["carried_by_seed"] is not None:
            out.append(
                f"  - heavy tail: seed {r['carried_by_seed']} holds {r['carried_share']:.0%} of the sum of "
                f"{r['method']}'s best rates, so its mean is that seed's; read the median and the geometric mean."
            )
    seeds = {r["method"]: r["seeds"] for r in rows}
    for c in comparisons(rows):
        n, m = seeds[c["method"]], seeds[c["other"]]
        out.append(
            f"- {c['method']} vs {c['other']}: {'higher' if c['better'] else 'not shown higher'} "
            f"(one-sided Mann-Whitney on per-seed log rates, p = {_p(c['p'])})"
            + _cannot_reject(smallest_rank_sum_p(n, m), f"{n} against {m} seeds")
            + "."
        )
    return out


def _cannot_reject(smallest: float, seeds: str) -> str:
    """The clause that says a test cannot reject at ALPHA whatever the data, when its smallest p is not below."""
    if smallest < ALPHA:
        return ""
    return (
        f"; with {seeds} its smallest attainable p is {smallest:.3g}: it cannot reject at {ALPHA:.0%}, run more seeds"
    )


def plot_compare(records: list[RunRecord], prior: SuccessRate | None, path: str | Path) -> Path:
    """Per evaluation: the generator's success rate, and the distinct successes found, against NREs paid;
    median and min-max band over seeds per row, the shared prior with its interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    for k, group in enumerate(groups(records)):
        color = f"C{k % 10}"
        for axis, key in ((ax, "rate"), (ax2, "found")):
            curves = [_curve(r.history, key) for r in group.runs]
            curves = [c for c in curves if len(c[0])]
            if not curves:
                continue
            grid = np.unique(np.concatenate([nre for nre, _ in curves]))
            # step interpolation: the value known after spending x NREs is the last at or before x
            stacked = np.stack(
                [vals[np.clip(np.searchsorted(nre, grid, side="right") - 1, 0, None)] for nre, vals in curves]
            )
            axis.plot(grid, np.median(stacked, 0), drawstyle="steps-post", marker="o", ms=2, color=color,
                      label=f"{group.label} ({len(curves)})")  # fmt: skip
            if len(curves) > 1:
                axis.fill_between(grid, stacked.min(0), stacked.max(0), step="post", color=color, alpha=0.2, lw=0)
    if prior is None:
        ax.text(0.5, 0.5, "no free measurement:\nsee the paid evidence", transform=ax.transAxes, ha="center",
                fontsize=9, color="grey")  # fmt: skip
    else:
        ax.axhline(prior.rate, color="grey", lw=0.8, ls=":", label="prior (shared estimate)")
        if not prior.exact:
            ax.axhspan(max(prior.low, 1e-300), prior.high, color="grey", alpha=0.15, lw=0)
    task = records[0].summary["task"] if records else ""
    ax.set_yscale("log")
    ax.set_title(f"{task}: the generator's success rate at each evaluation\n(median, min-max over seeds)", fontsize=9)
    ax.set_xlabel("reward evaluations paid (NREs; repeats of a paid sample are free)")
    ax.set_ylabel("success rate")
    ax.legend(fontsize=7, ncol=2)
    ax2.set_title(f"{task}: distinct successes found by the paid evaluations", fontsize=9)
    ax2.set_xlabel("reward evaluations paid (NREs)")
    ax2.set_ylabel("successes found")
    note = no_success_note(records, prior)
    if note:
        ax2.text(0.5, 0.6, note, transform=ax2.transAxes, ha="center", fontsize=9, color="grey")
    if ax2.get_legend_handles_labels()[0]:
        ax2.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def no_success_note(records: list[RunRecord], prior: SuccessRate | None) -> str | None:
    """The figure's note when no run found a success: that every gain came from failures alone only where a
    run's selection-free best is above the prior's estimate (its upper bound, for an estimate); None when a
    run found one."""
    if any(r.summary.get("successes_found") for r in records):
        return None
    ceiling = None if prior is None else (prior.rate if prior.exact else prior.high)
    best = [r.summary.get("best_success_rate") for r in records]
    if ceiling is not None and any(b is not None and b > ceiling for b in best):
        return "no run found a success:\nevery gain came from failures alone"
    return "no run found a success"


def _curve(history: list[dict[str, Any]], key: str) -> tuple[np.ndarray, np.ndarray]:
    """(NREs paid, value) at every evaluated round (rate) or every round (found), prior's round included."""
    if key == "rate":
        rows = [r for r in history if r.get("success_rate")]
        values = [r["success_rate"]["rate"] for r in rows]
    else:
        rows = [r for r in history if "successes_found" in r]
        values = [r["successes_found"] for r in rows]
    return np.array([r["nre_used"] for r in rows], dtype=float), np.array(values, dtype=float)


def write_report(folder: str | Path) -> list[Path]:
    """Rebuild DIR/table.md, DIR/table.csv and DIR/compare.png from the run folders under DIR."""
    folder = Path(folder)
    records = collect(folder)
    if not records:
        raise ValueError(f"no finished runs (summary.json) under {folder}")
    paid = [paid_row(g.label, [r.summary for r in g.runs]) for g in groups(records)]
    task = records[0].summary["task"]
    if any(r.summary.get("best_success_rate") is None for r in records):
        # no free measurement: the paid evidence is the whole comparison
        md = folder / "table.md"
        md.write_text("\n".join(paid_lines(paid, task)) + "\n")
        csv_path = _write_csv(paid, folder / "table.csv")
        return [md, csv_path, plot_compare(records, None, folder / "compare.png")]
    prior, source = shared_prior(folder, records)
    rows = table_rows(records, prior)
    prior_metrics = records[0].summary.get("prior_metrics") or {}
    md, csv_path = write_table(rows, folder, task, prior, source, prior_metrics)
    with open(md, "a") as f:  # the same comparison in the currency every task has
        f.write("\n" + "\n".join(paid_lines(paid, task)) + "\n")
    return [md, csv_path, plot_compare(records, prior, folder / "compare.png")]


def _write_csv(rows: list[dict[str, Any]], path: Path) -> Path:
    """Every number of every row as CSV."""
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["method"])
        writer.writeheader()
        writer.writerows(rows)
    return path
