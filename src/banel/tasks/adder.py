"""The target adder of the addition attack: its arithmetic, data, greedy answers and training.

A transformer trained on `a+b=c` (operands of 1 to max_digits digits, no leading zeros, the sum in normal or
reversed digit order) by a curriculum over operand length with warm-up and cosine decay; training checkpoints
atomically and resumes bit for bit, since every batch is a function of (seed, step). The attack itself (the
attacker prior, the reward, the cache and shipping) is banel.tasks.addition.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from banel.cache import atomic_torch_save, safe_torch_load
from banel.config import Annotated, Ge, Gt, Le, Lt, check, model_validator, settings_dataclass
from banel.models.transformer import TransformerConfig, TransformerModel
from banel.sequences import Sequences, derive_seed

log = logging.getLogger(__name__)

DIGITS = "0123456789"
TARGET_CHARS = DIGITS + "+="
"""The target's content vocabulary (its end token is added by the transformer)."""
TARGET_INDEX = {c: i for i, c in enumerate(TARGET_CHARS)}


# -- arithmetic and data ---------------------------------------------------------------------------------
def true_sum(a: str, b: str) -> str:
    """The correct answer to `a+b=` in normal digit order, no leading zeros."""
    return str(int(a) + int(b))


def random_operands(n: int, lengths: np.ndarray, rng: np.random.Generator) -> list[str]:
    """n random operands without leading zeros, operand i with lengths[i] digits (one digit: 0-9)."""
    out = []
    for k in lengths.tolist():
        first = str(rng.integers(0 if k == 1 else 1, 10))
        rest = "".join(map(str, rng.integers(0, 10, size=k - 1).tolist()))
        out.append(first + rest)
    return out


def random_problems(n: int, max_digits: int, rng: np.random.Generator) -> list[tuple[str, str]]:
    """n operand pairs, each operand's digit count uniform on 1..max_digits, no leading zeros."""
    la = rng.integers(1, max_digits + 1, size=n)
    lb = rng.integers(1, max_digits + 1, size=n)
    return list(zip(random_operands(n, la, rng), random_operands(n, lb, rng), strict=True))


def encode(texts: list[str], index: dict[str, int]) -> Sequences:
    """Token sequences of strings over a vocabulary (every character must be in it)."""
    return Sequences.from_lists([[index[c] for c in t] for t in texts])


def decode(x: Sequences, chars: str) -> list[str]:
    """Strings of token sequences."""
    return ["".join(chars[t] for t in row) for row in x.to_lists()]


def written_sum(a: str, b: str, answer_order: str = "normal") -> str:
    """The answer the target is trained to write after `a+b=`: the sum, least significant digit first if reversed."""
    c = true_sum(a, b)
    return c[::-1] if answer_order == "reversed" else c


# -- greedy answers --------------------------------------------------------------------------------------
def target_query(a: str, b: str, t: TargetTraining | None = None) -> str:
    """The string the target reads for the query `a+b=`: its operands reversed when it reads them so (abacus)."""
    return f"{a[::-1]}+{b[::-1]}=" if (t or TargetTraining()).abacus else f"{a}+{b}="


def target_answers(
    target: TransformerModel, queries: list[tuple[str, str]], t: TargetTraining | None = None
) -> list[str]:
    """The target's greedy answer to each query `a+b=` in normal digit order (non-digit tokens kept as written);
    `t`: the training settings, which say how the target reads and writes (None: the defaults)."""
    t = t or TargetTraining()
    written = decode(target.greedy(encode([target_query(a, b, t) for a, b in queries], TARGET_INDEX)), TARGET_CHARS)
    return [w[::-1] for w in written] if t.answer_order == "reversed" else written


def exact_match(target: TransformerModel, problems: list[tuple[str, str]], t: TargetTraining | None = None) -> float:
    """Fraction of problems the target answers exactly right by greedy decoding."""
    answers = target_answers(target, problems, t)
    return float(np.mean([ans == true_sum(a, b) for ans, (a, b) in zip(answers, problems, strict=True)]))


def fixed_batch_accuracy(
    target: TransformerModel, max_digits: int, t: TargetTraining | None = None, problems: int = 2000, seed: int = 0
) -> float:
    """Exact-match accuracy on a fixed batch of `problems` random problems (seed `seed`): the number a shipped
    target's manifest records, so a test can check that the file still adds as it did when it was made."""
    rng = np.random.default_rng(derive_seed(seed, "shipped-check"))
    return exact_match(target, random_problems(problems, max_digits, rng), t)


@settings_dataclass
class TargetTraining:
    """How the target adder is trained (curriculum over operand length, warm-up then cosine decay)."""

    seed: int = 0
    """Seed of the initial weights and of every batch (batch i uses derive_seed(seed, 'batch', i))."""
    d_model: Annotated[int, Ge(1)] = 128
    """Transformer width."""
    n_layer: Annotated[int, Ge(1)] = 4
    """Transformer depth."""
    n_head: Annotated[int, Ge(1)] = 4
    """Attention heads."""
    steps: Annotated[int, Ge(1)] = 60_000
    """Optimiser steps in all (the schedule's length; training resumes from checkpoints until done)."""
    batch_size: Annotated[int, Ge(1)] = 128
    """Problems per step."""
    lr: float = 1e-3
    """Peak learning rate."""
    min_lr: Annotated[float, Gt(0)] = 5e-5
    """Learning rate at the end of the cosine decay."""
    warmup: int = 500
    """Linear warm-up steps."""
    weight_decay: float = 0.01
    """AdamW weight decay."""
    start_digits: Annotated[int, Ge(1)] = 3
    """Curriculum: the largest operand length trained on at the start."""
    promote_at: Annotated[float, Gt(0), Le(1)] = 0.9
    """Curriculum: add one digit when exact-match accuracy at the current largest length reaches this."""
    eval_every: Annotated[int, Ge(1)] = 500
    """Steps between accuracy checks (curriculum decisions and the accuracy curve)."""
    eval_problems: Annotated[int, Ge(1)] = 512
    """Fresh problems per accuracy check."""
    checkpoint_seconds: float = 300.0
    """Wall-clock seconds between checkpoints."""
    calibrate_rate: Annotated[float, Ge(0), Lt(1)] = 0.0
    """Stop training at the first accuracy check where the attacker prior's exact success rate on queries
    without leading zeros (the target's own mistakes) is at or below this: a target in the sparse regime on
    any machine, where float rounding makes the mistakes of a fixed number of steps differ. 0: train to the
    end of the schedule. Exact with enumerable queries (max_digits <= 2), else Monte-Carlo (calibrate_samples)."""
    calibrate_samples: Annotated[int, Ge(0)] = 0
    """Attacker draws (a fixed set, seeded by the attacker's seed) on which calibrate_rate is checked by Monte
    Carlo, once the curriculum has reached max_digits; 0: the exact rate (max_digits <= 2)."""
    top_share: Annotated[float, Ge(0), Le(1)] = 0.0
    """Share of each batch with both operands at the curriculum's top length (the rest: each operand's length
    uniform on 1..top). With uniform lengths only 1/top**2 of a batch has both at the top, the one case the
    promotion waits on: at 6 digits that stalled training for 9,000 steps (docs/LOG.md, 2026-12-06)."""
    positions: Literal["learned", "rotary"] = "learned"
    """How the target sees positions (the transformer's `positions`). With "learned" ones each new operand length
    put `+` and `=` at positions whose attention had to be learned again, and the curriculum stalled at 8 digits;
    "rotary" passed 6 and 7 digits in a fraction of the steps (docs/LOG.md, 2026-12-07)."""
    answer_order: Literal["normal", "reversed"] = "normal"
    """The order the target writes the sum in: "normal" (most significant digit first, as the paper) or
    "reversed" (least significant first: each digit then depends only on digits already read and the carry,
    which small transformers learn far faster; the reward compares the reversed answer with the true sum)."""
    abacus: bool = False
    """The target reads each operand least significant digit first (its tokenizer reverses them: the attacker
    still writes `a+b=` in normal order, leading zeros and all) and sees each digit's place in its number as a
    learned embedding (the transformer's `places`; Abacus embeddings, McLeish et al. 2024). Operand digit k and
    answer digit k then share place k at every length, where plain positions must count the operands' lengths:
    the rotary target stalled at 8 digits on that (docs/LOG.md, 2026-12-07). Needs answer_order="reversed"."""

    @model_validator(mode="after")
    def _schedule(self) -> TargetTraining:
        check(self.min_lr <= self.lr, "min_lr", f"must be in (0, lr={self.lr}], got {self.min_lr}")
        check(
            not self.abacus or self.answer_order == "reversed",
            "abacus",
            f'needs answer_order="reversed" (the answer\'s places match the operands\'), got "{self.answer_order}"',
        )
        return self


def target_config(t: TargetTraining, max_digits: int) -> TransformerConfig:
    """The target's architecture: room for `a+b=` and an answer one digit longer than the operands."""
    return TransformerConfig(
        vocab_size=len(TARGET_CHARS),
        max_len=3 * max_digits + 3,
        end_token=True,
        d_model=t.d_model,
        n_layer=t.n_layer,
        n_head=t.n_head,
        positions=t.positions,
        places=len(DIGITS) if t.abacus else 0,
    )


# -- target training -------------------------------------------------------------------------------------
def _lr(t: TargetTraining, step: int) -> float:
    if step < t.warmup:
        return t.lr * (step + 1) / t.warmup
    progress = min(1.0, (step - t.warmup) / max(1, t.steps - t.warmup))
    return t.min_lr + 0.5 * (t.lr - t.min_lr) * (1 + math.cos(math.pi * progress))


def _target_batch(t: TargetTraining, digits: int, step: int) -> tuple[Sequences, torch.Tensor]:
    """Problems `a+b=c` of training batch `step` (n) and the (n, w + 1) positions trained on: answer and end token."""
    rng = np.random.default_rng(derive_seed(t.seed, "batch", step))
    problems = random_problems(t.batch_size, digits, rng)
    n_top = round(t.top_share * t.batch_size)
    if n_top:  # drawn after the uniform part, so top_share = 0 leaves every earlier batch as it was
        top = np.full(n_top, digits)
        problems[:n_top] = zip(random_operands(n_top, top, rng), random_operands(n_top, top, rng), strict=True)
    x = encode([target_query(a, b, t) + written_sum(a, b, t.answer_order) for a, b in problems], TARGET_INDEX)
    answer_start = torch.tensor([len(a) + len(b) + 2 for a, b in problems])  # after `a+b=`
    columns = torch.arange(x.tokens.shape[1] + 1)
    return x, (columns >= answer_start.unsqueeze(1)) & (columns <= x.lengths.unsqueeze(1))


def train_target(
    t: TargetTraining,
    max_digits: int,
    path: str | Path,
    device: str = "cpu",
    max_seconds: float | None = None,
    on_eval: Callable[[dict[str, Any]], None] | None = None,
    prior_rate: Callable[[TransformerModel], float] | None = None,
) -> tuple[TransformerModel, dict[str, Any]]:
    """Train (or resume training) the target, checkpointing atomically to `path`; returns model and state.

    The state holds `step`, `digits` (the curriculum level), `done` and `curve` (one row per accuracy
    check). Stops when the schedule ends or after `max_seconds`; calling again resumes bit-for-bit, since
    every batch is a function of (seed, step). With `prior_rate` (the attacker's success rate against a
    model) and `target.calibrate_rate` > 0, training also stops, done, at the first accuracy check where
    that rate is at or below calibrate_rate (`state['calibrated']`); a Monte-Carlo rate is checked only once
    the curriculum is at max_digits and the accuracy over all lengths has reached promote_at.
    """
    path = Path(path)
    model = TransformerModel(target_config(t, max_digits), seed=t.seed, device=device)
    opt = torch.optim.AdamW(model.parameters(), lr=t.lr, weight_decay=t.weight_decay)
    state: dict[str, Any] = {"step": 0, "digits": t.start_digits, "done": False, "curve": []}
    if path.is_file():
        saved = safe_torch_load(path)
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["optimizer"])
        state = saved["state"]
        log.info("resuming target training at step %d (digits %d)", state["step"], state["digits"])
    began = last_save = time.time()

    def save() -> None:
        atomic_torch_save({"model": model.state_dict(), "optimizer": opt.state_dict(), "state": state}, path)

    while state["step"] < t.steps and not state["done"]:
        step = state["step"]
        for group in opt.param_groups:
            group["lr"] = _lr(t, step)
        loss = model.nll(*_target_batch(t, state["digits"], step))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        state["step"] = step + 1
        if state["step"] % t.eval_every == 0 or state["step"] == t.steps:
            row = _evaluate_target(model, t, max_digits, state, float(loss.detach()))
            # A Monte-Carlo check costs minutes at 10 digits: none before the curriculum has reached every
            # length, nor while the accuracy over all lengths is below promote_at (an error rate of 10% on the
            # problems the attacker was trained to write cannot be a win rate of 1e-3).
            topped = not t.calibrate_samples or (state["digits"] == max_digits and row["acc_all"] >= t.promote_at)
            if t.calibrate_rate and prior_rate is not None and topped:
                row["prior_rate"] = prior_rate(model)
                if row["prior_rate"] <= t.calibrate_rate:
                    state["calibrated"] = True
            state["curve"].append(row)
            if on_eval:
                on_eval(row)
        state["done"] = state["step"] >= t.steps or state.get("calibrated", False)
        if state["done"]:
            break
        if time.time() - last_save > t.checkpoint_seconds:
            save()
            last_save = time.time()
        if max_seconds is not None and time.time() - began > max_seconds:
            break
    save()
    return model, state


def _evaluate_target(
    model: TransformerModel, t: TargetTraining, max_digits: int, state: dict[str, Any], loss: float
) -> dict[str, Any]:
    """Exact-match accuracy at the curriculum's top length and overall; promotes the curriculum."""
    rng = np.random.default_rng(derive_seed(t.seed, "eval", state["step"]))
    d = state["digits"]
    top = list(zip(*(random_operands(t.eval_problems, np.full(t.eval_problems, d), rng) for _ in "ab"), strict=True))
    acc_top = exact_match(model, top, t)
    acc_all = exact_match(model, random_problems(t.eval_problems, max_digits, rng), t)
    row = {"step": state["step"], "digits": d, "loss": loss, "acc_top_length": acc_top, "acc_all": acc_all}
    log.info(
        "target step %d digits %d loss %.4f acc@%d %.3f acc(all) %.3f",
        state["step"],
        d,
        loss,
        d,
        acc_top,
        acc_all,
    )
    if acc_top >= t.promote_at and d < max_digits:
        state["digits"] = d + 1
    return row
