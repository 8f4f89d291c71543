"""`banel compare`: every method on every seed under the same NRE budget, one run folder each, in parallel.

The folder layout is DIR/METHOD/seedS/ (an ordinary run folder each), so `banel report DIR` can rebuild the
table and the figure from the saved runs alone. Finished runs (with a summary.json) are kept, so an
interrupted comparison resumes where it stopped.
"""

from __future__ import annotations

import logging
import multiprocessing
import shutil
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from banel.config import RunConfig, from_dict, merge

log = logging.getLogger(__name__)


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


def parse_methods(text: str, available: Sequence[str]) -> list[str]:
    """'banel,rnd' -> ['banel', 'rnd'], each checked against the available methods ('all' for every one)."""
    if text.strip() == "all":
        return list(available)
    methods = [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in methods if m not in available]
    if unknown or not methods:
        raise ValueError(f"unknown method(s) {unknown or text!r}; available: {', '.join(available)}")
    if len(set(methods)) != len(methods):
        raise ValueError(f"--methods lists a method twice: {text!r}")
    return methods


@dataclass(frozen=True)
class RunSpec:
    """One (method, seed) run of a comparison: its full settings and its folder."""

    config: dict[str, Any]
    out: str
    cache: str | None
    threads: int


def run_config(base: dict[str, Any], task: str, method: str, seed: int) -> RunConfig:
    """The RunConfig of one run: shared settings, plus this method's own method_options.METHOD table."""
    data = dict(base)
    per_method = data.pop("method_options", {}) or {}
    stray = [k for k in per_method if not isinstance(per_method[k], dict)]
    if stray:
        raise ValueError(
            f"in a comparison, method options are per method (method_options.METHOD.KEY); got method_options.{stray[0]}"
        )
    data = merge(data, {"task": task, "method": method, "seed": seed})
    data["method_options"] = per_method.get(method, {})
    return from_dict(RunConfig, data)


def run_one(spec: RunSpec) -> dict[str, Any]:
    """Run one method on one seed in this process and return its summary (the worker of `compare`)."""
    import torch

    from banel.methods import METHODS
    from banel.runner import Run
    from banel.tasks import make_task

    torch.set_num_threads(spec.threads)
    config = from_dict(RunConfig, spec.config)
    task = make_task(config.task, config.task_options, spec.cache)
    run = Run(config, task, spec.out)
    run.start()
    METHODS[config.method](run)
    return run.finish()


def plan(
    task: str,
    methods: Sequence[str],
    seeds: Sequence[int],
    base: dict[str, Any],
    out: Path,
    cache: str | None,
    threads: int,
) -> tuple[list[RunSpec], list[Path]]:
    """The runs still to do, and the folders of those already finished (validated before anything runs)."""
    from banel.config import to_dict

    todo, done = [], []
    for method in methods:
        for seed in seeds:
            config = run_config(base, task, method, seed)
            folder = out / method / f"seed{seed}"
            if (folder / "summary.json").is_file():
                done.append(folder)
                continue
            todo.append(RunSpec(to_dict(config), str(folder), cache, threads))
    return todo, done


def compare(
    task: str,
    methods: Sequence[str],
    seeds: Sequence[int],
    base: dict[str, Any],
    out: str | Path,
    jobs: int = 2,
    cache: str | None = None,
    on_done: Callable[[dict[str, Any]], None] | None = None,
) -> list[Path]:
    """Run every method on every seed (jobs processes, one thread each) and write the table and the figure."""
    from banel.report.table import write_report
    from banel.tasks import make_task

    if jobs < 1:
        raise ValueError(f"--jobs must be >= 1, got {jobs}")
    out = Path(out)
    todo, done = plan(task, methods, seeds, base, out, cache, threads=1 if jobs > 1 else 2)
    log.info("compare: %d runs to do, %d already finished", len(todo), len(done))
    for spec in todo:
        if Path(spec.out).exists():
            # An interrupted run of ours (no summary.json): start it again from its config.
            shutil.rmtree(spec.out)
    if todo:
        # Pre-train (or load) the shared prior once, so that the workers do not all train it at once.
        first = from_dict(RunConfig, todo[0].config)
        make_task(task, first.task_options, cache).prior(first.device)
    if jobs == 1 or len(todo) <= 1:
        for spec in todo:
            summary = run_one(spec)
            if on_done:
                on_done(summary)
    else:
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
            futures = [pool.submit(run_one, spec) for spec in todo]
            for future in as_completed(futures):
                summary = future.result()
                if on_done:
                    on_done(summary)
    return write_report(out)
