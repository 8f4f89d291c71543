"""The methods `banel run --method` can run: a plain dict from name to `run(Run) -> None`."""

from __future__ import annotations

from collections.abc import Callable

from banel import algorithm
from banel.baselines import base, count, gfn, negrl, reinforce, rnd, temperature
from banel.runner import Run

METHODS: dict[str, Callable[[Run], None]] = {
    "banel": algorithm.run,
    "reinforce": reinforce.run,
    "negrl": negrl.run,
    "gfn": gfn.run,
    "rnd": rnd.run,
    "count": count.run,
    "temperature": temperature.run,
    "base": base.run,
}

DESCRIPTIONS: dict[str, str] = {
    "banel": "Bayesian Negative Evidence Learning (Algorithms 1 and 2 of the paper)",
    "reinforce": "REINFORCE with a batch-mean baseline (Sec. 3.1): zero update on all-failure batches",
    "negrl": "negative RL, Eq. (1): push down the likelihood of failures",
    "gfn": "GFlowNet trajectory balance, VarGrad form (Eq. 3), eps-smoothed log reward",
    "rnd": "Random Network Distillation bonus + REINFORCE with KL 0.01 to the prior (App. B.2)",
    "count": "pseudo-count bonus (Ostrovski et al. 2017) + REINFORCE with KL 0.05 to the prior (App. B.2)",
    "temperature": "the prior sampled at a higher temperature (App. B.3), no training",
    "base": "the prior as it is (reference row), no training",
}
