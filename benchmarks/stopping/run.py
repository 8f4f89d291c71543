"""Which generator to keep without ground truth: the keep rules scored on benchmarks whose truth they never see.

Each task runs BaNEL (its defaults, the budget its benchmark uses, every round evaluated) over seeds; a rule
(banel.eval.evidence) reads only the oracle-free columns of each run's history (paid outcomes, the drift
from the prior) and picks a round; this script then looks up that round's true rate (exact, or Monte Carlo
by the task's free reward on samples no rule saw) and sets it beside the final generator's and the oracle
best's (the best round by the truth, the most any rule could keep). A variant with the decaying update
schedule (banel.generator_decay) runs beside it where the budget allows.

    python benchmarks/stopping/run.py --out runs/stopping --seeds 0-4          # runs (resumable) + table
    python benchmarks/stopping/run.py --out runs/stopping --table-only         # the table from the folders
    python benchmarks/stopping/run.py --out runs/stopping --smoke              # seconds: CI's check of the script

The table goes to OUT/stopping.md (and is copied into docs/stopping.md by hand, with the commands).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from banel.config import merge
from banel.eval.evidence import kept_round
from banel.report.stats import geometric_mean_interval
from banel.rundir import read_history
from banel.sweep import parse_seeds, sweep
from banel.tasks import resolve_task

ROOT = Path(__file__).resolve().parents[2]
DRIFT_BUDGET = 9.2  # banel.config.KeepConfig's default
ZOO = {"m": 100, "nre_budget": 1000, "eval": {"every": 1}}  # benchmarks/zoo/run.py's SETTINGS
TASKS: dict[str, dict[str, Any]] = {
    "zoo-grammar": ZOO,
    "zoo-classifier": ZOO,
    "zoo-constrained": ZOO,
    "zoo-typical": ZOO,
    "toy1d": {},
    "examples.seqdesign:make": {},
    "toy2d": {},
    "digits": {"eval": {"every": 1}},
}
"""Each task at the budget its benchmark already uses (defaults unless its benchmark says otherwise)."""
RULE_ROWS = [("final", "final", DRIFT_BUDGET), ("drift", "drift", DRIFT_BUDGET), ("paid", "paid", DRIFT_BUDGET)]
RULE_ROWS += [(f"drift@{b:g}", "drift", b) for b in (0.5, 3.0)]
"""(label, rule, drift budget): the rules at their defaults, and the drift rule at two tighter budgets, a
sensitivity read on these same benchmarks (so not a fair test of those budgets)."""
DECAY = {"banel": {"generator_decay": 0.8}}
DECAY_TASKS = ("toy1d", "toy2d", "zoo-grammar", "zoo-classifier", "zoo-constrained", "zoo-typical")
SMOKE = {"m": 20, "nre_budget": 80, "eval": {"every": 1, "drift_samples": 50, "metric_samples": 50}}


def folder_name(task: str) -> str:
    """A folder name for a task name or import path."""
    return task.rsplit(":", 1)[0].rsplit(".", 1)[-1] if ":" in task else task


def truth(row: dict[str, Any]) -> float | None:
    """The true rate recorded in a history row; a Monte-Carlo zero is floored at half a success."""
    sr = row.get("success_rate")
    if not sr:
        return None
    return sr["rate"] if sr.get("exact") or sr["rate"] > 0 else 0.5 / sr["n"]


def scores(run_dir: Path) -> dict[str, float] | None:
    """A finished run's true rates: the prior's, the final generator's, the oracle best's and each rule's."""
    if not (run_dir / "summary.json").is_file():
        return None
    summary = json.loads((run_dir / "summary.json").read_text())
    rows = read_history(run_dir)
    rate = {r["round"]: truth(r) for r in rows}
    best = summary["best_success_rate"]  # the best round re-estimated on fresh samples (selection-free)
    if not summary.get("success_rate_exact"):
        best = max(best, 0.5 / summary["best_success_samples"])
    out = {"prior": rate[-1], "final": rate[rows[-1]["round"]], "oracle best": best}
    for label, rule, budget in RULE_ROWS:
        out[label] = rate[kept_round(rows, rule, budget)]
    return out


def geometric(values: np.ndarray) -> tuple[float, float, float]:
    """Geometric mean and its 95% Student-t interval on logs (the report's own)."""
    return geometric_mean_interval(values)


def worse_than_final_p(kept: np.ndarray, final: np.ndarray) -> float | None:
    """One-sided paired t-test p that the kept generator's log rate is below the final one's (None: identical)."""
    diff = np.log(kept) - np.log(final)
    if np.ptp(diff) == 0:
        return None if diff[0] == 0 else (0.0 if diff[0] < 0 else 1.0)
    return float(stats.ttest_1samp(diff, 0.0, alternative="less").pvalue)


def table(out: Path, tasks: list[str]) -> str:
    """The task x rule table of true rates (geometric means over seeds, x the prior) with verdicts vs final."""
    lines = [
        "| task | seeds | variant | rule | kept (× prior) | 95% CI | final (× prior) | oracle best (× prior) "
        "| kept / final | p (kept worse than final) | verdict |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    summary: dict[str, list[float]] = {}
    for task in tasks:
        for variant in ("default", "decay"):
            folder = out / folder_name(task) / variant / "banel"
            runs = [s for d in sorted(folder.glob("seed*")) if (s := scores(d))]
            if not runs:
                continue
            prior = np.array([r["prior"] for r in runs])
            final = np.array([r["final"] for r in runs])
            best = np.array([r["oracle best"] for r in runs])
            for rule, _, _ in RULE_ROWS:
                kept = np.array([r[rule] for r in runs])
                g, lo, hi = (x / geometric(prior)[0] for x in geometric(kept))
                p = worse_than_final_p(kept, final) if rule != "final" else None
                verdict = "-" if p is None else ("**worse**" if p < 0.05 else "not worse")
                ratio = geometric(kept / final)[0]
                summary.setdefault(f"{variant}:{rule}", []).append(math.log(ratio))
                base = geometric(prior)[0]
                lines.append(
                    f"| {task} | {len(runs)} | {variant} | {rule} | {g:.3g}× | [{lo:.3g}×, {hi:.3g}×] "
                    f"| {geometric(final)[0] / base:.3g}× | {geometric(best)[0] / base:.3g}× "
                    f"| {ratio:.3g} | {'-' if p is None else f'{p:.3g}'} | {verdict} |"
                )
    lines += ["", "Mean over tasks of log(kept / final), as a factor:", ""]
    lines += [f"- {k}: {math.exp(float(np.mean(v))):.3g}× over {len(v)} tasks" for k, v in summary.items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Run the tasks (resumable) and write OUT/stopping.md."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="runs/stopping")
    parser.add_argument("--seeds", default="0-4")
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--table-only", action="store_true")
    parser.add_argument("--variants", default="default,decay", help="which of default,decay to run")
    parser.add_argument("--smoke", action="store_true", help="tiny budgets on toy1d and zoo-typical (CI)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    tasks = ["toy1d", "zoo-typical"] if args.smoke else args.tasks.split(",")
    sys.path.insert(0, str(ROOT))  # examples.seqdesign
    if not args.table_only:
        # every task's default first, then the decay variants: a short session still gets every task once
        for variant, extra in (v for v in (("default", {}), ("decay", DECAY)) if v[0] in args.variants.split(",")):
            for task in (t for t in tasks if variant == "default" or t in DECAY_TASKS):
                # the task's own defaults first, as `banel compare` applies them (Python's sweep takes settings
                # as given)
                settings = merge(resolve_task(task)[1].defaults, {**(SMOKE if args.smoke else TASKS[task]), **extra})
                where = out / folder_name(task) / variant
                sweep(task, ["banel"], parse_seeds(args.seeds), settings, out=where, jobs=args.jobs, threads=1)
                print(f"done: {task} {variant}", flush=True)
    text = table(out, tasks)
    (out / "stopping.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
