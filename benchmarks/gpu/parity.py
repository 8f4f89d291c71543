"""CUDA against the CPU: the shipped priors scored on the device, and 3-round BaNEL runs, beside the CPU numbers
recorded in benchmarks/gpu/cpu_reference.json.

    PYTHONPATH=src python benchmarks/gpu/parity.py --record                      # a CPU: rewrite the reference
    PYTHONPATH=src python benchmarks/gpu/parity.py --device cuda --out F.json    # a GPU: compare, write F.json
    PYTHONPATH=src python benchmarks/gpu/parity.py --smoke --out F.json          # a CPU, toy settings, seconds

What can honestly be compared. The priors of toy1d, digits and small addition are shipped weights, the same
bytes on every machine, so (1) the log-probabilities of fixed sequences (8 prior draws stored in the reference)
and (2) each prior's exact success rate differ only by float32 rounding in other kernels (cuBLAS against the
CPU's): |Δ log p| <= LOGP_ATOL nats and the rate within RATE_RTOL (a shift of δ nats in every log p moves a
rate by a factor e^δ ≈ 1 + δ). Small addition's rate also depends on the target model's greedy answers, so a
near-tie flipped by rounding can move one query's mass: a miss there is worth reading, not proof of a bug.
(3) The runs themselves cannot agree sample for sample: sampling on CUDA draws from the device's Philox
generator, not the CPU's Mersenne Twister, so the same seed gives other candidates and another trajectory. Their
best and final exact rates are compared with the spread of the CPU seeds: inside [min / BAND, max × BAND].
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from banel.rundir import read_history
from banel.runner import parse_config, run
from banel.sequences import Sequences
from banel.tasks import make_task

REFERENCE = Path(__file__).with_name("cpu_reference.json")
LOGP_ATOL = 1e-3
"""Nats: float32 rounding over at most 64 tokens is ~1e-5; a thousandth leaves room, a real bug is far above."""
RATE_RTOL = 1e-3
"""Relative: the same weights' exact rate, moved only by the rounding LOGP_ATOL bounds."""
BAND = 10.0
"""Factor around the CPU seeds' range: three seeds under-state the spread of a 3-round run's rate."""
SEQUENCES = 8
REFERENCE_SEEDS = (0, 1, 2)
RUNS: dict[str, dict[str, Any]] = {
    # Each task's defaults for 3 rounds (round 0 unfiltered, rounds 1-2 filtered and distilled), an exact rate
    # after every round; digits with 2,000 target sixes, not 50,000 (an exact rate over 50,000 is 40 s of a CPU).
    "toy1d": {"m": 250, "nre_budget": 750},
    "digits": {
        "m": 250,
        "nre_budget": 750,
        "eval": {"every": 1, "drift_samples": 0},
        "task_options": {"targets": 2000},
    },
    "addition": {
        "m": 250,
        "nre_budget": 750,
        "eval": {"every": 1, "drift_samples": 0},
        "task_options": json.loads((Path(__file__).parents[1] / "addition" / "small.json").read_text())["task_options"],
    },
}
SMOKE: dict[str, dict[str, Any]] = {
    task: {**settings, "m": 20, "nre_budget": 60, "banel": {"negative_epochs": 1, "generator_epochs": 1}}
    for task, settings in RUNS.items()
}
SMOKE["digits"]["task_options"] = {"targets": 200}


def one_run(task_name: str, settings: dict[str, Any], device: str, seed: int, cache: str | None) -> dict[str, Any]:
    """A BaNEL run of these settings in a temporary folder: its rates per evaluated round, NREs and seconds."""
    config = parse_config({"task": task_name, "method": "banel", "device": device, "seed": seed, **settings})
    with tempfile.TemporaryDirectory() as folder:
        started = time.time()
        summary = run(config, Path(folder) / "run", task=make_task(config.task, config.task_options, cache))
        curve = [r["success_rate"]["rate"] for r in read_history(Path(folder) / "run") if r.get("success_rate")]
    keep = ("base_success_rate", "best_success_rate", "final_success_rate", "best_round", "nre_used", "rounds")
    return {**{k: summary[k] for k in keep}, "curve": curve, "seconds": round(time.time() - started, 1)}


def prior_numbers(task_name: str, settings: dict[str, Any], device: str, cache: str | None, x: Sequences | None):
    """(sequences, their log p, the exact rate) of a task's prior on `device`; x: the sequences to score, else
    SEQUENCES fresh draws (seed 0)."""
    task = make_task(task_name, settings.get("task_options"), cache)
    prior = task.prior(device)
    x = x if x is not None else prior.sample(SEQUENCES, seed=0)
    return x, prior.log_prob(x).tolist(), task.exact_success_rate(prior)


def record(tasks: list[str], smoke: bool, cache: str | None) -> dict[str, Any]:
    """The CPU reference: per task the settings, SEQUENCES prior draws with their log p, the prior's exact rate
    and a run per seed of REFERENCE_SEEDS (seed 0 alone in smoke mode)."""
    runs, seeds = (SMOKE, (0,)) if smoke else (RUNS, REFERENCE_SEEDS)
    out: dict[str, Any] = {
        "made": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "torch": torch.__version__,
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "tolerances": {"logp_atol": LOGP_ATOL, "rate_rtol": RATE_RTOL, "band": BAND},
        "tasks": {},
    }
    for name in tasks:
        x, logp, rate = prior_numbers(name, runs[name], "cpu", cache, None)
        out["tasks"][name] = {
            "settings": runs[name],
            "sequences": {"tokens": x.tokens.tolist(), "lengths": x.lengths.tolist()},
            "log_prob": logp,
            "prior_exact_rate": rate,
            "runs": {str(s): one_run(name, runs[name], "cpu", s, cache) for s in seeds},
        }
        print(f"{name}: recorded", json.dumps(out["tasks"][name]["runs"])[:300], flush=True)
    return out


def in_band(value: float, reference: list[float]) -> bool:
    """value within [min / BAND, max × BAND] of the reference values."""
    return min(reference) / BAND <= value <= max(reference) * BAND


def compare(
    reference: dict[str, Any], tasks: list[str], device: str, cache: str | None, out: Path | None
) -> dict[str, Any]:
    """Each task's prior and seed-0 run on `device`, checked against the reference; every check with its numbers,
    written to `out` after each task (a run cut at its deadline keeps the tasks it finished)."""
    result: dict[str, Any] = {"device": device, "reference_made": reference["made"], "tasks": {}, "passed": True}
    for name in tasks:
        ref = reference["tasks"][name]
        stored = Sequences(torch.tensor(ref["sequences"]["tokens"]), torch.tensor(ref["sequences"]["lengths"]))
        _, logp, rate = prior_numbers(name, ref["settings"], device, cache, stored)
        logp_diff = max(abs(a - b) for a, b in zip(logp, ref["log_prob"], strict=True))
        rate_diff = abs(rate - ref["prior_exact_rate"]) / ref["prior_exact_rate"]
        got = one_run(name, ref["settings"], device, 0, cache)
        cpu = list(ref["runs"].values())
        checks = {
            "prior_logp": {"max_abs_diff": logp_diff, "tolerance": LOGP_ATOL, "ok": logp_diff <= LOGP_ATOL},
            "prior_exact_rate": {
                "device": rate,
                "cpu": ref["prior_exact_rate"],
                "rel_diff": rate_diff,
                "tolerance": RATE_RTOL,
                "ok": rate_diff <= RATE_RTOL,
            },
        }
        for key in ("best_success_rate", "final_success_rate"):
            values = [r[key] for r in cpu]
            checks[key] = {"device": got[key], "cpu_seeds": values, "band": BAND, "ok": in_band(got[key], values)}
        result["tasks"][name] = {"checks": checks, "run": got}
        result["passed"] &= all(c["ok"] for c in checks.values())
        print(f"{name}: " + ", ".join(f"{k} {'ok' if c['ok'] else 'MISS'}" for k, c in checks.items()), flush=True)
        if out is not None:
            out.write_text(json.dumps(result, indent=1) + "\n")
    return result


def main(argv: list[str] | None = None) -> int:
    """Record the CPU reference or compare a device with it; 0 when every check passed (or after recording)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--record", action="store_true", help=f"run on the CPU and write {REFERENCE.name}")
    p.add_argument("--smoke", action="store_true", help="toy settings on the CPU, against a fresh CPU reference")
    p.add_argument("--device", default="cuda", help="the device compared with the reference (default cuda)")
    p.add_argument("--tasks", default=",".join(RUNS), help=f"comma-separated, of {', '.join(RUNS)}")
    p.add_argument("--reference", default=str(REFERENCE), help="the reference JSON")
    p.add_argument("--cache", help="prior cache (default: banel's)")
    p.add_argument("--out", help="where to write the comparison (JSON)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    tasks = [t for t in args.tasks.split(",") if t]
    if unknown := sorted(set(tasks) - set(RUNS)):
        p.error(f"--tasks: unknown {', '.join(unknown)}")
    if args.record:
        Path(args.reference).write_text(json.dumps(record(tasks, False, args.cache), indent=1) + "\n")
        return 0
    # Smoke: the recorded reference's runs are too long for CI, so compare the CPU with a toy reference made now.
    reference = record(tasks, True, args.cache) if args.smoke else json.loads(Path(args.reference).read_text())
    device = "cpu" if args.smoke else args.device
    result = compare(reference, tasks, device, args.cache, Path(args.out) if args.out else None)
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
