"""The `banel` command line: `banel run TASK`, `banel compare TASK`, `banel report DIR`, `banel tasks`."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

import torch

from banel.cache import FolderInUse
from banel.config import RunConfig, from_dict, load_file, merge, parse_overrides, to_dict

EPILOG = """examples:
  banel run toy1d                          BaNEL on the 1D toy, seed 0, results in runs/toy1d-banel-seed0
  banel run toy2d --seed 3 --out my_run    another task, seed and folder
  banel run toy1d --set banel.kappa=2 --set banel.filter_factor=4 --set nre_budget=2500
  banel run toy1d --config settings.toml   settings from a file ([banel], [eval] tables, top-level keys)

settings (--set key=value, or in a config file): seed, nre_budget, device, banel.m, banel.filter_factor,
banel.kappa, banel.length_normalise, banel.numerator (base|generator), banel.negative_init
(base|scratch|continue), banel.negative_data (round|all), banel.negative_epochs, banel.generator_epochs,
banel.reset_generator, banel.algorithm (1|2), banel.selection (top_m|importance),
banel.train_on_successes, banel.negative_fit.lr, banel.generator_fit.lr, eval.every, eval.samples,
oracle.ledger (path; default RUN/ledger.sqlite), oracle.dedupe (answer repeats from the ledger, free;
default true), oracle.executor (inline|thread|process|ray), oracle.workers, oracle.chunk_size,
oracle.timeout (s), oracle.retries, oracle.ray_address, oracle.query_limit, task_options.*, method_options.*

a killed run continues with `banel resume RUN_DIR`."""


COMPARE_EPILOG = """examples:
  banel compare toy1d --methods banel,rnd,count,base --seeds 0-4
  banel compare toy1d --methods all --seeds 0,3,7 --budget 2500 --out runs/cmp
  banel compare toy1d --methods banel,temperature --set method_options.temperature.temperature=1.1
  banel report runs/cmp                    rebuild the table and the figure from the run folders"""


THREADS_HELP = (
    "torch threads (default: one per core); on a machine other jobs are using, 1 avoids intra-op threads "
    "waiting on each other (many times slower: benchmarks/README.md)"
)


def _parser() -> argparse.ArgumentParser:
    from banel.methods import METHODS

    p = argparse.ArgumentParser(
        prog="banel",
        description="Post-train a generative model from failures alone (BaNEL, arXiv 2510.09596).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser(
        "run",
        help="run one method on one task",
        description="Run one method on a task and write history.jsonl, config.json, summary.json and plots.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("task", help="task name (see `banel tasks`)")
    run.add_argument("--method", default="banel", help=f"one of: {', '.join(METHODS)} (default banel)")
    run.add_argument("--config", help="a .toml or .json file of settings")
    run.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one setting, e.g. banel.kappa=2 (repeatable)",
    )
    run.add_argument("--seed", type=int, help="root seed (default 0)")
    run.add_argument("--budget", type=int, help="NRE budget (same as --set nre_budget=N)")
    run.add_argument("--device", help="cpu (default), cuda or cuda:N")
    run.add_argument("--resolution", type=int, help="image side of mnist: 14 or 28 (task_options.resolution)")
    run.add_argument("--out", help="run folder (default runs/TASK-METHOD-seedS)")
    run.add_argument("--cache", help="cache folder for pre-trained priors (default $BANEL_CACHE or ~/.cache/banel)")
    run.add_argument("--no-plot", action="store_true", help="skip the PNG plots")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    run.add_argument("--threads", type=int, help=THREADS_HELP)

    resume = sub.add_parser(
        "resume",
        help="continue a killed run from its last checkpoint",
        description="Continue a killed run: models, round, NRE counter and failures from checkpoint.pt; "
        "samples it already paid for are answered from its ledger, never evaluated again.",
    )
    resume.add_argument("run_dir", help="the run folder (holds config.json)")
    resume.add_argument("--cache", help="cache folder for pre-trained priors")
    resume.add_argument("--no-plot", action="store_true", help="skip the PNG plots")
    resume.add_argument("--quiet", action="store_true", help="no progress bar")
    resume.add_argument("--threads", type=int, help=THREADS_HELP)
    comp = sub.add_parser(
        "compare",
        help="run several methods on several seeds under one budget; write Table 2 and a figure",
        description="Run every method on every seed (same prior, NRE budget and round size m), one run "
        "folder each under OUT/METHOD/seedS, then write OUT/table.md, OUT/table.csv and OUT/compare.png. "
        "Finished runs are kept, so re-running resumes. Method options are per method: "
        "--set method_options.rnd.hidden=256.",
        epilog=COMPARE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    comp.add_argument("task", help="task name (see `banel tasks`)")
    comp.add_argument("--methods", default="all", help=f"comma-separated, or all (default): {', '.join(METHODS)}")
    comp.add_argument("--seeds", default="0-4", help="0-4 (a range), 0,3,7 (a list) or both (default 0-4)")
    comp.add_argument("--config", help="a .toml or .json file of settings shared by every run")
    comp.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="as in `banel run`"
    )
    comp.add_argument("--budget", type=int, help="NRE budget of every run")
    comp.add_argument("--device", help="cpu (default), cuda or cuda:N")
    comp.add_argument("--jobs", type=int, default=2, help="runs in parallel (default 2)")
    comp.add_argument("--threads", type=int, help="torch threads per run (default: 1 with --jobs > 1, else all)")
    comp.add_argument("--out", help="output folder (default runs/compare-TASK)")
    comp.add_argument("--cache", help="cache folder for pre-trained priors")

    rep = sub.add_parser("report", help="rebuild table.md, table.csv and compare.png of a `banel compare` folder")
    rep.add_argument("folder", help="the folder given to `banel compare --out`")

    prep = sub.add_parser(
        "prepare",
        help="train and cache a task's models (addition: the target adder and the attacker prior)",
        description="Train (or resume training of) a task's cached models and report how good they are.",
    )
    prep.add_argument("task", help="task name (only addition needs preparing)")
    prep.add_argument("--config", help="a .toml or .json run settings file: its task_options are used")
    prep.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a task option, e.g. max_digits=5 or target.steps=20000 (repeatable)",
    )
    prep.add_argument("--max-seconds", type=float, help="stop target training after this long (resumable)")
    prep.add_argument("--samples", type=int, default=60_000, help="attacker samples for the base success rate")
    prep.add_argument("--seed", type=int, default=0, help="seed of the evaluation draws")
    prep.add_argument("--problems", type=int, default=5000, help="fresh problems for the target's accuracy")
    prep.add_argument("--cache", help="cache folder (default $BANEL_CACHE or ~/.cache/banel)")
    prep.add_argument("--out", help="also write the report as JSON to this file")
    prep.add_argument("--threads", type=int, help=THREADS_HELP)

    sub.add_parser("tasks", help="list the tasks")
    sub.add_parser("methods", help="list the methods")
    return p


def build_config(args: argparse.Namespace) -> RunConfig:
    """Merge the task's default settings, config file, --set overrides and flags into a validated RunConfig."""
    from banel.tasks import DEFAULT_SETTINGS

    data: dict[str, Any] = DEFAULT_SETTINGS.get(args.task, {})
    if args.config:
        data = merge(data, load_file(args.config))
    data = merge(data, parse_overrides(args.overrides))
    flags = {"task": args.task, "method": args.method}
    for name, key in (("seed", "seed"), ("budget", "nre_budget"), ("device", "device")):
        if getattr(args, name) is not None:
            flags[key] = getattr(args, name)
    data = merge(data, flags)
    if getattr(args, "resolution", None) is not None:
        data = merge(data, {"task_options": {"resolution": args.resolution}})
    return from_dict(RunConfig, data)


def cmd_compare(args: argparse.Namespace) -> int:
    """`banel compare`."""
    from banel.methods import METHODS
    from banel.report.compare import compare, parse_methods, parse_seeds

    methods = parse_methods(args.methods, list(METHODS))
    seeds = parse_seeds(args.seeds)
    from banel.tasks import DEFAULT_SETTINGS

    # The same layering as `banel run`: task defaults, then the config file, then --set.
    data: dict[str, Any] = DEFAULT_SETTINGS.get(args.task, {})
    if args.config:
        data = merge(data, load_file(args.config))
    data = merge(data, parse_overrides(args.overrides))
    for key in ("task", "method", "seed"):
        if key in data:
            raise ValueError(f"`banel compare` sets {key} itself; remove {key} from --set/--config")
    for name, key in (("budget", "nre_budget"), ("device", "device")):
        if getattr(args, name) is not None:
            data[key] = getattr(args, name)
    out = Path(args.out or f"runs/compare-{args.task}")
    total = len(methods) * len(seeds)
    print(f"banel compare: {', '.join(methods)} on {args.task}, seeds {seeds}, {args.jobs} jobs -> {out}")
    finished = 0

    def on_done(summary: dict[str, Any]) -> None:
        nonlocal finished
        finished += 1
        print(
            f"[{finished}/{total}] {summary['method']} seed {summary['seed']}: "
            f"best {summary['best_success_rate']:.3e} "
            f"({summary['nre_used']} NREs, {summary['wall_seconds']:.0f} s)",
            flush=True,
        )

    paths = compare(args.task, methods, seeds, data, out, args.jobs, args.cache, on_done, args.threads)
    print(paths[0].read_text())
    for p in paths:
        print(f"wrote {p}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """`banel report`."""
    from banel.report.table import write_report

    paths = write_report(args.folder)
    print(paths[0].read_text())
    for p in paths:
        print(f"wrote {p}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """`banel run`."""
    from banel.methods import METHODS
    from banel.tasks import make_task
    from banel.tasks.protocol import feasibility

    config = build_config(args)
    if config.method not in METHODS:
        raise ValueError(f"unknown method {config.method!r}; available: {', '.join(METHODS)}")
    out = Path(args.out or f"runs/{config.task}-{config.method}-seed{config.seed}")
    if (out / "history.jsonl").exists():
        raise ValueError(f"{out} already holds a run; choose another --out or remove it")
    if config.device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {config.device!r} requested but CUDA is not available")
    task = make_task(config.task, config.task_options, args.cache)
    feasibility(task, config.banel.feasible_only)  # an error now, before the run folder exists
    print(f"banel: {config.method} on {config.task}, seed {config.seed}, budget {config.nre_budget} NREs -> {out}")
    return _execute(config, task, out, args, run_id=None)


def cmd_resume(args: argparse.Namespace) -> int:
    """`banel resume RUN_DIR`: continue a killed run where its last checkpoint left it."""
    from banel.tasks import make_task

    out = Path(args.run_dir)
    if not (out / "config.json").is_file():
        raise FileNotFoundError(f"{out}/config.json does not exist: not a run folder")
    if (out / "summary.json").is_file():
        raise ValueError(f"{out} already finished (summary.json exists); nothing to resume")
    saved = json.loads((out / "config.json").read_text())
    if "run_id" not in saved:
        raise ValueError(f"{out}/config.json has no run_id: the run was not made by a version that can resume")
    config = from_dict(RunConfig, saved["run"])
    task = make_task(config.task, config.task_options, args.cache)
    print(f"banel: resuming {config.method} on {config.task}, seed {config.seed} in {out}")
    return _execute(config, task, out, args, run_id=saved["run_id"])


def _execute(config: RunConfig, task: Any, out: Path, args: argparse.Namespace, run_id: str | None) -> int:
    """Run (or, with a run_id, resume) a method with a progress bar, then print the summary and plot."""
    from banel.cache import folder_lock
    from banel.methods import METHODS
    from banel.report.plots import plot_run
    from banel.runner import Run

    bar = None
    if not args.quiet:
        from tqdm import tqdm

        bar = tqdm(total=config.rounds, desc="rounds", unit="round", file=sys.stderr)

    def on_round(row: dict[str, Any]) -> None:
        if bar is not None:
            sr = row["success_rate"]["rate"] if row.get("success_rate") else None
            bar.set_postfix(
                nre=row["nre_used"],
                best=f"{row['best_success_rate']:.2e}",
                rate="-" if sr is None else f"{sr:.2e}",
            )
            bar.update(1)

    with folder_lock(out):
        run = Run(config, task, out, on_round=on_round, run_id=run_id)
        if run_id is None:
            run.start()
        else:
            run.resume()
            if bar is not None:
                bar.update(run.round_index)
        METHODS[config.method](run)
        summary = run.finish()
    if bar is not None:
        bar.close()
    plots = [] if args.no_plot else plot_run(out)
    print(json.dumps({k: summary[k] for k in summary if k in _SHOWN}, indent=2))
    for p in plots:
        print(f"plot: {p}")
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    """`banel prepare`."""
    from banel.tasks import make_task

    options: dict[str, Any] = load_file(args.config).get("task_options", {}) if args.config else {}
    task = make_task(args.task, merge(options, parse_overrides(args.overrides)), args.cache)
    if not hasattr(task, "prepare"):
        raise ValueError(f"task {args.task!r} has nothing to prepare (its prior trains on first use)")
    report = task.prepare(args.max_seconds, args.samples, args.seed, args.problems)
    for row in report["accuracy_curve"]:
        print(
            f"step {row['step']:6d}  digits<={row['digits']:2d}  loss {row['loss']:.4f}  "
            f"acc@top {row['acc_top_length']:.3f}  acc(all) {row['acc_all']:.3f}"
            + (f"  prior's exact rate {row['prior_rate']:.3e}" if "prior_rate" in row else "")
        )
    state = "finished" if report["target_done"] else "UNFINISHED (run again to resume)"
    if report.get("target_calibrated"):
        state = "finished (calibrated: the prior's exact rate reached target.calibrate_rate)"
    print(f"target: step {report['target_step']}/{report['target_steps']}, {state}, {report['target_path']}")
    by_len = "  ".join(f"{d}:{a:.3f}" for d, a in report["accuracy_by_length"].items())
    print(f"target exact-match accuracy by operand length: {by_len}")
    print(f"target exact-match accuracy: {report['accuracy']:.4f} on {report['accuracy_problems']} problems")
    if "accuracy_exact" in report:
        print(f"target exact-match accuracy over every problem: {report['accuracy_exact']:.6f}")
    base = report["base_success"]
    if base:
        print(
            f"attacker: {report['attacker_path']}; valid queries {report['attacker_valid_rate']:.4f}; "
            f"base success rate {base['rate']:.2e} [{base['low']:.2e}, {base['high']:.2e}] "
            f"({base['k']}/{base['n']}, 95% Clopper-Pearson)"
        )
    if "base_success_exact" in report:
        print(
            f"exact base success rate {report['base_success_exact']:.4e} "
            f"({report['winning_queries']} well-formed queries the target gets wrong)"
        )
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2))
    return 0


_SHOWN = (
    "task",
    "method",
    "seed",
    "nre_used",
    "base_success_rate",
    "best_success_rate",
    "final_success_rate",
    "improvement",
    "queries",
    "successes_found",
    "wall_seconds",
)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `banel` command; returns the exit status."""
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if getattr(args, "verbose", False) else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        if getattr(args, "threads", None) is not None:
            if args.threads < 1:
                raise ValueError(f"--threads must be >= 1, got {args.threads}")
            torch.set_num_threads(args.threads)
        if args.command == "run":
            return cmd_run(args)
        if args.command == "resume":
            return cmd_resume(args)
        if args.command == "compare":
            return cmd_compare(args)
        if args.command == "report":
            return cmd_report(args)
        if args.command == "prepare":
            return cmd_prepare(args)
        if args.command == "tasks":
            from banel.tasks import DEFAULT_SETTINGS, DESCRIPTIONS

            for name, text in DESCRIPTIONS.items():
                print(f"{name:12s} {text}")
                if name in DEFAULT_SETTINGS:
                    print(f"{'':12s} defaults: {json.dumps(DEFAULT_SETTINGS[name])}")
            return 0
        if args.command == "methods":
            from banel.methods import DESCRIPTIONS as METHOD_TEXT

            for name, text in METHOD_TEXT.items():
                print(f"{name:12s} {text}")
            return 0
    except (ValueError, FileNotFoundError, FolderInUse) as err:
        print(f"banel: error: {err}", file=sys.stderr)
        return 2
    return 1


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["main", "build_config", "to_dict"]
