"""Recipe: BaNEL with its defaults against rnd, count, temperature and base on every zoo task (issue 22).

    PYTHONPATH=src python benchmarks/zoo/run.py --out runs/zoo                       # 4 tasks x 5 methods x 5 seeds
    PYTHONPATH=src python benchmarks/zoo/run.py --out runs/zoo --variant paper --set banel.preset=paper
    PYTHONPATH=src python benchmarks/zoo/run.py --out runs/zoo --summary-only       # rebuild summary.md
    PYTHONPATH=src python benchmarks/zoo/run.py --smoke --out /tmp/zoo-smoke        # seconds: CI

Each task is an ordinary `banel compare` (OUT/TASK/METHOD/seedS, its table.md beside it); `--variant NAME`
runs BaNEL alone with the `--set` settings into OUT/TASK/variants/NAME, so the task's table shows it as its
own row. Every run: m = 100 per round, 10 rounds (1,000 NREs), exact success rates every round, one torch
thread, one run at a time. Finished runs are kept, so re-running resumes.

summary.md: per task and BaNEL row, the geometric-mean factor over the prior of the best and of the final
generator, significantly better / worse than the prior (one-sided Wilcoxon signed-rank on log rates, both
directions), win / tie / loss against every baseline (one-sided Mann-Whitney, both directions), the final
generator's infeasible fraction against the prior's, and its KL to the prior (nats per sequence).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from banel.config import parse_overrides
from banel.report.stats import ALPHA, above_other_p
from banel.report.table import PRIOR_FILE, collect, groups, shared_prior, write_report
from banel.sweep import compare, parse_seeds

TASKS = ("grammar", "classifier", "constrained", "typical")
BUILT_IN = ("toy1d", "toy2d", "digits", "addition")
"""Built-in tasks the recipe also takes (`--tasks toy1d,toy2d`), each with its own task defaults."""
BASELINES = ("rnd", "count", "temperature", "base")
SETTINGS: dict[str, Any] = {"m": 100, "nre_budget": 1000, "eval": {"every": 1}}
SMOKE: dict[str, Any] = {"m": 20, "nre_budget": 40, "eval": {"drift_samples": 50, "metric_samples": 100}}


def run_task(task: str, out: Path, methods: list[str], seeds: list[int], settings: dict[str, Any]) -> None:
    """One comparison on one zoo task (its table.md and compare.png written by banel.report)."""
    began = time.time()
    spec = task if task in BUILT_IN else f"banel.tasks.zoo:{task}"
    compare(spec, methods, seeds, settings, out=out, jobs=1, threads=1)
    print(f"{task}: {', '.join(methods)} x {len(seeds)} seeds in {time.time() - began:.0f} s -> {out}", flush=True)


def _geo(x: np.ndarray) -> float:
    return float(np.exp(np.log(np.maximum(x, 1e-300)).mean()))


def _signed(values: np.ndarray, prior: float, alternative: str) -> float | None:
    d = np.log(np.maximum(values, 1e-300)) - math.log(prior)
    if not np.any(d != 0):
        return None
    return float(stats.wilcoxon(d, alternative=alternative, zero_method="wilcox").pvalue)


def _verdict(values: np.ndarray, prior: float) -> str:
    better, worse = _signed(values, prior, "greater"), _signed(values, prior, "less")
    if better is not None and better < ALPHA:
        return f"**better** (p {better:.3g})"
    if worse is not None and worse < ALPHA:
        return f"**worse** (p {worse:.3g})"
    return "tie" + (f" (p> {better:.2g}, p< {worse:.2g})" if better is not None else " (equal)")


def _against(a: np.ndarray, b: np.ndarray) -> str:
    up, down = above_other_p(a, b), above_other_p(b, a)
    if up is not None and up < ALPHA:
        return "W"
    if down is not None and down < ALPHA:
        return "L"
    return "t"


def summarise(out: Path) -> str:
    """summary.md: one line per (task, BaNEL row) with the verdicts; returns its text."""
    lines = [
        "| task | row | seeds | best × prior (geo.) | best vs prior | rounds' mean × prior (geo.) | rounds vs prior "
        "| final × prior (geo.) | final vs prior "
        "| vs " + " | vs ".join(BASELINES) + " | best baseline (geo.) | final vs best baseline's final "
        "| infeasible: final [prior] | KL to prior |",
        "|---" * (13 + len(BASELINES)) + "|",
    ]
    for task in (*TASKS, *BUILT_IN):
        folder = out / task
        if not folder.is_dir():
            continue
        try:
            records = collect(folder)
        except ValueError:
            continue
        prior, _ = shared_prior(folder, records)
        rows = {_label(folder, g): g for g in groups(records)}
        best = {k: np.array([r.summary["best_success_rate"] for r in g.runs]) for k, g in rows.items()}
        present = [b for b in BASELINES if b in best]
        top = max(present, key=lambda b: _geo(best[b]), default=None)
        finals = {k: np.array([r.summary["final_success_rate"] for r in g.runs]) for k, g in rows.items()}
        top_final = max(present, key=lambda b: _geo(finals[b]), default=None)
        prior_metrics = records[0].summary.get("prior_metrics") or {}
        for label, group in rows.items():
            if group.method != "banel":
                continue
            final = np.array([r.summary["final_success_rate"] for r in group.runs])
            mean = rounds_mean(group.runs)
            kl = np.mean([r.summary.get("kl_to_prior") or 0.0 for r in group.runs])
            infeasible = [(r.summary.get("metrics") or {}).get("infeasible_fraction") for r in group.runs]
            infeasible = [v for v in infeasible if v is not None]
            inf_text = (
                f"{np.mean(infeasible):.3f} [{prior_metrics['infeasible_fraction']:.3f}]"
                if infeasible and "infeasible_fraction" in prior_metrics
                else "-"
            )
            vs = " | ".join(_against(best[label], best[b]) if b in best else "-" for b in BASELINES)
            top_text = f"{top} {_geo(best[top]) / prior.rate:.2f}×" if top else "-"
            final_text = (
                f"{_against(final, finals[top_final])} ({top_final} {_geo(finals[top_final]) / prior.rate:.2f}×)"
                if top_final
                else "-"
            )
            lines.append(
                f"| {task} | {label} | {len(group.runs)} | {_geo(best[label]) / prior.rate:.2f}× "
                f"| {_verdict(best[label], prior.rate)} | {_geo(mean) / prior.rate:.2f}× "
                f"| {_verdict(mean, prior.rate)} "
                f"| {_geo(final) / prior.rate:.2f}× "
                f"| {_verdict(final, prior.rate)} | {vs} | {top_text} | {final_text} | {inf_text} | {kl:.2f} |"
            )
        for b in present:
            final = np.array([r.summary["final_success_rate"] for r in rows[b].runs])
            mean = rounds_mean(rows[b].runs)
            lines.append(
                f"| {task} | {b} | {len(rows[b].runs)} | {_geo(best[b]) / prior.rate:.2f}× "
                f"| {_verdict(best[b], prior.rate)} | {_geo(mean) / prior.rate:.2f}× | {_verdict(mean, prior.rate)} "
                f"| {_geo(final) / prior.rate:.2f}× | {_verdict(final, prior.rate)} "
                + "| "
                * len(BASELINES)
                + f"| | | {_metric(rows[b].runs, prior_metrics)} "
                f"| {np.mean([r.summary.get('kl_to_prior') or 0.0 for r in rows[b].runs]):.2f} |"
            )
    lines += [
        "",
        f"Verdicts at α = {ALPHA}: vs prior, one-sided Wilcoxon signed-rank on log rates in each direction against "
        "the exact prior rate; vs a baseline, one-sided Mann-Whitney on the per-seed best rates in each direction "
        "(W: BaNEL's row higher, L: lower, t: neither), on the best rates, and in the 'final vs' column on the "
        "final rates against the baseline whose final rates are highest. Best = the best round's exact rate "
        "(rounds >= 1: the "
        "table's statistic, a maximum over rounds, so a method whose generators vary more gets a higher best by "
        "selection alone); rounds' mean = the mean exact rate of the generators of rounds 1 to the last (free of "
        "selection); final = the last round's. Infeasible fraction and KL are the final generator's, mean over seeds.",
    ]
    text = "\n".join(lines) + "\n"
    (out / "summary.md").write_text(text)
    return text


def _label(folder: Path, group: Any) -> str:
    """A row's name: the method, or banel:VARIANT for runs under OUT/TASK/variants/VARIANT."""
    parts = group.runs[0].path.relative_to(folder).parts
    return f"{group.method}:{parts[1]}" if parts[0] == "variants" else group.method


def rounds_mean(runs: list[Any]) -> np.ndarray:
    """Per run, the mean exact rate of the generators of rounds >= 1 (no selection among them)."""
    out = []
    for r in runs:
        rates = [
            row["success_rate"]["rate"] for row in r.history if row.get("round", -1) >= 1 and row.get("success_rate")
        ]
        out.append(float(np.mean(rates)) if rates else float("nan"))
    return np.array(out)


def _metric(runs: list[Any], prior_metrics: dict[str, float]) -> str:
    values = [(r.summary.get("metrics") or {}).get("infeasible_fraction") for r in runs]
    values = [v for v in values if v is not None]
    if not values or "infeasible_fraction" not in prior_metrics:
        return "-"
    return f"{np.mean(values):.3f} [{prior_metrics['infeasible_fraction']:.3f}]"


def main(argv: list[str] | None = None) -> int:
    """Run the comparisons (or only the summary) and print summary.md."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="runs/zoo")
    p.add_argument("--tasks", default=",".join(TASKS))
    p.add_argument("--methods", default="banel," + ",".join(BASELINES))
    p.add_argument("--seeds", default="0-4")
    p.add_argument("--variant", default="", help="run BaNEL alone with --set into OUT/TASK/variants/NAME")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="extra settings (--variant)")
    p.add_argument("--smoke", action="store_true", help="2 rounds of 20, 2 seeds, every method: a quick check")
    p.add_argument("--summary-only", action="store_true")
    args = p.parse_args(argv)
    out = Path(args.out)
    tasks = [t for t in args.tasks.split(",") if t]
    unknown = sorted(set(tasks) - set(TASKS) - set(BUILT_IN))
    if unknown:
        p.error(
            f"unknown task(s) {', '.join(unknown)}; the zoo has {', '.join(TASKS)}, built in: {', '.join(BUILT_IN)}"
        )
    settings = json.loads(json.dumps(SMOKE if args.smoke else SETTINGS))
    extra = parse_overrides(args.set)
    seeds = parse_seeds("0-1" if args.smoke else args.seeds)
    if not args.summary_only:
        for task in tasks:
            if args.variant:
                merged = {
                    **settings,
                    **{k: v for k, v in extra.items() if k != "banel"},
                    "banel": extra.get("banel", {}),
                }
                run_task(task, out / task / "variants" / args.variant, ["banel"], seeds, merged)
                if (out / task / PRIOR_FILE).is_file():
                    write_report(out / task)  # the task's table with the variant as a row of its own
            else:
                run_task(task, out / task, args.methods.split(","), seeds, {**settings, **extra})
            summarise(out)
    print(summarise(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
