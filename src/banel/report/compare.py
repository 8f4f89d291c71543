"""`banel compare`: every method on every seed under the same NRE budget, one run folder each, in parallel.

The folder layout is DIR/METHOD/seedS/ (an ordinary run folder each), so `banel report DIR` can rebuild the
table and the figure from the saved runs alone. Finished runs (with a summary.json) are kept and an
interrupted one continues from its checkpoint with the evaluations its ledger recorded, so an interrupted
comparison resumes where it stopped and never pays twice. A finished run is kept only if it ran with the
settings its method reads (a baseline ignores BaNEL's own knobs), so one table never mixes two settings.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from banel.config import RunConfig, from_dict, merge

log = logging.getLogger(__name__)

SHARED_BANEL_KEYS = ("m", "feasible_only")  # the banel.* settings every method reads: round size, feasibility


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
    threads: int | None
    run_id: str | None = None
    """Set when the folder holds an interrupted run of the same settings: resume it."""


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

    from banel.cache import folder_lock
    from banel.methods import METHODS
    from banel.runner import Run
    from banel.tasks import make_task

    if spec.threads is not None:
        torch.set_num_threads(spec.threads)
    config = from_dict(RunConfig, spec.config)
    task = make_task(config.task, config.task_options, spec.cache)
    with folder_lock(spec.out):
        run = Run(config, task, spec.out, run_id=spec.run_id)
        if spec.run_id is None:
            run.start()
        else:
            run.resume()
        METHODS[config.method](run)
        return run.finish()


def plan(
    task: str,
    methods: Sequence[str],
    seeds: Sequence[int],
    base: dict[str, Any],
    out: Path,
    cache: str | None,
    threads: int | None,
) -> tuple[list[RunSpec], list[Path]]:
    """The runs still to do, and the folders of those already finished (validated before anything runs)."""
    from banel.config import to_dict

    todo, done = [], []
    for method in methods:
        for seed in seeds:
            config = to_dict(run_config(base, task, method, seed))
            folder = out / method / f"seed{seed}"
            if (folder / "summary.json").is_file():
                _check_finished_run(folder, config)
                done.append(folder)
                continue
            todo.append(RunSpec(config, str(folder), cache, threads, _interrupted_run(folder, config)))
    return todo, done


def settings_read(config: dict[str, Any]) -> dict[str, Any]:
    """The settings a run of config["method"] reads: all of them, less BaNEL's own knobs for a baseline."""
    read = _plain(config)
    if read.get("method") != "banel" and isinstance(read.get("banel"), dict):
        read["banel"] = {k: v for k, v in read["banel"].items() if k in SHARED_BANEL_KEYS}
    return read


def _plain(config: dict[str, Any]) -> dict[str, Any]:
    """Settings as saved in config.json (tuples as lists, paths as strings), so that equal settings compare equal."""
    return json.loads(json.dumps(config, default=str))


def differing_keys(a: Any, b: Any, prefix: str = "") -> list[str]:
    """Dotted names of the settings that differ between two nested dicts ('banel.kappa', ...)."""
    if not (isinstance(a, dict) and isinstance(b, dict)):
        return [] if a == b else [prefix or "(all)"]
    keys = sorted(set(a) | set(b))
    return [d for k in keys for d in differing_keys(a.get(k), b.get(k), f"{prefix}.{k}" if prefix else k)]


def _check_finished_run(folder: Path, config: dict[str, Any]) -> None:
    """Raise if the finished run in folder ran with other settings than the ones its method reads here."""
    path = folder / "config.json"
    if not path.is_file():
        raise ValueError(f"{folder} holds a finished run without config.json: its settings cannot be checked")
    saved = json.loads(path.read_text()).get("run", {})
    changed = differing_keys(settings_read(saved), settings_read(config))
    if changed:
        raise ValueError(
            f"{folder} holds a finished run with other settings ({', '.join(changed)} differ); "
            "move it, or use another --out, to compare these settings"
        )


def _interrupted_run(folder: Path, config: dict[str, Any]) -> str | None:
    """The run_id of an interrupted run in folder with these settings, None if there is none.

    A run with other settings is an error rather than something to overwrite: its ledger holds paid evaluations.
    """
    path = folder / "config.json"
    if not path.is_file():
        return None
    saved = json.loads(path.read_text())
    if "run_id" not in saved:
        raise ValueError(f"{folder} holds a run without a run_id that cannot be resumed; move it or use another --out")
    changed = differing_keys(_plain(saved["run"]), _plain(config))
    if changed:
        raise ValueError(
            f"{folder} holds an interrupted run with other settings ({', '.join(changed)} differ); "
            "its ledger keeps what it paid for: resume it with the same settings, or use another --out"
        )
    return str(saved["run_id"])


def compare(
    task: str,
    methods: Sequence[str],
    seeds: Sequence[int],
    base: dict[str, Any],
    out: str | Path,
    jobs: int = 2,
    cache: str | None = None,
    on_done: Callable[[dict[str, Any]], None] | None = None,
    threads: int | None = None,
) -> list[Path]:
    """Run every method on every seed in jobs processes and write the table and the figure.

    threads: torch threads per run; by default one when jobs > 1, else torch's own default.
    """
    from banel.report.table import write_report
    from banel.tasks import make_task

    if jobs < 1:
        raise ValueError(f"--jobs must be >= 1, got {jobs}")
    if threads is not None and threads < 1:
        raise ValueError(f"--threads must be >= 1, got {threads}")
    out = Path(out)
    if threads is None and jobs > 1:
        threads = 1
    todo, done = plan(task, methods, seeds, base, out, cache, threads)
    resumed = sum(spec.run_id is not None for spec in todo)
    log.info("compare: %d runs to do (%d interrupted, resumed), %d already finished", len(todo), resumed, len(done))
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
