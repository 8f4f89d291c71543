"""Table 2 (MNIST 0 -> 6 at 28x28, Section 5.1) in one prepared GPU run, with a CPU smoke mode.

    mkdir -p data/mnist && cp /work/shared/data/mnist/*-ubyte.gz data/mnist/    # once; data/ is git-ignored
    PYTHONPATH=src python benchmarks/mnist/gpu_table2.py --out "$OUT"                  # one GPU, 16 CPU cores
    PYTHONPATH=src python benchmarks/mnist/gpu_table2.py --smoke --out /tmp/t2-smoke   # one CPU core, ~1 min

Steps, each printed with a UTC time stamp: (1) the task: the 50,000 affine sixes of the test split (the
target set) and the training zeros, from the IDX files in --data; (2) the 28x28 prior, pre-trained on the
5,923 training zeros (or loaded from --cache); (3) its exact success rate, the one denominator of every
factor (WORK/prior.json); (4) BaNEL, RND and count-based on seeds 0-4 with the paper's settings (App. B.2,
`PAPER`), `--jobs` runs at a time on the one device, one CPU thread each, through `banel.sweep` (WORK/METHOD/
seedS: a finished run is kept and an interrupted one resumes, so the same command continues a cut run);
(5) the artefacts, rebuilt after every finished run so a run cut at its time limit still returns what it
had: OUT/table.md (banel's Table-2 layout, then the paper's Table 2 beside ours), table.csv, compare.png,
fig2.png (prior samples beside BaNEL's final and best generators, Fig. 2), runs.json (every run's summary
and exact-rate curve), timing.json (wall time per phase and per run) and progress.log (these lines).

OUT is flat and small (7 files, well under 1 MiB): the run folders stay in --work.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from banel.cache import atomic_write_text
from banel.config import merge
from banel.report.table import collect, shared_prior, table_rows, write_report
from banel.rundir import HISTORY, SNAPSHOTS, read_history
from banel.runner import parse_config
from banel.sweep import parse_methods, parse_seeds, sweep, write_prior_estimate
from banel.tasks import resolve_task
from banel.tasks.mnist import MNIST_FILES, find_mnist

PAPER: dict[str, Any] = {
    # App. B.2 and Sec. 5.1: m = 250, 7,500 NREs (30 rounds); BaNEL f = 2, kappa = 1, p_phi 50 and p_theta 15
    # epochs per round, the generator reset to the base before each distillation, p_phi from the base on the
    # round's failures, lengths normalised; RND a 4-layer MLP of width 1024 with KL 0.01; count-based KL 0.05.
    "nre_budget": 7500,
    "m": 250,
    "banel": {
        "filter_factor": 2,
        "kappa": 1.0,
        "negative_epochs": 50,
        "generator_epochs": 15,
        "reset_generator": True,
        "negative_init": "base",
        "negative_data": "round",
        "numerator": "base",
        "length_normalise": True,
        "algorithm": 2,
        "selection": "top_m",
    },
    "rnd": {"hidden": 1024, "layers": 4, "kl_coef": 0.01},
    "count": {"kl_coef": 0.05},
    "task_options": {"resolution": 28, "targets": 50_000},
}
SMOKE: dict[str, Any] = {
    # every step of the GPU run at toy size: a 1-layer d=16 prior, one epoch on 256 affine variants of the zeros
    # (one epoch on the 5,923 raw zeros takes over a minute on one core), 200 targets, 2 rounds of 20
    "nre_budget": 40,
    "m": 20,
    "banel": {"negative_epochs": 2, "generator_epochs": 1},
    "rnd": {"hidden": 64, "layers": 2},
    "eval": {"drift_samples": 50},
    "task_options": {
        "targets": 200,
        "prior_training": {"epochs": 1, "augment": 256, "d_model": 16, "n_layer": 1, "n_head": 2},
    },
}
PAPER_TABLE2 = {
    # Table 2 of arXiv 2510.09596 (best success rate over 5 seeds: mean, median, std), prior 8e-26 (Sec. 5.1)
    "prior": 8e-26,
    "banel": {"mean": 1.080e-21, "median": 1.000e-22, "std": 1.963e-21},
    "rnd": {"mean": 1.082e-23, "median": 1.000e-23, "std": 1.031e-23},
    "count": {"mean": 2.674e-24, "median": 2.000e-25, "std": 3.829e-24},
}
LABELS = {"banel": "BaNEL", "rnd": "RND", "count": "count-based", "base": "prior (`base`)"}
DEFAULT_DATA = "data/mnist"
DEFAULT_WORK = "runs/mnist28-table2"
DEFAULT_JOBS = 15  # every run of the default grid at once: 3 methods x 5 seeds, one core each of 16, one left over
OUT_FILES = ("table.md", "table.csv", "compare.png", "fig2.png", "runs.json", "timing.json", "progress.log")
"""Everything written to --out: flat, well under the 8 files and 16 MiB each a GPU machine returns."""


# -- progress -----------------------------------------------------------------------------------------


def utc() -> str:
    """The current UTC time, ISO 8601 to the second."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Progress:
    """Time-stamped progress lines to stdout (flushed) and OUT/progress.log, and the timing of named phases."""

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self.started = time.time()
        self.started_utc = utc()
        self.phases: dict[str, float] = {}
        self._lock = threading.Lock()

    def say(self, message: str) -> None:
        """Print one line with a UTC time stamp and the seconds since the start, and append it to the log."""
        line = f"{utc()} [{time.time() - self.started:7.1f} s] {message}"
        with self._lock:
            print(line, flush=True)
            with open(self.log_path, "a") as f:
                f.write(line + "\n")

    def phase(self, name: str, fn: Callable[[], Any]) -> Any:
        """Run fn, record its wall time under `name`, say when it starts and ends."""
        self.say(f"{name}: start")
        t0 = time.time()
        result = fn()
        self.phases[name] = round(time.time() - t0, 3)
        self.say(f"{name}: done in {self.phases[name]:.1f} s")
        return result


def run_folders(work: Path) -> list[Path]:
    """Every run folder (WORK/METHOD/seedS holding a history) in method, seed order."""
    return sorted(p.parent for p in work.glob(f"*/seed*/{HISTORY}"))


def progress_line(work: Path, rounds: int) -> str:
    """One line: each run's last finished round and its latest exact rate ('done' when summary.json exists)."""
    parts = []
    for folder in run_folders(work):
        rows = read_history(folder)
        if not rows:
            continue
        last = rows[-1]
        rated = [r for r in rows if r.get("success_rate")]
        rate = f" {rated[-1]['success_rate']['rate']:.2e}" if rated else ""
        state = "done" if (folder / "summary.json").is_file() else f"r{last['round'] + 1}/{rounds}"
        parts.append(f"{folder.parent.name}/{folder.name.removeprefix('seed')} {state}{rate}")
    return "runs: " + (", ".join(parts) if parts else "none started yet")


def watch(
    work: Path, out: Path, every: float, progress: Progress, context: dict[str, Any], stop: threading.Event
) -> None:
    """Every `every` seconds until `stop` is set: say `progress_line` and rewrite OUT/runs.json and timing.json, so
    that a run cut at its time limit returns every run's exact rates so far (a daemon thread of the driver)."""
    while not stop.wait(every):
        try:
            progress.say(progress_line(work, context["rounds"]))
            write_logs(work, out, progress, context)
        except (OSError, ValueError, KeyError) as err:  # a folder being written; the next look will do
            progress.say(f"runs: (could not read progress: {err})")


# -- artefacts ------------------------------------------------------------------------------------------


def _fmt(x: float | None, spec: str = ".3e") -> str:
    return "-" if x is None or not np.isfinite(x) else format(x, spec)


def _times(x: float | None, base: float) -> str:
    """' (13,500×)': x over base, to three significant digits, thousands separated; '' without a base."""
    if x is None or not base > 0:
        return ""
    factor = x / base
    return f" ({factor:,.0f}×)" if factor >= 1000 else f" ({factor:.3g}×)"


def paper_table(work: Path) -> str:
    """Markdown: the paper's Table 2 (mean, median, std of the best rate over seeds, x the prior) beside ours."""
    records = collect(work)
    prior, _ = shared_prior(work, records)
    rows = {r["method"]: r for r in table_rows(records, prior)}
    ref = PAPER_TABLE2["prior"]
    lines = [
        "## Table 2 of the paper beside this run",
        "",
        "Best exact success rate per run (the best evaluated round's generator), over seeds: mean, median, sample "
        "std; × is over each side's own prior. Paper: arXiv 2510.09596, Table 2 (5 seeds) and Sec. 5.1 (prior).",
        "",
        "| method | seeds | mean (×) | median (×) | std | mean final (×) | paper mean (×) | paper median (×) "
        "| paper std |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| prior | - | {_fmt(prior.rate)} (1×) | | | | {ref:.3g} (1×) | | |",
    ]
    for name, row in rows.items():
        method = name.split(" [")[0]
        paper = PAPER_TABLE2.get(method, {})
        assert isinstance(paper, dict)

        lines.append(
            f"| {LABELS.get(method, method)}{name[len(method) :]} | {row['seeds']} "
            f"| {_fmt(row['mean'])}{_times(row['mean'], prior.rate)} "
            f"| {_fmt(row['median'])}{_times(row['median'], prior.rate)} | {_fmt(row['std'], '.2e')} "
            f"| {_fmt(row['final_mean'])}{_times(row['final_mean'], prior.rate)} "
            + (
                f"| {paper['mean']:.3e}{_times(paper['mean'], ref)} "
                f"| {paper['median']:.3e}{_times(paper['median'], ref)} "
                f"| {paper['std']:.3e} |"
                if paper
                else "| | | |"
            )
        )
    return "\n".join(lines) + "\n"


def run_records(work: Path) -> list[dict[str, Any]]:
    """Every run's summary (finished) or progress (unfinished) and its exact-rate curve, for runs.json."""
    out = []
    for folder in run_folders(work):
        rows = read_history(folder)
        summary_path = folder / "summary.json"
        summary = json.loads(summary_path.read_text()) if summary_path.is_file() else None
        keep = (
            "base_success_rate",
            "best_success_rate",
            "best_round",
            "final_success_rate",
            "nre_used",
            "queries",
            "rounds",
            "successes_found",
            "drift_nll",
            "kl_to_prior",
            "wall_seconds",
        )
        out.append(
            {
                "method": folder.parent.name,
                "seed": int(folder.name.removeprefix("seed")),
                "finished": summary is not None,
                "summary": {k: summary.get(k) for k in keep} if summary else None,
                "rounds_done": sum(1 for r in rows if r["round"] >= 0),
                "curve": [
                    {"round": r["round"], "nre_used": r["nre_used"], "rate": r["success_rate"]["rate"]}
                    for r in rows
                    if r.get("success_rate")
                ],
            }
        )
    return out


def run_timing(folder: Path, every: int) -> dict[str, Any]:
    """A run's wall time, its per-round seconds (from history's cumulative wall_seconds) and, from rounds with
    and without an exact rate, what one evaluation costs."""
    rows = [r for r in read_history(folder) if r["round"] >= 0]
    clock = [0.0] + [float(r["wall_seconds"]) for r in rows]
    seconds = [round(b - a, 3) for a, b in zip(clock, clock[1:], strict=False)]
    # round 0 also holds the start (the prior's exact rate and drift samples); later rounds are comparable
    later = list(zip(rows[1:], seconds[1:], strict=True))
    with_eval = [s for r, s in later if r.get("success_rate")]
    without = [s for r, s in later if not r.get("success_rate")]
    summary_path = folder / "summary.json"
    wall = json.loads(summary_path.read_text())["wall_seconds"] if summary_path.is_file() else clock[-1]
    return {
        "method": folder.parent.name,
        "seed": int(folder.name.removeprefix("seed")),
        "finished": summary_path.is_file(),
        "wall_seconds": wall,
        "rounds": len(rows),
        "round0_and_start_seconds": seconds[0] if seconds else None,
        "mean_round_seconds_without_eval": round(float(np.mean(without)), 3) if without else None,
        "mean_round_seconds_with_eval": round(float(np.mean(with_eval)), 3) if with_eval else None,
        "eval_every": every,
        "round_seconds": seconds,
    }


def plot_fig2(work: Path, path: Path) -> Path | None:
    """Fig. 2: prior samples beside BaNEL's final and best generators' samples (the BaNEL run with the highest
    best rate); None until a BaNEL run has finished."""
    from banel.report.images import save_panels

    finished = [f for f in sorted((work / "banel").glob("seed*")) if (f / "summary.json").is_file()]
    if not finished:
        return None
    summaries = {f: json.loads((f / "summary.json").read_text()) for f in finished}
    folder = max(finished, key=lambda f: summaries[f]["best_success_rate"])
    s = summaries[folder]
    snaps = folder / SNAPSHOTS
    panels = [(np.load(snaps / "round_000.npz")["prior_samples"], f"prior ({s['base_success_rate']:.2e})")]
    final = snaps / f"round_{s['rounds']:03d}.npz"
    best = snaps / f"round_{s['best_round'] + 1:03d}.npz"
    if final.is_file():
        name = "final = best" if best == final else "final"
        panels.append(
            (np.load(final)["posterior_samples"], f"{name}, round {s['rounds'] - 1} ({s['final_success_rate']:.2e})")
        )
    if best.is_file() and best != final:
        panels.append(
            (np.load(best)["posterior_samples"], f"best, round {s['best_round']} ({s['best_success_rate']:.2e})")
        )
    title = f"MNIST 0 → 6: BaNEL {folder.name} (exact success rates)"
    return save_panels(panels, path, title, height=4.5, dpi=110)


def write_tables(work: Path, out: Path) -> list[str]:
    """Rebuild the table and the figures from WORK's finished runs into OUT; returns the names written."""
    if not any((f / "summary.json").is_file() for f in run_folders(work)):
        return []
    md, csv_path, png = write_report(work)
    atomic_write_text(md.read_text() + "\n" + paper_table(work), out / "table.md")
    for src in (csv_path, png):
        tmp = out / f".{src.name}.tmp"
        shutil.copyfile(src, tmp)
        os.replace(tmp, out / src.name)
    return ["table.md", "table.csv", "compare.png"] + (["fig2.png"] if plot_fig2(work, out / "fig2.png") else [])


def write_logs(work: Path, out: Path, progress: Progress, context: dict[str, Any]) -> list[str]:
    """OUT/runs.json (every run's summary, or progress, and exact-rate curve) and OUT/timing.json (phases and
    runs); the names. Runs unfinished so far are in both, marked `finished: false`."""
    atomic_write_text(json.dumps(run_records(work), indent=1), out / "runs.json")
    timing = {
        **context,
        "started_utc": progress.started_utc,
        "written_utc": utc(),
        "wall_seconds": round(time.time() - progress.started, 3),
        "phases": dict(progress.phases),
        "runs": [run_timing(f, context["eval_every"]) for f in run_folders(work)],
    }
    atomic_write_text(json.dumps(timing, indent=1), out / "timing.json")
    return ["runs.json", "timing.json", "progress.log"]


# -- the recipe -----------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The recipe's arguments."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="tiny CPU version of every step (about a minute)")
    p.add_argument("--data", default=DEFAULT_DATA, help=f"folder of the four MNIST IDX files (default {DEFAULT_DATA})")
    p.add_argument("--work", help=f"run folders and prior cache (default {DEFAULT_WORK}, smoke: WORK-smoke)")
    p.add_argument("--out", help="folder of the artefacts (default $OUT if set, else WORK/artefacts)")
    p.add_argument("--cache", help="prior cache (default WORK/cache: a GPU-trained prior never mixes with yours)")
    p.add_argument("--device", help="torch device of every model (default cuda; smoke: cpu)")
    p.add_argument("--jobs", type=int, help=f"runs at a time on the device (default {DEFAULT_JOBS}; smoke: 1)")
    p.add_argument("--seeds", help="seeds, 0-4 or 0,3,7 (default 0-4; smoke: 0)")
    p.add_argument(
        "--methods", default="banel,rnd,count", help="methods (default banel,rnd,count; add base for a prior row)"
    )
    p.add_argument("--eval-every", type=int, help="exact success rate every this many rounds (default 3; smoke: 1)")
    p.add_argument("--rounds", type=int, help="rounds of m per run, fewer to fit a time limit (default the paper's 30)")
    p.add_argument("--progress-every", type=float, default=30.0, help="seconds between progress lines (default 30)")
    return p


def settings_for(args: argparse.Namespace, data: Path) -> dict[str, Any]:
    """The runs' settings: the paper's (App. B.2), shrunk in smoke mode, plus device, evaluation and data."""
    settings = merge(PAPER, SMOKE) if args.smoke else dict(PAPER)
    if args.rounds is not None:
        settings = merge(settings, {"nre_budget": args.rounds * settings["m"]})
    return merge(
        settings,
        {
            "device": args.device,
            "eval": {"every": args.eval_every},
            "task_options": {"data_dir": str(data)},
        },
    )


def resolve_args(args: argparse.Namespace) -> argparse.Namespace:
    """Fill the mode's defaults and validate every argument (a ValueError names the argument)."""
    args.device = args.device or ("cpu" if args.smoke else "cuda")
    args.jobs = args.jobs if args.jobs is not None else (1 if args.smoke else DEFAULT_JOBS)
    args.eval_every = args.eval_every if args.eval_every is not None else (1 if args.smoke else 3)
    args.seeds = parse_seeds(args.seeds or ("0" if args.smoke else "0-4"))
    args.methods = parse_methods(args.methods)
    args.work = Path(args.work or (DEFAULT_WORK + ("-smoke" if args.smoke else "")))
    args.out = Path(args.out or os.environ.get("OUT") or args.work / "artefacts")
    args.cache = Path(args.cache or args.work / "cache")
    if args.jobs < 1:
        raise ValueError(f"--jobs must be >= 1, got {args.jobs}")
    if args.eval_every < 1:
        raise ValueError(f"--eval-every must be >= 1, got {args.eval_every}")
    if args.rounds is not None and args.rounds < 1:
        raise ValueError(f"--rounds must be >= 1, got {args.rounds}")
    if not args.progress_every > 0:
        raise ValueError(f"--progress-every must be > 0 seconds, got {args.progress_every}")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {args.device}: torch sees no CUDA device; on a CPU use --smoke (or --device cpu)")
    if args.out.resolve() == args.work.resolve():
        raise ValueError("--out must differ from --work: OUT holds only the artefacts, WORK the run folders")
    try:
        find_mnist(args.data)
    except FileNotFoundError:
        files = ", ".join(f"{name}.gz" for name in MNIST_FILES.values())
        raise ValueError(
            f"--data {args.data}: the MNIST IDX files are not there ({files}); copy them first, e.g. "
            f"`mkdir -p {args.data} && cp /work/shared/data/mnist/*-ubyte.gz {args.data}/`"
        ) from None
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the recipe; 0 when every run finished, 1 when a run failed, 2 for bad arguments."""
    try:
        args = resolve_args(build_parser().parse_args(argv))
        settings = settings_for(args, Path(args.data).resolve())
        config = parse_config(merge(settings, {"task": "mnist", "method": args.methods[0], "seed": args.seeds[0]}))
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    work, out = args.work, args.out
    work.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    progress = Progress(out / "progress.log")
    rounds = config.rounds
    device_name = (
        torch.cuda.get_device_name(config.device)
        if config.device.startswith("cuda")
        else f"{platform.machine()}, {os.cpu_count()} CPU cores"
    )
    context = {
        "mode": "smoke" if args.smoke else "paper",
        "device": config.device,
        "device_name": device_name,
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "jobs": args.jobs,
        "methods": args.methods,
        "seeds": args.seeds,
        "rounds": rounds,
        "m": config.m,
        "eval_every": args.eval_every,
        "settings": json.loads(json.dumps(settings, default=str)),
    }
    progress.say(
        f"MNIST 0->6 at 28x28 ({context['mode']}): {', '.join(args.methods)} x seeds {args.seeds}, {rounds} rounds "
        f"of m={config.m}, {args.jobs} at a time on {config.device} ({device_name}); work {work}, out {out}"
    )
    task = progress.phase(
        "task (target set and IDX files)", lambda: resolve_task("mnist")[1](config.task_options, str(args.cache))
    )
    progress.say(f"target set: {len(task.targets):,} distinct sixes of {task.length} pixels")
    progress.phase("prior (pre-train on the training zeros, or load from the cache)", lambda: task.prior(config.device))
    estimate = progress.phase("prior exact rate", lambda: write_prior_estimate(work, task, config, 100, 1_000_000))
    progress.say(f"prior exact success rate {estimate.rate:.3e} (paper: {PAPER_TABLE2['prior']:.0e})")
    finished = sum((f / "summary.json").is_file() for f in run_folders(work))
    progress.say(f"{finished} runs already finished in {work} (kept); interrupted ones resume from their checkpoint")

    def done(summary: dict[str, Any]) -> None:
        progress.say(
            f"finished {summary['method']} seed {summary['seed']}: best {summary['best_success_rate']:.3e} "
            f"(round {summary['best_round']}), final {summary['final_success_rate']:.3e}, "
            f"{summary['nre_used']} NREs, {summary['wall_seconds']:.0f} s"
        )
        try:  # the artefacts so far, so that a run cut at its time limit still returns them
            write_tables(work, out)
            write_logs(work, out, progress, context)
        except (OSError, ValueError) as err:  # never stop the sweep for a report; the final one says it again
            progress.say(f"could not write the artefacts yet: {type(err).__name__}: {err}")

    stop = threading.Event()
    watcher = threading.Thread(
        target=watch, args=(work, out, args.progress_every, progress, context, stop), name="progress", daemon=True
    )
    watcher.start()
    status = 0
    try:
        progress.phase(
            "runs",
            lambda: sweep(
                "mnist",
                args.methods,
                args.seeds,
                settings,
                out=work,
                jobs=args.jobs,
                cache=args.cache,
                threads=1,
                on_done=done,
            ),
        )
    except Exception as err:  # a failed run, or WORK holding runs of other settings: say it, keep what finished
        where = " (--out there is this recipe's --work)" if "use another --out" in str(err) else ""
        progress.say(f"the runs stopped: {type(err).__name__}: {err}{where}")
        status = 1
    finally:
        stop.set()
        watcher.join()
    progress.say(progress_line(work, rounds))
    try:
        written = progress.phase("artefacts", lambda: write_tables(work, out))
    except (OSError, ValueError) as err:  # e.g. WORK holds runs of other task settings: say so, keep the logs
        progress.say(f"could not write the tables: {type(err).__name__}: {err}")
        written, status = [], 1
    written += write_logs(work, out, progress, context)
    progress.say(f"wrote {', '.join(written)} to {out} in {time.time() - progress.started:.0f} s")
    return status


if __name__ == "__main__":
    sys.exit(main())
