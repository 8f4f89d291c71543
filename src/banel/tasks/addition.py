"""The addition attack (paper Appendix B.1): find queries `a+b=` on which a target transformer adds wrongly.

Two of our own transformers. The *target* (banel.tasks.adder, where its training lives) is trained on `a+b=c`
(operands of 1 to `max_digits` digits, no leading zeros) and answers a query by greedy decoding. The *attacker* prior
is trained on the queries `a+b=` over a wider vocabulary (digits, `+`, `=`, `a`-`z`), so it can also write
malformed strings. The reward is 1 iff the string is a well-formed query and the target's greedy answer is
not the true sum. Both models are trained by `prepare` from a seed and cached; target training checkpoints
every few minutes and resumes where it stopped.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import asdict, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.stats import binomtest

from banel import shipped as references
from banel.cache import atomic_torch_save, cache_dir, config_hash, safe_torch_load
from banel.config import Annotated, Ge, Le, check, model_validator, settings_dataclass
from banel.models.protocol import FitConfig, GenerativeModel
from banel.models.transformer import TransformerConfig, TransformerModel
from banel.sequences import Sequences, derive_seed
from banel.tasks import task_factory
from banel.tasks.adder import (
    DIGITS,
    TargetTraining,
    decode,
    encode,
    exact_match,
    random_operands,
    random_problems,
    target_answers,
    train_target,
    true_sum,
)

log = logging.getLogger(__name__)

ATTACKER_CHARS = DIGITS + "+=" + "abcdefghijklmnopqrstuvwxyz"
"""The attacker's content vocabulary: a superset of the target's, so it can write malformed strings."""
ATTACKER_INDEX = {c: i for i, c in enumerate(ATTACKER_CHARS)}
VERSION = 1  # bump when the data or training code changes what a cached checkpoint means

_QUERY = re.compile(r"([0-9]+)\+([0-9]+)=")
EXACT_MAX_QUERIES = 20_000
"""Enumerate the well-formed queries for an exact success rate when there are at most this many (2 digits)."""


# -- grammar and reward ------------------------------------------------------------------------------
def parse_query(text: object, max_digits: int = 10, leading_zeros: bool = True) -> tuple[str, str] | None:
    """The two operand strings of a well-formed query `a+b=`, or None; never raises, whatever `text` is.

    Well-formed: digits, `+`, digits, `=`, nothing else, each operand 1 to `max_digits` characters. With
    `leading_zeros=False` an operand of two or more digits starting with 0 makes the query invalid.
    """
    if not isinstance(text, str) or len(text) > 2 * max_digits + 2:
        return None
    match = _QUERY.fullmatch(text)
    if match is None:
        return None
    a, b = match.group(1), match.group(2)
    if len(a) > max_digits or len(b) > max_digits:
        return None
    if not leading_zeros and ((len(a) > 1 and a[0] == "0") or (len(b) > 1 and b[0] == "0")):
        return None
    return a, b


def well_formed_queries(max_digits: int, leading_zeros: bool = True) -> list[tuple[str, str]]:
    """Every well-formed query's operands, in lexicographic order (exponential in max_digits: keep it small)."""
    operands = [
        s
        for d in range(1, max_digits + 1)
        for i in range(10**d)
        if (s := str(i).zfill(d)) and (leading_zeros or d == 1 or s[0] != "0")
    ]
    return [(a, b) for a in operands for b in operands]


def count_well_formed(max_digits: int, leading_zeros: bool = True) -> int:
    """How many well-formed queries there are."""
    per_operand = sum(10**d if leading_zeros else 10 if d == 1 else 9 * 10 ** (d - 1) for d in range(1, max_digits + 1))
    return per_operand**2


def total_probability(model: GenerativeModel, texts: list[str]) -> float:
    """sum of p(x) over distinct attacker strings (float64 logsumexp); 0 for none."""
    if not texts:
        return 0.0
    return math.exp(float(torch.logsumexp(model.log_prob(encode(texts, ATTACKER_INDEX)).double(), 0)))


def has_leading_zero(a: str, b: str) -> bool:
    """Whether either operand has a leading zero (two or more digits starting with 0)."""
    return (len(a) > 1 and a[0] == "0") or (len(b) > 1 and b[0] == "0")


def carry_chain(a: str, b: str) -> int:
    """Length of the longest run of consecutive carries when adding a and b column by column."""
    x, y = a[::-1], b[::-1]
    carry, run, best = 0, 0, 0
    for i in range(max(len(x), len(y))):
        s = (int(x[i]) if i < len(x) else 0) + (int(y[i]) if i < len(y) else 0) + carry
        carry = int(s >= 10)
        run = run + 1 if carry else 0
        best = max(best, run)
    return best


# -- data ----------------------------------------------------------------------------------------------
def all_problems(max_digits: int) -> list[tuple[str, str]]:
    """Every operand pair without leading zeros (10**(2*max_digits) pairs: only for small max_digits)."""
    if max_digits > 3:
        raise ValueError(f"all_problems enumerates 10**(2*max_digits) pairs; max_digits={max_digits} > 3")
    return well_formed_queries(max_digits, leading_zeros=False)


@settings_dataclass
class AttackerTraining:
    """How the attacker prior is pre-trained on queries `a+b=`."""

    seed: int = 0
    """Seed of the data and initial weights."""
    samples: Annotated[int, Ge(1)] = 50_000
    """Training queries."""
    epochs: Annotated[int, Ge(1)] = 4
    """Passes over them."""
    d_model: Annotated[int, Ge(1)] = 64
    """Transformer width."""
    n_layer: Annotated[int, Ge(1)] = 2
    """Transformer depth."""
    n_head: Annotated[int, Ge(1)] = 4
    """Attention heads."""
    extra_len: Annotated[int, Ge(0)] = 4
    """Positions beyond the longest query (room for malformed strings)."""
    fit: FitConfig = field(default_factory=lambda: FitConfig(lr=2e-3, batch_size=128))
    """Optimiser settings."""


@settings_dataclass
class AdditionOptions:
    """Settings of the addition-attack task (`--set task_options.KEY=VALUE`)."""

    max_digits: Annotated[int, Ge(1), Le(18)] = 10
    """Largest operand length in the training data and in a well-formed query."""
    leading_zeros: bool = True
    """Whether a query with a leading zero is well-formed (paper B.1: yes; the blog's scaling study: no)."""
    target: TargetTraining = field(default_factory=TargetTraining)
    """Target training."""
    attacker: AttackerTraining = field(default_factory=AttackerTraining)
    """Attacker pre-training."""
    unfinished_target: bool = False
    """Use the latest checkpoint of a target whose training schedule has not finished (else an error)."""
    exact_rate: bool = True
    """Exact success rates (sum of p(x) over every well-formed query the target gets wrong) where those can
    be enumerated (at most EXACT_MAX_QUERIES: max_digits <= 2); false, or more digits: Monte-Carlo estimates."""
    shipped: bool = True
    """Use the reference target and attacker shipped with banel when their settings are exactly the shipped
    ones (benchmarks/addition/small.json's), so results match the documented ones on any machine; false:
    train them on this machine (once, then cached)."""

    @model_validator(mode="after")
    def _curriculum(self) -> AdditionOptions:
        check(
            not self.target.calibrate_rate
            or self.target.calibrate_samples
            or count_well_formed(self.max_digits, False) <= EXACT_MAX_QUERIES,
            "target.calibrate_rate",
            f"needs max_digits <= 2 (enumerable queries) or target.calibrate_samples > 0, "
            f"got max_digits={self.max_digits}",
        )
        check(
            self.target.start_digits <= self.max_digits,
            "target.start_digits",
            f"({self.target.start_digits}) must be <= max_digits ({self.max_digits})",
        )
        return self


def attacker_config(options: AdditionOptions) -> TransformerConfig:
    """The attacker's architecture: the longest query plus `extra_len` positions."""
    a = options.attacker
    return TransformerConfig(
        vocab_size=len(ATTACKER_CHARS),
        max_len=2 * options.max_digits + 2 + a.extra_len,
        end_token=True,
        d_model=a.d_model,
        n_layer=a.n_layer,
        n_head=a.n_head,
    )


# -- the task --------------------------------------------------------------------------------------------
class AdditionTask:
    """Attack a target adder: the prior is the attacker; reward 1 for a well-formed query it gets wrong."""

    name = "addition"

    def __init__(self, options: AdditionOptions | None = None, cache: str | Path | None = None) -> None:
        self.options = options or AdditionOptions()
        self._cache = cache
        self._prior: dict[str, GenerativeModel] = {}
        self._target: TransformerModel | None = None
        self._device = "cpu"
        """Where the target answers: the device of the last prior asked for (the run's)."""
        self._answers: dict[str, str] = {}
        self._wins: list[str] | None = None

    # -- cached artefacts ------------------------------------------------------------------------------
    def target_key(self) -> dict[str, Any]:
        """The settings the target's checkpoint (cached or shipped) is keyed by (its training settings only)."""
        o = self.options
        what: dict[str, Any] = {"version": VERSION, "max_digits": o.max_digits, "target": asdict(o.target)}
        for name, default in (
            ("calibrate_samples", 0),
            ("answer_order", "normal"),
            ("top_share", 0.0),
            ("positions", "learned"),
            ("abacus", False),
        ):
            if what["target"][name] == default:
                del what["target"][name]  # keeps the keys of targets cached before the option existed
        if not o.target.calibrate_rate:
            del what["target"]["calibrate_rate"]  # keeps the keys of targets cached before the option existed
        else:
            what["attacker"] = asdict(o.attacker)  # where training stops depends on the attacker
        return what

    def attacker_key(self) -> dict[str, Any]:
        """The settings the attacker prior's checkpoint (cached or shipped) is keyed by."""
        o = self.options
        return {"version": VERSION, "max_digits": o.max_digits, "attacker": asdict(o.attacker)}

    def target_path(self) -> Path:
        """Checkpoint file of the target in the cache (a function of the target's settings only)."""
        return cache_dir(self._cache) / "addition" / f"target-{config_hash(self.target_key())}.pt"

    def attacker_path(self) -> Path:
        """Checkpoint file of the attacker prior in the cache."""
        return cache_dir(self._cache) / "addition" / f"attacker-{config_hash(self.attacker_key())}.pt"

    def shipped_target(self) -> Path | None:
        """The target shipped with banel for exactly these settings ({model, state}: no optimiser), or None."""
        return references.find("addition-target", self.target_key()) if self.options.shipped else None

    def shipped_attacker(self) -> Path | None:
        """The attacker prior shipped with banel for exactly these settings, or None."""
        return references.find("addition-attacker", self.attacker_key()) if self.options.shipped else None

    def target(self, max_seconds: float | None = None) -> TransformerModel:
        """The trained target: shipped with banel, loaded from the cache, or trained (or resumed) first."""
        if self._target is not None:
            if self._target.device != torch.device(self._device):
                self._target = TransformerModel.from_state_dict(self._target.state_dict(), self._device)
            return self._target
        reference = self.shipped_target()
        path = reference or self.target_path()
        saved = safe_torch_load(path) if path.is_file() else None
        if saved is not None and (saved["state"]["done"] or self.options.unfinished_target):
            model = TransformerModel.from_state_dict(saved["model"], self._device)
            if not saved["state"]["done"]:
                log.warning("using an unfinished target (step %d)", saved["state"]["step"])
        else:
            log.warning(
                "training the addition target to the end of its schedule (hours on a CPU for the default; "
                "`banel prepare addition --max-seconds S` trains in resumable pieces); checkpoints at %s",
                path,
            )
            model, state = train_target(
                self.options.target, self.options.max_digits, path, max_seconds=max_seconds, prior_rate=self._prior_rate
            )
            if not state["done"]:
                raise ValueError(
                    f"target training stopped at step {state['step']} of {self.options.target.steps}; "
                    f"run `banel prepare addition` again to resume from {path}, or set "
                    "task_options.unfinished_target=true to use it as it is"
                )
        self._target = model
        return model

    def prior(self, device: str = "cpu") -> GenerativeModel:
        """The attacker prior: shipped with banel, loaded from the cache, or pre-trained (a minute) and cached."""
        self._device = device  # the target answers where the run computes
        if device in self._prior:
            return self._prior[device]
        a = self.options.attacker
        path = self.shipped_attacker() or self.attacker_path()
        model = TransformerModel(attacker_config(self.options), seed=a.seed, device=device)
        # Not cache.load_or_train: training on one thread would change what a cached attacker means, and a
        # calibrated target's key names the attacker's settings, not its version (retraining takes hours).
        if path.is_file():
            model.load_state_dict(safe_torch_load(path))
        else:
            log.info("pre-training the addition attacker (cached at %s)", path)
            rng = np.random.default_rng(derive_seed(a.seed, "attacker-data"))
            queries = [f"{x}+{y}=" for x, y in random_problems(a.samples, self.options.max_digits, rng)]
            losses = model.fit(encode(queries, ATTACKER_INDEX), a.epochs, derive_seed(a.seed, "fit"), a.fit)
            log.info("addition attacker: final NLL per token %.4f", losses[-1])
            atomic_torch_save(model.state_dict(), path)
        self._prior[device] = model
        return model

    def _prior_rate(self, target: TransformerModel) -> float:
        """The attacker prior's success rate against `target`: exact on queries without leading zeros, or
        (target.calibrate_samples > 0) the fraction of a fixed set of attacker draws that win."""
        o = self.options
        if o.target.calibrate_samples:
            x = self.prior().sample(o.target.calibrate_samples, derive_seed(o.attacker.seed, "calibrate"))
            parsed = [p for s in self.decode(x) if (p := parse_query(s, o.max_digits, o.leading_zeros))]
            answers = target_answers(target, parsed, o.target)
            return sum(c != true_sum(a, b) for (a, b), c in zip(parsed, answers, strict=True)) / len(x)
        problems = well_formed_queries(o.max_digits, leading_zeros=False)
        answers = target_answers(target, problems, o.target)
        wins = [f"{a}+{b}=" for (a, b), c in zip(problems, answers, strict=True) if c != true_sum(a, b)]
        return total_probability(self.prior(), wins)

    def answers(self, queries: list[tuple[str, str]]) -> list[str]:
        """The target's greedy answers to well-formed queries in normal digit order (test doubles override this)."""
        return target_answers(self.target(), queries, self.options.target)

    # -- Task protocol ---------------------------------------------------------------------------------
    def reward(self, x: Sequences) -> torch.Tensor:
        """1 where the string is a well-formed query and the target's greedy answer is wrong."""
        o = self.options
        texts = self.decode(x)
        parsed = [parse_query(s, o.max_digits, o.leading_zeros) for s in texts]
        todo = sorted({s for s, p in zip(texts, parsed, strict=True) if p is not None} - set(self._answers))
        if todo:
            answers = self.answers([parse_query(s, o.max_digits, True) for s in todo])
            self._answers.update(zip(todo, answers, strict=True))
        r = [0.0 if p is None else float(self._answers[s] != true_sum(*p)) for s, p in zip(texts, parsed, strict=True)]
        return torch.tensor(r, dtype=torch.float64)

    def free_reward(self, x: Sequences) -> torch.Tensor:
        """The reward at no cost (GroundTruth): the target is our own model, free to query."""
        return self.reward(x)

    def feasible(self, x: Sequences) -> torch.Tensor:
        """(n,) bool: True where the string is a well-formed query (in this variant), the only ones that can win."""
        o = self.options
        return torch.tensor([parse_query(s, o.max_digits, o.leading_zeros) is not None for s in self.decode(x)])

    def prepare(self, max_seconds: float | None, samples: int, seed: int = 0, problems: int = 5000) -> dict[str, Any]:
        """Train (or resume) the target and the attacker; measure accuracy and the base success rate.

        Returns the target's training state (step, curriculum, accuracy curve); its exact-match accuracy on
        `problems` fresh problems, on a fifth as many per operand length, and (max_digits <= 2) on every
        problem; and the attacker's success rate over `samples` draws with a 95% Clopper-Pearson interval
        (None while the target is unfinished and unfinished_target is off).
        """
        o = self.options
        reference = self.shipped_target()
        if reference is not None:  # nothing to train: report on the shipped target
            saved = safe_torch_load(reference)
            model, state = TransformerModel.from_state_dict(saved["model"]), saved["state"]
        else:
            model, state = train_target(
                o.target, o.max_digits, self.target_path(), max_seconds=max_seconds, prior_rate=self._prior_rate
            )
        rng = np.random.default_rng(derive_seed(seed, "prepare", "accuracy"))
        per_length = {}
        for d in range(1, o.max_digits + 1):
            lengths = np.full(max(problems // 5, 1), d)
            ops = [random_operands(len(lengths), lengths, rng) for _ in "ab"]
            per_length[d] = exact_match(model, list(zip(*ops, strict=True)), o.target)
        overall = exact_match(model, random_problems(problems, o.max_digits, rng), o.target)
        report: dict[str, Any] = {
            "target_path": str(reference or self.target_path()),
            "target_step": state["step"],
            "target_steps": o.target.steps,
            "target_done": state["done"],
            "target_calibrated": state.get("calibrated", False),
            "curriculum_digits": state["digits"],
            "accuracy_curve": state["curve"],
            "accuracy_by_length": per_length,
            "accuracy": overall,
            "accuracy_problems": problems,
        }
        if o.max_digits <= 2:
            report["accuracy_exact"] = exact_match(model, all_problems(o.max_digits), o.target)
        attacker = self.prior()
        report["attacker_path"] = str(self.shipped_attacker() or self.attacker_path())
        if state["done"] or o.unfinished_target:
            self._target = model
            x = attacker.sample(samples, derive_seed(seed, "prepare", "base"))
            k = int(self.free_reward(x).sum())
            ci = binomtest(k, samples).proportion_ci(confidence_level=0.95, method="exact")  # Clopper-Pearson
            low, high = float(ci.low), float(ci.high)
            report["base_success"] = {"rate": k / samples, "low": low, "high": high, "n": samples, "k": k}
            report["attacker_valid_rate"] = float(self.feasible(x).double().mean())
            wins = self._winning()
            if wins is not None:
                report["winning_queries"] = len(wins)
                report["base_success_exact"] = total_probability(attacker, wins)
        else:
            report["base_success"] = None
        return report

    def winning_queries(self) -> list[str] | None:
        """Every well-formed query the target answers wrongly, or None where they are too many to enumerate."""
        o = self.options
        if count_well_formed(o.max_digits, o.leading_zeros) > EXACT_MAX_QUERIES:
            return None
        queries = well_formed_queries(o.max_digits, o.leading_zeros)
        answers = self.answers(queries)
        return [f"{a}+{b}=" for (a, b), c in zip(queries, answers, strict=True) if c != true_sum(a, b)]

    def exact_success_rate(self, model: GenerativeModel) -> float | None:
        """sum of p(x) over the winning queries (float64 logsumexp), or None: Monte-Carlo estimates instead."""
        wins = self._winning() if self.options.exact_rate else None
        return None if wins is None else total_probability(model, wins)

    def _winning(self) -> list[str] | None:
        """winning_queries(), computed once."""
        if self._wins is None:
            self._wins = self.winning_queries()
        return self._wins

    def decode(self, x: Sequences) -> list[str]:
        """The attacker's strings."""
        return decode(x, ATTACKER_CHARS)

    def describe(self) -> dict[str, Any]:
        """Task settings for config.json."""
        described = {"name": self.name, **asdict(self.options)}
        # The description's hash keys the ledger's answers: runs on the shipped target (the default) keep the
        # key they had before the option existed; a target trained here is another reward, another key.
        if self.options.shipped:
            del described["shipped"]
        return described


@task_factory(
    "Attack a transformer adder (App. B.1): reward 1 for a well-formed query it answers wrongly.",
    {"banel": {"kappa": 2.0}},  # Appendix B.2: kappa = 1 everywhere except the addition attack
    AdditionOptions,
)
def addition(options: AdditionOptions, cache: Path) -> AdditionTask:
    """The addition attack."""
    return AdditionTask(options, cache)
