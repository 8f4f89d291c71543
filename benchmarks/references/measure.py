"""Measure the regression references: each pinned command over seeds 0-9, its band, written as NAME.json.

    PYTHONPATH=src python benchmarks/references/measure.py                 # both: ~11 min on one thread
    PYTHONPATH=src python benchmarks/references/measure.py --only toy1d

Every run starts from an empty cache, so it uses the priors shipped with banel (make_priors.py). The pinned
run is seed 0. Another machine computes the same run with other float rounding, and a run whose rounding
differs can take another path, as another seed does; so seed 0 is also run with torch's CPU kernels set to
other instruction sets (ATEN_CPU_CAPABILITY=default and avx2: other rounding, as on another CPU). The
tolerance of each number is the narrowest band centred on the pinned value that holds all these runs (seeds
0-9 and seed 0 under both kernels): rates within a factor F either way, NREs within D. The reference also
records the band of the seeds alone and whether the other-kernel runs fell inside it (out of sample).
The prior's own exact rate is only scored, never trained: a relative tolerance of 1e-4 (float rounding).
tests/test_regression.py runs the pinned command and checks every number against its band.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from make_priors import machine  # noqa: E402 - a sibling script, not a package

SEEDS = tuple(range(10))
KERNELS = ("default", "avx2")
"""ATEN_CPU_CAPABILITY values the pinned seed is also run with (this machine's own is avx512)."""
PINNED_SEED = 0
RATES = ("best_success_rate", "final_success_rate")
COUNTS = ("nre_used",)
PRIOR_TOLERANCE = 1e-4
"""Relative tolerance of the prior's exact rate: scoring a shipped prior differs across CPUs by float rounding."""

REFERENCES: dict[str, tuple[str, list[str]]] = {
    "toy1d": (
        "The README's first command (BaNEL on toy1d, task defaults) with a third of its budget: 10 rounds.",
        ["run", "toy1d", "--budget", "2500"],
    ),
    "digits": (
        "BaNEL on digits (0 -> 6, the task's defaults) for 2 rounds, exact rates over 5,000 of the 50,000 "
        "affine sixes (the prior is the same; scoring 5,000 takes 2.7 s instead of 27 s).",
        ["run", "digits", "--budget", "500", "--set", "task_options.targets=5000"],
    ),
}
"""Name: (what it pins, the command without seed, threads and output flags).

Not here: the small addition attack. It is fast (4 rounds in 16 s) but its short runs cannot tell BaNEL from
the prior: after 4 rounds (`--budget 1000`) seed 0's best is 2.2x the prior's 2.771e-4 while seeds 0-9 and
seed 0 under the other kernels span a factor 2.2 around it (the other kernels alone fell outside the seeds'
band), so a band that holds every measured run almost reaches the prior, and another CPU could leave it;
10 rounds, or feasible_only, spread as much (docs/LOG.md, 2026-12-02). The shipped target and attacker are
checked by their exact base rate instead (tests/test_shipped.py)."""


def run(argv: list[str], seed: int, env: dict[str, str] | None = None) -> tuple[dict[str, Any], float]:
    """The summary and wall seconds of one run from an empty cache, in a fresh process."""
    with tempfile.TemporaryDirectory(prefix="banel-reference-") as tmp:
        command = [
            sys.executable,
            "-m",
            "banel.cli",
            *argv,
            "--seed",
            str(seed),
            "--threads",
            "1",
            "--quiet",
            "--no-plot",
            "--out",
            f"{tmp}/run",
            "--cache",
            f"{tmp}/cache",
        ]
        began = time.time()
        subprocess.run(command, cwd=ROOT, env={**os.environ, **(env or {})}, check=True, stdout=subprocess.DEVNULL)
        seconds = time.time() - began
        trained = sorted(str(p.relative_to(tmp)) for p in Path(tmp, "cache").rglob("*.pt"))
        if trained:
            raise RuntimeError(f"{argv}: trained {trained} instead of using the shipped priors")
        return json.loads(Path(tmp, "run", "summary.json").read_text()), seconds


def band(pinned: float, values: list[float], key: str) -> dict[str, Any]:
    """The narrowest band centred on the pinned value (in log space for rates) that holds every value."""
    if key in RATES:
        factor = max(max(values) / pinned, pinned / min(values))
        return {"factor": factor, "band": [pinned / factor, pinned * factor]}
    spread = max(abs(v - pinned) for v in values)
    return {"absolute": spread, "band": [pinned - spread, pinned + spread]}


def with_bands(reference: dict[str, Any]) -> dict[str, Any]:
    """The reference with its tolerances computed from the runs it records (seeds and other kernels)."""
    pinned = reference["pinned"]
    seeds = list(reference["seeds"].values())
    others = reference["other_kernels"]["values"]
    seed_only = {k: band(pinned[k], [r[k] for r in seeds], k) for k in (*RATES, *COUNTS)}
    reference["other_kernels"]["seeds_band"] = seed_only
    reference["other_kernels"]["within_seeds_band"] = {
        kernel: {k: t["band"][0] <= values[k] <= t["band"][1] for k, t in seed_only.items()}
        for kernel, values in others.items()
    }
    runs = [*seeds, *others.values()]
    tolerance = {k: band(pinned[k], [r[k] for r in runs], k) for k in (*RATES, *COUNTS)}
    base = pinned["base_success_rate"]
    tolerance["base_success_rate"] = {
        "relative": PRIOR_TOLERANCE,
        "band": [base * (1 - PRIOR_TOLERANCE), base * (1 + PRIOR_TOLERANCE)],
    }
    reference["tolerance"] = tolerance
    return reference


def measure(name: str) -> dict[str, Any]:
    """Run one reference over the seeds and under other kernels; its JSON."""
    description, argv = REFERENCES[name]
    seeds: dict[int, dict[str, Any]] = {}
    seconds: dict[int | str, float] = {}
    for seed in SEEDS:
        seeds[seed], seconds[seed] = run(argv, seed)
        print(f"{name} seed {seed}: {json.dumps({k: seeds[seed][k] for k in (*RATES, *COUNTS)})}", flush=True)
    others = {}
    for kernel in KERNELS:
        others[kernel], seconds[f"0 ({kernel})"] = run(argv, PINNED_SEED, {"ATEN_CPU_CAPABILITY": kernel})
    keys = ("base_success_rate", *RATES, *COUNTS, "best_round")
    reference = {
        "reference": name,
        "description": description,
        "command": " ".join(["banel", *argv, "--seed", str(PINNED_SEED), "--threads", "1"]),
        "argv": [*argv, "--seed", str(PINNED_SEED), "--threads", "1"],
        "pinned": {k: seeds[PINNED_SEED][k] for k in keys},
        "tolerance": {},
        "how": (
            f"Each rate may differ from the pinned one (seed {PINNED_SEED}) by a factor F either way, F the "
            f"smallest that holds every run measured: seeds {SEEDS[0]}-{SEEDS[-1]} of the same command and seed "
            f"{PINNED_SEED} under ATEN_CPU_CAPABILITY={' and '.join(KERNELS)} (other float rounding, as on "
            "another CPU); nre_used likewise by an absolute difference; the prior's exact rate (scored, not "
            f"trained) by {PRIOR_TOLERANCE:g} relative. Measured by benchmarks/references/measure.py from an "
            "empty cache (shipped priors) on one thread."
        ),
        "can_fail": (
            "the prior's exact rate (what a method that learns nothing keeps) lies below the band of the best "
            "rate: tests/test_regression.py asserts it"
        ),
        "seeds": {str(s): {k: seeds[s][k] for k in keys} for s in SEEDS},
        "other_kernels": {
            "how": f"seed {PINNED_SEED} with ATEN_CPU_CAPABILITY set (this machine's own kernels: avx512)",
            "values": {kernel: {k: others[kernel][k] for k in keys} for kernel in KERNELS},
        },
        "measured": {
            "date": datetime.date.today().isoformat(),
            "machine": machine(),
            "torch": torch.__version__,
            "seconds": {str(s): round(t, 1) for s, t in seconds.items()},
        },
    }
    return with_bands(reference)


def main(argv: list[str] | None = None) -> int:
    """Measure the chosen references and write benchmarks/references/NAME.json for each."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--only", default=",".join(REFERENCES), help=f"comma-separated, of {', '.join(REFERENCES)}")
    p.add_argument("--bands-only", action="store_true", help="recompute the bands from the runs a JSON records")
    args = p.parse_args(argv)
    for name in [r.strip() for r in args.only.split(",") if r.strip()]:
        if name not in REFERENCES:
            p.error(f"unknown reference {name}; choose from {', '.join(REFERENCES)}")
        path = HERE / f"{name}.json"
        reference = with_bands(json.loads(path.read_text())) if args.bands_only else measure(name)
        path.write_text(json.dumps(reference, indent=2) + "\n")
        print(f"wrote {path}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
