"""Sweeps: the seeds x methods grid of a comparison, one ordinary run folder per (method, seed).

The folder layout is OUT/METHOD/seedS/, so `banel report OUT` rebuilds the table and the figure from the saved
runs alone. A finished run is kept if it ran with the same settings (else an error: one table never mixes two
settings), an interrupted one continues from its checkpoint and ledger, so re-running a sweep resumes it and
never pays twice.

Backends: `process` runs `jobs` runs at a time in spawned processes; `ray` runs one Ray task per run on a local
`ray.init()` or the cluster at `address`. Either way each run is rebuilt in its worker from plain settings and
the task's import path, so both give identical folders. With Ray on several nodes, run folders, the prior
cache and the SQLite ledgers must live on one filesystem mounted at the same path on every node: each Ray
task checks it can see a marker the driver wrote there, and fails with a clear error otherwise.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import re
import socket
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from banel import rundir
from banel.cache import atomic_write_text, cache_dir
from banel.config import RunConfig, merge, parse_overrides
from banel.eval.success import SuccessRate, prior_estimate
from banel.methods import BUILTIN as BUILTIN_METHODS
from banel.methods import resolve_method
from banel.report.table import PRIOR_FILE, write_report
from banel.runner import config_dict, parse_config, resume_run, run
from banel.tasks import TaskFactory, resolve_task
from banel.tasks.protocol import Task

log = logging.getLogger(__name__)

BACKENDS = ("process", "ray")
MARKER = ".banel-sweep"  # written by the driver where every worker must see it (the shared-storage check)


def parse_seeds(text: str) -> list[int]:
    """'0-4' -> [0, 1, 2, 3, 4]; '0,3,7' -> [0, 3, 7]; both mix ('0-2,9'); a repeated seed is an error."""
    seeds: list[int] = []
    for part in str(text).split(","):
        part = part.strip()
        try:
            if "-" in part:
                lo, hi = part.split("-", 1)
                a, b = int(lo), int(hi)
                if b < a:
                    raise ValueError
                seeds.extend(range(a, b + 1))
            else:
                seeds.append(int(part))
        except ValueError:
            raise ValueError(f"--seeds must look like 0-4 or 0,3,7 (non-negative integers); got {text!r}") from None
    if any(s < 0 for s in seeds):
        raise ValueError(f"--seeds must be non-negative integers; got {text!r}")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds lists a seed twice: {text!r}")
    return seeds


def parse_methods(text: str) -> list[str]:
    """'banel,rnd' -> ['banel', 'rnd']; 'all' is every built-in method; import paths module:Class are allowed."""
    if text.strip() == "all":
        return list(BUILTIN_METHODS)
    methods = [m.strip() for m in text.split(",") if m.strip()]
    if not methods:
        raise ValueError(f"--methods is empty; built-in: {', '.join(BUILTIN_METHODS)}")
    for m in methods:
        resolve_method(m)  # an unknown name or an unimportable path is an error now
    if len(set(methods)) != len(methods):
        raise ValueError(f"--methods lists a method twice: {text!r}")
    return methods


VARIANT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
"""A variant's name: its folder under the comparison's and its row's label."""


def parse_variant(text: str) -> tuple[str, dict[str, Any]]:
    """'paper=banel.preset=paper,m=100' -> ('paper', {'banel': {'preset': 'paper'}, 'm': 100}): a named setting
    of one method (`method=NAME` among the pairs, default banel) run beside --methods in the same comparison.
    Values are parsed as JSON when they can be; a value cannot hold a comma (use a config file for lists)."""
    name, sep, rest = text.partition("=")
    if not sep or not VARIANT_NAME.fullmatch(name) or not rest.strip():
        raise ValueError(
            f"--variant must look like NAME=KEY=VALUE[,KEY=VALUE...] (NAME: letters, digits, . _ -), e.g. "
            f"paper=banel.preset=paper; got {text!r}"
        )
    settings = parse_overrides([pair for pair in rest.split(",") if pair.strip()])
    fixed = sorted(k for k in settings if k in ("task", "seed", "task_options"))
    if fixed:
        raise ValueError(
            f"--variant {name}: {', '.join(fixed)} cannot differ within one comparison (one task, one prior, the "
            "same seeds); set it for the whole comparison, or compare in another --out"
        )
    resolve_method(str(settings.get("method", "banel")))  # an unknown method is an error now
    return name, settings


@dataclass(frozen=True)
class RunSpec:
    """One (method, seed) run of a sweep: its plain settings, its folder, and how its worker is set up."""

    config: dict[str, Any]
    out: str
    cache: str
    threads: int | None
    resume: bool = False
    """The folder holds an interrupted run of the same settings: continue it."""
    sys_path: tuple[str, ...] = ()
    """Import folders of the driver, added in a Ray worker so it imports the user's task and method too."""
    markers: tuple[str, ...] = field(default=())
    """Files the driver wrote on the storage this run needs; a worker that cannot see one fails clearly."""


def run_one(spec: RunSpec, task: Task | TaskFactory | None = None) -> dict[str, Any]:
    """Run (or resume) one planned run in this process and return its summary: the worker of every backend."""
    import torch

    for path in reversed(spec.sys_path):
        if path not in sys.path and os.path.isdir(path):
            sys.path.insert(0, path)
    missing = [m for m in spec.markers if not os.path.exists(m)]
    if missing:
        raise RuntimeError(
            f"worker on {socket.gethostname()} cannot see {missing[0]}: run folders, the prior cache and the "
            "ledgers must be on one filesystem, mounted at the same path on every node (docs/sweeps.md)"
        )
    if spec.threads is not None:
        torch.set_num_threads(spec.threads)
    if task is None or isinstance(task, TaskFactory):
        config = parse_config(spec.config, task)
        built = (task or resolve_task(config.task)[1])(config.task_options, spec.cache)
    else:
        config, built = parse_config(spec.config, TaskFactory(lambda options, cache: task)), task
    if spec.resume:
        return resume_run(spec.out, built, spec.cache)
    return run(config, spec.out, built, spec.cache)


def plan(
    task: str,
    methods: Sequence[str],
    seeds: Sequence[int],
    settings: dict[str, Any],
    out: Path,
    cache: str,
    threads: int | None,
    factory: TaskFactory | None = None,
    variants: dict[str, dict[str, Any]] | None = None,
) -> tuple[list[RunSpec], list[Path]]:
    """The runs still to do and the folders of those already finished, every setting validated first.

    Each method runs under `settings` in OUT/METHOD/; each variant (name -> its own settings over `settings`,
    `method` among them, default banel) in OUT/NAME/."""
    rows = [(resolve_method(m).name, m, settings) for m in methods]
    for name, extra in (variants or {}).items():
        rows.append((name, str(extra.get("method", "banel")), merge(settings, extra)))
    folders = [name for name, _, _ in rows]
    twice = sorted({f for f in folders if folders.count(f) > 1})
    if twice:
        raise ValueError(f"--variant names a folder a method or another variant already uses: {', '.join(twice)}")
    todo, done = [], []
    for name, method, row_settings in rows:
        for seed in seeds:
            data = merge(row_settings, {"task": task, "method": method, "seed": seed})
            config = config_dict(parse_config(data, factory))
            folder = out / name / f"seed{seed}"
            if (folder / rundir.SUMMARY).is_file():
                _check_same_settings(folder, config, "a finished run")
                done.append(folder)
            elif (folder / rundir.CONFIG).is_file():
                _check_same_settings(folder, config, "an interrupted run")
                todo.append(RunSpec(config, str(folder), cache, threads, resume=True))
            else:
                todo.append(RunSpec(config, str(folder), cache, threads))
    return todo, done


def differing_keys(a: Any, b: Any, prefix: str = "") -> list[str]:
    """Dotted names of the settings that differ between two nested dicts ('banel.kappa', ...)."""
    if not (isinstance(a, dict) and isinstance(b, dict)):
        return [] if a == b else [prefix or "(all)"]
    keys = sorted(set(a) | set(b))
    return [d for k in keys for d in differing_keys(a.get(k), b.get(k), f"{prefix}.{k}" if prefix else k)]


def _check_same_settings(folder: Path, config: dict[str, Any], what: str) -> None:
    """Raise if the run in folder ran with other settings: its ledger keeps what it paid for, never overwrite it."""
    saved = json.loads((folder / rundir.CONFIG).read_text())
    if "run_id" not in saved:
        raise ValueError(f"{folder} holds a run without a run_id that cannot be resumed; move it or use another --out")
    plain = json.loads(json.dumps(config, default=str))  # tuples as lists, as config.json holds them
    changed = differing_keys(saved.get("run", {}), plain)
    gone = [k for k in changed if _absent(plain, k)]
    if gone:
        raise ValueError(
            f"{folder} holds {what} made by another banel version, with settings this version does not have "
            f"({', '.join(gone)}); finish it with that version, or move it, or use another --out"
        )
    if changed:
        raise ValueError(
            f"{folder} holds {what} with other settings ({', '.join(changed)} differ); move it, or use another "
            "--out, to run these settings"
        )


def _absent(config: dict[str, Any], dotted: str) -> bool:
    """Whether a dotted setting name is missing from a nested settings dict."""
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return True
        node = node[part]
    return False


def sweep(
    task: str | TaskFactory | Task,
    methods: Sequence[str],
    seeds: Sequence[int],
    settings: dict[str, Any] | None = None,
    out: str | Path = "runs/sweep",
    jobs: int = 2,
    backend: str = "process",
    address: str = "",
    cache: str | Path | None = None,
    threads: int | None = None,
    on_done: Callable[[dict[str, Any]], None] | None = None,
    prior_successes: int = 100,
    prior_max_samples: int = 1_000_000,
    variants: dict[str, dict[str, Any]] | None = None,
    on_prior: Callable[[str], None] | None = None,
) -> list[Path]:
    """Run every method on every seed (finished runs kept, interrupted ones resumed); the finished folders.

    variants: more settings of one method in the same comparison, as labelled rows sharing its prior
    estimate: {name: settings over `settings`, `method` among them (default banel)}, each run in OUT/NAME/.
    on_prior: called with a line before and after the prior's estimate (which can take minutes).

    task: a built-in name, an import path `module:factory`, a factory, or a task object (a factory or task
    without an import path runs in this process only: jobs=1, backend 'process'). threads: torch threads per
    run, by default one when runs share the machine (jobs > 1 or Ray). The prior's success rate is estimated
    once into OUT/prior.json (exact, or Monte Carlo until `prior_successes` successes or `prior_max_samples`
    draws).
    """
    if backend not in BACKENDS:
        raise ValueError(f"--backend must be one of {', '.join(BACKENDS)}; got {backend!r}")
    if jobs < 0 or (jobs == 0 and backend != "ray"):
        raise ValueError(f"--jobs must be >= 1 (0: as many as Ray schedules, with --backend ray); got {jobs}")
    if threads is not None and threads < 1:
        raise ValueError(f"--threads must be >= 1, got {threads}")
    out, cache = Path(out), str(cache_dir(cache))
    path, factory, instance = _task_parts(task)
    if not path and (jobs != 1 or backend != "process"):
        raise ValueError(
            f"task {task!r} has no import path, so worker processes cannot rebuild it: define its factory at "
            "the top level of an importable module and pass 'module:factory', or run with jobs=1"
        )
    if threads is None and (jobs != 1 or backend == "ray"):
        threads = 1
    label = path or getattr(instance, "name", "") or "task"
    todo, done = plan(label, methods, seeds, settings or {}, out, cache, threads, None if path else factory, variants)
    log.info("sweep: %d runs to do (%d resumed), %d finished", len(todo), sum(s.resume for s in todo), len(done))
    # Pre-train (or load) the shared prior once, so that the workers do not all train it at once, and
    # estimate its success rate once: the one denominator of every factor in the table.
    first = parse_config(
        merge(settings or {}, {"task": label, "method": methods[0], "seed": seeds[0]}), None if path else factory
    )
    built = instance or factory(first.task_options, cache)
    write_prior_estimate(out, built, first, prior_successes, prior_max_samples, on_prior)
    if not path:
        for spec in todo:
            _done(run_one(spec, instance or factory), on_done)
    elif backend == "ray" and todo:
        _run_on_ray(todo, jobs, address, out, cache, on_done)
    elif jobs == 1 or len(todo) <= 1:
        for spec in todo:
            _done(run_one(spec), on_done)
    else:
        context = multiprocessing.get_context("spawn")  # fork is unsafe once torch has started its threads
        with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
            for future in as_completed([pool.submit(run_one, spec) for spec in todo]):
                _done(future.result(), on_done)
    return sorted({*done, *(Path(spec.out) for spec in todo)})


def write_prior_estimate(
    out: Path,
    task: Task,
    config: RunConfig,
    successes: int,
    max_samples: int,
    on_prior: Callable[[str], None] | None = None,
) -> SuccessRate | None:
    """The comparison's shared prior estimate, from OUT/prior.json if it was made for these settings, else
    measured now and written there; None (and no file) for a task without free measurement, whose
    comparison is in paid evidence alone (the costly reward is never called to estimate the prior).
    on_prior gets a line before a measurement starts and one when it ends."""
    path = out / PRIOR_FILE
    key = {
        "task": config.task,
        "task_options": config.task_options,
        "device": config.device,
        "successes": successes,
        "max_samples": max_samples,
        "confidence": config.eval.confidence,
    }
    if path.is_file():
        saved = json.loads(path.read_text())
        if saved.get("settings") == json.loads(json.dumps(key, default=str)):
            return SuccessRate(**saved["estimate"])
    started = time.time()
    say = on_prior or (lambda line: log.info("%s", line))
    say(
        f"{time.strftime('%H:%M:%S')} estimating the prior's success rate once for the comparison (exact, or "
        f"prior samples until {successes:,} successes or {max_samples:,} draws)..."
    )
    estimate = prior_estimate(task, task.prior(config.device), successes, max_samples, config.eval.confidence)
    took = time.time() - started
    if estimate is None:
        say(f"{time.strftime('%H:%M:%S')} no free measurement: the comparison is in paid evidence ({took:.0f} s)")
        return None
    how = "exact" if estimate.exact else f"{estimate.successes:,} successes in {estimate.n:,} samples"
    say(f"{time.strftime('%H:%M:%S')} prior's success rate {estimate.rate:.3e} ({how}) in {took:.0f} s")
    out.mkdir(parents=True, exist_ok=True)
    record = {"settings": key, "estimate": estimate.as_dict(), "seconds": round(time.time() - started, 3)}
    atomic_write_text(json.dumps(record, indent=2, default=str), path)
    return estimate


def _task_parts(task: str | TaskFactory | Task) -> tuple[str, TaskFactory, Task | None]:
    """(import path or '', factory, the task object when one was given)."""
    if not isinstance(task, str) and hasattr(task, "reward") and hasattr(task, "prior"):
        return "", TaskFactory(lambda options, cache: task), task
    path, factory = resolve_task(task)
    return path, factory, None


def _done(summary: dict[str, Any], on_done: Callable[[dict[str, Any]], None] | None) -> None:
    if on_done:
        on_done(summary)


def _run_on_ray(
    todo: list[RunSpec],
    jobs: int,
    address: str,
    out: Path,
    cache: str,
    on_done: Callable[[dict[str, Any]], None] | None,
) -> None:
    """One Ray task per run, at most `jobs` in flight (0: all), each first checking the shared storage."""
    try:
        import ray
    except ImportError:
        raise ValueError("--backend ray needs Ray: pip install 'banel[ray]'") from None
    started = not ray.is_initialized()
    if started:
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(num_cpus=max(jobs, 1), include_dashboard=False, log_to_driver=False)
    token = uuid.uuid4().hex
    markers = []
    for folder in {out, Path(cache)}:
        folder.mkdir(parents=True, exist_ok=True)
        marker = folder / f"{MARKER}-{token}"
        marker.write_text(socket.gethostname())
        markers.append(str(marker))
    sys_path = tuple(dict.fromkeys(p for p in (os.getcwd(), *sys.path) if p and os.path.isdir(p)))
    threads = todo[0].threads or 1
    remote = ray.remote(num_cpus=threads, max_retries=0)(run_one)
    try:
        pending = list(todo)
        running: list[Any] = []
        while pending or running:
            while pending and (jobs == 0 or len(running) < jobs):
                spec = pending.pop(0)
                spec = RunSpec(**{**spec.__dict__, "sys_path": sys_path, "markers": tuple(markers)})
                running.append(remote.remote(spec))
            ready, running = ray.wait(running, num_returns=1)
            _done(ray.get(ready[0]), on_done)
    finally:
        for marker in markers:
            Path(marker).unlink(missing_ok=True)
        if started:
            ray.shutdown()


def compare(task: str | TaskFactory | Task, *args: Any, **kwargs: Any) -> list[Path]:
    """`sweep` (same arguments), then the table and the figure of the whole folder: table.md, table.csv and
    compare.png under `out`."""
    sweep(task, *args, **kwargs)
    out = kwargs.get("out", args[3] if len(args) > 3 else "runs/sweep")
    return write_report(out)
