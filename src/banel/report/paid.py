"""A comparison in the one currency every task has: distinct successes found per NRE paid (docs/statistics.md).

A user's costly oracle gives no free success rate, so a comparison of methods on it can only ask which found
more successes for the same budget. `base` spends that budget on prior samples, so it is the control every
method is judged against. The unit of every test is the run (a seed), since the successes of one run are not
independent draws (a run that finds a region finds many); the pooled test over all runs' NREs is given beside
it, labelled as assuming independence.
"""

from __future__ import annotations

import math
from math import comb
from typing import Any

import numpy as np
from scipy import stats

from banel.report.stats import ALPHA, CONFIDENCE, geometric_mean_interval

CONTROL = "base"
"""The method that spends the budget on prior samples: the control of the paid-evidence tests."""


def paid_row(label: str, summaries: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-seed distinct successes per 1,000 NREs of one table row, their mean and median, and the pooled rate
    with its Clopper-Pearson interval; the kept generator's true rate where the task has ground truth."""
    found = np.array([s["successes_found"] for s in summaries], dtype=float)
    paid = np.array([s["nre_used"] for s in summaries], dtype=float)
    per_k = 1000 * found / np.maximum(paid, 1)
    total_found, total_paid = int(found.sum()), int(paid.sum())
    ci = stats.binomtest(total_found, max(total_paid, 1)).proportion_ci(CONFIDENCE, method="exact")
    kept = [s.get("kept_success_rate") for s in summaries]
    kl = [s.get("kl_to_prior") for s in summaries if s.get("kl_to_prior") is not None]
    return {
        "method": label,
        "seeds": len(summaries),
        "per_1000": per_k.tolist(),
        "found": found.tolist(),
        "paid": paid.tolist(),
        "mean_per_1000": float(per_k.mean()),
        "median_per_1000": float(np.median(per_k)),
        "pooled_per_1000": 1000 * total_found / max(total_paid, 1),
        "pooled_low": 1000 * float(ci.low),
        "pooled_high": 1000 * float(ci.high),
        "kept_rule": summaries[0].get("kept_rule"),
        "kept_geometric_mean": geometric_mean_interval(kept)[0] if all(k is not None for k in kept) else None,
        "kl_to_prior": float(np.mean(kl)) if kl else None,
    }


def more_per_run_p(a: list[float], b: list[float]) -> float | None:
    """One-sided exact permutation p that runs of `a` find more successes per NRE than runs of `b` (difference
    of means over every relabelling of the runs; ties, as runs finding nothing, are handled exactly)."""
    if not a or not b:
        return None
    if np.ptp(np.concatenate([a, b])) == 0:
        return 1.0
    result = stats.permutation_test(
        (np.asarray(a), np.asarray(b)),
        lambda x, y: np.mean(x) - np.mean(y),
        permutation_type="independent",
        alternative="greater",
        n_resamples=math.inf,
    )
    return float(result.pvalue)


def smallest_p(n_a: int, n_b: int) -> float:
    """The smallest p the exact permutation test can give with n_a against n_b runs: one relabelling of all."""
    return 1 / comb(n_a + n_b, n_a)


def more_pooled_p(found_a: int, paid_a: int, found_b: int, paid_b: int) -> float | None:
    """One-sided exact conditional test that `a`'s successes per NRE exceed `b`'s, pooling every run's NREs
    (given the total, a's share is binomial with p = paid_a / (paid_a + paid_b) if the rates are equal).
    Assumes successes are independent draws, which clustering within runs breaks: a companion, not the verdict."""
    total = found_a + found_b
    if not total or not paid_a or not paid_b:
        return None
    return float(stats.binomtest(found_a, total, paid_a / (paid_a + paid_b), alternative="greater").pvalue)


def paid_comparisons(rows: list[dict[str, Any]], reference: str = "banel") -> list[dict[str, Any]]:
    """Every row against the control (base), and the reference method's rows against every other row."""
    out = []
    controls = [r for r in rows if r["method"] == CONTROL]
    pairs = [(r, c) for c in controls for r in rows if r is not c]
    pairs += [(r, o) for r in rows if r["method"].split(" [")[0] == reference for o in rows
              if o is not r and o["method"] != CONTROL]  # fmt: skip
    for a, b in pairs:
        p = more_per_run_p(a["per_1000"], b["per_1000"])
        pooled = more_pooled_p(int(sum(a["found"])), int(sum(a["paid"])), int(sum(b["found"])), int(sum(b["paid"])))
        floor = smallest_p(a["seeds"], b["seeds"])
        out.append(
            {
                "method": a["method"],
                "other": b["method"],
                "p": p,
                "pooled_p": pooled,
                "smallest_p": floor,
                "better": p is not None and p < ALPHA,
                "can_reject": floor < ALPHA,
            }
        )
    return out


def paid_lines(rows: list[dict[str, Any]], task: str) -> list[str]:
    """The paid-evidence table and its tests in words, as markdown lines."""
    truth = any(r["kept_geometric_mean"] is not None for r in rows)
    lines = [
        f"Paid evidence on {task}: distinct successes found per 1,000 NREs paid, per run (seed), the currency every "
        "task has. `base` spends the same budget on prior samples. Pooled: all runs' successes over all their "
        f"NREs, with its {CONFIDENCE:.0%} Clopper-Pearson interval (treats successes as independent draws). "
        "KL is the final generator's KL(model || prior) in nats (free samples)."
        + (
            " Kept: the geometric mean over seeds of the true rate of the generator the run's keep rule picked."
            if truth
            else ""
        ),  # fmt: skip
        "",
        "| Method | Seeds | Mean per 1,000 | Median per 1,000 | Pooled per 1,000 | Pooled CI | Per seed | KL to prior |"
        + (" Kept rule | Kept (true rate) |" if truth else ""),
        "|---|---|---|---|---|---|---|---|" + ("---|---|" if truth else ""),
    ]
    for r in rows:
        per_seed = ", ".join(f"{v:.3g}" for v in r["per_1000"])
        kept = "-" if r["kept_geometric_mean"] is None else f"{r['kept_geometric_mean']:.3e}"
        kl = "-" if r["kl_to_prior"] is None else f"{r['kl_to_prior']:.3f}"
        lines.append(
            f"| {r['method']} | {r['seeds']} | {r['mean_per_1000']:.3g} | {r['median_per_1000']:.3g} "
            f"| {r['pooled_per_1000']:.3g} | [{r['pooled_low']:.3g}, {r['pooled_high']:.3g}] | {per_seed} | {kl} |"
            + (f" {r['kept_rule']} | {kept} |" if truth else "")
        )
    lines += ["", "In words (one-sided exact permutation test on per-run successes per NRE, the run as the unit):", ""]
    for c in paid_comparisons(rows):
        pooled = "" if c["pooled_p"] is None else f"; pooled exact conditional test p = {c['pooled_p']:.3g}"
        verdict = "more" if c["better"] else "not shown more"
        caveat = (
            ""
            if c["can_reject"]
            else f" — with these seeds the smallest attainable p is {c['smallest_p']:.3g}, so no verdict can be reached"
        )
        p = "-" if c["p"] is None else f"{c['p']:.3g}"
        lines.append(f"- {c['method']} vs {c['other']}: {verdict} successes per NRE (p = {p}{pooled}){caveat}.")
    return lines
