"""A zoo of synthetic sparse-reward sequence problems that BaNEL was never tuned on (issue 22).

Four small problems, each deliberately different from the paper's, each an ordinary task (`banel run
banel.tasks.zoo:grammar`, nothing special-cased in the run):

- `grammar`: strings of brackets and letters; a success is a balanced string nested at least `depth` deep.
  The pre-training data are i.i.d. tokens, so valid deep strings are rare and sit in the prior's tail.
- `classifier`: the oracle is a hidden random two-layer network over one-hot tokens; a success scores above
  a threshold. No structure a human would name; the data are a random Markov chain.
- `constrained`: a design problem with a free feasibility rule (no run of three equal tokens, no forbidden
  bigram; `Feasibility`, about 6% of the prior's samples break it) and an additive score that favours tokens
  rare in the data, as seqdesign's hotspots do.
- `typical`: the successes sit in the prior's typical set, not its tails: a sequence succeeds when its
  log-likelihood under the data chain lies within `band` nats of the chain's mean and a hidden hash of it
  falls in a 1/`modulus` slice. Nothing is learnable beyond "stay typical", so any drift can only hurt.

Every sample space is small enough to list (at most 8^8 = 16.8M strings), so each task finds its success set
once, testing every pair of half-strings with a cheap bound before the exact reward (0.1-3 s; cached under
CACHE/zoo/), and gives exact success rates. The priors are banel's
transformer pre-trained in seconds on `prior.samples` draws of the data from a fixed seed; the defaults are
shipped (banel/assets/priors) so the base rates below are the same on every machine (measured 2026-12-02):

| task | space | successes | prior's exact rate | prior's infeasible share |
|---|---|---|---|---|
| grammar | 4^12 | 10,075 | 1.649e-4 | - |
| classifier | 8^8 | 337 | 2.984e-4 | - |
| constrained | 8^8 | 4,333 | 2.158e-4 | 6.6% |
| typical | 8^8 | 62 | 1.504e-4 | - |

None of them sets BaNEL's options (`@task_factory` defaults are empty): the zoo measures the defaults.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from banel.cache import atomic_write_text, pretrained
from banel.config import Annotated, Ge, Gt, Le, Lt, config_hash, settings_dataclass
from banel.models.protocol import GenerativeModel
from banel.models.transformer import TransformerConfig, TransformerModel
from banel.sequences import Sequences, derive_seed
from banel.tasks import task_factory
from banel.tasks.toy import PriorTraining

VERSION = 1  # bump when the data, the reward or the prior's training change what a cached file means
HALF_CHUNK = 256  # left halves per step when listing a sample space (x 4096 right halves)
MARGIN = 1e-6  # candidates keep scores this close below a threshold: summation order differs from `hits`
SCORE_CHUNK = 1 << 16  # sequences per exact log-prob call


@settings_dataclass
class ZooPrior(PriorTraining):
    """How a zoo prior is pre-trained (the same for every run seed): the toys' settings, smaller and shorter."""

    epochs: Annotated[int, Ge(1)] = 4
    """Passes over the task's data draws."""
    d_model: Annotated[int, Ge(1)] = 32
    """Transformer width."""


# -- shared machinery ---------------------------------------------------------------------------------------


def markov_chain(vocab: int, concentration: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(start (V,), transition (V, V)) of a random first-order chain: Dirichlet(concentration) rows."""
    rng = np.random.default_rng(seed)
    start = rng.dirichlet(np.full(vocab, concentration))
    return start, rng.dirichlet(np.full(vocab, concentration), size=vocab)


def sample_chain(
    start: np.ndarray, transition: np.ndarray, n: int, length: int, rng: np.random.Generator
) -> np.ndarray:
    """(n, length) token ids drawn from a first-order Markov chain."""
    v = len(start)
    out = np.empty((n, length), dtype=np.int64)
    out[:, 0] = np.minimum(np.searchsorted(np.cumsum(start), rng.random(n), side="right"), v - 1)
    cumulative = np.cumsum(transition, 1)
    for t in range(1, length):
        out[:, t] = np.minimum((cumulative[out[:, t - 1]] <= rng.random(n)[:, None]).sum(1), v - 1)
    return out


def chain_log_prob(start: np.ndarray, transition: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    """(n,) log-probability of (n, L) token ids under a first-order chain."""
    return np.log(start)[tokens[:, 0]] + np.log(transition)[tokens[:, :-1], tokens[:, 1:]].sum(1)


def chain_entropy(start: np.ndarray, transition: np.ndarray, length: int) -> float:
    """Exact entropy (nats) of a length-L path of the chain: the mean of -log p over the chain's strings."""
    marginal, total = start.copy(), float(-(start * np.log(start)).sum())
    row_entropy = -(transition * np.log(transition)).sum(1)
    for _ in range(length - 1):
        total += float(marginal @ row_entropy)
        marginal = marginal @ transition
    return total


def index_tokens(index: np.ndarray, vocab: int, length: int) -> np.ndarray:
    """(n, L) tokens of each string's index in base `vocab`, most significant first."""
    powers = vocab ** np.arange(length - 1, -1, -1, dtype=np.int64)
    return (index[:, None] // powers) % vocab


def hash_index(index: np.ndarray, seed: int) -> np.ndarray:
    """A fixed pseudo-random uint64 of each index (splitmix64 of index + seed): the `typical` task's hidden rule."""
    with np.errstate(over="ignore"):
        z = index.astype(np.uint64) + np.uint64(seed) * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


class ZooTask:
    """A fixed-length problem over `vocab` tokens: data sampler, reward on token arrays, listed success set.

    Subclasses set `name`, `letters` (one character per token), `length`, and implement `data` and `hits`.
    """

    name = "zoo"
    letters = "ab"
    length = 2

    def __init__(self, options: Any, cache: Path) -> None:
        self.options = options
        self.cache = Path(cache)
        self.vocab = len(self.letters)
        self._prior: dict[str, GenerativeModel] = {}
        self._successes: Sequences | None = None

    # -- subclasses -----------------------------------------------------------------------------------
    def data(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """(n, L) token ids of the pre-training distribution."""
        raise NotImplementedError

    def hits(self, tokens: np.ndarray) -> np.ndarray:
        """(n,) bool reward of (n, L) token ids."""
        raise NotImplementedError

    def reward_settings(self) -> dict[str, Any]:
        """The settings the reward depends on (the success set's cache key)."""
        return {k: v for k, v in asdict(self.options).items() if k != "prior"}

    # -- Task core ------------------------------------------------------------------------------------
    def prior_key(self) -> tuple[str, dict[str, Any]]:
        """The prior's name and the settings its cache (and shipped) file is keyed by: the data, not the reward."""
        p = self.options.prior
        return f"zoo-{self.name}", {"task": self.name, "version": VERSION, "data": self.data_settings(), **asdict(p)}

    def data_settings(self) -> dict[str, Any]:
        """The settings the pre-training data depend on."""
        return {}

    def prior(self, device: str = "cpu") -> GenerativeModel:
        """The transformer pre-trained on the task's data: shipped, cached, or trained (seconds) and cached."""
        if device not in self._prior:
            p = self.options.prior
            config = TransformerConfig(
                vocab_size=self.vocab,
                max_len=self.length,
                end_token=False,
                d_model=p.d_model,
                n_layer=p.n_layer,
                n_head=p.n_head,
            )
            model = TransformerModel(config, seed=p.seed, device=device)

            def train(model: TransformerModel) -> list[float]:
                x = self.data(p.samples, np.random.default_rng(derive_seed(p.seed, "zoo-data")))
                return model.fit(self.encode(x), p.epochs, p.seed, p.fit)

            name, settings = self.prior_key()
            self._prior[device] = pretrained(model, train, settings, name, self.cache, device, self.options.shipped)
        return self._prior[device]

    def reward(self, x: Sequences) -> torch.Tensor:
        """(n,) float64 0/1: 1 where x is a well-formed string that `hits`."""
        tokens, ok = self.tokens(x)
        r = np.zeros(len(x))
        if ok.any():
            r[ok] = self.hits(tokens[ok])
        return torch.as_tensor(r, dtype=torch.float64)

    # -- capabilities ---------------------------------------------------------------------------------

    def free_reward(self, x: Sequences) -> torch.Tensor:
        """The reward at no cost (GroundTruth): the zoo's success sets are ours."""
        return self.reward(x)

    def exact_success_rate(self, model: GenerativeModel) -> float:
        """Sum of the model's probabilities over the listed success set."""
        s = self.successes()
        parts = [
            model.log_prob(s[torch.arange(i, min(i + SCORE_CHUNK, len(s)))]) for i in range(0, len(s), SCORE_CHUNK)
        ]
        return float(torch.logsumexp(torch.cat(parts), 0).exp()) if parts else 0.0

    def decode(self, x: Sequences) -> list[str]:
        """The string of each sample ('invalid' when malformed)."""
        tokens, ok = self.tokens(x)
        return [
            "".join(self.letters[t] for t in row) if good else "invalid" for row, good in zip(tokens, ok, strict=True)
        ]

    def describe(self) -> dict[str, Any]:
        """Settings for config.json."""
        return {"zoo_version": VERSION, "vocab": self.letters, "length": self.length, **asdict(self.options)}

    # -- helpers --------------------------------------------------------------------------------------
    def encode(self, tokens: np.ndarray) -> Sequences:
        """Sequences of (n, L) token ids."""
        t = torch.as_tensor(tokens, dtype=torch.long).reshape(len(tokens), self.length)
        return Sequences(t, torch.full((len(t),), self.length, dtype=torch.long))

    def tokens(self, x: Sequences) -> tuple[np.ndarray, np.ndarray]:
        """(n, L) token ids (0 in malformed rows) and the (n,) mask of well-formed rows."""
        tokens = np.zeros((len(x), self.length), dtype=np.int64)
        ok = (x.lengths.cpu().numpy() == self.length) if x.tokens.shape[1] >= self.length else np.zeros(len(x), bool)
        if ok.any():
            rows = x.tokens[:, : self.length].cpu().numpy()[ok]
            inside = ((rows >= 0) & (rows < self.vocab)).all(1)
            ok[np.flatnonzero(ok)[~inside]] = False
            tokens[ok] = rows[inside]
        return tokens, ok

    def successes(self) -> Sequences:
        """Every string with reward 1, found by listing the whole space once (then cached on disk)."""
        if self._successes is None:
            # the data chain is part of the key: `typical`'s reward reads it, the others' lists are cheap to redo
            key = {"task": self.name, "version": VERSION, "data": self.data_settings(), **self.reward_settings()}
            path = self.cache / "zoo" / f"{self.name}-{config_hash(json.loads(json.dumps(key)))}.json"
            if path.is_file():
                index = np.asarray(json.loads(path.read_text())["index"], dtype=np.int64)
            else:
                index = self.list_successes()
                atomic_write_text(json.dumps({"settings": key, "index": index.tolist()}), path)
            self._successes = self.encode(index_tokens(index, self.vocab, self.length))
        return self._successes

    def list_successes(self) -> np.ndarray:
        """Indices (base-V numbers) of every string with reward 1: each string is a left and a right half, a
        cheap test on every pair of halves (`candidates`) narrows the space, and `hits` decides."""
        half = self.length // 2
        left = index_tokens(np.arange(self.vocab**half), self.vocab, half)
        right = index_tokens(np.arange(self.vocab ** (self.length - half)), self.vocab, self.length - half)
        found = []
        for lo in range(0, len(left), HALF_CHUNK):
            a, b = np.nonzero(self.candidates(left[lo : lo + HALF_CHUNK], right))
            index = (lo + a) * len(right) + b
            tokens = np.concatenate([left[lo + a], right[b]], 1)
            found.append(index[self.hits(tokens)])
        return np.concatenate(found)

    def candidates(self, left: np.ndarray, right: np.ndarray) -> np.ndarray:
        """(len(left), len(right)) bool, True at least wherever the joined string might hit (the default:
        everywhere)."""
        return np.ones((len(left), len(right)), dtype=bool)


# -- grammar: rare valid strings ------------------------------------------------------------------------------


@settings_dataclass
class GrammarOptions:
    """task_options of `grammar`."""

    depth: Annotated[int, Ge(1), Le(6)] = 4
    """A balanced string succeeds when its brackets nest at least this deep."""
    bracket_probability: Annotated[float, Gt(0), Lt(0.5)] = 0.2
    """Probability of '(' and of ')' at each position of the pre-training data (the rest: 'a' and 'b')."""
    prior: ZooPrior = field(default_factory=ZooPrior)
    """How the prior is pre-trained."""
    shipped: bool = True
    """Use the shipped prior when `prior` and the data settings are the defaults; false: train it here."""


class Grammar(ZooTask):
    """Balanced bracket strings of 12 tokens over ( ) a b, nested at least `depth` deep."""

    name = "grammar"
    letters = "()ab"
    length = 12

    def data_settings(self) -> dict[str, Any]:
        """The i.i.d. token probabilities."""
        return {"bracket_probability": self.options.bracket_probability}

    def reward_settings(self) -> dict[str, Any]:
        """Only the depth defines the success set."""
        return {"depth": self.options.depth}

    def data(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """I.i.d. tokens: '(' and ')' with bracket_probability each, 'a' and 'b' share the rest."""
        b = self.options.bracket_probability
        return rng.choice(4, size=(n, self.length), p=[b, b, 0.5 - b, 0.5 - b])

    def hits(self, tokens: np.ndarray) -> np.ndarray:
        """Balanced (no prefix closes more than it opened, all closed at the end) and max depth >= depth."""
        step = (tokens == 0).astype(np.int64) - (tokens == 1)
        level = np.cumsum(step, 1)
        return (level.min(1) >= 0) & (level[:, -1] == 0) & (level.max(1) >= self.options.depth)

    def candidates(self, left: np.ndarray, right: np.ndarray) -> np.ndarray:
        """The halves' bracket levels decide balance and depth exactly."""
        levels = [np.cumsum((h == 0).astype(np.int64) - (h == 1), 1) for h in (left, right)]
        (ll, rl) = levels
        end, start_ok = ll[:, -1:], ll.min(1, keepdims=True) >= 0
        balanced = start_ok & (end + rl[:, -1][None, :] == 0) & (end + rl.min(1)[None, :] >= 0)
        deep = np.maximum(ll.max(1, keepdims=True), end + rl.max(1)[None, :]) >= self.options.depth
        return balanced & deep


# -- classifier: a hidden random network as the oracle --------------------------------------------------------


@settings_dataclass
class ClassifierOptions:
    """task_options of `classifier`."""

    seed: int = 0
    """Seed of the data chain and of the hidden network."""
    hidden: Annotated[int, Ge(1)] = 16
    """Hidden units of the network."""
    threshold: float = 5.4
    """A string succeeds when the network's output exceeds this (calibrated for the defaults)."""
    concentration: Annotated[float, Gt(0)] = 0.5
    """Dirichlet concentration of the data chain's rows (smaller: more predictable data)."""
    prior: ZooPrior = field(default_factory=ZooPrior)
    """How the prior is pre-trained."""
    shipped: bool = True
    """Use the shipped prior when `prior` and the data settings are the defaults; false: train it here."""


class Classifier(ZooTask):
    """Strings of 8 tokens over 8 letters; reward 1 when a hidden random tanh network scores them above a threshold."""

    name = "classifier"
    letters = "ABCDEFGH"
    length = 8

    def __init__(self, options: ClassifierOptions, cache: Path) -> None:
        super().__init__(options, cache)
        o = options
        self.start, self.transition = markov_chain(self.vocab, o.concentration, derive_seed(o.seed, "chain"))
        rng = np.random.default_rng(derive_seed(o.seed, "network"))
        # first layer as a table: one-hot inputs make it a sum over positions of a row per (position, token)
        self.w1 = rng.standard_normal((self.length, self.vocab, o.hidden)) / math.sqrt(self.length)
        self.b1 = 0.5 * rng.standard_normal(o.hidden)
        self.w2 = rng.standard_normal(o.hidden) / math.sqrt(o.hidden) * 2.0

    def data_settings(self) -> dict[str, Any]:
        """The chain's seed and concentration."""
        return {"seed": self.options.seed, "concentration": self.options.concentration}

    def data(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """Draws of the random Markov chain."""
        return sample_chain(self.start, self.transition, n, self.length, rng)

    def score(self, tokens: np.ndarray) -> np.ndarray:
        """(n,) the hidden network's output."""
        h = self.w1[np.arange(self.length)[None, :], tokens].sum(1) + self.b1
        return np.tanh(h) @ self.w2

    def hits(self, tokens: np.ndarray) -> np.ndarray:
        """Output above the threshold."""
        return self.score(tokens) > self.options.threshold

    def candidates(self, left: np.ndarray, right: np.ndarray) -> np.ndarray:
        """The network's pre-activation is a sum over positions: add the halves' sums."""
        half = left.shape[1]
        hl = self.w1[np.arange(half)[None, :], left].sum(1) + self.b1
        hr = self.w1[half + np.arange(right.shape[1])[None, :], right].sum(1)
        return np.tanh(hl[:, None, :] + hr[None, :, :]) @ self.w2 > self.options.threshold - MARGIN


# -- constrained: a free feasibility rule ---------------------------------------------------------------------


@settings_dataclass
class ConstrainedOptions:
    """task_options of `constrained`."""

    seed: int = 0
    """Seed of the data chain and of the score."""
    rare_bias: float = 1.5
    """Score per nat of data rarity of a token at each hotspot (hotspots favour rare tokens)."""
    hotspots: Annotated[int, Ge(0), Le(8)] = 3
    """Positions that favour rare tokens."""
    threshold: float = 10.3
    """A feasible string succeeds when its score exceeds this (calibrated for the defaults)."""
    concentration: Annotated[float, Gt(0)] = 0.8
    """Dirichlet concentration of the data chain's rows."""
    prior: ZooPrior = field(default_factory=ZooPrior)
    """How the prior is pre-trained."""
    shipped: bool = True
    """Use the shipped prior when `prior` and the data settings are the defaults; false: train it here."""


BIGRAM_SHARE = 0.04  # the forbidden bigram appears in about this share of the data (a synthesis liability)
MAX_RUN = 2  # a run of more than two equal tokens is infeasible
SELF_DAMPING = 0.25  # the data chain's self-transition weights are multiplied by this


class Constrained(ZooTask):
    """Designs of 8 tokens over 8 letters with a free feasibility rule; reward 1 when feasible and the
    additive score (rare tokens at hotspots) exceeds a threshold."""

    name = "constrained"
    letters = "ABCDEFGH"
    length = 8

    def __init__(self, options: ConstrainedOptions, cache: Path) -> None:
        super().__init__(options, cache)
        o = options
        self.start, transition = markov_chain(self.vocab, o.concentration, derive_seed(o.seed, "chain"))
        # natural strings seldom repeat a token: damp the chain's self-transitions so long runs stay rare
        transition = transition * np.where(np.eye(self.vocab, dtype=bool), SELF_DAMPING, 1.0)
        self.transition = transition / transition.sum(1, keepdims=True)
        rng = np.random.default_rng(derive_seed(o.seed, "fields"))
        self.fields = rng.standard_normal((self.length, self.vocab))
        self.hotspots = np.sort(rng.permutation(self.length)[: o.hotspots])
        # rarity of each token in the data: -log of its stationary-ish frequency over the chain's strings
        sample = sample_chain(self.start, self.transition, 50_000, self.length, rng)
        freq = np.bincount(sample.ravel(), minlength=self.vocab)
        # the forbidden bigram: the one (of distinct tokens) whose share of data strings is nearest BIGRAM_SHARE
        share = np.array([[((sample[:, :-1] == a) & (sample[:, 1:] == b)).any(1).mean() if a != b else np.inf
                           for b in range(self.vocab)] for a in range(self.vocab)])  # fmt: skip
        self.forbidden = divmod(int(np.abs(share - BIGRAM_SHARE).argmin()), self.vocab)
        rarity = -np.log((freq + 1) / (freq + 1).sum())
        self.fields[self.hotspots] += o.rare_bias * (rarity - rarity.mean())

    def data_settings(self) -> dict[str, Any]:
        """The chain's seed and concentration."""
        return {"seed": self.options.seed, "concentration": self.options.concentration}

    def data(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """Draws of the random Markov chain (infeasible ones included: the data are natural, not filtered)."""
        return sample_chain(self.start, self.transition, n, self.length, rng)

    def infeasible(self, tokens: np.ndarray) -> np.ndarray:
        """(n,) bool: a run of more than MAX_RUN equal tokens, or the forbidden bigram."""
        bad = np.zeros(len(tokens), dtype=bool)
        for t in range(self.length - MAX_RUN):
            window = tokens[:, t : t + MAX_RUN + 1]
            bad |= (window == window[:, :1]).all(1)
        bad |= ((tokens[:, :-1] == self.forbidden[0]) & (tokens[:, 1:] == self.forbidden[1])).any(1)
        return bad

    def score(self, tokens: np.ndarray) -> np.ndarray:
        """(n,) additive score: sum of the fields of each position's token."""
        return self.fields[np.arange(self.length)[None, :], tokens].sum(1)

    def hits(self, tokens: np.ndarray) -> np.ndarray:
        """Feasible and scoring above the threshold."""
        return ~self.infeasible(tokens) & (self.score(tokens) > self.options.threshold)

    def candidates(self, left: np.ndarray, right: np.ndarray) -> np.ndarray:
        """The score is a sum over positions: add the halves' sums (feasibility is left to `hits`)."""
        half = left.shape[1]
        fl = self.fields[np.arange(half)[None, :], left].sum(1)
        fr = self.fields[half + np.arange(right.shape[1])[None, :], right].sum(1)
        return fl[:, None] + fr[None, :] > self.options.threshold - MARGIN

    def feasible(self, x: Sequences) -> torch.Tensor:
        """(n,) bool: False for malformed strings, long runs and the forbidden bigram (reward 0 for free)."""
        tokens, ok = self.tokens(x)
        return torch.as_tensor(ok & ~self.infeasible(tokens))


# -- typical: successes in the typical set ---------------------------------------------------------------------


@settings_dataclass
class TypicalOptions:
    """task_options of `typical`."""

    seed: int = 0
    """Seed of the data chain and of the hidden hash."""
    band: Annotated[float, Gt(0)] = 1.0
    """A success's data log-likelihood lies within this many nats of the chain's mean (its entropy)."""
    modulus: Annotated[int, Ge(1)] = 2000
    """A success's hidden hash is 0 modulo this (about one typical string in `modulus` succeeds)."""
    concentration: Annotated[float, Gt(0)] = 0.5
    """Dirichlet concentration of the data chain's rows."""
    prior: ZooPrior = field(default_factory=ZooPrior)
    """How the prior is pre-trained."""
    shipped: bool = True
    """Use the shipped prior when `prior` and the data settings are the defaults; false: train it here."""


class Typical(ZooTask):
    """Strings of 8 tokens over 8 letters; reward 1 when typical under the data chain and picked by a hidden hash."""

    name = "typical"
    letters = "ABCDEFGH"
    length = 8

    def __init__(self, options: TypicalOptions, cache: Path) -> None:
        super().__init__(options, cache)
        o = options
        # its own stream: the classifier's chain has the same seed and concentration
        self.start, self.transition = markov_chain(self.vocab, o.concentration, derive_seed(o.seed, "typical-chain"))
        self.entropy = chain_entropy(self.start, self.transition, self.length)

    def data_settings(self) -> dict[str, Any]:
        """The chain's seed, stream and concentration."""
        return {"seed": self.options.seed, "stream": "typical-chain", "concentration": self.options.concentration}

    def data(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """Draws of the random Markov chain."""
        return sample_chain(self.start, self.transition, n, self.length, rng)

    def hits(self, tokens: np.ndarray) -> np.ndarray:
        """|log p_data(x) + H| <= band and hash(x) = 0 mod modulus."""
        o = self.options
        typical = np.abs(chain_log_prob(self.start, self.transition, tokens) + self.entropy) <= o.band
        powers = self.vocab ** np.arange(self.length - 1, -1, -1, dtype=np.int64)
        picked = hash_index(tokens @ powers, derive_seed(o.seed, "hash")) % np.uint64(o.modulus) == 0
        return typical & picked

    def candidates(self, left: np.ndarray, right: np.ndarray) -> np.ndarray:
        """The chain's log-likelihood is the halves' plus the bigram where they meet; the hash is exact."""
        o, log_t = self.options, np.log(self.transition)
        lp = chain_log_prob(self.start, self.transition, left)[:, None] + log_t[right[:, :-1], right[:, 1:]].sum(1)
        lp = lp + log_t[left[:, -1][:, None], right[:, 0][None, :]]
        powers = self.vocab ** np.arange(self.length - 1, -1, -1, dtype=np.int64)
        index = (left @ powers[: left.shape[1]])[:, None] + (right @ powers[left.shape[1] :])[None, :]
        picked = hash_index(index, derive_seed(o.seed, "hash")) % np.uint64(o.modulus) == 0
        return picked & (np.abs(lp + self.entropy) <= o.band + MARGIN)


# -- factories ---------------------------------------------------------------------------------------------


@task_factory(
    "Zoo: balanced bracket strings of 12 tokens nested >= 4 deep; i.i.d. pre-training data. Exact.", {}, GrammarOptions
)
def grammar(options: GrammarOptions, cache: Path) -> Grammar:
    """Rare valid strings of a grammar."""
    return Grammar(options, cache)


@task_factory("Zoo: 8 tokens over 8 letters; a hidden random network is the oracle. Exact.", {}, ClassifierOptions)
def classifier(options: ClassifierOptions, cache: Path) -> Classifier:
    """A hidden-rule classifier as the oracle."""
    return Classifier(options, cache)


@task_factory(
    "Zoo: 8-token designs with a free feasibility rule; rare tokens at hotspots score. Exact.", {}, ConstrainedOptions
)
def constrained(options: ConstrainedOptions, cache: Path) -> Constrained:
    """A constrained design problem with a free feasibility check."""
    return Constrained(options, cache)


@task_factory(
    "Zoo: successes are typical strings picked by a hidden hash (nothing to learn but staying typical). Exact.",
    {},
    TypicalOptions,
)
def typical(options: TypicalOptions, cache: Path) -> Typical:
    """Successes in the prior's typical set."""
    return Typical(options, cache)


TASKS = ("grammar", "classifier", "constrained", "typical")
"""The zoo's factories by name (`banel.tasks.zoo:NAME`)."""
