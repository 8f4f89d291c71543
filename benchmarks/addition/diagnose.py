"""Why BaNEL's gain is what it is on the addition task: one round's negative model and ratio, or a run's rounds.

    python benchmarks/addition/diagnose.py --mode small
    python benchmarks/addition/diagnose.py --mode full --trace 15 --out trace.json   # where the rounds lose it

One round: draws m prior samples (all failures in the sparse regime), fits p_phi as BaNEL's round does (from
the prior's weights, `negative_epochs` epochs), and reports: p_phi's NLL per token on its training failures and
on fresh prior samples (memorisation), the distribution of the length-normalised ratio score over fresh
prior samples, and the failure modes and success rate of the top 1/f of them by score.

`--trace R` steps BaNEL (the paper's settings of the comparison, `banel.Banel.round`) for R rounds and measures
each round's three distributions on fresh free samples (the task's declared free ground truth, no NREs): the
proposal p_theta_{i-1}, the filtered proposal it is distilled from (the proposal restricted to the round's
filter, by rejection) and the distilled generator p_theta_i (the next round's proposal). Their success rates
split each round's gain into the filter's enrichment (filtered / proposal) and what distillation keeps of it
(distilled / filtered); the leading-zero and malformed shares say what the filter selects.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import run as recipe  # noqa: E402
from failures import failure_modes  # noqa: E402

from banel.algorithm import Banel, BanelConfig  # noqa: E402
from banel.eval.success import clopper_pearson  # noqa: E402
from banel.filters import Filter, ratio_scores  # noqa: E402
from banel.methods.protocol import Context  # noqa: E402
from banel.models.protocol import FitConfig  # noqa: E402
from banel.sequences import derive_seed  # noqa: E402
from banel.tasks import make_task  # noqa: E402


def main() -> None:
    """Inspect one round."""
    p = argparse.ArgumentParser()
    p.add_argument("--mode", default="small", choices=sorted(recipe.MODES))
    p.add_argument("--fresh", type=int, default=20_000)
    p.add_argument("--kappa", type=float, default=recipe.KAPPA)
    p.add_argument("--filter-factor", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--trace", type=int, default=0, help="step BaNEL this many rounds and measure each (0: off)")
    p.add_argument("--distil-samples", type=int, default=0, help="banel.distil_samples for --trace")
    p.add_argument("--feasible-only", action="store_true", help="the run's feasible_only for --trace")
    p.add_argument("--out", help="write the trace (JSON) here")
    args = p.parse_args()
    torch.set_num_threads(1)
    mode = recipe.MODES[args.mode]
    task = make_task("addition", mode["task"], None)
    if args.trace:
        rows = trace(task, mode, args)
        if args.out:
            Path(args.out).write_text(json.dumps(rows, indent=1))
        return
    prior = task.prior()
    x = prior.sample(mode["m"], derive_seed(args.seed, "diag", "round"))
    failures = x[task.free_reward(x) == 0]
    out = {"kappa": args.kappa, "filter_factor": args.filter_factor, "failures": len(failures)}
    for epochs in (1, 5, mode["negative_epochs"]):
        neg = prior.clone()
        neg.fit(failures, epochs, derive_seed(args.seed, "diag", "neg"), FitConfig())
        fresh = prior.sample(args.fresh, derive_seed(args.seed, "diag", "fresh"))
        nll = lambda model, s: float(-model.log_prob(s).sum() / model.token_counts(s).sum())  # noqa: E731
        scores = ratio_scores(fresh, prior, neg, args.kappa, True)
        top = torch.sort(scores, descending=True).indices[: args.fresh // args.filter_factor]
        texts = task.decode(fresh)
        in_train = set(task.decode(failures))
        top_texts = [texts[i] for i in top.tolist()]
        r_top = task.free_reward(fresh[top])
        out[f"epochs_{epochs}"] = {
            "phi_nll_train": nll(neg, failures),
            "phi_nll_fresh": nll(neg, fresh),
            "theta_nll_fresh": nll(prior, fresh),
            "score_quantiles": [
                float(q)
                for q in torch.quantile(scores, torch.tensor([0.01, 0.25, 0.5, 0.75, 0.99], dtype=torch.float64))
            ],
            "top_share_seen_in_training": sum(t in in_train for t in top_texts) / len(top_texts),
            "fresh_share_seen_in_training": sum(t in in_train for t in texts) / len(texts),
            "top_success_rate": float(r_top.mean()),
            "fresh_success_rate": float(task.free_reward(fresh).mean()),
            "top_failure_modes": {k: v for k, v in failure_modes(top_texts, 2).items() if "hist" not in k},
            "top_examples": top_texts[:15],
        }
        print(json.dumps({epochs: out[f"epochs_{epochs}"]}, indent=1), flush=True)


def describe(task, x, max_digits: int) -> dict:
    """Success rate (free ground truth, with its Clopper-Pearson interval) and failure modes of samples x."""
    k, n = int(task.free_reward(x).sum()), len(x)
    low, high = clopper_pearson(k, n)
    modes = failure_modes(task.decode(x), max_digits)
    return {"n": n, "successes": k, "rate": k / n, "low": low, "high": high} | {
        key: modes[key] for key in ("invalid_rate", "leading_zero_share", "operand_length_mean")
    }


def trace(task, mode: dict, args) -> list[dict]:
    """Step BaNEL round by round; measure proposal, filtered proposal and distilled generator on free samples."""
    config = BanelConfig.paper(
        kappa=args.kappa,
        filter_factor=args.filter_factor,
        negative_epochs=mode["negative_epochs"],
        generator_epochs=mode["generator_epochs"],
        distil_samples=args.distil_samples,
    )
    prior, digits, n = task.prior(), task.options.max_digits, args.fresh
    feasible = task.feasible if args.feasible_only else None
    banel = Banel(prior, config, Context(m=mode["m"], seed=args.seed, feasible=feasible, check=feasible))
    free = lambda x: task.free_reward(x).double()  # noqa: E731 (the benchmark's declared free ground truth)
    rows, proposal_stats = [], None
    for i in range(args.trace):
        proposal, negative = banel.generator, banel.negative
        if proposal_stats is None:
            proposal_stats = describe(task, proposal.sample(n, derive_seed(args.seed, "trace", i, "proposal")), digits)
        result = banel.round(free, i)
        row = {"round": i, "proposal": proposal_stats, "paid": describe(task, result.samples, digits)}
        row["tau"] = result.stats.get("tau")
        if negative is not None:  # the filter this round applied (Alg. 2 line 5), on fresh proposal draws
            f = Filter(prior, negative, config.kappa, row["tau"], config.length_normalise, feasible)
            # n * f draws keep about n; past f = 4 fewer, as the rates to compare are then far apart
            x = proposal.sample(n * min(config.filter_factor, 4), derive_seed(args.seed, "trace", i, "filtered"))
            row["filtered"] = describe(task, x[f.accepts(x)], digits)
        after = banel.generator.sample(n, derive_seed(args.seed, "trace", i + 1, "proposal"))
        proposal_stats = describe(task, after, digits)
        row["distilled"] = proposal_stats
        rows.append(row)
        show = {k: (v["rate"], v.get("leading_zero_share")) if isinstance(v, dict) else v for k, v in row.items()}
        print(json.dumps(show), flush=True)
    return rows


if __name__ == "__main__":
    main()
