"""Why BaNEL does or does not raise the exact success rate on `digits`: one round, inspected exactly.

    PYTHONPATH=src nice -n 10 python benchmarks/mnist/diagnose_digits.py --cache /tmp/i6bcache

Everything is exact where the target set allows it: for a score s(x) and threshold tau the exact success
rate of the filtered prior p_theta(x) 1[s(x) >= tau] / Z is sum over targets of p_theta(x) 1[s >= tau] / Z,
with Z = P_theta(s >= tau) estimated from `--fresh` prior samples. Reports, as JSON:

- prior: exact rate; Hamming distance of fresh prior samples to the nearest target (how "near-six" the
  prior is);
- per (negative epochs, kappa): p_phi's NLL per pixel on its training failures, on fresh prior samples and
  on the targets (p_theta-weighted), the enrichment of the filter (exact rate of the filtered prior over the
  prior's) for keep fractions 1/2, 1/4, 1/16, and the targets' mass per decile of the fresh score;
- distillation: the exact rate of the prior fine-tuned for each of `--generator-epochs` on m prior samples
  (unfiltered), and for the last of them on the top m of 2m candidates by each kappa's score with the
  longest-trained p_phi, i.e. what one round of Algorithm 2 does to the rate.
"""

from __future__ import annotations

import argparse
import json
import math

import numpy as np
import torch

from banel.filters import ratio_scores
from banel.models.protocol import FitConfig
from banel.sequences import derive_seed
from banel.tasks import make_task
from banel.tasks.mnist import to_sequences


def hamming_to_targets(samples: np.ndarray, targets: np.ndarray, chunk: int = 2048) -> np.ndarray:
    """Minimum Hamming distance of each 0/1 row of samples (n, 64) to the target rows: (n,) int (8x8 only)."""
    pack = lambda b: np.packbits(b, axis=1).view(">u8").astype(np.uint64).ravel()  # noqa: E731
    s, t = pack(samples), pack(targets)
    out = np.empty(len(s), dtype=np.int64)
    for i in range(0, len(s), chunk):
        out[i : i + chunk] = np.bitwise_count(s[i : i + chunk, None] ^ t[None, :]).min(1)
    return out


def main() -> None:
    """Inspect one round of BaNEL on digits."""
    p = argparse.ArgumentParser()
    p.add_argument("--cache", default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--m", type=int, default=250)
    p.add_argument("--fresh", type=int, default=20_000)
    p.add_argument("--epochs", type=int, nargs="+", default=[1, 5, 50])
    p.add_argument("--kappas", type=float, nargs="+", default=[1.0, 2.0, 4.0])
    p.add_argument("--generator-epochs", type=int, nargs="+", default=[15])
    p.add_argument("--skip-distil", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(1)
    task = make_task("digits", {}, args.cache)
    prior = task.prior()
    targets, pixels = to_sequences(task.targets), task.length
    lp_t = prior.log_prob(targets)
    log_rate = float(torch.logsumexp(lp_t, 0))
    fresh = prior.sample(args.fresh, derive_seed(args.seed, "diag", "fresh"))
    bits = fresh.tokens.numpy().astype(np.uint8)
    dist = hamming_to_targets(bits, task.targets)
    out: dict = {
        "prior_rate": math.exp(log_rate),
        "prior_nll_per_pixel_fresh": float(-prior.log_prob(fresh).mean() / pixels),
        "prior_nll_per_pixel_targets_weighted": float(-(torch.softmax(lp_t, 0) * lp_t).sum() / pixels),
        "fresh_hamming_to_nearest_target": {f"<={d}": float((dist <= d).mean()) for d in (0, 1, 2, 3, 4, 6, 8, 12, 16)},
        "fresh_hamming_median": float(np.median(dist)),
    }
    print(json.dumps(out, indent=1), flush=True)
    x = prior.sample(args.m, derive_seed(args.seed, "diag", "round"))
    failures = x[task.free_reward(x) == 0]
    w = torch.softmax(lp_t, 0)  # where the prior's success mass sits among the targets
    lp_fresh = prior.log_prob(fresh)
    negs = {}
    for epochs in args.epochs:
        neg = prior.clone()
        neg.fit(failures, epochs, derive_seed(args.seed, "diag", "neg"), FitConfig())
        negs[epochs] = neg
        lq_t, lq_fresh = neg.log_prob(targets), neg.log_prob(fresh)
        row: dict = {
            "phi_nll_train": float(-neg.log_prob(failures).mean() / pixels),
            "phi_nll_fresh": float(-lq_fresh.mean() / pixels),
            "phi_nll_targets_weighted": float(-(w * lq_t).sum() / pixels),
        }
        for kappa in args.kappas:
            s_t = (lp_t - kappa * lq_t) / pixels
            s_f = (lp_fresh - kappa * lq_fresh) / pixels
            enrich = {}
            for keep in (2, 4, 16):
                tau = float(torch.quantile(s_f, 1 - 1 / keep))
                z = float((s_f >= tau).double().mean())
                rate = float(torch.logsumexp(lp_t[s_t >= tau], 0)) if (s_t >= tau).any() else -math.inf
                enrich[f"keep_1/{keep}"] = math.exp(rate - log_rate) / z
            deciles = torch.quantile(s_f, torch.linspace(0, 1, 11, dtype=torch.float64))
            mass = [float(w[(s_t >= deciles[i]) & (s_t < deciles[i + 1] if i < 9 else True)].sum()) for i in range(10)]
            row[f"kappa_{kappa:g}"] = {"enrichment": enrich, "target_mass_per_fresh_decile": mass}
        out[f"neg_epochs_{epochs}"] = row
        print(json.dumps({f"neg_epochs_{epochs}": row}, indent=1), flush=True)
    if not args.skip_distil:
        fit = FitConfig()
        for epochs in args.generator_epochs:
            gen = prior.clone()
            gen.fit(x[: args.m], epochs, derive_seed(args.seed, "diag", "distil"), fit)
            out[f"distil_unfiltered_{epochs}_epochs_rate"] = task.exact_success_rate(gen)
            print(
                f"distilled {epochs} epochs on m prior samples (f=1):", out[f"distil_unfiltered_{epochs}_epochs_rate"]
            )
        neg = negs[max(negs)]
        cand = prior.sample(2 * args.m, derive_seed(args.seed, "diag", "cand"))
        for kappa in args.kappas:
            s = ratio_scores(cand, prior, neg, kappa, True)
            kept = cand[torch.sort(s, descending=True).indices[: args.m]]
            gen = prior.clone()
            gen.fit(kept, args.generator_epochs[-1], derive_seed(args.seed, "diag", "distil"), fit)
            out[f"distil_filtered_kappa_{kappa:g}_rate"] = task.exact_success_rate(gen)
            print(f"distilled on top m of 2m (kappa {kappa:g}):", out[f"distil_filtered_kappa_{kappa:g}_rate"])
    print(json.dumps(out))


if __name__ == "__main__":
    main()
