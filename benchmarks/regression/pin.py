"""Pin the regression tier: short runs' per-round trajectories, with tolerances from the spread across CPU kernels.

    PYTHONPATH=src python benchmarks/regression/pin.py                  # both: ~4 min on one thread
    PYTHONPATH=src python benchmarks/regression/pin.py --only toy1d,toy2d
    PYTHONPATH=src python benchmarks/regression/pin.py --add            # widen the spread with this CPU's runs

Each pinned command runs from an empty cache (so it uses the priors shipped with banel) on one torch thread,
once with this machine's own kernels (the reference) and once under each other code path we can select on
this CPU (`variants`: torch's own kernels by `ATEN_CPU_CAPABILITY`; MKL's and oneDNN's by their environment
variables, since the BLAS and oneDNN dispatch by CPU on their own and `ATEN_CPU_CAPABILITY` does not reach
them). These are other float rounding, the nearest one machine has to another CPU, and not the same: on
2026-12-07 an AVX2-only AMD EPYC parted from a reference pinned with ATEN kernels alone on an AVX-512 one
at toy1d's round 3 (docs/LOG.md). So `--add` runs the same set on another machine and adds its runs to the
reference's, which stays the one it was. For every quantity of every round (exact success rate, NREs paid, τ,
the negative model's and the generator's loss, drift, successes found) the spread is the largest relative
difference |a - b| / max(|a|, |b|) between any two of the recorded runs; the quantity's tolerance is
TOLERANCE_MULTIPLE times its spread, never below TOLERANCE_FLOOR. A quantity whose tolerance would let a 2x
change pass (relative difference 0.5) is refused: pin.py stops rather than write a tier that cannot fail.

Writes benchmarks/regression/NAME.json: the command, the reference trajectory, the spread and tolerance per
quantity, every kernel's trajectory and the environment (torch, CPU model, its SIMD flags, the kernels run).
tests/test_regression.py runs each command in-process and compares it with `violations`.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent

PINS: dict[str, tuple[str, list[str]]] = {
    "toy1d": (
        "BaNEL on toy1d (the README's first command) for 5 rounds of m = 250.",
        ["run", "toy1d", "--budget", "1250"],
    ),
    "toy2d": (
        "BaNEL on toy2d (the two circles of Fig. 1) for 5 rounds of m = 250.",
        ["run", "toy2d", "--budget", "1250"],
    ),
}
"""Name: (what it pins, the command without seed, threads and output flags). Seed 0 throughout.

Not here: digits. Two rounds (`--budget 500 --set task_options.targets=5000`) took 41 s on the idle Intel
machine of 2026-12-02 but 164 s on the loaded AMD EPYC of 2026-12-07, over the tier's minute a run; and its
best there was 1.10e-8 against 7.49e-10 on the Intel machine (docs/LOG.md, 2026-12-07)."""

SEED = 0
ROUND_QUANTITIES = (
    "success_rate",
    "nre_used",
    "tau",
    "negative_loss",
    "generator_loss",
    "kl_to_prior",
    "drift_nll",
    "successes_found",
)
"""Per-round numbers pinned (history.jsonl; success_rate is its `rate`). A None (round 0's τ) must stay None."""
SUMMARY_QUANTITIES = ("base_success_rate", "best_success_rate", "final_success_rate", "nre_used", "best_round")
TOLERANCE_MULTIPLE = 10.0
"""Tolerance = this many times the largest relative difference measured across kernels..."""
TOLERANCE_FLOOR = 1e-4
"""...never below this (a kernel pair that agreed to the last bit measures a spread of 0)."""
TOLERANCE_CEILING = 0.25
"""pin.py refuses a tolerance above this: a 2x change (relative difference 0.5) must fail with margin."""


def relative_difference(a: float | None, b: float | None) -> float:
    """|a - b| / max(|a|, |b|): 0 when equal, 0.5 for a factor 2, 1 for opposite signs; inf if one is None."""
    if a is None or b is None:
        return 0.0 if a is b else math.inf
    if a == b:
        return 0.0
    return abs(a - b) / max(abs(a), abs(b))


def trajectory(run_dir: Path) -> dict[str, Any]:
    """The pinned numbers of a finished run folder: one dict per round (history.jsonl) and the summary's."""
    rounds = []
    for line in (run_dir / "history.jsonl").read_text().splitlines():
        row = json.loads(line)
        if row["round"] < 0:  # the prior's row: its rate is the summary's base_success_rate
            continue
        values = {q: row.get(q) for q in ROUND_QUANTITIES}
        values["success_rate"] = row["success_rate"]["rate"] if row.get("success_rate") else None
        rounds.append({"round": row["round"], **values})
    summary = json.loads((run_dir / "summary.json").read_text())
    return {"rounds": rounds, "summary": {q: summary[q] for q in SUMMARY_QUANTITIES}}


def _numbers(t: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A trajectory's pinned numbers, keyed as tolerances are: "round R" and "summary" to {quantity: value}."""
    out = {f"round {row['round']}": {q: row[q] for q in ROUND_QUANTITIES} for row in t["rounds"]}
    return {**out, "summary": dict(t["summary"])}


def violations(pinned: dict[str, Any], measured: dict[str, Any]) -> list[str]:
    """Every pinned number the measured trajectory misses by more than its tolerance, in words; [] if none.
    A round the measured run lacks counts as every number of it missed (a None)."""
    want, got = _numbers(pinned["trajectory"]), _numbers(measured)
    found = []
    for where, tolerances in pinned["tolerance"].items():
        for q, tolerance in tolerances.items():
            a, b = want[where][q], got.get(where, {}).get(q)
            d = relative_difference(a, b)
            if d > tolerance:
                found.append(f"{where} {q}: {b!r}, pinned {a!r} (relative difference {d:.3g} > {tolerance:.3g})")
    return found


def spreads(runs: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per round (and the summary) and quantity, the largest relative difference between any two runs."""
    numbers = [_numbers(r) for r in runs]
    return {
        where: {q: max(relative_difference(a[where][q], b[where].get(q)) for a in numbers for b in numbers) for q in qs}
        for where, qs in numbers[0].items()
    }


def tolerances(spread: dict[str, dict[str, float]]) -> tuple[dict[str, dict[str, float]], list[str]]:
    """TOLERANCE_MULTIPLE x spread, at least TOLERANCE_FLOOR, for the rounds before the first one where the
    kernels' paths part (some quantity's tolerance above TOLERANCE_CEILING) and the summary numbers that
    stay within it; and, in words, what is left unpinned and why."""
    pinned: dict[str, dict[str, float]] = {}
    unpinned = []
    parted = False
    for where, quantities in spread.items():
        wide = {q: s for q, s in quantities.items() if _tolerance(s) > TOLERANCE_CEILING}
        if where == "summary":
            pinned[where] = {q: _tolerance(s) for q, s in quantities.items() if q not in wide}
            unpinned += [f"summary {q} (kernels {s:.3g} apart)" for q, s in wide.items()]
            continue
        parted = parted or bool(wide)
        if parted:
            unpinned.append(f"{where}" + (f" (kernels {_apart(wide)} apart)" if wide else " (after the paths part)"))
            continue
        pinned[where] = {q: _tolerance(s) for q, s in quantities.items()}
    if sum(w != "summary" for w in pinned) < 2:
        raise RuntimeError(f"the kernels' paths part before round 1: nothing worth pinning ({unpinned})")
    return pinned, unpinned


def _tolerance(spread: float) -> float:
    return max(TOLERANCE_MULTIPLE * spread, TOLERANCE_FLOOR)


def _apart(wide: dict[str, float]) -> str:
    return ", ".join(f"{q} {s:.3g}" for q, s in wide.items())


def cpu() -> dict[str, Any]:
    """This CPU's model and the SIMD flags that decide torch's kernels."""
    model, flags = platform.processor() or platform.machine(), []
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name") and model in (platform.processor(), platform.machine()):
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = sorted(f for f in line.split(":", 1)[1].split() if f.startswith(("avx", "fma", "sse4")))
                break
    system = f"{platform.machine()}, {platform.system()} {platform.release()}"
    return {"model": model, "machine": system, "flags": flags}


SELECTORS = ("ATEN_CPU_CAPABILITY", "MKL_CBWR", "MKL_ENABLE_INSTRUCTIONS", "ONEDNN_MAX_CPU_ISA")
"""The environment variables that choose a code path; every run starts with none of them set."""


def variants(flags: list[str]) -> dict[str, dict[str, str]]:
    """The code paths this CPU can run besides its native one: a label and the environment that selects it."""
    aten = ["default", *(["avx2"] if "avx2" in flags else []), *(["avx512"] if "avx512f" in flags else [])]
    return {
        **{k: {"ATEN_CPU_CAPABILITY": k} for k in aten},
        # MKL's reproducible mode takes a BLAS path no particular CPU takes natively; the sum order differs
        "mkl-compatible": {"MKL_CBWR": "COMPATIBLE"},
        # oneDNN's oldest x86 path, as a CPU without AVX would run it
        "onednn-sse41": {"ONEDNN_MAX_CPU_ISA": "SSE41"},
    }


def run(argv: list[str], selects: dict[str, str]) -> tuple[dict[str, Any], float]:
    """The trajectory and wall seconds of one run from an empty cache, in a fresh process ({}: native)."""
    env = {k: v for k, v in os.environ.items() if k not in SELECTORS} | {"OMP_NUM_THREADS": "1"} | selects
    with tempfile.TemporaryDirectory(prefix="banel-pin-") as tmp:
        command = [sys.executable, "-m", "banel.cli", *argv, "--seed", str(SEED), "--threads", "1", "--quiet"]
        command += ["--no-plot", "--out", f"{tmp}/run", "--cache", f"{tmp}/cache"]
        began = time.time()
        subprocess.run(command, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
        seconds = time.time() - began
        trained = sorted(str(p.relative_to(tmp)) for p in Path(tmp, "cache").rglob("*.pt"))
        if trained:
            raise RuntimeError(f"{argv}: trained {trained} instead of using the shipped priors")
        return trajectory(Path(tmp, "run")), seconds


def native_capability() -> str:
    """The kernels torch picks on this CPU without ATEN_CPU_CAPABILITY."""
    out = subprocess.run(
        [sys.executable, "-c", "import torch; print(torch.backends.cpu.get_cpu_capability())"],
        env={k: v for k, v in os.environ.items() if k not in SELECTORS},
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


def with_tolerances(reference: dict[str, Any]) -> dict[str, Any]:
    """The reference with its spreads and tolerances computed from the runs it records."""
    spread = spreads([reference["trajectory"], *reference["kernels"].values()])
    reference["spread"] = spread
    reference["tolerance"], reference["not_pinned"] = tolerances(spread)
    others = "; ".join(reference["kernels"])
    reference["how"] = (
        "Per round (and the summary) and quantity, the spread is the largest relative difference "
        f"|a - b| / max(|a|, |b|) between any two of the reference (the native run) and the runs: {others} (a "
        "label names an ATEN_CPU_CAPABILITY, or MKL's or oneDNN's code path, see pin.py's variants; one prefixed "
        "by a CPU was run on that CPU, environment['added']); the "
        f"tolerance is {TOLERANCE_MULTIPLE:g}x the spread, at least {TOLERANCE_FLOOR:g}. Rounds from the first one "
        f"where a tolerance would exceed {TOLERANCE_CEILING:g} on are not pinned (the kernels' paths part there: "
        "see not_pinned), nor are such summary numbers. Written by benchmarks/regression/pin.py from an empty "
        "cache (shipped priors), one torch thread; tests/test_regression.py compares a fresh run with it."
    )
    return reference


def pin(name: str) -> dict[str, Any]:
    """Run one pinned command natively and under every variant; its reference JSON."""
    import torch

    description, argv = PINS[name]
    machine = cpu()
    runs, seconds = {}, {}
    for label, selects in {"native": {}, **variants(machine["flags"])}.items():
        runs[label], seconds[label] = run(argv, selects)
        print(f"{name} {label}: {json.dumps(runs[label]['summary'])} ({seconds[label]:.1f} s)", flush=True)
    return {
        "reference": name,
        "description": description,
        "command": " ".join(["banel", *argv, "--seed", str(SEED), "--threads", "1"]),
        "argv": [*argv, "--seed", str(SEED), "--threads", "1"],
        "trajectory": runs.pop("native"),
        "kernels": runs,
        "environment": {
            "date": datetime.date.today().isoformat(),
            "torch": torch.__version__,
            "python": platform.python_version(),
            "cpu": machine,
            "native_capability": native_capability(),
            "seconds": {label: round(s, 1) for label, s in seconds.items()},
        },
    }


def add(reference: dict[str, Any], name: str) -> dict[str, Any]:
    """The reference with this machine's native and variant runs added to its runs, labelled by this CPU."""
    measured = pin(name)
    env = measured["environment"]
    where = f"{env['cpu']['model']} {env['native_capability']}"
    runs = {"native": measured["trajectory"], **measured["kernels"]}
    reference["kernels"] |= {f"{where}: {label}": t for label, t in runs.items()}
    added = [e for e in reference["environment"].get("added", []) if e["label"] != where]
    reference["environment"]["added"] = [*added, {"label": where, **env}]
    return reference


def main(argv: list[str] | None = None) -> int:
    """Pin the chosen commands and write benchmarks/regression/NAME.json for each."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--only", default=",".join(PINS), help=f"comma-separated, of {', '.join(PINS)}")
    p.add_argument("--recompute", action="store_true", help="the tolerances again from the runs a JSON records")
    p.add_argument("--add", action="store_true", help="this CPU's runs added to the pinned ones, reference kept")
    args = p.parse_args(argv)
    for name in [r.strip() for r in args.only.split(",") if r.strip()]:
        if name not in PINS:
            p.error(f"unknown pin {name}; choose from {', '.join(PINS)}")
        path = HERE / f"{name}.json"
        if args.add:
            reference = add(json.loads(path.read_text()), name)
        elif args.recompute:
            reference = json.loads(path.read_text())
        else:
            reference = pin(name)
        path.write_text(json.dumps(reference, indent=2) + "\n")  # the runs survive a refusal below
        reference = with_tolerances(reference)
        path.write_text(json.dumps(reference, indent=2) + "\n")
        print(f"wrote {path}; not pinned: {reference['not_pinned']}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
