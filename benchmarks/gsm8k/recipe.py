"""GSM8K-Hard on one GPU (paper Section 5.2, Fig. 4), as one prepared command with a time limit.

    python benchmarks/gsm8k/recipe.py --device cuda --out OUT            # the GPU run (about 10 minutes)
    python benchmarks/gsm8k/recipe.py --smoke --out OUT                  # the same code path on a CPU, seconds

Steps, each printed with a timestamp so that a run cut at its limit still says how far it got:
1. the base-rate pass: the prior's success rate on each candidate question (`--candidates`, default the
   paper's six and the shortest test questions) from `--base-samples` answers, cached;
2. the questions whose rate lies in [--low, --high] (the paper's sparse regime 1e-4..3e-3), at most `--pick`;
3. `banel compare` of BaNEL and RND on each of them (one run per question and seed, as the paper), until
   the time limit (`--minutes`, never starting a run that cannot finish);
4. `summary.md` and `summary.json`: per question the prior's rate, each method's selection-free best with its
   interval, NREs and seconds; the per-question tables beside them.

Smoke mode builds a random tiny Llama and a two-question GSM8K file (`banel.testing.write_tiny_lm`) and
runs every step at toy sizes on the CPU: the recipe cannot rot (tests/test_benchmark_scripts.py).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from banel.config import from_dict, merge, parse_overrides
from banel.sweep import compare
from banel.tasks import resolve_task
from banel.tasks.gsm8k import PAPER_QUESTIONS, GSM8KOptions, base_rates, find_gsm8k, load_questions

STARTED = time.time()


def say(text: str) -> None:
    """A progress line with the seconds since the start."""
    print(f"[{time.time() - STARTED:7.1f} s] {text}", flush=True)


def main() -> None:
    """Run the recipe."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--device", default="cpu", help="cuda on the GPU machine")
    p.add_argument("--smoke", action="store_true", help="a tiny random model on the CPU, seconds")
    p.add_argument("--candidates", default="", help="question indices (default: the paper's six + 10 shortest)")
    p.add_argument("--base-samples", type=int, default=1000, help="answers per candidate in the base-rate pass")
    p.add_argument("--low", type=float, default=1e-4, help="lowest prior rate of a picked question")
    p.add_argument("--high", type=float, default=3e-3, help="highest prior rate of a picked question")
    p.add_argument("--pick", type=int, default=3, help="questions to run at most")
    p.add_argument("--methods", default="banel,rnd")
    p.add_argument("--seeds", default="0")
    p.add_argument("--minutes", type=float, default=10.0, help="wall-clock limit of the whole recipe")
    p.add_argument("--set", dest="overrides", action="append", default=[], help="a run setting (KEY=VALUE)")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, os.getcwd())
    torch.set_num_threads(1 if args.device == "cpu" else torch.get_num_threads())
    task_options: dict = {"max_new_tokens": 256, "dtype": "bfloat16" if args.device.startswith("cuda") else "float32"}
    settings: dict = {
        "m": 250,
        "nre_budget": 7500,
        "device": args.device,
        "eval": {"samples": 10_000, "every": 3, "drift_samples": 0, "metric_samples": 500},
    }
    candidates = [int(q) for q in args.candidates.split(",") if q.strip()]
    if args.smoke:
        from banel.testing import write_tiny_lm

        tiny = write_tiny_lm(out / "tiny-lm")
        task_options = {"model": str(tiny / "model"), "data_dir": str(tiny / "data"), "max_new_tokens": 6}
        task_options.update(lora_rank=4, sample_batch=64)
        settings = {"m": 8, "nre_budget": 16, "device": "cpu", "eval": {"samples": 200, "drift_samples": 0}}
        settings["banel"] = {"filter_factor": 2, "negative_epochs": 1, "generator_epochs": 1}
        settings["rnd"] = {"hidden": 32, "layers": 2}
        candidates, args.base_samples, args.low, args.high = candidates or [0, 1], 100, 0.0, 1.0
    for key, value in parse_overrides(args.overrides).items():
        if key == "task_options":  # --set task_options.max_new_tokens=128: one option, the others kept
            task_options.update(value)
        else:
            settings[key] = value
    # the task's own BaNEL, RND and count settings (Section 5.2's), as `banel compare gsm8k` applies them:
    # Python's compare takes settings as given
    settings = merge(resolve_task("gsm8k")[1].defaults, settings)
    options = from_dict(GSM8KOptions, task_options, "task_options.")
    if not candidates:
        rows = load_questions(find_gsm8k(options.data_dir or None, options.split))
        shortest = sorted(range(len(rows)), key=lambda i: (len(rows[i]["question"]), i))[:10]
        candidates = list(dict.fromkeys([*PAPER_QUESTIONS, *shortest]))
    say(f"base-rate pass: {len(candidates)} questions x {args.base_samples} answers on {args.device}")
    records = []
    for q in candidates:
        (record,) = base_rates(replace(options, question=q), [q], args.base_samples, cache=out / "cache")
        records.append(record)
        say(f"question {q}: {record['successes']}/{record['samples']} ({record['rate']:.2e})")
    picked = [r["question"] for r in records if args.low <= r["rate"] <= args.high][: args.pick]
    say(f"picked {picked} (prior rate in [{args.low:g}, {args.high:g}])")
    results = []
    for q in picked:
        elapsed = time.time() - STARTED
        if results and elapsed + max(r["seconds"] for r in results) > 60 * args.minutes:
            say(f"stopping before question {q}: the next run would pass the {args.minutes:g}-minute limit")
            break
        started = time.time()
        folder = out / f"q{q}"
        compare(
            "gsm8k",
            args.methods.split(","),
            [int(s) for s in args.seeds.split(",")],
            {**settings, "task_options": {**task_options, "question": q}},
            folder,
            jobs=1,
            cache=out / "cache",
            prior_successes=20,
            prior_max_samples=args.base_samples * 2,
        )
        seconds = time.time() - started
        rows = {}
        for summary in folder.rglob("summary.json"):
            s = json.loads(summary.read_text())
            rows[f"{s['method']}-seed{s['seed']}"] = {
                k: s[k]
                for k in ("best_success_rate", "best_success_interval", "best_round", "nre_used", "wall_seconds")
            }
        prior = json.loads((folder / "prior.json").read_text())["estimate"]
        results.append({"question": q, "prior": prior, "runs": rows, "seconds": seconds})
        say(
            f"question {q}: done in {seconds:.0f} s: "
            + ", ".join(f"{k} {v['best_success_rate']:.2e}" for k, v in rows.items())
        )
    (out / "summary.json").write_text(json.dumps({"base_rates": records, "results": results}, indent=2))
    lines = [
        "| question | prior | run | best (selection-free) | 95% interval | NREs | seconds |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        for name, v in r["runs"].items():
            low, high = v["best_success_interval"]
            lines.append(
                f"| {r['question']} | {r['prior']['rate']:.2e} | {name} | {v['best_success_rate']:.2e} "
                f"| [{low:.2e}, {high:.2e}] | {v['nre_used']} | {v['wall_seconds']:.0f} |"
            )
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    say(f"wrote {out / 'summary.md'} and {out / 'summary.json'}")


if __name__ == "__main__":
    main()
