"""Is BaNEL's filter more than novelty? BaNEL beside the controls of issue 29 on every benchmark, one protocol.

Each task runs `banel compare` (its own defaults, the budget its benchmark already uses, seeds 0-4) with BaNEL,
`diverse` (BaNEL with its ranking replaced by the elliptical bonus; with and without distillation), `npo` (the
bounded negative-only objective), `negrl` (its unbounded twin), RND, count and `base`, into OUT/TASK/. This
script then gathers every task's folder into one table (OUT/controls.md): per method the selection-free best
and the final rate (× the prior; geometric mean over seeds; exact or by the task's free reward), distinct
successes found per 1,000 NREs (the currency every task has) and the KL to the prior; and the verdicts of
BaNEL against `diverse`: one-sided rank-sum on the best rates, exact permutation on the paid successes.

    python benchmarks/controls/run.py --out runs/controls --seeds 0-4           # runs (resumable) + table
    python benchmarks/controls/run.py --out runs/controls --tasks toy1d,toy2d   # some tasks
    python benchmarks/controls/run.py --out runs/controls --table-only          # the table from the folders
    python benchmarks/controls/run.py --out /tmp/controls --smoke               # seconds: CI's check

Runs resume like `banel compare`'s: a finished run is kept, an interrupted one resumes from its checkpoint
and ledger, so a session that stops mid-task loses at most a round.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from banel.config import load_file, merge
from banel.report.paid import more_per_run_p, paid_row
from banel.report.stats import above_other_p, geometric_mean_interval
from banel.report.table import collect, groups, shared_prior
from banel.sweep import compare, parse_seeds
from banel.tasks import resolve_task

ROOT = Path(__file__).resolve().parents[2]
METHODS = ["banel", "diverse", "npo", "negrl", "rnd", "count", "base"]
VARIANTS = {"diverse-nodistil": {"method": "diverse", "diverse": {"distil": False}}}
"""`diverse` without distillation: the generator stays the prior and the bonus only chooses what to pay for."""
ZOO = {"m": 100, "nre_budget": 1000, "eval": {"every": 1}}  # benchmarks/zoo/run.py's SETTINGS
TASKS: dict[str, dict[str, Any] | str] = {
    "zoo-classifier": ZOO,
    "zoo-constrained": ZOO,
    "zoo-typical": ZOO,
    "zoo-grammar": ZOO,
    "toy1d": {},
    "toy2d": {},
    "examples.seqdesign:make": {},
    "digits": {"eval": {"exact_subset": 5000}},  # 80 s a round on every target; the best is summed over all
    "addition": "benchmarks/addition/small.json",
}
"""Each task at the budget its benchmark already uses: its defaults, a settings dict over them, or the config
file its benchmark runs (read as `banel compare --config` reads it). Cheapest first, so a short session still
finishes whole tasks."""
SMOKE = {"m": 20, "nre_budget": 80, "eval": {"every": 1, "drift_samples": 50, "metric_samples": 50}}


def folder_name(task: str) -> str:
    """A folder name for a task name or import path."""
    return task.rsplit(":", 1)[0].rsplit(".", 1)[-1] if ":" in task else task


def settings_for(task: str, smoke: bool) -> dict[str, Any]:
    """The task's defaults with its benchmark's settings over them, as `banel compare` would apply them."""
    extra = SMOKE if smoke else TASKS[task]
    if isinstance(extra, str):
        extra = load_file(ROOT / extra)
    return merge(resolve_task(task)[1].defaults, extra)


def _geo(values: list[float]) -> float | None:
    """Geometric mean; None for an empty list or one holding a zero (a Monte-Carlo zero has no log)."""
    return geometric_mean_interval(values)[0] if values and min(values) > 0 else None


def task_rows(folder: Path) -> list[dict[str, Any]]:
    """One row per method (variant) of a task's folder: rates over the prior, paid successes, KL, verdicts."""
    records = collect(folder)
    if not records:
        return []
    prior = shared_prior(folder, records)[0]
    rows = []
    for group in groups(records):
        summaries = [r.summary for r in group.runs]
        best = [float(s["best_success_rate"]) for s in summaries]
        final = [float(s["final_success_rate"]) for s in summaries]
        paid = paid_row(group.label, summaries)
        rows.append(
            {
                "method": group.label,
                "seeds": len(summaries),
                "best": best,
                "best_x": None if (g := _geo(best)) is None else g / prior.rate,
                "final_x": None if (g := _geo(final)) is None else g / prior.rate,
                "per_1000": paid["per_1000"],
                "mean_per_1000": paid["mean_per_1000"],
                "kl": paid["kl_to_prior"],
                "prior": prior.rate,
                "exact": bool(summaries[0].get("success_rate_exact")),
            }
        )
    by = {r["method"]: r for r in rows}
    if "banel" in by:
        for r in rows:
            if r["method"] != "banel":
                r["banel_best_p"] = above_other_p(np.array(by["banel"]["best"]), np.array(r["best"]))
                r["banel_paid_p"] = more_per_run_p(by["banel"]["per_1000"], r["per_1000"])
    return rows


def _x(v: float | None) -> str:
    return "-" if v is None else f"{v:.3g}×"


def _p(v: float | None) -> str:
    return "-" if v is None else f"{v:.3g}"


def table(out: Path, tasks: list[str]) -> str:
    """The task × method table, markdown."""
    lines = [
        "| task | method | seeds | selection-free best (× prior) | final (× prior) | successes / 1,000 NREs "
        "| KL to prior (nats) | p (BaNEL best > this) | p (BaNEL paid > this) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for task in tasks:
        for r in task_rows(out / folder_name(task)):
            lines.append(
                f"| {task} | {r['method']} | {r['seeds']} | {_x(r['best_x'])} | {_x(r['final_x'])} "
                f"| {r['mean_per_1000']:.3g} | {_p(r['kl'])} "
                f"| {_p(r.get('banel_best_p'))} | {_p(r.get('banel_paid_p'))} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Run the tasks (resumable) and write OUT/controls.md and OUT/controls.json."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="runs/controls")
    parser.add_argument("--seeds", default="0-4")
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--table-only", action="store_true")
    parser.add_argument("--smoke", action="store_true", help="tiny budgets on toy1d (CI)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tasks = ["toy1d"] if args.smoke else args.tasks.split(",")
    sys.path.insert(0, str(ROOT))  # examples.seqdesign
    if not args.table_only:
        for task in tasks:
            compare(
                task,
                args.methods.split(","),
                parse_seeds(args.seeds),
                settings_for(task, args.smoke),
                out=out / folder_name(task),
                jobs=args.jobs,
                threads=1,
                variants=VARIANTS,
            )
            print(f"done: {task}", flush=True)
    text = table(out, tasks)
    (out / "controls.md").write_text(text)
    rows = {task: task_rows(out / folder_name(task)) for task in tasks}
    (out / "controls.json").write_text(json.dumps(rows, indent=1, default=str))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
