"""Why BaNEL's gain is what it is on the addition task: one round's negative model and ratio, inspected.

    python benchmarks/addition/diagnose.py --mode small

Draws m prior samples (all failures in the sparse regime), fits p_phi as BaNEL's round does (from the
prior's weights, `negative_epochs` epochs), and reports: p_phi's NLL per token on its training failures and
on fresh prior samples (memorisation), the distribution of the length-normalised ratio score over fresh
prior samples, and the failure modes and success rate of the top 1/f of them by score.
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

from banel.filters import ratio_scores  # noqa: E402
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
    args = p.parse_args()
    torch.set_num_threads(1)
    mode = recipe.MODES[args.mode]
    task = make_task("addition", mode["task"], None)
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


if __name__ == "__main__":
    main()
