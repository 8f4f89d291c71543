"""Test doubles and checks shipped with the package: a tiny task, enumerable spaces, exact distillation, and
`check_model` / `check_task`, which an outside author runs on their own model wrapper or task."""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Literal

import torch
from scipy.stats import binomtest

from banel.algorithm import Distiller
from banel.config import Annotated, Ge, settings_dataclass
from banel.filters import Filter
from banel.models.categorical import CategoricalModel
from banel.models.protocol import GenerativeModel
from banel.models.transformer import TransformerConfig, TransformerModel
from banel.oracle.budget import validate_rewards
from banel.sequences import Sequences
from banel.tasks import protocol as capability
from banel.tasks import task_factory
from banel.tasks.protocol import Task

log = logging.getLogger(__name__)


def enumerate_sequences(vocab_size: int, max_len: int, end_token: bool = True) -> Sequences:
    """Every sequence over range(vocab_size): lengths 0..max_len with an end token, exactly max_len without."""
    lengths = range(max_len + 1) if end_token else [max_len]
    rows = [list(t) for n in lengths for t in itertools.product(range(vocab_size), repeat=n)]
    return Sequences.from_lists(rows)


def exact_distiller(support: Sequences) -> Distiller:
    """Tabular distillation with no error: the generator becomes generator * 1[filter accepts] / Z (Alg. 2 step 7)."""

    def distil(generator: GenerativeModel, _kept: Sequences, filt: Filter, _seed: int) -> list[float]:
        if not isinstance(generator, CategoricalModel):
            raise TypeError("exact_distiller needs a CategoricalModel generator")
        logits = torch.log_softmax(generator.logits, 0)
        accepted = filt.accepts(generator.support)
        generator.set_log_probs(torch.where(accepted, logits, torch.full_like(logits, -math.inf)))
        return []

    return distil


class ScriptedOracle:
    """A reward function that returns 1 exactly for a given set of sequences, and counts every call."""

    def __init__(self, successes: Iterable[list[int]]) -> None:
        self.successes = {tuple(s) for s in successes}
        self.calls: list[int] = []

    def __call__(self, x: Sequences) -> torch.Tensor:
        """1.0 for scripted successes, 0.0 otherwise."""
        self.calls.append(len(x))
        return torch.tensor([float(tuple(s) in self.successes) for s in x.to_lists()], dtype=torch.float64)


def check_model(model: GenerativeModel, support: Sequences, n: int = 20_000, seed: int = 0) -> dict[str, float]:
    """Check a GenerativeModel wrapper on an enumerable support; returns the measured discrepancies.

    `total_mass`: sum of exp(log_prob) over the support (1 for a normalised model);
    `tv_sampling`: total-variation distance between n draws and exp(log_prob);
    `clone_drift`: change of the original's log-probs after training its clone (0 if independent);
    `state_roundtrip`: max |log_prob| difference after a clone is trained and the original's state loaded
    into it (0 if the state holds everything log_prob depends on).
    """
    lp = model.log_prob(support)
    p = lp.exp()
    draws = model.sample(n, seed)
    index = {k: i for i, k in enumerate(support.keys())}
    counts = torch.zeros(len(support), dtype=torch.float64)
    for k in draws.keys():
        counts[index[k]] += 1
    twin = model.clone()
    twin.fit(draws[torch.arange(min(64, n))], 3, seed)
    state = model.state_dict()
    other = model.clone()
    other.fit(draws[torch.arange(min(64, n))], 3, seed + 1)  # moved away, then restored
    other.load_state_dict(state)
    return {
        "total_mass": float(p.sum()),
        "tv_sampling": float(0.5 * (counts / n - p).abs().sum()),
        "clone_drift": float((model.log_prob(support) - lp).abs().max()),
        "state_roundtrip": float((other.log_prob(support) - lp).abs().max()),
    }


def constant_reward(value: float) -> Callable[[Sequences], torch.Tensor]:
    """A reward function that returns `value` for every sample (for budget and failure tests)."""

    def reward(x: Sequences) -> torch.Tensor:
        return torch.full((len(x),), float(value), dtype=torch.float64)

    return reward


def count_call(path: str | Path, samples: int) -> None:
    """Append `samples` as one line to the count file (a single O_APPEND write: atomic across processes)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{samples}\n".encode())
    finally:
        os.close(fd)


def counted_calls(path: str | Path) -> tuple[int, int]:
    """(calls, samples scored) recorded in a count file by `count_call`; (0, 0) when it does not exist."""
    path = Path(path)
    lines = path.read_text().split() if path.is_file() else []
    return len(lines), sum(map(int, lines))


# -- a tiny task ----------------------------------------------------------------------------------------

TINY_VOCAB, TINY_LENGTH = 4, 3


@settings_dataclass
class TinyOptions:
    """task_options of the tiny test task (`banel.testing:tiny`)."""

    kind: Literal["transformer", "categorical"] = "transformer"
    """Prior: a random tiny 'transformer', or a 'categorical' table skewed away from the success."""
    seed: int = 0
    """Seed of the transformer prior's weights."""
    feasible: bool = False
    """Give the task a free check: a sequence starting with token 0 cannot win (a quarter of the space)."""
    delay: Annotated[float, Ge(0)] = 0.0
    """Seconds each reward call sleeps (a slow oracle, for kill-and-resume tests)."""
    exact: bool = True
    """Exact success rates; false: Monte-Carlo estimates, as for a task that cannot enumerate its successes."""
    free_reward: bool = True
    """Declare a free copy of the reward (GroundTruth); with exact=false too, the task has no free
    measurement at all, as a user's lab: its runs are judged on paid evidence alone."""
    count_file: str = ""
    """Append one line per call of the costly `reward` to this file, holding how many samples it scored (O_APPEND,
    so every process of a sweep or a resumed run adds to one count); free_reward is never counted."""


class TinyTask:
    """3 tokens over 4 symbols (64 sequences); reward 1 exactly for [3, 3, 3]; exact rates, an enumerable support."""

    name = "tiny"

    def __init__(self, options: TinyOptions | None = None) -> None:
        self.options = options or TinyOptions()
        self._prior: GenerativeModel | None = None
        if not self.options.free_reward:
            self.free_reward = None  # no GroundTruth: nothing may measure a model for free

    def prior(self, device: str = "cpu") -> GenerativeModel:
        """The same prior object every call."""
        if self._prior is None:
            if self.options.kind == "transformer":
                cfg = TransformerConfig(TINY_VOCAB, TINY_LENGTH, end_token=False, d_model=16, n_layer=1, n_head=2)
                self._prior = TransformerModel(cfg, seed=self.options.seed, device=device)
            else:
                # skewed towards other tokens so that the success [3, 3, 3] is rare (p = 1/1000 per token^3)
                s = self.support()
                self._prior = CategoricalModel(s, -math.log(10.0) * (s.tokens == 3).sum(1).double())
        return self._prior

    def reward(self, x: Sequences) -> torch.Tensor:
        """1 for [3, 3, 3]: the costly call (slept for options.delay, counted in options.count_file)."""
        if self.options.delay:
            time.sleep(self.options.delay)
        if self.options.count_file:  # as the answer is made: a call killed in its sleep answered nothing
            count_call(self.options.count_file, len(x))
        return self.free_reward_values(x)

    def free_reward(self, x: Sequences) -> torch.Tensor:
        """The same values at no cost (GroundTruth; None when options.free_reward is off)."""
        return self.free_reward_values(x)

    @staticmethod
    def free_reward_values(x: Sequences) -> torch.Tensor:
        """1.0 for [3, 3, 3], 0.0 otherwise."""
        return torch.tensor([float(r == [3, 3, 3]) for r in x.to_lists()], dtype=torch.float64)

    def exact_success_rate(self, model: GenerativeModel) -> float | None:
        """p([3, 3, 3]), or None when options.exact is off."""
        if not self.options.exact:
            return None
        return float(model.log_prob(Sequences.from_lists([[3, 3, 3]])).exp()[0])

    def support(self) -> Sequences:
        """All 64 sequences."""
        return enumerate_sequences(TINY_VOCAB, TINY_LENGTH, end_token=False)

    def describe(self) -> dict[str, Any]:
        """Settings for config.json."""
        # count_file and free_reward change how the reward is watched and measured, not what it answers
        return {"kind": self.options.kind, "seed": self.options.seed, "feasible": self.options.feasible}


class CheckedTinyTask(TinyTask):
    """The tiny task with its free check: a sequence starting with token 0 cannot win."""

    def feasible(self, x: Sequences) -> torch.Tensor:
        """False where the first token is 0."""
        return x.tokens[:, 0].cpu() != 0


@task_factory("3 tokens over 4 symbols, reward 1 for [3, 3, 3]: the test double of a task", {}, TinyOptions)
def tiny(options: TinyOptions, cache: Path) -> TinyTask:
    """The tiny task (with its free check when options.feasible)."""
    return CheckedTinyTask(options) if options.feasible else TinyTask(options)


# -- a tiny language-model task ---------------------------------------------------------------------------


def tiny_llama(vocab_size: int, eos_id: int, seed: int = 0, max_positions: int = 256) -> torch.nn.Module:
    """A random 2-layer Llama of width 16 (transformers; a few thousand weights), seeded."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=max_positions,
        eos_token_id=eos_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return LlamaForCausalLM(config)


@settings_dataclass
class TinyLMOptions:
    """task_options of the tiny language-model test task (`banel.testing:tiny_lm`; needs banel[hf])."""

    lora_rank: Annotated[int, Ge(0)] = 4
    """LoRA rank of the clones (0: full copies)."""
    max_new_tokens: Annotated[int, Ge(1)] = 3
    """Longest completion."""
    seed: int = 0
    """Seed of the random weights."""


class TinyLMTask:
    """A random 2-layer Llama over 6 tokens (5 is the end) answering the prompt [1, 2]; reward 1 for [3, 3]."""

    name = "tiny-lm"
    prompt = (1, 2)
    end = 5

    def __init__(self, options: TinyLMOptions | None = None) -> None:
        self.options = options or TinyLMOptions()
        self._prior: GenerativeModel | None = None

    def prior(self, device: str = "cpu") -> GenerativeModel:
        """A random tiny Llama wrapped as an HFModel (the same object every call)."""
        if self._prior is None:
            from banel.models.hf import HFModel, LMSettings

            net = tiny_llama(6, self.end, self.options.seed, max_positions=16)
            settings = LMSettings(
                max_new_tokens=self.options.max_new_tokens,
                lora_rank=self.options.lora_rank,
                lora_targets=("q_proj", "v_proj"),
                micro_batch=64,
                sample_batch=256,
            )
            self._prior = HFModel(net, list(self.prompt), [self.end], settings, device)
        return self._prior

    def reward(self, x: Sequences) -> torch.Tensor:
        """1 for the completion [3, 3] (to any prompt)."""
        return torch.tensor([float(r == [3, 3]) for r in x.to_lists()], dtype=torch.float64)

    def support(self) -> Sequences:
        """Every completion: up to max_new_tokens tokens out of 0..4, to the prompt."""
        rows = [list(t) for n in range(self.options.max_new_tokens + 1) for t in itertools.product(range(5), repeat=n)]
        return Sequences.from_lists(rows).with_context(Sequences.from_lists([list(self.prompt)] * len(rows)))

    def exact_success_rate(self, model: GenerativeModel) -> float:
        """p([3, 3] | prompt)."""
        x = Sequences.from_lists([[3, 3]]).with_context(Sequences.from_lists([list(self.prompt)]))
        return float(model.log_prob(x).exp()[0])


@task_factory("a random tiny Llama answering one prompt: the test double of a language-model task", {}, TinyLMOptions)
def tiny_lm(options: TinyLMOptions, cache: Path) -> TinyLMTask:
    """The tiny language-model task."""
    return TinyLMTask(options)


TINY_WORDS = ("[UNK]", "<eos>", "The", "answer", "is", "205", "18", "so", "$", ".")
"""The word-level vocabulary of `write_tiny_lm`'s tokenizer (token i is word i; <eos> ends an answer)."""


def write_tiny_lm(folder: str | Path, seed: int = 0) -> Path:
    """A random 2-layer Llama and a word-level tokenizer over TINY_WORDS, saved as a local Hugging Face model
    folder, and a two-question GSM8K test.jsonl beside it (`folder/model`, `folder/data`): the language-model
    path end to end without a download. Returns the folder."""
    import transformers
    from tokenizers import Tokenizer, models, pre_tokenizers

    folder = Path(folder)
    words = Tokenizer(models.WordLevel({w: i for i, w in enumerate(TINY_WORDS)}, unk_token="[UNK]"))
    words.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=words, unk_token="[UNK]", eos_token="<eos>")
    tiny_llama(len(TINY_WORDS), TINY_WORDS.index("<eos>"), seed).save_pretrained(folder / "model")
    tokenizer.save_pretrained(folder / "model")
    rows = [
        {"question": "How many?", "answer": "It is 18.\n#### 18"},
        {"question": "And now?", "answer": "It is 205.\n#### 205"},
    ]
    (folder / "data").mkdir(parents=True, exist_ok=True)
    (folder / "data" / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


# -- checking a task -----------------------------------------------------------------------------------


class TaskCheckFailed(AssertionError):
    """A task does not keep the contract of banel.tasks.protocol; the message says which part."""


def check_task(
    task: Any, samples: int = 2000, seed: int = 0, device: str = "cpu", reward_samples: int = 0
) -> dict[str, Any]:
    """Check a task against the contract (core and every capability it claims); returns what was measured.

    Raises TaskCheckFailed naming the first broken promise. Run it on your own task before spending NREs:
    `check_task(make_task("my_pkg.task:make"))`. It never calls the costly `reward` unless `reward_samples`
    > 0: then that many prior samples are real evaluations, paid outside any budget or ledger (the report
    says how many). Where the task declares a free reward, that is checked on `samples` samples instead.
    """

    def fail(what: str) -> TaskCheckFailed:
        return TaskCheckFailed(f"task {getattr(task, 'name', type(task).__name__)!r}: {what}")

    if not isinstance(task, Task):
        missing = [m for m in ("name", "prior", "reward") if not hasattr(task, m)]
        raise fail(f"lacks {', '.join(missing)}: a task needs name, prior(device) and reward(x)")
    if not isinstance(task.name, str) or not task.name:
        raise fail(f"name must be a non-empty string, got {task.name!r}")
    if reward_samples < 0 or reward_samples > samples:
        raise ValueError(f"reward_samples must be in 0..samples ({samples}), got {reward_samples}")
    prior = task.prior(device)
    if not isinstance(prior, GenerativeModel):
        raise fail(f"prior() returned a {type(prior).__name__}, not a GenerativeModel (banel.models.protocol)")
    x = prior.sample(samples, seed)
    if len(x) != samples:
        raise fail(f"prior().sample({samples}) returned {len(x)} sequences")
    lp = prior.log_prob(x)
    if lp.shape != (samples,) or not bool(torch.isfinite(lp).all()) or bool((lp > 1e-9).any()):
        raise fail("prior().log_prob of its own samples must be (n,) finite values <= 0")
    again = task.prior(device).log_prob(x)
    if not torch.equal(again, lp):
        raise fail("prior() must give the same weights on every call (pre-train once, cache, load)")
    report: dict[str, Any] = {"samples": samples, "capabilities": [], "reward_evaluations": 0}
    free = capability.free_reward(task)
    rewards = _checked_rewards(free, x, "free_reward", fail) if free is not None else None
    if free is not None:
        report["capabilities"].append("GroundTruth")
    if reward_samples:
        log.warning("check_task: calling the task's reward on %d samples: real, costly evaluations", reward_samples)
        # each sample once (its determinism would cost a second payment): values, shape, the empty batch
        paid = _checked_rewards(task.reward, x[:reward_samples], "reward", fail, again=False)
        report["reward_evaluations"] = reward_samples
        if rewards is not None and not torch.equal(paid, rewards[:reward_samples]):
            raise fail("free_reward must give the values reward gives: they disagree on the same samples")
        report["reward_successes"] = int(paid.sum())
        if rewards is None:  # no free reward: the paid samples are what the checks below can use
            rewards = torch.cat([paid, torch.full((samples - reward_samples,), math.nan, dtype=paid.dtype)])
    if rewards is not None:
        report["successes"] = int(rewards.nansum())
        report["prior_success_rate"] = float(rewards[~rewards.isnan()].mean())
    if isinstance(task, capability.Feasibility):
        report["capabilities"].append("Feasibility")
        ok = task.feasible(x)
        if ok.shape != (samples,) or ok.dtype != torch.bool:
            raise fail(f"feasible must return an (n,) bool tensor, got {ok.dtype} of shape {tuple(ok.shape)}")
        if rewards is not None and bool((rewards[~ok.cpu()] == 1).any()):
            raise fail("a sample that feasible() rules out got reward 1: the free check must only rule out failures")
        report["infeasible_fraction"] = float((~ok).double().mean())
    if isinstance(task, capability.ExactSuccess):
        exact = task.exact_success_rate(prior)
        if exact is not None:
            report["capabilities"].append("ExactSuccess")
            if not 0 <= exact <= 1 + 1e-9:
                raise fail(f"exact_success_rate(prior) = {exact} is not a probability")
            if rewards is not None:
                known = rewards[~rewards.isnan()]
                wins, n = int(known.sum()), len(known)
                p_value = binomtest(wins, n, min(max(exact, 0.0), 1.0)).pvalue
                if p_value < 1e-6:
                    raise fail(
                        f"exact_success_rate(prior) = {exact:.4g} but {wins}/{n} prior samples "
                        f"won (binomial p = {p_value:.1e}): the exact rate and the reward disagree"
                    )
            report["exact_success_rate"] = exact
    if isinstance(task, capability.Enumerable):
        report["capabilities"].append("Enumerable")
        support = task.support()
        mass = float(prior.log_prob(support).exp().sum())
        if abs(mass - 1) > 1e-6:
            raise fail(f"the prior's mass on support() is {mass:.8f}, not 1: support() must list every sequence")
        report["support"] = len(support)
    if isinstance(task, capability.Decode):
        report["capabilities"].append("Decode")
        texts = task.decode(x[:16])
        if len(texts) != min(16, samples) or not all(isinstance(t, str) for t in texts):
            raise fail("decode must return one string per sample")
    if isinstance(task, capability.Describe):
        report["capabilities"].append("Describe")
        try:
            json.dumps(task.describe())
        except (TypeError, ValueError) as err:
            raise fail(f"describe() must return plain JSON-able settings: {err}") from None
    if isinstance(task, capability.Metrics):
        report["capabilities"].append("Metrics")
        values = task.metrics(prior, x)
        bad = {k: v for k, v in values.items() if not (isinstance(k, str) and math.isfinite(float(v)))}
        if bad:
            raise fail(f"metrics must map names to finite numbers; got {bad}")
        report["metrics"] = {k: float(v) for k, v in values.items()}
    if isinstance(task, capability.Snapshot):
        report["capabilities"].append("Snapshot")
        task.snapshot({"prior": prior})
    return report


def _checked_rewards(
    reward: Callable[[Sequences], torch.Tensor],
    x: Sequences,
    name: str,
    fail: Callable[[str], TaskCheckFailed],
    again: bool = True,
) -> torch.Tensor:
    """reward(x), checked: 0/1 of the right shape, an empty tensor for an empty batch, and (again) the same
    values when asked a second time."""
    try:
        values = validate_rewards(reward(x), x)
        empty = validate_rewards(reward(x[:0]), x[:0])
    except ValueError as err:
        raise fail(f"{name}: {err}") from None
    if empty.shape != (0,):
        raise fail(f"{name} of an empty batch must be an empty tensor")
    if again and not torch.equal(validate_rewards(reward(x), x), values):
        raise fail(f"{name} must be deterministic: the same samples got different rewards")
    return values
