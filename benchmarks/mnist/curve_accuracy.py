"""How far the cheap intermediate evaluations (`eval.exact_subset`, `eval.bf16_curves`) are from the full rate.

For the digits prior and the generators a short BaNEL run saved (generator-best.pt, generator-final.pt):
the exact success rate over every target in float32 scoring with float64 accumulation (what a run reports),
then the subset estimates for several subset seeds, the bf16-autocast rate, and the time of each.

    python benchmarks/mnist/curve_accuracy.py --run runs/digits-banel-seed0 --subset 5000 --seeds 5

Writes curve_accuracy.json next to this script (or --out).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch

from banel.eval.success import _bf16
from banel.runner import load_generator
from banel.tasks import make_task


def _timed(fn):
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def main() -> None:
    """Measure and write the comparison."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", action="append", default=[], help="a digits run folder (repeatable)")
    p.add_argument("--subset", type=int, default=5000)
    p.add_argument("--seeds", type=int, default=5, help="subset seeds per model")
    p.add_argument("--cache", default=None)
    p.add_argument("--out", default=str(Path(__file__).with_name("curve_accuracy.json")))
    args = p.parse_args()
    torch.set_num_threads(1)
    task = make_task("digits", {}, args.cache)
    models = {"prior": task.prior("cpu")}
    for run in args.run:
        for which in ("best", "final"):
            models[f"{Path(run).name} {which}"] = load_generator(run, which)
    rows = []
    for name, model in models.items():
        full, t_full = _timed(lambda model=model: task.exact_success_rate(model))
        subsets = []
        for seed in range(args.seeds):
            value, t_subset = _timed(lambda model=model, seed=seed: task.subset_success_rate(model, args.subset, seed))
            subsets.append(value)
        with _bf16(model):
            bf16, t_bf16 = _timed(lambda model=model: task.exact_success_rate(model))
        errors = [v / full - 1 for v in subsets]
        rows.append(
            {
                "model": name,
                "full": full,
                "seconds_full": t_full,
                "subset": args.subset,
                "subset_rates": subsets,
                "subset_relative_error_median_abs": statistics.median(abs(e) for e in errors),
                "subset_relative_error_max_abs": max(abs(e) for e in errors),
                "seconds_subset": t_subset,
                "bf16": bf16,
                "bf16_relative_error": bf16 / full - 1,
                "seconds_bf16": t_bf16,
            }
        )
        r = rows[-1]
        print(
            f"{name:28s} full {full:.4e} ({t_full:.1f} s) | subset {args.subset}: median |err| "
            f"{r['subset_relative_error_median_abs']:.1%}, max {r['subset_relative_error_max_abs']:.1%} "
            f"({t_subset:.1f} s) | bf16 {r['bf16_relative_error']:+.2%} ({t_bf16:.1f} s)",
            flush=True,
        )
    meta = {"targets": len(task.targets), "load": os.getloadavg(), "torch": torch.__version__}
    meta["cpu"] = torch.backends.cpu.get_cpu_capability()
    Path(args.out).write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
