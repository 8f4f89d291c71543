"""Why BaNEL's filter helps or hurts on a task: one round from the prior, measured exactly (issue 22).

    PYTHONPATH=src python benchmarks/zoo/diagnose.py --tasks grammar,classifier,constrained,typical --out X.json

For each task and seed: draw m prior samples (BaNEL's round 0), fit the negative model p_phi from the base on
their failures in blocks of epochs, and after each block measure, on fresh prior samples,
- p_phi's NLL per token on held-out failures (fresh prior samples; the prior's own is the block-0 value),
- the filter's enrichment: keep the top 1/f of candidates by the length-normalised ratio (as BaNEL's round 1
  does), and compare the success rate of what it keeps with the prior's. Exact: P(kept | success) is a sum of
  p_theta over the listed success set, P(kept) the kept share of the candidates (1/f),
- what the kept samples look like: their mean log p_theta per token against all candidates', and the share
  of infeasible samples among them (tasks with a free check),
then distil the kept m samples into the generator (from the base, the default epochs) and measure its exact
success rate and KL to the prior, as round 1's generator would be.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from banel.algorithm import BanelConfig
from banel.eval.drift import sample_kl
from banel.filters import ratio_scores
from banel.sequences import derive_seed
from banel.tasks import make_task
from banel.tasks.protocol import Feasibility

CANDIDATES = 20_000
HELDOUT = 2000


def kept_mask(scores: torch.Tensor, f: int) -> torch.Tensor:
    """The top 1/f of scores (ties by position, as banel.algorithm.select)."""
    order = torch.sort(scores, descending=True, stable=True).indices[: len(scores) // f]
    mask = torch.zeros(len(scores), dtype=torch.bool)
    mask[order] = True
    return mask


def one(task_name: str, seed: int, m: int, blocks: list[int], cfg: BanelConfig) -> dict[str, Any]:
    """The measurements of one task and seed."""
    task = make_task(f"zoo-{task_name}", {})
    prior = task.prior("cpu")
    successes = task.successes()
    lp_success = prior.log_prob(successes)
    rate = float(torch.logsumexp(lp_success, 0).exp())
    drawn = prior.sample(m, derive_seed(seed, "round0"))
    failures = drawn[task.free_reward(drawn) == 0]
    heldout = prior.sample(HELDOUT, derive_seed(seed, "heldout"))
    heldout = heldout[task.free_reward(heldout) == 0]
    candidates = prior.sample(CANDIDATES, derive_seed(seed, "candidates"))
    lp_candidates = prior.log_prob(candidates) / prior.token_counts(candidates).double()
    infeasible = ~task.feasible(candidates) if isinstance(task, Feasibility) else None
    negative = prior.clone()
    rows, done = [], 0
    for epochs in blocks:
        if epochs > done:
            negative.fit(failures, epochs - done, derive_seed(seed, "negative", epochs), cfg.negative_fit)
            done = epochs
        nll = float(-negative.log_prob(heldout).sum() / negative.token_counts(heldout).double().sum())
        scores = ratio_scores(candidates, prior, negative, cfg.kappa, cfg.length_normalise)
        kept = kept_mask(scores, cfg.filter_factor)
        # tau: the lowest kept score; a success is kept when its score reaches it
        tau = float(scores[kept].min())
        s_scores = ratio_scores(successes, prior, negative, cfg.kappa, cfg.length_normalise)
        p_kept_success = float(torch.logsumexp(lp_success[s_scores >= tau], 0).exp()) / rate if rate else 0.0
        if bool((scores == scores[0]).all()):
            p_kept_success = 1.0 / cfg.filter_factor  # every score ties (p_phi = p_theta): a random cut
        row = {
            "epochs": epochs,
            "heldout_nll": nll,
            "enrichment": p_kept_success / float(kept.double().mean()),
            "kept_log_p_theta": float(lp_candidates[kept].mean()),
            "all_log_p_theta": float(lp_candidates.mean()),
        }
        if infeasible is not None:
            row["kept_infeasible"] = float(infeasible[kept].double().mean())
            row["all_infeasible"] = float(infeasible.double().mean())
        rows.append(row)
    # round 1 as BaNEL runs it: m*f candidates from the prior, keep the top m, distil them into the base
    pool = prior.sample(m * cfg.filter_factor, derive_seed(seed, "round1"))
    scores = ratio_scores(pool, prior, negative, cfg.kappa, cfg.length_normalise)
    kept = pool[kept_mask(scores, cfg.filter_factor)]
    generator = prior.clone()
    generator.fit(
        kept[task.free_reward(kept) == 0], cfg.generator_epochs, derive_seed(seed, "distil"), cfg.generator_fit
    )
    distilled = {
        "rate_over_prior": task.exact_success_rate(generator) / rate,
        "kl_to_prior": sample_kl(generator, prior, 2000, derive_seed(seed, "kl")),
    }
    if isinstance(task, Feasibility):
        x = generator.sample(5000, derive_seed(seed, "gen"))
        distilled["infeasible"] = float((~task.feasible(x)).double().mean())
    return {"task": task_name, "seed": seed, "prior_rate": rate, "failures": len(failures), "blocks": rows,
            "distilled": distilled}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Measure every task and seed; print a compact table and write the JSON."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tasks", default="grammar,classifier,constrained,typical")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--m", type=int, default=100)
    p.add_argument("--blocks", default="0,2,5,10,20,50")
    p.add_argument("--out", default="")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    cfg = BanelConfig()
    blocks = [int(b) for b in args.blocks.split(",")]
    results = []
    for task in args.tasks.split(","):
        began = time.time()
        for seed in range(args.seeds):
            results.append(one(task, seed, args.m, blocks, cfg))
        runs = [r for r in results if r["task"] == task]
        print(f"\n{task} ({time.time() - began:.0f} s, {len(runs)} seeds, m={args.m}, f={cfg.filter_factor}):")
        print("  epochs | held-out NLL | enrichment (geo.) | kept log p/tok [all] | kept infeasible [all]")
        for k, epochs in enumerate(blocks):
            b = [r["blocks"][k] for r in runs]
            enrich = math.exp(np.mean([math.log(max(x["enrichment"], 1e-9)) for x in b]))
            inf = (
                f"{np.mean([x['kept_infeasible'] for x in b]):.3f} [{np.mean([x['all_infeasible'] for x in b]):.3f}]"
                if "kept_infeasible" in b[0]
                else "-"
            )
            kept_lp, all_lp = (np.mean([x[k] for x in b]) for k in ("kept_log_p_theta", "all_log_p_theta"))
            nll = np.mean([x["heldout_nll"] for x in b])
            print(f"  {epochs:6d} | {nll:.4f} | {enrich:.3f} | {kept_lp:.3f} [{all_lp:.3f}] | {inf}")
        d = [r["distilled"] for r in runs]
        geo = math.exp(np.mean([math.log(max(x["rate_over_prior"], 1e-9)) for x in d]))
        print(
            f"  distilled round-1 generator: rate {geo:.3f}x"
            f" prior, KL {np.mean([x['kl_to_prior'] for x in d]):.2f} nats/seq"
            + (f", infeasible {np.mean([x['infeasible'] for x in d]):.3f}" if "infeasible" in d[0] else ""),
            flush=True,
        )
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
