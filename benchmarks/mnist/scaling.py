"""Fig. 3 recipe: BaNEL's improvement over the prior as a function of p_phi epochs per round, over seeds.

Runs `banel run TASK --set banel.negative_epochs=E --seed S` for every E and S (skipping finished run
folders), then prints and saves a table of the mean best success rate and improvement factor per E.
`--smoke` runs a tiny version (2 rounds of m=20, 1-2 epochs, a small target set) for CI.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch

from banel.cli import main as banel

SMOKE = [
    "banel.m=20",
    "nre_budget=40",
    "banel.generator_epochs=1",
    "task_options.targets=300",
    "task_options.prior_training.augment=200",
    "task_options.prior_training.epochs=1",
]


def main() -> None:
    """Run the sweep and write scaling.json beside the run folders."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--task", default="digits")
    p.add_argument("--epochs", type=int, nargs="+", default=[1, 5, 10, 25, 50])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--out", default="runs/mnist-scaling")
    p.add_argument("--device", default="cpu")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--smoke", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(1)
    epochs, seeds = ([1, 2], [0]) if args.smoke else (args.epochs, args.seeds)
    overrides = (SMOKE if args.smoke else []) + args.overrides
    table = []
    for e in epochs:
        best = []
        base = None
        for s in seeds:
            out = Path(args.out) / f"{args.task}-negepochs{e}-seed{s}"
            if not (out / "summary.json").is_file():
                argv = [
                    "run",
                    args.task,
                    "--seed",
                    str(s),
                    "--out",
                    str(out),
                    "--device",
                    args.device,
                    "--quiet",
                ]
                for pair in [*overrides, f"banel.negative_epochs={e}"]:
                    argv += ["--set", pair]
                if banel(argv) != 0:
                    raise SystemExit(f"run failed: {' '.join(argv)}")
            summary = json.loads((out / "summary.json").read_text())
            best.append(summary["best_success_rate"])
            base = summary["base_success_rate"]
        mean = statistics.fmean(best)
        table.append(
            {
                "negative_epochs": e,
                "seeds": seeds,
                "mean_best": mean,
                "base": base,
                "improvement": mean / base,
            }
        )
        print(f"p_phi epochs {e:3d}: mean best {mean:.3e}, {mean / base:,.1f}x over {len(seeds)} seeds")
    Path(args.out, "scaling.json").write_text(json.dumps(table, indent=2))


if __name__ == "__main__":
    main()
