"""The `banel` command line: run, resume, compare, report, prepare, ledger, tasks, methods.

Every setting's help is generated from the docstrings of the config dataclasses (`banel run --help`), a
user's task or method included when its import path is on the command line.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sqlite3
import sys
from pathlib import Path
from typing import Any

import torch

from banel import rundir
from banel.cache import FolderInUse, check_writable_folder
from banel.config import (
    RunConfig,
    SettingError,
    format_settings,
    load_file,
    markdown_settings,
    merge,
    parse_overrides,
    settings,
)
from banel.oracle.ledger_oracle import OracleFailing
from banel.tasks import BUILTIN as BUILTIN_TASKS

RUN_EXAMPLES = """examples:
  banel run toy1d                          BaNEL on the 1D toy, seed 0, results in runs/toy1d-banel-seed0
  banel run toy2d --seed 3 --out my_run    another task, seed and folder
  banel run toy1d --set banel.kappa=2 --set banel.filter_factor=4 --set nre_budget=2500
  banel run toy1d --method rnd --set rnd.hidden=256
  banel run my_pkg.task:make --method my_pkg.method:Greedy   your own task and method, by import path
  banel run toy1d --config settings.toml   settings from a file ([banel], [eval] tables, top-level keys)

a killed run continues with `banel resume RUN_DIR`."""

COMPARE_EXAMPLES = """examples:
  banel compare toy1d --methods banel,rnd,count,base --seeds 0-4
  banel compare toy1d --methods all --seeds 0,3,7 --budget 2500 --out runs/cmp
  banel compare toy1d --methods banel,temperature --set temperature.temperature=1.1
  banel compare toy1d --methods banel,rnd --variant paper=banel.preset=paper   BaNEL twice: defaults and the paper's
  banel compare my_pkg.task:make --methods banel,rnd --seeds 0-9 --backend ray --address auto
  banel report runs/cmp                    rebuild the table and the figure from the run folders"""

THREADS_HELP = (
    "torch threads per run (default 1: with two on a 2-core machine other jobs use, small models ran 1.3-15x "
    "slower, benchmarks/README.md); raise it for large models on a machine of your own"
)
DEFAULT_THREADS = 1


def _threads() -> str:
    n = torch.get_num_threads()
    return f"{n} torch thread{'s' if n > 1 else ''}"


def settings_help(task: str | None = None, method: str | None = None, full: bool = True) -> str:
    """Settings with their type, default and docstring: the run-level ones, then method tables and task options.

    full: every built-in method's table and every built-in task's options (plus `task` and `method` if they are
    import paths); else only the run-level settings, `method`'s table (comma-separated names: each one's)
    and `task`'s options, ending with how to see everything.
    """
    from banel.methods import BUILTIN as BUILTIN_METHODS
    from banel.methods import resolve_method
    from banel.tasks import resolve_task

    run_level = [s for s in settings(RunConfig) if s.path not in ("options", "task_options")]
    parts = [
        "settings (--set KEY=VALUE, or in a config file; tables as [eval], [banel] in TOML):",
        format_settings(run_level),
    ]
    chosen = [m for m in (method or "").split(",") if m]
    if full:
        methods = list(BUILTIN_METHODS) + [m for m in chosen if m not in BUILTIN_METHODS]
        tasks = list(BUILTIN_TASKS) + ([task] if task and task not in BUILTIN_TASKS else [])
    else:
        methods = list(BUILTIN_METHODS) if chosen == ["all"] else chosen
        tasks = [task] if task else []
    for name in methods:
        spec = resolve_method(name)
        header = f"\nmethod {spec.name!r}{'' if name in BUILTIN_METHODS else f' ({name})'}: {spec.description}"
        if spec.options is None:
            parts.append(header + " (no settings)")
        else:
            parts += [header, format_settings(settings(spec.options, f"{spec.name}."))]
    for name in tasks:
        factory = resolve_task(name)[1]
        header = f"\ntask {name}: {factory.description}"
        if factory.defaults:
            header += f"\n  defaults: {json.dumps(factory.defaults)}"
        if factory.options is None:
            parts.append(header + "\n  task_options: a free-form table (the factory gets a dict)")
        else:
            parts += [header, format_settings(settings(factory.options, "task_options."))]
    if not full:
        shown = " and ".join([f"method {', '.join(methods)}"] + ([f"task {task}"] if task else []))
        parts.append(
            f"\nthese are the settings of {shown} only; --help-all lists every built-in method's and task's settings"
        )
    return "\n".join(parts)


SETTINGS_MD_HEADER = """# Settings

Every setting of banel, generated from the declarations (`banel settings --markdown > docs/settings.md`; a
test checks this file is what that command prints now). Set one with `--set PATH=VALUE` or in a `--config`
file (TOML tables or JSON objects named after the path's first part). An error names the path and what it may
be: `banel.negative_fit.lr must be > 0, got -1`."""


def settings_markdown() -> str:
    """docs/settings.md: the run's settings, every built-in method's table and every built-in task's options."""
    from banel.methods import BUILTIN as BUILTIN_METHODS
    from banel.methods import resolve_method
    from banel.tasks import resolve_task

    run_level = [s for s in settings(RunConfig) if s.path not in ("options", "task_options")]
    parts = [SETTINGS_MD_HEADER, markdown_settings("run", run_level)]
    for name in BUILTIN_METHODS:
        spec = resolve_method(name)
        if spec.options is not None:
            items = settings(spec.options, f"{spec.name}.")
            parts.append(markdown_settings(f"method `{name}`: {spec.description}", items))
    for name in BUILTIN_TASKS:
        factory = resolve_task(name)[1]
        if factory.options is not None:
            items = settings(factory.options, "task_options.")
            parts.append(markdown_settings(f"task `{name}`: {factory.description}", items))
    return "\n\n".join(parts) + "\n"


def _parser(help_settings: str = "") -> argparse.ArgumentParser:
    """The argument parser; `help_settings` (built only when help is asked for) ends run's and compare's help."""
    p = argparse.ArgumentParser(
        prog="banel",
        description="Post-train a generative model from failures alone (BaNEL, arXiv 2510.09596).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = p.add_subparsers(dest="command", required=True)
    help_text = help_settings or "settings: banel run TASK --help (yours), banel run --help-all (every one)"

    run = sub.add_parser(
        "run",
        help="run one method on one task",
        description="Run one method on a task and write history.jsonl, config.json, summary.json, the best and "
        "final generators and plots.",
        epilog=RUN_EXAMPLES + "\n\n" + help_text,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("task", help="built-in task name (see `banel tasks`) or an import path module:factory")
    run.add_argument("--method", default="banel", help="built-in method name (`banel methods`) or module:Class")
    _add_settings_flags(run)
    run.add_argument("--seed", type=int, help="root seed (default 0)")
    run.add_argument("--resolution", type=int, help="image side of mnist: 14 or 28 (task_options.resolution)")
    run.add_argument(
        "--out", help="run folder (default runs/NAME-METHOD-seedS, NAME: the built-in task or your task's name)"
    )
    run.add_argument("--no-plot", action="store_true", help="skip the PNG plots")
    run.add_argument("--quiet", action="store_true", help="no progress bar")

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
        "Finished runs are kept and interrupted ones resumed, so re-running continues. Each method reads "
        "its own table: --set banel.kappa=2 --set rnd.hidden=256.",
        epilog=COMPARE_EXAMPLES + "\n\n" + help_text,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    comp.add_argument("task", help="built-in task name or an import path module:factory")
    comp.add_argument("--methods", default="all", help="comma-separated names or module:Class paths, or all")
    comp.add_argument("--seeds", default="0-4", help="0-4 (a range), 0,3,7 (a list) or both (default 0-4)")
    comp.add_argument(
        "--variant",
        dest="variants",
        action="append",
        default=[],
        metavar="NAME=KEY=VALUE,...",
        help="one more row: a method under other settings, run in OUT/NAME and sharing the prior estimate, e.g. "
        "paper=banel.preset=paper or wide=method=rnd,rnd.hidden=2048 (method= picks it, default banel; "
        "repeatable)",
    )
    _add_settings_flags(comp)
    comp.add_argument("--jobs", type=int, default=2, help="runs at a time (default 2; 0 with Ray: all)")
    comp.add_argument("--backend", default="process", choices=("process", "ray"), help="where runs execute")
    comp.add_argument("--address", default="", help="Ray cluster address (default: a local ray.init())")
    comp.add_argument(
        "--out", help="output folder (default runs/compare-NAME, NAME: the built-in task or your task's name)"
    )
    comp.add_argument(
        "--prior-successes",
        type=int,
        default=100,
        help="the shared prior estimate draws until this many successes (default 100: ~10%% precision)",
    )
    comp.add_argument(
        "--prior-max-samples", type=int, default=1_000_000, help="cap on the shared prior estimate's draws"
    )

    rep = sub.add_parser("report", help="rebuild table.md, table.csv and compare.png of a `banel compare` folder")
    rep.add_argument("folder", help="the folder given to `banel compare --out`")

    prep = sub.add_parser(
        "prepare",
        help="train and cache a task's models (addition: the target adder and the attacker prior)",
        description="Train (or resume training of) a task's cached models and report how good they are.",
    )
    prep.add_argument("task", help="task name or import path (only tasks with prepare(), like addition)")
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

    led = sub.add_parser(
        "ledger",
        help="check a run's ledger against its checkpoint and summary, or export its rows",
        description="Every paid evaluation of a run is a row of its SQLite ledger. `check` runs SQLite's "
        "integrity check, counts rows by status, compares the NREs charged with summary.json and checkpoint.pt "
        "and looks for samples paid twice (exit 1 if it finds a problem); `export` writes the rows as CSV or "
        "JSON lines, for archiving.",
    )
    led_sub = led.add_subparsers(dest="ledger_command", required=True)
    check = led_sub.add_parser("check", help="integrity, counts by status, charged NREs, samples paid twice")
    check.add_argument("run_dir", help="the run folder (holds config.json)")
    export = led_sub.add_parser("export", help="write the run's ledger rows as CSV or JSON lines")
    export.add_argument("run_dir", help="the run folder (holds config.json)")
    export.add_argument("--format", default="csv", choices=("csv", "jsonl"), help="csv (a header line) or jsonl")
    export.add_argument("--out", help="file to write (default: standard output)")

    sub.add_parser("tasks", help="list the built-in tasks")
    sub.add_parser("methods", help="list the built-in methods")
    sets = sub.add_parser("settings", help="every setting: path, type, default, allowed values and doc")
    sets.add_argument("--markdown", action="store_true", help="as the tables of docs/settings.md")
    return p


def _add_settings_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="a .toml or .json file of settings")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one setting, e.g. banel.kappa=2 or m=100 (repeatable; every setting is listed below)",
    )
    p.add_argument("--budget", type=int, help="NRE budget (same as --set nre_budget=N)")
    p.add_argument("--device", help="cpu (default), cuda, cuda:N or mps (checked against this machine)")
    p.add_argument("--cache", help="cache folder for pre-trained priors (default $BANEL_CACHE or ~/.cache/banel)")
    p.add_argument("--threads", type=int, help=THREADS_HELP)
    p.add_argument("--help-all", action="store_true", help="--help with every built-in method's and task's settings")


def settings_data(args: argparse.Namespace, **fixed: Any) -> dict[str, Any]:
    """The task's defaults, then the config file, then --set, then flags, as one plain dict."""
    from banel.tasks import resolve_task

    data: dict[str, Any] = dict(resolve_task(args.task)[1].defaults)
    if args.config:
        data = merge(data, load_file(args.config))
    data = merge(data, parse_overrides(args.overrides))
    for name, key in (("budget", "nre_budget"), ("device", "device"), ("seed", "seed")):
        if getattr(args, name, None) is not None:
            fixed[key] = getattr(args, name)
    if getattr(args, "resolution", None) is not None:
        data = merge(data, {"task_options": {"resolution": args.resolution}})
    return merge(data, fixed)


def build_config(args: argparse.Namespace) -> RunConfig:
    """The validated settings of `banel run`: task defaults, config file, --set and flags."""
    from banel.runner import parse_config

    return parse_config(settings_data(args, task=args.task, method=args.method))


class Interrupted(Exception):
    """Ctrl-C during a command; the message says how to continue (exit status 130, as the shell's)."""


SQLITE_HEADER = b"SQLite format 3\x00"
"""The first 16 bytes of every SQLite database file."""


def check_device(device: str) -> None:
    """Raise a SettingError naming `device` unless this machine has that torch device."""
    try:
        kind = torch.device(device)
    except RuntimeError:
        raise SettingError("device", f"must be cpu, cuda, cuda:N or mps; got {device!r}") from None
    if kind.type == "cuda":
        if not torch.cuda.is_available():
            raise SettingError("device", f"is {device!r}, but torch {torch.__version__} sees no CUDA GPU here; use cpu")
        if kind.index is not None and kind.index >= torch.cuda.device_count():
            count = torch.cuda.device_count()
            raise SettingError("device", f"is {device!r}, but this machine has {count} CUDA GPU(s): cuda:0-{count - 1}")
    if kind.type == "mps" and not torch.backends.mps.is_available():
        raise SettingError("device", f"is {device!r}, but this machine has no Apple MPS backend; use cpu")


def check_ledger_file(path: Path, setting: str) -> None:
    """Raise a ValueError naming `setting` unless `path` is an SQLite file or a new file can be made there."""
    if path.is_dir():
        raise ValueError(f"{setting}: {path} is a folder; it must name a file (a new one is created)")
    check_writable_folder(path.parent, setting)
    if path.is_file() and path.stat().st_size:
        with open(path, "rb") as f:
            head = f.read(len(SQLITE_HEADER))
        if head != SQLITE_HEADER:
            raise ValueError(
                f"{setting}: {path} is not an SQLite ledger (it starts with {head[:8]!r}); restore the ledger from a "
                "copy, or choose another file (a new one is created)"
            )


def check_checkpoint(out: Path) -> None:
    """Raise a ValueError saying what to do unless the run's checkpoint.pt, if any, is a run checkpoint."""
    from banel.runner import read_checkpoint

    if (out / rundir.CHECKPOINT).is_file():
        read_checkpoint(out)


def task_label(spec: str, task: Any) -> str:
    """The task's part of a default folder name: a built-in's name as typed, else the task object's `name`
    (what the README's `make` factories share is their function name, never their task), made path-safe."""
    if spec in BUILTIN_TASKS or task is None:
        return spec
    label = re.sub(r"[^A-Za-z0-9._-]+", "-", str(getattr(task, "name", "") or "")).strip("-.")
    return label or "task"


def cmd_run(args: argparse.Namespace) -> int:
    """`banel run`."""
    from banel.methods import resolve_method
    from banel.tasks import make_task
    from banel.tasks.protocol import feasibility

    config = build_config(args)
    name = resolve_method(config.method).name
    check_device(config.device)
    if config.oracle.ledger:
        check_ledger_file(Path(config.oracle.ledger), "oracle.ledger")
    task = make_task(config.task, config.task_options, args.cache)
    feasibility(task, config.feasible_only)  # an error now, before the run folder exists
    out = Path(args.out or f"runs/{task_label(config.task, task)}-{name}-seed{config.seed}")
    rundir.check_new_run(out)
    print(f"banel: {name} on {config.task}, seed {config.seed}, budget {config.nre_budget} NREs, {_threads()} -> {out}")
    return _execute(args, out, config, task)


def cmd_resume(args: argparse.Namespace) -> int:
    """`banel resume RUN_DIR`: continue a killed run where its last checkpoint left it."""
    from banel.runner import read_config

    out = Path(args.run_dir)
    config, _ = read_config(out)
    if (out / "summary.json").is_file():
        raise ValueError(f"{out} already finished (summary.json exists); nothing to resume")
    check_device(config.device)
    check_checkpoint(out)
    if config.oracle.ledger:
        check_ledger_file(Path(config.oracle.ledger), "oracle.ledger")
    else:
        check_ledger_file(out / rundir.LEDGER, "the run's ledger")
    print(f"banel: resuming {config.method} on {config.task}, seed {config.seed}, {_threads()} in {out}")
    return _execute(args, out, config, None)


def _execute(args: argparse.Namespace, out: Path, config: RunConfig, task: Any) -> int:
    """Run (task given) or resume (task None) with a progress bar, then print the summary and plot."""
    from banel.report.plots import plot_run
    from banel.runner import resume_run, run

    bar = None
    if not args.quiet:
        from tqdm import tqdm

        # the first use of a task pre-trains its prior before round 0: say so instead of sitting at 0/N
        print("banel: loading the prior (pre-trained and cached on first use), measuring it...", file=sys.stderr)
        bar = tqdm(total=config.rounds, desc="rounds", unit="round", file=sys.stderr)

    def on_round(row: dict[str, Any]) -> None:
        if bar is not None:
            if bar.n == 0 and row["round"] > 0:
                bar.update(row["round"])  # a resumed run starts after its checkpointed rounds
            sr = row["success_rate"]["rate"] if row.get("success_rate") else None
            best = row.get("selected_best_rate")
            shown = {"nre": row["nre_used"], "found": row.get("successes_found", 0)}
            if sr is not None:  # ground truth: the generator's rate; otherwise paid evidence and drift only
                shown |= {"best": "-" if best is None else f"{best:.2e}", "rate": f"{sr:.2e}"}
            elif row.get("kl_to_prior") is not None:
                shown["kl"] = f"{row['kl_to_prior']:.2f}"
            bar.set_postfix(shown)
            bar.update(1)

    ledger = Path(config.oracle.ledger or out / rundir.LEDGER)
    try:
        if task is None:
            summary = resume_run(out, cache=args.cache, on_round=on_round)
        else:
            summary = run(config, out, task, args.cache, on_round=on_round)
    except OracleFailing as err:  # the run stopped before its checkpoint: resumable as it is
        if bar is not None:
            bar.close()
        print(
            f"banel: error: {err}; the run stopped, continue it with `banel resume {out}` once the oracle works",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:
        hint = (
            f"`banel resume {out}` continues it from its last finished round, paying for nothing twice"
            if (out / rundir.CONFIG).is_file()
            else "nothing was paid yet; run the same command again"
        )
        raise Interrupted(f"interrupted; {hint}") from None
    except sqlite3.Error as err:  # the ledger is the only SQLite file a run opens
        raise ValueError(
            f"the ledger {ledger} cannot be used ({err}): restore it from a copy (with its -wal file), or "
            f"{'choose another oracle.ledger' if config.oracle.ledger else 'move it away'}; what it recorded is "
            "then paid for again"
        ) from None
    finally:
        if bar is not None:
            bar.close()  # before any error line, so that line starts a line of its own
    plots = [] if args.no_plot else plot_run(out)
    print(json.dumps({k: summary[k] for k in summary if k in _SHOWN}, indent=2))
    print(_in_words(summary))
    for p in plots:
        print(f"plot: {p}")
    return 0


def _in_words(summary: dict[str, Any]) -> str:
    """What the summary's numbers mean: NREs paid against asked, and which best is reported."""
    errors = summary.get("evaluation_errors", 0)
    free = max(summary["queries"] - summary["nre_used"] - errors, 0)  # errors are asked, not paid
    lines = [
        f"paid {summary['nre_used']:,} NREs of the {summary['nre_budget']:,} budget for {summary['queries']:,} "
        f"samples asked: {free:,} answered free from the ledger, {errors:,} evaluation errors (not charged)"
    ]
    per_k = summary.get("successes_per_1000_nre")
    low, high = summary.get("paid_success_interval") or (0.0, 1.0)
    lines.append(
        f"paid evidence: {summary['successes_found']} distinct successes"
        + ("" if per_k is None else f", {per_k:.3g} per 1,000 NREs (95% [{1000 * low:.3g}, {1000 * high:.3g}])")
        + f"; kept (keep.rule={summary['kept_rule']}): round {summary['kept_round']}'s generator"
        + ("" if summary.get("kept_success_rate") is None else f", true rate {summary['kept_success_rate']:.3e}")
    )
    if summary.get("best_success_rate") is None:
        lines.append("no free measurement (the task has no exact rate or free reward): no success rate, no best")
        return "\n".join(lines)
    low, high = summary["best_success_interval"]
    how = (
        "exact"
        if summary["success_rate_exact"]
        else f"re-estimated on {summary['best_success_samples']:,} fresh samples"
    )
    lines.append(
        f"best: round {summary['best_round']}'s generator, {summary['best_success_rate']:.3e} ({how}"
        + ("" if summary["success_rate_exact"] else f", 95% [{low:.2e}, {high:.2e}]")
        + f"); its estimate when it was chosen: {summary['selected_best_rate']:.3e}"
    )
    if not summary["success_rate_exact"]:
        same = summary["best_round"] == summary["rounds"] - 1
        lines.append(
            f"final: round {summary['rounds'] - 1}'s generator, {summary['final_success_rate']:.3e} on its "
            "evaluation samples"
            + ("; the same generator as the best: the best's fresh re-estimate is the number to report" if same else "")
        )
    return "\n".join(lines)


def cmd_compare(args: argparse.Namespace) -> int:
    """`banel compare`."""
    from banel.sweep import compare, parse_methods, parse_seeds, parse_variant

    methods = parse_methods(args.methods)
    seeds = parse_seeds(args.seeds)
    variants: dict[str, dict[str, Any]] = {}
    for text in args.variants:
        name, extra = parse_variant(text)
        if name in variants:
            raise ValueError(f"--variant {name} is given twice")
        variants[name] = extra
    data = settings_data(args)
    for key in ("task", "method", "seed"):
        if key in data:
            raise ValueError(f"`banel compare` sets {key} itself; remove {key} from --set/--config")
    if "device" in data:
        check_device(str(data["device"]))
    if args.out:
        out = Path(args.out)
    else:
        from banel.tasks import resolve_task

        task = None if args.task in BUILTIN_TASKS else resolve_task(args.task)[1](data.get("task_options"), args.cache)
        out = Path(f"runs/compare-{task_label(args.task, task)}")
    total = (len(methods) + len(variants)) * len(seeds)
    print(
        f"banel compare: {', '.join([*methods, *variants])} on {args.task}, seeds {seeds}, {args.backend} x "
        f"{args.jobs}, {_threads()} per run -> {out}",
        flush=True,
    )
    finished = 0

    def on_done(summary: dict[str, Any]) -> None:
        nonlocal finished
        finished += 1
        best = summary.get("best_success_rate")
        print(
            f"[{finished}/{total}] {summary['method']} seed {summary['seed']}: "
            + ("" if best is None else f"best {best:.3e}, ")
            + f"{summary['successes_found']} successes found "
            f"({summary['nre_used']} NREs, {summary['wall_seconds']:.0f} s)",
            flush=True,
        )

    try:
        paths = compare(
            args.task,
            methods,
            seeds,
            data,
            out,
            args.jobs,
            args.backend,
            args.address,
            args.cache,
            args.threads,
            on_done,
            args.prior_successes,
            args.prior_max_samples,
            variants=variants,
            on_prior=lambda line: print(f"banel compare: {line}", flush=True),
        )
    except KeyboardInterrupt:
        raise Interrupted(
            "interrupted; the same `banel compare` command continues: finished runs are kept, interrupted ones "
            "resumed from their checkpoints, paying for nothing twice"
        ) from None
    print(paths[0].read_text())
    for p in paths:
        print(f"wrote {p}")
    return 0


def cmd_ledger(args: argparse.Namespace) -> int:
    """`banel ledger check|export RUN_DIR`."""
    from banel.audit import check_run, export_rows

    if args.ledger_command == "check":
        report = check_run(args.run_dir)
        print("\n".join(report.lines))
        return 1 if report.problems else 0
    try:
        if args.out:
            with open(args.out, "w", newline="") as f:
                n = export_rows(args.run_dir, args.format, f)
            print(f"wrote {n} rows to {args.out}")
        else:
            export_rows(args.run_dir, args.format)
    except sqlite3.DatabaseError as err:
        raise ValueError(f"the ledger of {args.run_dir} cannot be read: {err} (`banel ledger check` it)") from None
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """`banel report`."""
    from banel.report.table import write_report

    paths = write_report(args.folder)
    print(paths[0].read_text())
    for p in paths:
        print(f"wrote {p}")
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    """`banel prepare`."""
    from banel.tasks import make_task
    from banel.tasks.protocol import Prepare

    options: dict[str, Any] = load_file(args.config).get("task_options", {}) if args.config else {}
    task = make_task(args.task, merge(options, parse_overrides(args.overrides)), args.cache)
    if not isinstance(task, Prepare):
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
    "best_success_interval",
    "best_round",
    "final_success_rate",
    "rate_sources",
    "improvement",
    "queries",
    "successes_found",
    "successes_per_1000_nre",
    "kept_round",
    "kept_success_rate",
    "wall_seconds",
)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `banel` command; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # as `python -m` does: import paths of the user's own modules resolve
    try:
        full = "--help-all" in argv
        if full:  # argparse prints the help; the settings listed in it are every built-in's
            argv = ["--help" if a == "--help-all" else a for a in argv]
        wants_help = bool({"-h", "--help"} & set(argv))
        help_settings = settings_help(*_named_on_command_line(argv), full=full) if wants_help else ""
        args = _parser(help_settings).parse_args(argv)
    except ValueError as err:  # an import path in a help request that cannot be imported
        print(f"banel: error: {err}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=logging.INFO if getattr(args, "verbose", False) else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        if hasattr(args, "threads"):
            if args.threads is None:
                args.threads = DEFAULT_THREADS
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
        if args.command == "ledger":
            return cmd_ledger(args)
        if args.command == "tasks":
            from banel.tasks import BUILTIN, resolve_task

            for name in BUILTIN:
                factory = resolve_task(name)[1]
                print(f"{name:12s} {factory.description}")
                if factory.defaults:
                    print(f"{'':12s} defaults: {json.dumps(factory.defaults)}")
            print("your own: an import path module:factory (docs/tasks.md)")
            return 0
        if args.command == "settings":
            print(settings_markdown() if args.markdown else settings_help(full=True), end="\n" * (not args.markdown))
            return 0
        if args.command == "methods":
            from banel.methods import BUILTIN, resolve_method

            for name in BUILTIN:
                print(f"{name:12s} {resolve_method(name).description}")
            print("your own: an import path module:Class (docs/tasks.md)")
            return 0
    except (ValueError, FileNotFoundError, FolderInUse) as err:
        print(f"banel: error: {err}", file=sys.stderr)
        return 2
    except (PermissionError, NotADirectoryError, FileExistsError, IsADirectoryError) as err:
        # a path the checks above could not foresee (one changed under the run, a read-only file inside it)
        print(f"banel: error: {err.filename}: {err.strerror}; choose another path or fix it", file=sys.stderr)
        return 2
    except Interrupted as err:
        print(f"banel: error: {err}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("banel: error: interrupted", file=sys.stderr)
        return 130
    return 1


def _named_on_command_line(argv: list[str]) -> tuple[str | None, str | None]:
    """The task and the method(s) of a help request (run: --method, default banel; compare: --methods, default
    all), so that their settings are listed."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("command", nargs="?")
    pre.add_argument("task", nargs="?")
    pre.add_argument("--method", default="banel")
    pre.add_argument("--methods", default="all")
    known, _ = pre.parse_known_args([a for a in argv if a not in ("-h", "--help")])
    if known.command not in ("run", "compare"):
        return None, None
    return known.task, known.method if known.command == "run" else known.methods


if __name__ == "__main__":
    sys.exit(main())
