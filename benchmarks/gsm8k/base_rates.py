"""The prior's success rate on GSM8K questions, to pick those in the sparse regime (paper: 1e-4 to 3e-3).

Usage: python benchmarks/gsm8k/base_rates.py --shortest 4 --samples 128 [--questions 143,942] [--set KEY=VALUE]
Each question's count is cached (CACHE/gsm8k-base/), so a killed pass resumes at the next question. Prints a
table (successes, samples, rate with its 95% Clopper-Pearson interval, answers that state a number, answers
cut at max_new_tokens, seconds) and writes it as JSON with --out.
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

from banel.config import from_dict, parse_overrides
from banel.tasks.gsm8k import GSM8KOptions, base_rates, find_gsm8k, load_questions


def shortest(options: GSM8KOptions, k: int) -> list[int]:
    """The k questions of the split with the shortest text (cheapest to answer, often the easiest)."""
    rows = load_questions(find_gsm8k(options.data_dir or None, options.split))
    return sorted(range(len(rows)), key=lambda i: (len(rows[i]["question"]), i))[:k]


def main() -> None:
    """Measure and print the base rates."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--questions", default="", help="comma-separated question indices")
    p.add_argument("--shortest", type=int, default=0, help="also the K shortest questions")
    p.add_argument("--samples", type=int, default=128, help="answers per question")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--set", dest="overrides", action="append", default=[], help="a task option, e.g. max_new_tokens=128"
    )
    p.add_argument("--cache", help="cache folder (default $BANEL_CACHE or ~/.cache/banel)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", help="also write the records as JSON here")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    sys.path.insert(0, os.getcwd())
    options = from_dict(GSM8KOptions, parse_overrides(args.overrides), "task_options.")
    questions = [int(q) for q in args.questions.split(",") if q.strip()]
    questions += [q for q in shortest(options, args.shortest) if q not in questions]
    records = []
    print(f"{'question':>8} {'k/n':>9} {'rate':>9} {'95% interval':>22} {'stated':>7} {'cut':>6} {'s':>6}", flush=True)
    for q in questions:
        started = time.time()
        (record,) = base_rates(replace(options, question=q), [q], args.samples, args.seed, args.cache)
        record.setdefault("seconds", round(time.time() - started, 1))
        records.append(record)
        print(
            f"{q:8d} {record['successes']:>4}/{record['samples']:<4} {record['rate']:9.2e} "
            f"[{record['low']:.2e}, {record['high']:.2e}] {record['stated_fraction']:7.2f} "
            f"{record['truncated_fraction']:6.2f} {record['seconds']:6.0f}",
            flush=True,
        )
    if args.out:
        Path(args.out).write_text(json.dumps(records, indent=2))


if __name__ == "__main__":
    main()
