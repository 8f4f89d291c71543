"""Recipe for the addition attack (paper Appendix B.1, blog table and scaling figure).

    python benchmarks/addition/run.py --mode smoke --out /tmp/addition-smoke     # a few minutes, CI
    python benchmarks/addition/run.py --mode small --out runs/addition-small      # 2-digit operands, ~1 h CPU
    python benchmarks/addition/run.py --mode full --out runs/addition-bench       # hours on CPU

Steps (each writes into --out): (1) prepare the target and the attacker and measure the target's accuracy
and the prior's success rate; (2) every method over the seeds with m = 250, 30 rounds (Table-2 style:
mean, median, std of the best success rate, improvement factors); (3) the single-round experiment (one
large batch of prior samples, all failures kept, one negative model, kappa = 2, filter factor f); (4) the
failure-mode report (prior samples, accepted samples, successes found); (5) the compute-scaling sweep of
negative-model epochs in the no-leading-zeros variant. Methods run through `banel compare`
(OUT/compare/METHOD/seedS), so an interrupted recipe resumes where it stopped.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from failures import failure_modes, failure_table, plot_failure_modes, read_successes

from banel.eval.success import clopper_pearson
from banel.filters import Filter, ratio_scores
from banel.models.protocol import FitConfig
from banel.report.table import collect
from banel.sequences import Sequences, derive_seed
from banel.sweep import compare
from banel.tasks import make_task
from banel.tasks.adder import encode
from banel.tasks.addition import ATTACKER_INDEX, has_leading_zero, well_formed_queries

SMOKE_TASK = {
    "max_digits": 3,
    "target": {
        "d_model": 32,
        "n_layer": 1,
        "n_head": 2,
        "steps": 300,
        "warmup": 50,
        "start_digits": 1,
        "eval_every": 100,
        "eval_problems": 128,
    },
    "attacker": {"samples": 3000, "epochs": 2, "d_model": 32, "n_layer": 1, "n_head": 2},
}
# Operands of 1-2 digits, as `banel run --config` reads it. The target stops where the prior's exact success
# rate first falls to target.calibrate_rate (6e-4; the paper's base rate is 4e-4): a fixed number of steps gives
# different mistakes on different CPUs (1500 steps: 4 wrong problems on one machine, none on another).
SMALL_TASK: dict[str, Any] = json.loads((Path(__file__).with_name("small.json")).read_text())["task_options"]
# The paper's setting (App. B.1): operands of 1-10 digits, m = 250, 7,500 NREs, single round f = 319 on 300,000.
FULL: dict[str, Any] = {
    "task": json.loads((Path(__file__).with_name("paper.json")).read_text())["task_options"],
    "prepare_samples": 60_000,
    "prepare_problems": 5000,
    "seeds": [0, 1, 2, 3, 4],
    "budget": 7500,
    "m": 250,
    "negative_epochs": 50,
    "generator_epochs": 15,
    "eval_samples": 10_000,
    "eval_every": 5,
    "single_n": 300_000,
    "single_f": 319,
    "single_epochs": 5,
    "single_eval": 10_000,
    "scaling_epochs": [1, 2, 5, 10, 20, 50],
    "scaling_seeds": [0, 1, 2],
    # BaNEL beside the paper's algorithm: the task's free syntax check in the ranking, and free draws of the
    # filtered proposal in the distillation set (no NREs either way); also the setting of the scaling sweep
    "variant": {"feasible_only": True, "distil_samples": 2000},
    "single_exact_f": [2, 4, 8, 16, 32, 64, 128, 319, 1000],
}
MODES: dict[str, dict[str, Any]] = {
    "smoke": {
        "task": SMOKE_TASK,
        "prepare_samples": 2000,
        "prepare_problems": 500,
        "seeds": [0, 1],
        "budget": 300,
        "m": 100,
        "negative_epochs": 5,
        "generator_epochs": 3,
        "eval_samples": 1000,
        "eval_every": 1,
        "single_n": 2000,
        "single_f": 4,
        "single_epochs": 3,
        "single_eval": 500,
        "scaling_epochs": [1, 5],
        "scaling_seeds": [0],
        "variant": {"feasible_only": True, "distil_samples": 200},
        "single_exact_f": [2, 4],
    },
    # operands of 1-2 digits: a target that trains in ~20 CPU minutes, the paper's m and budget
    # exact success rates there (every well-formed query enumerated), cheap enough to take every round
    "small": {**FULL, "task": SMALL_TASK, "single_n": 50_000, "single_f": 32, "eval_every": 1},
    "full": FULL,
}
KAPPA = 2.0  # paper B.1 (kappa = 1 everywhere else)
VARIANT = "banel+check+draws"  # the name of the variant's rows in tables


def run_methods(
    task_options, methods, seeds, mode, cache, out: Path, extra: dict | None = None, jobs: int = 1
) -> list[dict]:
    """Run every method on every seed through `banel compare` (OUT/METHOD/seedS); returns the summaries.

    Finished runs are kept and interrupted ones resume from their checkpoint and ledger, like `banel compare`.
    """
    extra = dict(extra or {})
    run_level = {k: extra.pop(k) for k in ("feasible_only",) if k in extra}  # read by every method
    banel = {
        "kappa": KAPPA,
        "negative_epochs": mode["negative_epochs"],
        "generator_epochs": mode["generator_epochs"],
        **extra,
    }
    settings = {
        "nre_budget": mode["budget"],
        "m": mode["m"],
        **run_level,
        "banel": banel,
        "eval": {"samples": mode["eval_samples"], "every": mode["eval_every"]},
        "task_options": task_options,
    }

    def done(s: dict) -> None:
        print(
            f"  {s['method']} seed {s['seed']}: best {s['best_success_rate']:.4g} "
            f"(base {s['base_success_rate']:.4g}), {s['wall_seconds']:.0f} s"
        )

    compare("addition", methods, seeds, settings, out, jobs=jobs, cache=cache, on_done=done)
    summaries = [r.summary for r in collect(out) if r.method in methods and r.summary["seed"] in seeds]
    for s in summaries:
        s["seconds_per_round"] = s["wall_seconds"] / max(s["rounds"], 1)
    return summaries


def table(summaries: list[dict]) -> tuple[str, dict]:
    """Table-2-style rows: mean, median, std of the best success rate and improvement over the prior."""
    rows, out = [], {}
    base = [s["base_success_rate"] for s in summaries]
    groups = {"prior": base}
    for s in summaries:
        groups.setdefault(s["method"], []).append(s["best_success_rate"])
    prior = statistics.mean(base) if base else float("nan")
    rows.append("| method | seeds | mean | median | std | improvement (mean / prior mean) |")
    rows.append("|---|---:|---:|---:|---:|---:|")
    for name, vals in groups.items():
        mean, med = statistics.mean(vals), statistics.median(vals)
        std = statistics.stdev(vals) if len(vals) > 1 else 0.0
        imp = mean / prior if prior > 0 else float("nan")
        out[name] = {"n": len(vals), "mean": mean, "median": med, "std": std, "improvement": imp}
        rows.append(f"| {name} | {len(vals)} | {mean:.4g} | {med:.4g} | {std:.3g} | {imp:.3g}x |")
    return "\n".join(rows), out


def single_round(task, mode: dict, seed: int) -> tuple[dict, list[str], list[str]]:
    """One Bayesian update from one large batch of prior samples (App. B.1); returns stats and strings."""
    prior = task.prior("cpu")
    t0 = time.time()
    x = prior.sample(mode["single_n"], derive_seed(seed, "single", "draw"))
    r = task.free_reward(x)
    failures = x[r == 0]
    negative = prior.clone()
    negative.fit(
        failures,
        mode["single_epochs"],
        derive_seed(seed, "single", "negative"),
        FitConfig(lr=1e-3, batch_size=256),
    )
    f = mode["single_f"]
    calib = prior.sample(max(20 * f, 20_000), derive_seed(seed, "single", "calibrate"))
    scores = ratio_scores(calib, prior, negative, KAPPA, True)
    tau = float(torch.quantile(scores, 1 - 1 / f))  # accept the top 1/f of the prior: filter factor f
    filt = Filter(prior, negative, KAPPA, tau, True)
    kept: list[Sequences] = []
    have, drawn, chunk = 0, 0, 0
    while have < mode["single_eval"]:
        c = prior.sample(20_000, derive_seed(seed, "single", "accept", chunk))
        acc = c[filt.accepts(c)]
        kept.append(acc)
        have, drawn, chunk = have + len(acc), drawn + len(c), chunk + 1
    accepted = Sequences.cat(kept)[torch.arange(mode["single_eval"])]
    k = int(task.free_reward(accepted).sum())
    n = len(accepted)
    base_eval = prior.sample(n, derive_seed(seed, "single", "base"))
    kb = int(task.free_reward(base_eval).sum())
    stats = {
        "nre": mode["single_n"],
        "failures_kept": len(failures),
        "successes_in_batch": int(r.sum()),
        "kappa": KAPPA,
        "filter_factor": f,
        "tau": tau,
        "negative_epochs": mode["single_epochs"],
        "acceptance": have / drawn,
        "base": {"rate": kb / n, "ci": clopper_pearson(kb, n), "n": n},
        "filtered": {"rate": k / n, "ci": clopper_pearson(k, n), "n": n},
        "improvement": (k / n) / (kb / n) if kb else None,
        "base_exact": (exact := task.exact_success_rate(prior)),
        "improvement_over_exact": (k / n) / exact if exact else None,
        "seconds": time.time() - t0,
    }
    if task.winning_queries() is not None:
        stats["exact_feasible"] = exact_filtered(task, prior, negative, mode["single_exact_f"])
    return stats, task.decode(x[:5000]), task.decode(accepted)


def exact_filtered(task, prior, negative, factors: list[int]) -> dict[int, dict[str, float]]:
    """Exact success rate of the single-round posterior ranked among well-formed queries, for each f.

    The posterior is p_theta restricted to the well-formed queries whose ratio score is in the top 1/f of
    their prior mass (what `feasible_only` ranks over): with every such query enumerated, its success
    rate is a ratio of two exact sums, with no sampling.
    """
    leading = task.options.leading_zeros
    pairs = well_formed_queries(task.options.max_digits, leading)
    texts = [f"{a}+{b}=" for a, b in pairs]
    x = encode(texts, ATTACKER_INDEX)
    p = prior.log_prob(x).exp()
    wins = set(task.winning_queries())
    won = torch.tensor([t in wins for t in texts], dtype=torch.float64)
    lz = torch.tensor([has_leading_zero(a, b) for a, b in pairs], dtype=torch.float64)
    order = torch.sort(ratio_scores(x, prior, negative, KAPPA, True), descending=True, stable=True).indices
    mass, win_mass, lz_mass = (torch.cumsum(v[order], 0) for v in (p, p * won, p * lz))
    prior_rate = task.exact_success_rate(prior)  # the improvement is over the unrestricted prior, as elsewhere
    out = {}
    for f in factors:
        k = min(int(torch.searchsorted(mass, mass[-1] / f)), len(mass) - 1)  # smallest top set with >= 1/f
        rate = float(win_mass[k] / mass[k])
        out[f] = {
            "rate": rate,
            "improvement": rate / prior_rate,
            "queries": k + 1,
            "leading_zero_share": float(lz_mass[k] / mass[k]),
        }
    return out


def main() -> None:
    """Run the recipe."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mode", choices=sorted(MODES), default="smoke")
    p.add_argument("--out", default="runs/addition-bench")
    p.add_argument("--cache", help="cache folder (default: $BANEL_CACHE or ~/.cache/banel; smoke: OUT/cache)")
    p.add_argument("--methods", default="banel,rnd,count,base")
    p.add_argument("--seeds", help="comma-separated seeds (default: the mode's)")
    p.add_argument("--scaling-epochs", help="comma-separated negative epochs for the sweep (default: the mode's)")
    p.add_argument("--scaling-seeds", help="comma-separated seeds for the sweep (default: the mode's)")
    p.add_argument("--steps", default="prepare,compare,single,scaling")
    p.add_argument("--jobs", type=int, default=1, help="runs in parallel, one thread each (default 1)")
    p.add_argument("--unfinished-target", action="store_true", help="use the target's latest checkpoint")
    p.add_argument("--prepare-seconds", type=float, help="budget for (resumed) target training")
    args = p.parse_args()
    torch.set_num_threads(1)
    mode = dict(MODES[args.mode])
    if args.seeds:
        mode["seeds"] = [int(x) for x in args.seeds.split(",")]
    if args.scaling_epochs:
        mode["scaling_epochs"] = [int(x) for x in args.scaling_epochs.split(",")]
    if args.scaling_seeds:
        mode["scaling_seeds"] = [int(x) for x in args.scaling_seeds.split(",")]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cache = args.cache or (str(out / "cache") if args.mode == "smoke" else None)
    options = dict(mode["task"])
    if args.unfinished_target:
        options["unfinished_target"] = True
    steps = args.steps.split(",")
    results: dict[str, Any] = {"mode": args.mode, "settings": mode, "kappa": KAPPA}
    md = [f"# Addition attack, {args.mode} mode\n"]
    task = make_task("addition", options, cache)
    if "prepare" in steps:
        print("prepare: target and attacker")
        rep = task.prepare(args.prepare_seconds, mode["prepare_samples"], 0, mode["prepare_problems"])
        results["prepare"] = {k: v for k, v in rep.items() if k != "accuracy_curve"}
        results["accuracy_curve"] = rep["accuracy_curve"]
        b = rep["base_success"]
        md.append(
            f"Target: step {rep['target_step']}/{rep['target_steps']} (done: {rep['target_done']}), "
            f"exact-match accuracy {rep['accuracy']:.4f} on {rep['accuracy_problems']} fresh problems."
        )
        if b:
            md.append(
                f"Base attacker success rate {b['rate']:.3g} [{b['low']:.3g}, {b['high']:.3g}] "
                f"({b['k']}/{b['n']}); valid strings {rep['attacker_valid_rate']:.3f}.\n"
            )
        if "base_success_exact" in rep:
            md.append(
                f"Exact base success rate {rep['base_success_exact']:.4g} over the "
                f"{rep['winning_queries']} well-formed queries the target gets wrong.\n"
            )
        print("\n".join(md[1:]))
    methods = args.methods.split(",")
    if "compare" in steps:
        print("compare:", methods)
        summaries = run_methods(options, methods, mode["seeds"], mode, cache, out / "compare", jobs=args.jobs)
        if mode.get("variant"):
            # every method with the task's free check (the baselines ignore distil_samples, a BaNEL setting)
            print("compare with", mode["variant"])
            variant = run_methods(
                options, methods, mode["seeds"], mode, cache, out / "compare-variant", mode["variant"], args.jobs
            )
            for s in variant:
                s["method"] = VARIANT if s["method"] == "banel" else s["method"] + "+check"
            summaries += variant
        text, rows = table(summaries)
        results["compare"] = {"rows": rows, "summaries": summaries}
        md += ["## Best success rate over seeds\n", text, ""]
        spr = [s.get("seconds_per_round") for s in summaries if s.get("seconds_per_round")]
        if spr:
            md.append(
                f"Seconds per round (mean over runs): {statistics.mean(spr):.1f}; per full run: "
                f"{statistics.mean(s['wall_seconds'] for s in summaries):.0f} s.\n"
            )
        print(text)
    groups = {}
    if "single" in steps:
        print("single round")
        stats, prior_texts, accepted = single_round(task, mode, 0)
        results["single_round"] = stats
        md += ["## Single round\n", "```", json.dumps(stats, indent=1), "```", ""]
        groups["prior samples"] = failure_modes(prior_texts, task.options.max_digits)
        groups["accepted (single round)"] = failure_modes(accepted, task.options.max_digits)
        print(json.dumps(stats))
    examples = []
    for name, folder in (("banel", "compare"), (VARIANT, "compare-variant")):
        wins = read_successes(sorted((out / folder / "banel").glob("seed*")))
        if wins:
            groups[f"successes ({name} runs)"] = failure_modes(wins, task.options.max_digits)
            examples.append(f"Example successful attacks ({name}): " + ", ".join(f"`{w}`" for w in wins[:20]))
    if groups:
        results["failure_modes"] = groups
        md += ["## Failure modes\n", failure_table(groups), "", *examples, ""]
        plot_failure_modes(groups, out / "failure_modes.png")
    if "scaling" in steps:
        print("scaling: negative epochs", mode["scaling_epochs"])
        strict = {**options, "leading_zeros": False}
        rows = {}
        for e in mode["scaling_epochs"]:
            s = run_methods(
                strict,
                ["banel"],
                mode["scaling_seeds"],
                {**mode, "negative_epochs": e},
                cache,
                out / (f"scaling-variant-epochs{e}" if mode.get("variant") else f"scaling-epochs{e}"),
                mode.get("variant"),
                args.jobs,
            )
            rows[e] = statistics.mean(x["best_success_rate"] for x in s) / statistics.mean(
                x["base_success_rate"] for x in s
            )
        refs = run_methods(
            strict,
            [m for m in ("rnd", "count") if m in methods],
            mode["scaling_seeds"],
            mode,
            cache,
            out / "scaling-refs",
            jobs=args.jobs,
        )
        ref = {}
        for m in ("rnd", "count"):
            vals = [x for x in refs if x["method"] == m]
            if vals:
                ref[m] = statistics.mean(x["best_success_rate"] for x in vals) / statistics.mean(
                    x["base_success_rate"] for x in vals
                )
        results["scaling"] = {"improvement_by_epochs": rows, "references": ref}
        _plot_scaling(rows, ref, out / "scaling.png")
        md += [
            f"## Compute scaling (no leading zeros; BaNEL with {mode.get('variant') or 'the paper settings'})\n",
            "| negative epochs | improvement |",
            "|---:|---:|",
            *[f"| {e} | {v:.3g}x |" for e, v in rows.items()],
            "",
            *[f"{m}: {v:.3g}x" for m, v in ref.items()],
            "",
        ]
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    (out / "results.md").write_text("\n".join(md) + "\n")
    print(f"wrote {out / 'results.md'} and {out / 'results.json'}")


def _plot_scaling(rows: dict, refs: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(list(rows), list(rows.values()), "o-", label="BaNEL")
    for (name, v), style in zip(refs.items(), ("--", ":"), strict=False):
        ax.axhline(v, ls=style, color="grey", label=name)
    ax.set(xscale="log", xlabel="negative-model epochs per round", ylabel="improvement factor")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
