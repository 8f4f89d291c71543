"""Design a 12-residue peptide that binds a target, when almost every design fails: a user-side BaNEL task.

The kind of problem this stands for: a generative model pre-trained on natural sequences (a CDR loop, a
peptide library) proposes candidates, a costly assay says bind / no bind, and at the start nearly nothing
binds. Everything here is synthetic and drawn from `seed`, so the task is deterministic and cheap:

- **Sequences.** `length` residues over the 20 amino acids `ACDEFGHIKLMNPQRSTVWY` (token i is letter i).
- **Natural distribution.** A first-order Markov chain: the first residue follows the Swiss-Prot background
  composition q, and the next residue after `a` is b with probability proportional to
  q(b) * exp(dipeptide_strength * W[a, b]), W standard normal. The prior is our transformer pre-trained on
  `prior_samples` draws of it (cached under CACHE/priors/seqdesign-HASH.pt).
- **Feasibility (free, known before any assay).** Two standard sequence liabilities: a run of more than 3
  identical residues, and an N-glycosylation sequon N-x-S/T with x not P. A sequence with either, or of
  the wrong length, or with a token outside the alphabet, is infeasible and never binds.
- **Binding energy (lower binds better).** A Potts model plus a folding term:
  E(x) = sum_i h_i(x_i) + sum_{0 < j - i <= 2} J_ij(x_i, x_j) + fold_weight * (-log p_natural(x)).
  The fields h_i(a) are standard normal; at `hotspots` random positions they also carry
  hotspot_bias * (log q(a) - mean log q), so the binding pocket wants residues that are rare in natural
  sequences (W, C, H, M, Y), as interface hot spots are enriched in Trp and Tyr. The couplings J_ij are
  normal with standard deviation `coupling_scale` between residues at most two apart. The folding term
  charges unnatural-looking sequences, so sampling uniformly or flattening the prior does not win.
- **Reward.** 1 iff the sequence is feasible and E(x) < threshold, else 0.

Structure the failures carry: the successes share rare residues at the hotspots on an otherwise natural
background, a region the prior under-weights. Two thirds of the prior's mass has no rare residue at any
hotspot and almost never binds (rate ~1e-5), while the 0.2% with one at every hotspot binds at ~5e-2; yet
tempering the prior (temperature 0.8 to 2) or sampling uniformly leaves the rate within 0.8x-1.1x, so a
method must find where to move mass, not just flatten it. The default threshold gives the default prior a
success rate of about 5e-4 (examples/README.md has the measured numbers).

Run it with `banel run examples.seqdesign:make --threads 1`; recalibrate the threshold after changing the
landscape with `python examples/seqdesign.py --samples 200000 --target-rate 5e-4`.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from banel.cache import cache_dir, pretrained
from banel.models.protocol import FitConfig, GenerativeModel
from banel.models.transformer import TransformerConfig, TransformerModel
from banel.sequences import Sequences, derive_seed
from banel.tasks import task_factory

ALPHABET = "ACDEFGHIKLMNPQRSTVWY"
"""The 20 amino acids in one-letter code; token i is ALPHABET[i]."""
BACKGROUND_PERCENT = {
    "A": 8.25, "R": 5.53, "N": 4.06, "D": 5.45, "C": 1.37, "Q": 3.93, "E": 6.75, "G": 7.07, "H": 2.27, "I": 5.96,
    "L": 9.66, "K": 5.84, "M": 2.42, "F": 3.86, "P": 4.70, "S": 6.56, "T": 5.34, "W": 1.08, "Y": 2.92, "V": 6.87,
}  # fmt: skip
"""Amino-acid composition of UniProtKB/Swiss-Prot in percent (its release statistics; releases differ by ~0.05)."""
VERSION = 1  # bump when the natural distribution or the training code changes what a cached prior means
MAX_RUN = 3  # longest allowed run of one residue: longer homopolymer runs are a synthesis liability
CONTACT_RANGE = 2  # residues at most this far apart along the chain interact (i, i+1 and i, i+2 side chains)
PRIOR_HEADS = 4
PRIOR_FIT = FitConfig(lr=3e-3, batch_size=256)  # converges in ~2 epochs on 20,000 chains (NLL within 0.01/token)
SAMPLE_CHUNK = 25_000  # prior samples per call when calibrating: bounds the KV cache's memory


@dataclass(frozen=True)
class SeqDesignOptions:
    """Settings of the peptide-design task (`task_options`); the default threshold is calibrated for the
    other defaults."""

    length: int = 12
    """Residues per sequence (a CDR-H3-sized loop)."""
    seed: int = 0
    """Seed of the landscape: dipeptide preferences of the natural distribution, hotspots, fields, couplings."""
    dipeptide_strength: float = 1.0
    """Scale of the natural distribution's random dipeptide log-odds (0: residues independent, at the
    background composition)."""
    hotspots: int = 3
    """Positions of the binding pocket that favour residues rare in natural sequences."""
    hotspot_bias: float = 4.0
    """Energy per nat of natural log-frequency at a hotspot: how strongly hotspots favour rare residues."""
    coupling_scale: float = 0.5
    """Standard deviation of the pairwise couplings between residues at most two positions apart."""
    fold_weight: float = 0.4
    """Energy per nat of the natural distribution's negative log-likelihood (unnatural sequences fold worse)."""
    threshold: float = -2.9
    """A feasible sequence binds (reward 1) when its energy is below this."""
    prior_samples: int = 20_000
    """Natural sequences the prior is pre-trained on."""
    prior_epochs: int = 4
    """Passes over them."""
    prior_width: int = 64
    """Transformer width (d_model; a multiple of 4, the number of heads)."""
    prior_layers: int = 2
    """Transformer blocks."""
    prior_seed: int = 0
    """Seed of the pre-training data, the initial weights and the batch order."""
    free_measurement: bool = True
    """Declare a free copy of the reward (GroundTruth), so runs report success rates and a comparison has
    exact-style columns. False: the task is what a real assay is, every reward a paid evaluation, and runs
    are judged on the evidence they paid for alone (the costly-oracle path)."""

    def __post_init__(self) -> None:
        positive = ("length", "prior_samples", "prior_epochs", "prior_width", "prior_layers")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"task_options.{name} must be >= 1, got {getattr(self, name)}")
        if self.length < 3:
            raise ValueError(f"task_options.length must be >= 3 (the sequon spans 3 residues), got {self.length}")
        if not 0 <= self.hotspots <= self.length:
            raise ValueError(f"task_options.hotspots must be in 0..length={self.length}, got {self.hotspots}")
        for name in ("dipeptide_strength", "hotspot_bias", "coupling_scale", "fold_weight"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"task_options.{name} must be a finite number >= 0, got {value}")
        if not math.isfinite(self.threshold):
            raise ValueError(f"task_options.threshold must be a finite number, got {self.threshold}")
        if self.prior_width % PRIOR_HEADS:
            raise ValueError(f"task_options.prior_width must be a multiple of {PRIOR_HEADS}, got {self.prior_width}")


@dataclass(frozen=True)
class Landscape:
    """The natural distribution and the binding energy, drawn from the options' seed."""

    start: np.ndarray
    """(V,) probabilities of the first residue (the background composition)."""
    transition: np.ndarray
    """(V, V) natural probabilities of the next residue given the current one (rows sum to 1)."""
    fields: np.ndarray
    """(L, V) energy of each residue at each position."""
    pairs: np.ndarray
    """(K, 2) interacting positions i < j."""
    couplings: np.ndarray
    """(K, V, V) energy of each pair of residues at each interacting pair of positions."""
    hotspots: np.ndarray
    """Sorted positions whose fields favour rare residues."""
    fold_weight: float
    """Energy per nat of natural negative log-likelihood."""


def background() -> np.ndarray:
    """(V,) the background amino-acid composition, in ALPHABET order, summing to 1."""
    q = np.array([BACKGROUND_PERCENT[a] for a in ALPHABET])
    return q / q.sum()


def landscape(options: SeqDesignOptions) -> Landscape:
    """The natural Markov chain and the Potts energy of these options (each part from its own seed stream)."""
    o, v = options, len(ALPHABET)
    q = background()
    # Own streams: changing the number of hotspots leaves the natural distribution and the other fields alone.
    dipeptides = np.random.default_rng(derive_seed(o.seed, "dipeptides")).standard_normal((v, v))
    logits = np.log(q)[None, :] + o.dipeptide_strength * dipeptides
    transition = np.exp(logits - logits.max(1, keepdims=True))
    transition /= transition.sum(1, keepdims=True)
    fields = np.random.default_rng(derive_seed(o.seed, "fields")).standard_normal((o.length, v))
    hotspots = np.sort(np.random.default_rng(derive_seed(o.seed, "hotspots")).permutation(o.length)[: o.hotspots])
    rarity = np.log(q) - np.log(q).mean()
    fields[hotspots] += o.hotspot_bias * rarity
    pairs = np.array([(i, j) for i in range(o.length) for j in range(i + 1, min(o.length, i + CONTACT_RANGE + 1))])
    couplings = o.coupling_scale * np.random.default_rng(derive_seed(o.seed, "couplings")).standard_normal(
        (len(pairs), v, v)
    )
    return Landscape(q, transition, fields, pairs.reshape(-1, 2), couplings, hotspots, o.fold_weight)


def sample_natural(land: Landscape, n: int, rng: np.random.Generator) -> np.ndarray:
    """(n, L) token ids drawn from the natural Markov chain."""
    length, v = land.fields.shape
    out = np.empty((n, length), dtype=np.int64)
    out[:, 0] = np.minimum(np.searchsorted(np.cumsum(land.start), rng.random(n), side="right"), v - 1)
    cumulative = np.cumsum(land.transition, 1)
    for t in range(1, length):
        u = rng.random(n)
        # Inverse CDF of each row's own transition distribution; the clip guards float round-off at 1.
        out[:, t] = np.minimum((cumulative[out[:, t - 1]] <= u[:, None]).sum(1), v - 1)
    return out


def natural_log_prob(land: Landscape, tokens: np.ndarray) -> np.ndarray:
    """(n,) log-probability of (n, L) token ids under the natural chain."""
    steps = np.log(land.transition)[tokens[:, :-1], tokens[:, 1:]].sum(1)
    return np.log(land.start)[tokens[:, 0]] + steps


def energy(land: Landscape, tokens: np.ndarray) -> np.ndarray:
    """(n,) binding energy of (n, L) token ids: fields + couplings + fold_weight * natural NLL."""
    length = land.fields.shape[0]
    e = land.fields[np.arange(length)[None, :], tokens].sum(1)
    i, j = land.pairs[:, 0], land.pairs[:, 1]
    e = e + land.couplings[np.arange(len(land.pairs))[None, :], tokens[:, i], tokens[:, j]].sum(1)
    return e - land.fold_weight * natural_log_prob(land, tokens)


def liabilities(tokens: np.ndarray) -> np.ndarray:
    """(n,) bool: True where (n, L) token ids hold a run of more than MAX_RUN residues or a sequon N-x-S/T."""
    n, length = tokens.shape
    bad = np.zeros(n, dtype=bool)
    for t in range(length - MAX_RUN):
        window = tokens[:, t : t + MAX_RUN + 1]
        bad |= (window == window[:, :1]).all(1)
    asn, pro, ser, thr = (ALPHABET.index(c) for c in "NPST")
    for t in range(length - 2):
        bad |= (tokens[:, t] == asn) & (tokens[:, t + 1] != pro) & np.isin(tokens[:, t + 2], (ser, thr))
    return bad


def well_formed(x: Sequences, length: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, length) token ids (0 in malformed rows) and an (n,) bool mask of the rows of the right length
    whose tokens are all in the alphabet."""
    tokens = np.zeros((len(x), length), dtype=np.int64)
    ok = (x.lengths.cpu().numpy() == length) if x.tokens.shape[1] >= length else np.zeros(len(x), dtype=bool)
    if ok.any():
        rows = x.tokens[:, :length].cpu().numpy()[ok]
        inside = ((rows >= 0) & (rows < len(ALPHABET))).all(1)
        ok[np.flatnonzero(ok)[~inside]] = False
        tokens[ok] = rows[inside]
    return tokens, ok


class SeqDesignTask:
    """Peptide binder design: a natural-sequence prior, free liability checks, a sparse binding reward."""

    name = "seqdesign"

    def __init__(self, options: SeqDesignOptions, cache: Path) -> None:
        self.options = options
        self.cache = cache
        self.land = landscape(options)
        self._prior: dict[str, TransformerModel] = {}
        if not options.free_measurement:
            self.free_reward = None  # a real assay: no free copy of the reward exists

    # -- the required core -----------------------------------------------------------------------------
    def prior(self, device: str) -> GenerativeModel:
        """The transformer pre-trained on natural sequences (trained once per settings, then loaded)."""
        if device not in self._prior:
            self._prior[device] = self._pretrained(device)
        return self._prior[device]

    def reward(self, x: Sequences) -> torch.Tensor:
        """(n,) float64 of 0/1: 1 where the sequence is feasible and its energy is below the threshold (the
        assay: banel calls it through its budgeted, ledgered oracle only)."""
        return self.binds(x)

    # -- capabilities ----------------------------------------------------------------------------------
    def free_reward(self, x: Sequences) -> torch.Tensor:
        """The same values at no cost, for measurement only: a synthetic landscape can be queried freely."""
        return self.binds(x)

    def binds(self, x: Sequences) -> torch.Tensor:
        """(n,) float64 of 0/1: feasible and energy below the threshold."""
        tokens, ok = self._feasible_tokens(x)
        hit = np.zeros(len(x), dtype=bool)
        if ok.any():
            hit[ok] = energy(self.land, tokens[ok]) < self.options.threshold
        return torch.as_tensor(hit, dtype=torch.float64)

    def feasible(self, x: Sequences) -> torch.Tensor:
        """(n,) bool: False for the wrong length, an unknown token, a long homopolymer run or a sequon."""
        return torch.as_tensor(self._feasible_tokens(x)[1])

    def decode(self, x: Sequences) -> list[str]:
        """One-letter codes ('?' for a token outside the alphabet)."""
        return ["".join(ALPHABET[t] if 0 <= t < len(ALPHABET) else "?" for t in row) for row in x.to_lists()]

    def describe(self) -> dict[str, Any]:
        """The options, the alphabet and the hotspot positions they imply."""
        # free_measurement changes what banel may measure, not what the assay answers: one ledger for both
        options = {k: v for k, v in asdict(self.options).items() if k != "free_measurement"}
        return {
            **options,
            "alphabet": ALPHABET,
            "hotspot_positions": self.land.hotspots.tolist(),
            "version": VERSION,
        }

    def metrics(self, model: GenerativeModel, samples: Sequences) -> dict[str, float]:
        """Mean and 1st-percentile binding energy of the well-formed samples, and the fraction of distinct ones.

        The 1st percentile moves long before the success rate does, and the distinct fraction shows a method
        collapsing onto a few sequences.
        """
        tokens, ok = well_formed(samples, self.options.length)
        out = {"unique_fraction": len(set(samples.keys())) / max(len(samples), 1)}
        if ok.any():
            e = energy(self.land, tokens[ok])
            out |= {"mean_energy": float(e.mean()), "energy_p01": float(np.quantile(e, 0.01))}
        return out

    # -- helpers ---------------------------------------------------------------------------------------
    def energies(self, x: Sequences) -> np.ndarray:
        """(n,) binding energy of each sequence (+inf where malformed); infeasibility is not applied."""
        tokens, ok = well_formed(x, self.options.length)
        out = np.full(len(x), np.inf)
        if ok.any():
            out[ok] = energy(self.land, tokens[ok])
        return out

    def _feasible_tokens(self, x: Sequences) -> tuple[np.ndarray, np.ndarray]:
        tokens, ok = well_formed(x, self.options.length)
        ok[ok] = ~liabilities(tokens[ok])
        return tokens, ok

    def _pretrained(self, device: str) -> TransformerModel:
        o = self.options
        config = TransformerConfig(
            vocab_size=len(ALPHABET),
            max_len=o.length,
            end_token=False,
            d_model=o.prior_width,
            n_layer=o.prior_layers,
            n_head=PRIOR_HEADS,
        )
        model = TransformerModel(config, seed=derive_seed(o.prior_seed, "init"), device=device)

        def train(m: TransformerModel) -> list[float]:
            rng = np.random.default_rng(derive_seed(o.prior_seed, "data"))
            data = torch.as_tensor(sample_natural(self.land, o.prior_samples, rng))
            x = Sequences(data, torch.full((len(data),), o.length, dtype=torch.long))
            return m.fit(x, o.prior_epochs, derive_seed(o.prior_seed, "fit"), PRIOR_FIT)

        # Everything the weights depend on, and nothing they do not (the energy): a new threshold reuses them.
        settings = {
            "version": VERSION,
            "natural": {"length": o.length, "seed": o.seed, "dipeptide_strength": o.dipeptide_strength},
            "background": BACKGROUND_PERCENT,
            "model": asdict(config),
            "fit": asdict(PRIOR_FIT),
            "samples": o.prior_samples,
            "epochs": o.prior_epochs,
            "seed": o.prior_seed,
        }
        return pretrained(model, train, settings, self.name, self.cache, device)


@task_factory(
    description="Peptide binder design: 12 residues, a natural-sequence prior, liability checks, binding energy",
    defaults={"eval": {"samples": 20_000}},
    options=SeqDesignOptions,
)
def make(options: SeqDesignOptions, cache: Path) -> SeqDesignTask:
    """Build the peptide-design task from its options and the cache folder."""
    return SeqDesignTask(options, cache)


# -- calibration -----------------------------------------------------------------------------------------
def calibrate(task: SeqDesignTask, samples: int, seed: int, target_rate: float | None = None) -> dict[str, Any]:
    """The prior's infeasible fraction, energy quantiles and success rate (95% Clopper-Pearson) on `samples`
    fresh draws; with `target_rate`, the threshold that gives that rate on these draws."""
    from scipy.stats import binomtest

    model = task.prior("cpu")
    chunks = [
        model.sample(min(SAMPLE_CHUNK, samples - start), derive_seed(seed, "calibrate", start))
        for start in range(0, samples, SAMPLE_CHUNK)
    ]
    x = Sequences.cat(chunks)
    feasible = task.feasible(x).numpy()
    e = task.energies(x)
    k = int(task.binds(x).sum())
    ci = binomtest(k, samples).proportion_ci(confidence_level=0.95, method="exact")
    natural = sample_natural(task.land, samples, np.random.default_rng(derive_seed(seed, "natural")))
    report: dict[str, Any] = {
        "samples": samples,
        "seed": seed,
        "threshold": task.options.threshold,
        "successes": k,
        "rate": k / samples,
        "rate_ci95": [ci.low, ci.high],
        "infeasible_fraction": float(1 - feasible.mean()),
        "energy_mean": float(e.mean()),
        "energy_sd": float(e.std()),
        "feasible_energy_quantiles": {str(p): float(np.quantile(e[feasible], p)) for p in (1e-3, 1e-2, 0.5)},
        # Entropy per residue of the prior and of the natural chain: how closely pre-training fits the data.
        "prior_entropy_per_residue": float(-model.log_prob(x).mean()) / task.options.length,
        "natural_entropy_per_residue": float(-natural_log_prob(task.land, natural).mean()) / task.options.length,
    }
    if target_rate is not None:
        # Infeasible samples never bind: +inf keeps them out of the quantile's success set.
        report["threshold_for_target_rate"] = float(np.quantile(np.where(feasible, e, np.inf), target_rate))
    return report


def main(argv: list[str] | None = None) -> int:
    """Pre-train (or load) the prior and print its calibration report as JSON."""
    parser = argparse.ArgumentParser(description=calibrate.__doc__)
    parser.add_argument("--samples", type=int, default=100_000, help="prior samples to measure on")
    parser.add_argument("--seed", type=int, default=0, help="seed of the prior samples")
    parser.add_argument("--target-rate", type=float, default=None, help="also report the threshold for this rate")
    parser.add_argument("--cache", type=Path, default=None, help="cache folder (default: banel's)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a task option")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    cache = cache_dir(args.cache)
    task = make(dict(_option(pair) for pair in args.set), cache)
    assert isinstance(task, SeqDesignTask)
    cached = set((cache / "priors").glob(f"{task.name}-*.pt"))
    start = time.perf_counter()
    task.prior("cpu")
    seconds = time.perf_counter() - start
    trained = set((cache / "priors").glob(f"{task.name}-*.pt")) != cached
    report = {"prior_seconds": round(seconds, 2), "prior_trained": trained}
    report |= calibrate(task, args.samples, args.seed, args.target_rate)
    print(json.dumps(report, indent=2))
    return 0


def _option(pair: str) -> tuple[str, Any]:
    key, sep, raw = pair.partition("=")
    if not sep:
        raise SystemExit(f"--set expects KEY=VALUE, got {pair!r}")
    try:
        return key.strip(), json.loads(raw)
    except json.JSONDecodeError:
        return key.strip(), raw


if __name__ == "__main__":
    raise SystemExit(main())
