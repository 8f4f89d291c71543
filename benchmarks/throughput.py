"""Where a real `banel run` round spends its time, per phase, and A/B ratios between two versions of banel.

Each measurement is one `banel.run` of a task's own defaults (the run's code path: sampling, scoring, the
negative fit, distillation, oracle and ledger, evaluation, drift, snapshot, checkpoint), in a fresh process
whose PYTHONPATH is one variant's `src`. Phases are timed by wrapping the functions a run calls (the names of
`PHASES`, wherever a variant has them); a call is charged to the outermost phase open around it: time in
`fit` inside the negative fit counts as "negative fit". Variants are interleaved (A, B, B, A, A, B, ...) over
the repeats, the table reports medians and the load average is recorded at each measurement.

    # today's main against the working tree, digits (eval every 3 rounds), 3 repeats of 6 rounds each
    git worktree add /tmp/banel-main main
    python benchmarks/throughput.py --variant main=/tmp/banel-main/src --variant new=src \\
        --task digits --rounds 6 --repeats 3 --out benchmarks/out/throughput
    python benchmarks/throughput.py --smoke          # one variant (src), toy1d, 3 rounds: seconds

Writes `throughput.json` (every measurement) and `throughput.md` (medians and ratios) under --out.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# (phase, "module:Class.attribute") wrapped in the worker when the variant has them.
PHASES = [
    ("evaluation", "banel.runner:Run._success_rate"),
    ("drift", "banel.runner:Run._drift"),
    ("metrics", "banel.runner:Run._metrics"),
    ("snapshot", "banel.runner:Run._save_snapshot"),
    ("checkpoint", "banel.runner:Run.checkpoint"),
    ("records", "banel.runner:Run._append"),
    ("records", "banel.runner:Run._record_successes"),
    ("records", "banel.runner:Run._save_generator"),
    ("oracle + ledger", "banel.oracle.ledger_oracle:LedgerOracle.__call__"),
    ("negative fit", "banel.algorithm:Banel._fit_negative"),
    ("fit (distil)", "banel.models.transformer:TransformerModel.fit"),
    ("sample", "banel.models.transformer:TransformerModel.sample"),
    ("score", "banel.models.transformer:TransformerModel.log_prob"),
]

# Run settings per task (on top of the task's own defaults).
TASKS = {
    "toy1d": {"m": 250},
    "digits": {"m": 250, "eval": {"every": 3}},
    "mnist14": {"task": "mnist", "m": 250, "task_options": {"resolution": 14}, "eval": {"every": 3}},
}


# -- the worker: one run in this process ---------------------------------------------------------------


class _Clock:
    """Seconds per phase, each call charged to the outermost phase open around it: `fit` inside the negative
    fit is "negative fit", `log_prob` inside an evaluation is "evaluation"."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.depth = 0

    def wrap(self, phase: str, fn):
        @functools.wraps(fn)  # keeps the signature, which callers may inspect
        def timed(*args, **kwargs):
            if self.depth:
                return fn(*args, **kwargs)
            self.depth += 1
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.depth -= 1
                self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - start

        return timed


def _patch(clock: _Clock) -> list[str]:
    """Wrap every PHASES function this variant has; the ones it has."""
    import importlib

    found = []
    for phase, target in PHASES:
        module_name, qualified = target.split(":")
        owner_name, attribute = qualified.split(".")
        try:
            owner = getattr(importlib.import_module(module_name), owner_name)
        except (ImportError, AttributeError):
            continue
        if attribute in vars(owner):
            setattr(owner, attribute, clock.wrap(phase, vars(owner)[attribute]))
            found.append(target)
    return found


def _merge(base: dict, extra: dict) -> dict:
    """base with extra's values, nested tables merged."""
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def worker(task: str, rounds: int, seed: int, threads: int, cache: str, extra: dict | None = None) -> dict:
    """One run of `rounds` rounds (prior measured before the clock starts); phase seconds and results."""
    import torch

    torch.set_num_threads(threads)
    import banel.runner as runner
    from banel.tasks import make_task

    settings = _merge(TASKS[task], extra or {})
    name = settings.pop("task", task)
    data = {"task": name, "method": "banel", "seed": seed, **settings}
    data["nre_budget"] = data["m"] * rounds
    config = runner.parse_config(data)
    made = make_task(config.task, config.task_options, cache)
    clock = _Clock()
    patched = _patch(clock)
    execute = runner.Run.execute
    total = {}

    def timed_execute(self):
        clock.seconds.clear()  # what `start` spent on the prior is not a round's
        start = time.perf_counter()
        try:
            return execute(self)
        finally:
            total["rounds"] = time.perf_counter() - start

    runner.Run.execute = timed_execute
    with tempfile.TemporaryDirectory() as out:
        summary = runner.run(config, Path(out) / "run", task=made)
    phases = dict(clock.seconds)
    phases["other"] = total["rounds"] - sum(phases.values())
    return {
        "task": task,
        "rounds": rounds,
        "seconds": total["rounds"],
        "phases": phases,
        "patched": patched,
        "threads": torch.get_num_threads(),
        "best_success_rate": summary.get("best_success_rate"),
        "final_success_rate": summary.get("final_success_rate"),
        "nre_used": summary.get("nre_used"),
        "load_before": os.getloadavg(),
    }


# -- the driver: interleaved variants ------------------------------------------------------------------


def measure(variant_src: str, task: str, rounds: int, seed: int, threads: int, cache: str, extra: str = "") -> dict:
    """One worker process with PYTHONPATH=variant_src (and settings `extra`, JSON); its JSON result."""
    env = {**os.environ, "PYTHONPATH": str(Path(variant_src).resolve()), "OMP_NUM_THREADS": str(threads)}
    cmd = [sys.executable, __file__, "--worker", task, "--rounds", str(rounds), "--seed", str(seed)]
    cmd += ["--threads", str(threads), "--cache", cache, "--settings", extra or "{}"]
    load = os.getloadavg()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"worker failed ({variant_src}, {task}):\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["load_before"] = load
    return result


def summarise(results: list[dict], variants: list[str]) -> str:
    """Markdown: median seconds per round and per phase for each variant and task, ratios to the first."""
    lines = []
    for task in dict.fromkeys(r["task"] for r in results):
        rows = {v: [r for r in results if r["task"] == task and r["variant"] == v] for v in variants}
        phases = sorted({p for rs in rows.values() for r in rs for p in r["phases"]})
        rounds = next(iter(rows.values()))[0]["rounds"]
        head = " | ".join(f"{v} s/round" for v in variants)
        ratio_head = " | ".join(f"{variants[0]}/{v}" for v in variants[1:])
        lines += [f"### {task} ({rounds} rounds per run, medians of {len(rows[variants[0]])})", ""]
        lines += [f"| phase | {head} | {ratio_head} |", "|---" * (1 + 2 * len(variants) - 1) + "|"]

        for key in [*phases, None]:
            med = [_median(rows[v], key) / rounds for v in variants]
            ratios = [f"{med[0] / m:.2f}×" if m > 0 else "—" for m in med[1:]]
            name = "**whole round**" if key is None else key
            lines.append(f"| {name} | " + " | ".join(f"{m:.3f}" for m in med) + " | " + " | ".join(ratios) + " |")
        loads = [r["load_before"][0] for rs in rows.values() for r in rs]
        lines += ["", f"load average (1 min) at the measurements: {min(loads):.2f}–{max(loads):.2f}"]
        for v in variants:
            r = rows[v][0]
            lines.append(
                f"- {v}: best {r['best_success_rate']:.4e}, final {r['final_success_rate']:.4e}, "
                f"NREs {r['nre_used']} (seed {r.get('seed', 0)})"
            )
        lines.append("")
    return "\n".join(lines)


def _median(runs: list[dict], key: str | None) -> float:
    """Median seconds of a phase (None: the whole run) over runs."""
    return statistics.median(r["seconds"] if key is None else r["phases"].get(key, 0.0) for r in runs)


def main() -> None:
    """Parse the arguments; run a worker, or drive the interleaved measurements and write the results."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--variant",
        action="append",
        default=[],
        help="NAME=SRC_DIR or NAME=SRC_DIR@JSON_SETTINGS (repeatable; the first is the base of the ratios)",
    )
    p.add_argument("--task", action="append", default=[], choices=sorted(TASKS), help="repeatable")
    p.add_argument("--rounds", type=int, default=6, help="rounds per measured run (round 0 included)")
    p.add_argument("--repeats", type=int, default=3, help="runs per variant and task")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument(
        "--cache",
        default=None,
        help="banel cache shared by all workers, already built (default: a new one, built by one untimed run "
        "per variant and task first)",
    )
    p.add_argument("--out", default="benchmarks/out/throughput")
    p.add_argument("--smoke", action="store_true", help="src only, toy1d, 3 rounds, 1 repeat")
    p.add_argument("--worker", metavar="TASK", help=argparse.SUPPRESS)
    p.add_argument("--settings", default="{}", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        extra = json.loads(args.settings)
        print(json.dumps(worker(args.worker, args.rounds, args.seed, args.threads, args.cache, extra)))
        return
    if args.smoke:
        args.variant, args.task, args.rounds, args.repeats = args.variant or ["src=src"], ["toy1d"], 3, 1
    variants = dict(v.split("=", 1) for v in args.variant or ["src=src"])
    settings = {name: spec.partition("@")[2] for name, spec in variants.items()}
    variants = {name: spec.partition("@")[0] for name, spec in variants.items()}
    tasks = args.task or ["toy1d", "digits"]
    cache = args.cache or tempfile.mkdtemp(prefix="banel-bench-cache-")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    names = list(variants)
    results = []
    for task in tasks:
        for name in names if not args.cache else ():  # build the cache (prior, targets) outside the measurements
            measure(variants[name], task, 1, args.seed, args.threads, cache, settings[name])
        for rep in range(args.repeats):
            order = names if rep % 2 == 0 else names[::-1]
            for name in order:
                r = measure(variants[name], task, args.rounds, args.seed, args.threads, cache, settings[name])
                r.update(variant=name, repeat=rep, seed=args.seed)
                results.append(r)
                print(f"{time.strftime('%H:%M:%S')} {task} {name} rep {rep}: {r['seconds']:.1f} s", flush=True)
    meta = {"variants": variants, "settings": settings, "threads": args.threads, "rounds": args.rounds, "cpu": _cpu()}
    (out / "throughput.json").write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    table = summarise(results, names)
    (out / "throughput.md").write_text(table)
    print(table)


def _cpu() -> str:
    try:
        import torch

        return f"{torch.__version__} {torch.backends.cpu.get_cpu_capability()}, {os.cpu_count()} cores"
    except ImportError:
        return f"{os.cpu_count()} cores"


if __name__ == "__main__":
    main()
