"""Progress from paid evidence alone, and which generator to keep without ground truth (paper, Section 6).

A user's task has no free measurement: all a run knows is what its budget paid for (the outcomes of the
samples it evaluated) and what costs nothing (samples and likelihoods of its own models). This module turns
those into the numbers a run reports every round, and into the rules that pick the generator to keep.

A rule reads history rows only, and only their oracle-free columns, so the same function picks the kept
generator during a run and is scored afterwards against the ground truth a benchmark hides from it
(`benchmarks/stopping/`). Every rule here is *online*: as rows arrive its choice either stays or moves to
the newest round or the one before it (whose generator the run still holds), so a run saves what it keeps
without storing every round's generator.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from banel.eval.success import clopper_pearson

RULES = ("final", "drift", "paid")
"""final: the last generator. drift: the newest generator whose KL from the prior is within a budget (the
newest, if the run measures no drift). paid: the generator whose next round of paid samples had the highest
success fraction; `drift` until the first paid success. docs/stopping.md scores them."""


def paid_evidence(successes_found: int, nre_used: int, confidence: float = 0.95) -> dict[str, Any]:
    """Distinct successes per NRE paid so far, with its Clopper-Pearson interval and per 1,000 NREs."""
    low, high = clopper_pearson(successes_found, nre_used, confidence) if nre_used else (0.0, 1.0)
    return {
        "paid_success_fraction": successes_found / nre_used if nre_used else None,
        "paid_success_interval": [low, high],
        "successes_per_1000_nre": 1000 * successes_found / nre_used if nre_used else None,
    }


def kept_round(rows: Sequence[dict[str, Any]], rule: str, drift_budget: float) -> int:
    """The round (-1: the prior) whose generator `rule` keeps, given the history rows of a run so far."""
    rows = [r for r in rows if "round" in r]
    if not rows:
        raise ValueError("no history rows to choose from")
    if rule == "final":
        return int(rows[-1]["round"])
    if rule == "drift":
        return _within_drift(rows, drift_budget)
    if rule == "paid":
        return _paid(rows, drift_budget)
    raise ValueError(f"keep.rule must be one of {', '.join(map(repr, RULES))}; got {rule!r}")


def _within_drift(rows: Sequence[dict[str, Any]], budget: float) -> int:
    """The newest measured generator with KL(model || prior) <= budget nats; the prior if none is; the newest
    generator when the run measures no drift at all (eval.drift_samples = 0: nothing to read)."""
    if not any(r.get("kl_to_prior") is not None for r in rows if r["round"] >= 0):
        return int(rows[-1]["round"])
    chosen = -1
    for r in rows:
        kl = r.get("kl_to_prior")
        if kl is not None and math.isfinite(kl) and kl <= budget:
            chosen = int(r["round"])
    return chosen


def _paid(rows: Sequence[dict[str, Any]], budget: float) -> int:
    """The generator whose following round's paid samples had the highest posterior-mean success fraction
    (Beta(1, 1) prior: (k + 1) / (n + 2), ties to the newer); `drift` before the first paid success.

    Round i+1's samples are drawn from the generator of round i (filtered, for BaNEL), so they are the only
    paid evidence about that generator; the newest generator has none yet and cannot be chosen.
    """
    if not any(r.get("successes") for r in rows):
        return _within_drift(rows, budget)
    best, chosen = -1.0, -1
    for before, after in zip(rows, rows[1:], strict=False):
        n = after.get("evaluated") or 0
        if not n:
            continue
        score = (int(after.get("successes") or 0) + 1) / (n + 2)
        if score >= best:
            best, chosen = score, int(before["round"])
    return chosen
