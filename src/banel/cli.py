"""The `banel` command line: `banel run TASK`, `banel tasks`."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

import torch

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
task_options.*, method_options.*"""


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
    run.add_argument("--out", help="run folder (default runs/TASK-METHOD-seedS)")
    run.add_argument(
        "--cache", help="cache folder for pre-trained priors (default $BANEL_CACHE or ~/.cache/banel)"
    )
    run.add_argument("--no-plot", action="store_true", help="skip the PNG plots")
    run.add_argument("--quiet", action="store_true", help="no progress bar")

    prep = sub.add_parser(
        "prepare",
        help="train and cache a task's models (addition: the target adder and the attacker prior)",
        description="Train (or resume training of) a task's cached models and report how good they are.",
    )
    prep.add_argument("task", help="task name (only addition needs preparing)")
    prep.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a task option, e.g. max_digits=5 or target.steps=20000 (repeatable)",
    )
    prep.add_argument("--max-seconds", type=float, help="stop target training after this long (resumable)")
    prep.add_argument(
        "--samples", type=int, default=60_000, help="attacker samples for the base success rate"
    )
    prep.add_argument("--seed", type=int, default=0, help="seed of the evaluation draws")
    prep.add_argument("--problems", type=int, default=5000, help="fresh problems for the target's accuracy")
    prep.add_argument("--cache", help="cache folder (default $BANEL_CACHE or ~/.cache/banel)")
    prep.add_argument("--out", help="also write the report as JSON to this file")

    sub.add_parser("tasks", help="list the tasks")
    sub.add_parser("methods", help="list the methods")
    return p


def build_config(args: argparse.Namespace) -> RunConfig:
    """Merge defaults, config file, flags and --set overrides into a validated RunConfig."""
    data: dict[str, Any] = {}
    if args.config:
        data = load_file(args.config)
    data = merge(data, parse_overrides(args.overrides))
    flags = {"task": args.task, "method": args.method}
    for name, key in (("seed", "seed"), ("budget", "nre_budget"), ("device", "device")):
        if getattr(args, name) is not None:
            flags[key] = getattr(args, name)
    data = merge(data, flags)
    return from_dict(RunConfig, data)


def cmd_run(args: argparse.Namespace) -> int:
    """`banel run`."""
    from banel.methods import METHODS
    from banel.report.plots import plot_run
    from banel.runner import Run
    from banel.tasks import make_task

    config = build_config(args)
    if config.method not in METHODS:
        raise ValueError(f"unknown method {config.method!r}; available: {', '.join(METHODS)}")
    out = Path(args.out or f"runs/{config.task}-{config.method}-seed{config.seed}")
    if (out / "history.jsonl").exists():
        raise ValueError(f"{out} already holds a run; choose another --out or remove it")
    if config.device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {config.device!r} requested but CUDA is not available")
    task = make_task(config.task, config.task_options, args.cache)
    print(
        f"banel: {config.method} on {config.task}, seed {config.seed}, budget {config.nre_budget} NREs -> {out}"
    )
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

    run = Run(config, task, out, on_round=on_round)
    run.start()
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

    task = make_task(args.task, parse_overrides(args.overrides), args.cache)
    if not hasattr(task, "prepare"):
        raise ValueError(f"task {args.task!r} has nothing to prepare (its prior trains on first use)")
    report = task.prepare(args.max_seconds, args.samples, args.seed, args.problems)
    for row in report["accuracy_curve"]:
        print(
            f"step {row['step']:6d}  digits<={row['digits']:2d}  loss {row['loss']:.4f}  "
            f"acc@top {row['acc_top_length']:.3f}  acc(all) {row['acc_all']:.3f}"
        )
    state = "finished" if report["target_done"] else "UNFINISHED (run again to resume)"
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
        if args.command == "run":
            return cmd_run(args)
        if args.command == "prepare":
            return cmd_prepare(args)
        if args.command == "tasks":
            from banel.tasks import DESCRIPTIONS

            for name, text in DESCRIPTIONS.items():
                print(f"{name:12s} {text}")
            return 0
        if args.command == "methods":
            from banel.methods import DESCRIPTIONS as METHOD_TEXT

            for name, text in METHOD_TEXT.items():
                print(f"{name:12s} {text}")
            return 0
    except (ValueError, FileNotFoundError) as err:
        print(f"banel: error: {err}", file=sys.stderr)
        return 2
    return 1


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["main", "build_config", "to_dict"]
