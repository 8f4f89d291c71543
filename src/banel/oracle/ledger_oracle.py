"""The budgeted oracle every run uses: ledger, de-duplication, executor, timeouts, retries, resume.

`LedgerOracle(x)` keeps `BudgetedOracle`'s contract — a batch in, (n,) float64 rewards out, the whole
request checked against the budget before anything is evaluated — and adds:

- every paid evaluation is a ledger row committed before its reward is returned;
- with `dedupe` (default) a sample already answered in the ledger for the same oracle (this run, or any
  run sharing the ledger file) and repeats inside a batch are answered without paying: `used` counts
  NREs spent, `queries` samples asked. A run still stops after `query_limit` samples asked (default: the
  NRE budget), so by default de-duplication saves money without changing what a method does: same
  rounds, same rewards, fewer NREs. Raise `oracle.query_limit` to spend the savings on more rounds;
- calls go through an executor (inline, thread, process, Ray) in chunks; a chunk that raises, times out
  or returns a malformed reward (wrong length, NaN, not 0/1) is retried `retries` times for the samples
  it failed on, then recorded as an error row that is not charged;
- **a sample whose evaluation failed comes back as NaN**: it is neither a success nor a failure, and
  methods must drop it (`rewards.isnan()`); BaNEL does;
- `used` is read back from the ledger (charged rows of this run), so it survives crashes and resumes;
- when resuming, rows of the interrupted round are replayed in order before anything is paid, so the
  re-drawn samples of that round are never paid twice, even with dedupe off.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict, deque
from collections.abc import Callable
from typing import Any

import torch

from banel.config import OracleConfig
from banel.oracle.budget import BudgetedOracle, BudgetExceeded, RewardFn
from banel.oracle.executors import Executor, make_executor, split
from banel.oracle.ledger import Ledger, Request, Settlement
from banel.sequences import Sequences

log = logging.getLogger(__name__)


def check_chunk(value: object, texts: list[str]) -> list[float | str]:
    """Per sample of a chunk: its 0/1 reward, or an error message naming the sample."""
    try:
        r = torch.as_tensor(value).detach().cpu().double().reshape(-1)
    except Exception as err:  # noqa: BLE001 - any unreadable return is an error of every sample
        return [f"oracle returned {type(value).__name__} ({err}) for sample {t!r}" for t in texts]
    if r.shape[0] != len(texts):
        return [
            f"oracle returned {r.shape[0]} values for a call of {len(texts)} samples (this one {t!r})" for t in texts
        ]
    out: list[float | str] = []
    for v, t in zip(r.tolist(), texts, strict=True):
        out.append(v if v in (0.0, 1.0) else f"oracle returned {v!r} for sample {t!r}; expected 0 or 1")
    return out


class LedgerOracle(BudgetedOracle):
    """A BudgetedOracle that pays through a durable ledger, de-duplicates and survives faults and restarts."""

    def __init__(
        self,
        reward_fn: RewardFn | Callable[[Sequences], Any],
        budget: int,
        ledger: Ledger,
        run_id: str,
        oracle_id: str,
        config: OracleConfig | None = None,
        method: str = "",
        seed: int = 0,
        decode: Callable[[Sequences], list[str]] | None = None,
        executor: Executor | None = None,
    ) -> None:
        super().__init__(reward_fn, budget)
        self.config = config or OracleConfig()
        self.ledger, self.run_id, self.oracle_id = ledger, run_id, oracle_id
        self.method, self.seed, self.decode = method, seed, decode
        self.executor = executor or make_executor(self.config)
        self.query_limit = self.config.query_limit or self.budget
        self.round = 0
        self.errors = 0
        self.answered = 0  # samples answered without paying: from the ledger or a repeat in the batch
        self.lost = ledger.recover(run_id)
        if self.lost:
            log.warning("%d evaluations of run %s were in flight when it died: charged, no reward", self.lost, run_id)
        self.used = ledger.charged(run_id)
        self._replay: tuple[int | None, dict[str, deque[float]]] | None = None

    @property
    def remaining(self) -> int:
        """NREs left, and never more than the samples left under oracle.query_limit.

        While a resumed round is replayed, the NREs it already paid for count as left: the method asks
        for them again and gets them free, exactly as the uninterrupted run paid for them in that round.
        """
        return min(self.budget - self.used + self._replay_credit(), self.query_limit - self.queries)

    def _replaying(self) -> bool:
        return self._replay is not None and self._replay[0] in (None, self.round)

    def _replay_credit(self) -> int:
        if not self._replaying():
            return 0
        return sum(len(q) for q in self._replay[1].values())

    def replay_round(self, round_index: int | None) -> int:
        """Answer a round's samples first from this run's ledger rows of it (None: rows of every round, for a
        run restarted from scratch); returns how many rows there are to replay."""
        answers: dict[str, deque[float]] = defaultdict(deque)
        rows = self.ledger.round_answers(self.run_id, round_index)
        for h, r in rows:
            answers[h].append(r)
        self._replay = (round_index, answers)
        return len(rows)

    def __call__(self, x: Sequences) -> torch.Tensor:
        """Rewards of a batch: (n,) float64 of 0/1, NaN where evaluation failed; may raise BudgetExceeded."""
        n = len(x)
        if n > self.query_limit - self.queries:
            raise BudgetExceeded(f"request of {n} samples exceeds the {self.query_limit - self.queries} queries left")
        rewards = torch.full((n,), math.nan, dtype=torch.float64)
        if n == 0:
            return rewards
        hashes = x.hashes()
        todo = list(range(n))
        if self._replaying():
            todo = self._take_replayed(todo, hashes, rewards)
        if self.config.dedupe and todo:
            known = self.ledger.answers(self.oracle_id, (hashes[i] for i in todo))
            for i in todo:
                if hashes[i] in known:
                    rewards[i] = known[hashes[i]]
            todo = [i for i in todo if hashes[i] not in known]
        # with dedupe, a repeat inside the batch is paid once and copied
        groups: dict[Any, list[int]] = defaultdict(list)
        for i in todo:
            groups[hashes[i] if self.config.dedupe else i].append(i)
        payers = [members[0] for members in groups.values()]
        self.answered += n - len(payers)
        self._pay(x, payers, hashes, rewards)
        for members in groups.values():
            rewards[members[1:]] = float(rewards[members[0]])
        self.queries += n
        self.used = self.ledger.charged(self.run_id)
        return rewards

    def _take_replayed(self, todo: list[int], hashes: list[str], rewards: torch.Tensor) -> list[int]:
        assert self._replay is not None
        answers, rest = self._replay[1], []
        for i in todo:
            queue = answers.get(hashes[i])
            if queue:
                rewards[i] = queue.popleft()
            else:
                rest.append(i)
        return rest

    def _pay(self, x: Sequences, payers: list[int], hashes: list[str], rewards: torch.Tensor) -> None:
        """Reserve, evaluate (with retries) and settle the samples at positions `payers`."""
        if not payers:
            return
        sub = x[payers]
        texts = self.decode(sub) if self.decode else [",".join(map(str, t)) for t in sub.to_lists()]
        tokens = [",".join(map(str, t)) for t in sub.to_lists()]
        requests = [Request(t, k, hashes[i]) for t, k, i in zip(texts, tokens, payers, strict=True)]
        row_ids = self.ledger.reserve(
            self.run_id, self.oracle_id, self.round, self.method, self.seed, requests, self.budget
        )
        attempts = [0] * len(payers)
        last_error: dict[int, str] = {}
        open_rows = set(range(len(payers)))
        try:
            pending = list(range(len(payers)))
            for _attempt in range(self.config.retries + 1):
                if not pending:
                    break
                slices = split(len(pending), self.config.chunk_size, getattr(self.executor, "workers", 1) or 1)
                chunks_idx = [pending[s] for s in slices]
                failed: list[int] = []

                def on_result(c: int, value: Any, err: BaseException | None, chunks_idx=chunks_idx, failed=failed):
                    members = chunks_idx[c]
                    if err is not None:
                        checked: list[float | str] = [
                            f"{type(err).__name__}: {err} (sample {texts[j]!r})" for j in members
                        ]
                    else:
                        checked = check_chunk(value, [texts[j] for j in members])
                    done = []
                    for j, v in zip(members, checked, strict=True):
                        attempts[j] += 1
                        if isinstance(v, str):
                            last_error[j] = v
                            failed.append(j)
                        else:
                            rewards[payers[j]] = v
                            done.append(Settlement(row_ids[j], v, None, attempts[j]))
                            open_rows.discard(j)
                    self.ledger.settle(done)  # committed before any reward leaves this object

                self.executor.run(self.reward_fn, [sub[idx] for idx in chunks_idx], self.config.timeout, on_result)
                pending = sorted(failed)
                if pending:
                    log.warning(
                        "%d oracle evaluations failed (e.g. %s); retrying",
                        len(pending),
                        last_error[pending[0]],
                    )
            if pending:
                self.ledger.settle(Settlement(row_ids[j], None, last_error[j], attempts[j]) for j in pending)
                open_rows.difference_update(pending)
                self.errors += len(pending)
                log.warning(
                    "%d samples could not be evaluated after %d attempts (errors, not charged): %s",
                    len(pending),
                    self.config.retries + 1,
                    last_error[pending[0]],
                )
        finally:
            if open_rows:  # interrupted (Ctrl-C, an exception in the executor): keep what was paid
                self.ledger.mark_lost([row_ids[j] for j in sorted(open_rows)], "interrupted before a reward arrived")
                self.used = self.ledger.charged(self.run_id)

    def state_dict(self) -> dict[str, int]:
        """Counters, for checkpoints (`used` is re-read from the ledger on load)."""
        return {**super().state_dict(), "errors": self.errors, "answered": self.answered, "round": self.round}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Restore counters saved by `state_dict`; NREs used come from the ledger."""
        self.queries = int(state["queries"])
        self.errors, self.answered = int(state.get("errors", 0)), int(state.get("answered", 0))
        self.round = int(state.get("round", 0))
        self.used = self.ledger.charged(self.run_id)

    def close(self) -> None:
        """Release the executor (the ledger belongs to whoever opened it)."""
        self.executor.close()
