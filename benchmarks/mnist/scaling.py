"""Fig. 3 recipe: BaNEL's improvement over the prior as a function of p_phi epochs per round, over seeds.

Runs `banel run TASK --set banel.negative_epochs=E --seed S` for every E and S (skipping finished run
folders; `--jobs` runs at a time, one torch thread each), then prints and saves scaling.json and
scaling.png: the mean best success rate's improvement over the prior per E, each seed as a dot, and,
with `--reference COMPARE_DIR`, the mean best of the other methods of a `banel compare` folder as
horizontal lines (the paper's RND and count-based references).
`--smoke` runs a tiny version (2 rounds of m=20, 1-2 epochs, a small target set) to check the script.
"""

from __future__ import annotations

import argparse
import csv
import json
import multiprocessing
import statistics
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from banel.cli import main as banel  # noqa: E402

SMOKE = [
    "m=20",
    "nre_budget=40",
    "banel.generator_epochs=1",
    "task_options.targets=300",
    "task_options.prior_training.augment=200",
    "task_options.prior_training.epochs=1",
]


def run_one(argv: list[str]) -> None:
    """One `banel run` on one torch thread (a worker process of the sweep)."""
    torch.set_num_threads(1)
    if banel(argv) != 0:
        raise SystemExit(f"run failed: banel {' '.join(argv)}")


def reference_lines(folder: Path) -> dict[str, float]:
    """Mean best success rate per method of a `banel compare` folder's table.csv (BaNEL and the prior left out)."""
    path = folder / "table.csv"
    if not path.is_file():
        raise SystemExit(f"--reference {folder}: no table.csv (run `banel report {folder}` first)")
    with path.open() as f:
        rows = list(csv.DictReader(f))
    return {row["method"]: float(row["mean"]) for row in rows if row["method"] not in ("banel", "base")}


def plot(table: list[dict], references: dict[str, float], path: Path) -> None:
    """Improvement over the prior against p_phi epochs (log-log), seeds as dots, references as lines."""
    base = table[0]["base"]
    fig, ax = plt.subplots(figsize=(5, 3.6))
    epochs = [row["negative_epochs"] for row in table]
    ax.plot(epochs, [row["improvement"] for row in table], "o-", color="C0", label="BaNEL (mean of bests)")
    for row in table:
        dots = [b / base for b in row["best"]]
        ax.scatter([row["negative_epochs"]] * len(dots), dots, s=10, color="C0", alpha=0.35)
    for i, (method, mean) in enumerate(sorted(references.items())):
        ax.axhline(mean / base, color=f"C{i + 1}", linestyle="--", label=f"{method} (mean of bests)")
    ax.set(xscale="log", yscale="log", xlabel="p_phi epochs per round", ylabel="improvement over the prior")
    ax.set_xticks(epochs, [str(e) for e in epochs])
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)


def main() -> None:
    """Run the sweep and write scaling.json and scaling.png beside the run folders."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--task", default="digits")
    p.add_argument("--epochs", type=int, nargs="+", default=[1, 5, 10, 25, 50])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--out", default="runs/mnist-scaling")
    p.add_argument("--config", help="a settings file for every run (banel run --config)")
    p.add_argument("--cache", help="prior cache folder (banel run --cache)")
    p.add_argument("--reference", help="a `banel compare` folder whose other methods are drawn as lines")
    p.add_argument("--jobs", type=int, default=1, help="runs at a time, one torch thread each")
    p.add_argument("--device", default="cpu")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--smoke", action="store_true")
    args = p.parse_args()
    if args.jobs < 1:
        raise SystemExit(f"--jobs must be >= 1, got {args.jobs}")
    epochs, seeds = ([1, 2], [0]) if args.smoke else (args.epochs, args.seeds)
    overrides = (SMOKE if args.smoke else []) + args.overrides
    out = Path(args.out)

    def folder(e: int, s: int) -> Path:
        return out / f"{args.task}-negepochs{e}-seed{s}"

    todo = []
    for e in epochs:
        for s in seeds:
            if (folder(e, s) / "summary.json").is_file():
                continue
            argv = ["run", args.task, "--seed", str(s), "--out", str(folder(e, s)), "--device", args.device]
            argv += ["--quiet"] + (["--config", args.config] if args.config else [])
            argv += ["--cache", args.cache] if args.cache else []
            for pair in [*overrides, f"banel.negative_epochs={e}"]:
                argv += ["--set", pair]
            todo.append(argv)
    if todo:
        run_one(todo[0])  # also pre-trains the prior once, before the workers all want it
    if len(todo) > 1:
        with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            list(pool.map(run_one, todo[1:]))

    table = []
    for e in epochs:
        summaries = [json.loads((folder(e, s) / "summary.json").read_text()) for s in seeds]
        best = [summary["best_success_rate"] for summary in summaries]
        base = summaries[0]["base_success_rate"]
        mean = statistics.fmean(best)
        row = {"negative_epochs": e, "seeds": seeds, "best": best, "mean_best": mean, "base": base}
        row |= {"improvement": mean / base, "median_improvement": statistics.median(best) / base}
        row["wall_seconds"] = [summary["wall_seconds"] for summary in summaries]
        table.append(row)
        print(
            f"p_phi epochs {e:3d}: mean best {mean:.3e} ({mean / base:,.1f}x), "
            f"median {row['median_improvement']:,.1f}x over {len(seeds)} seeds"
        )
    references = reference_lines(Path(args.reference)) if args.reference else {}
    for method, mean in sorted(references.items()):
        print(f"{method} (reference): mean best {mean:.3e} ({mean / table[0]['base']:,.1f}x)")
    (out / "scaling.json").write_text(json.dumps({"sweep": table, "references": references}, indent=2))
    plot(table, references, out / "scaling.png")
    print(f"wrote {out / 'scaling.json'} and {out / 'scaling.png'}")


if __name__ == "__main__":
    main()
