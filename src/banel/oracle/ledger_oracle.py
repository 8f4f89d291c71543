"""The budgeted oracle every run uses: ledger, de-duplication, executor, timeouts, retries, resume.

`LedgerOracle(x)` keeps `BudgetedOracle`'s contract — a batch in, (n,) float64 rewards out, the whole
request checked against the budget before anything is evaluated — and adds:

- every paid evaluation is a ledger row committed before its reward is returned;
- with `dedupe` (default) a sample already answered in the ledger for the same oracle (this run, or any
  run sharing the ledger file) and repeats inside a batch are answered without paying, and a sample another
  run is evaluating at the same time is waited for, not paid again (`Ledger.claim`): `used` counts
  NREs spent, `queries` samples asked. A run still stops after `query_limit` samples asked (default: the
  NRE budget), so by default de-duplication saves money without changing what a method does: same
  rounds, same rewards, fewer NREs. Raise `oracle.query_limit` to spend the savings on more rounds;
- calls go through an executor (inline, thread, process, Ray) in chunks, and a call's rows are charged as
  it is sent, so a kill or Ctrl-C charges only the calls in flight (`lost` rows), never the rest of the batch;
- a call of several samples that raises, times out or returns an unreadable or wrong-length answer is split:
  its first sample alone, then each half of the rest, down to single samples, so one bad sample costs only
  itself (the lone first sample tells a failing oracle from a bad sample at once, see below); a single
  sample whose call failed, or whose own reward is malformed (NaN, not 0/1), is retried `retries` times, then
  recorded as an error row that is not charged;
- after `max_consecutive_failures` failed calls in a row the oracle raises `OracleFailing`, and after
  `max_out_of_contract` samples in a row answered with neither 0 nor 1 (a score, NaN) `OutOfContract`: the run
  stops where it is and stays resumable, instead of finishing on nothing;
- **a sample whose evaluation failed comes back as NaN**: it is neither a success nor a failure, and
  methods must drop it (`rewards.isnan()`); BaNEL does;
- `used` is read back from the ledger (charged rows of this run), so it survives crashes and resumes;
- when resuming, rows of the interrupted round are replayed in order before anything is paid, so the
  re-drawn samples of that round are never paid twice, even with dedupe off; its `lost` rows (in flight at
  the kill) are sent again under the same row, without a second charge.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import time
from collections import defaultdict, deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from banel.config import OracleConfig
from banel.oracle.budget import BudgetedOracle, BudgetExceeded, RewardFn
from banel.oracle.executors import Executor, make_executor, split
from banel.oracle.ledger import Ledger, Request, Settlement
from banel.sequences import Sequences

log = logging.getLogger(__name__)

WAIT_S, MAX_WAIT_S = 0.02, 1.0  # first and longest pause before asking again for samples another run holds


class OracleFailing(RuntimeError):
    """Raised after `oracle.max_consecutive_failures` oracle calls in a row failed: the oracle is down."""


class OutOfContract(OracleFailing):
    """Raised after `oracle.max_out_of_contract` samples in a row were answered with neither 0 nor 1."""


def read_chunk(value: object, n: int) -> torch.Tensor:
    """A call's answer as (n,) float64; raises ValueError if it cannot be read or has the wrong length."""
    try:
        r = torch.as_tensor(value).detach().cpu().double().reshape(-1)
    except Exception as err:  # noqa: BLE001 - any unreadable return fails the call
        raise ValueError(f"oracle returned {type(value).__name__} ({err})") from None
    if r.shape[0] != n:
        raise ValueError(f"oracle returned {r.shape[0]} values for a call of {n} samples")
    return r


def isolate(members: list[int]) -> list[list[int]]:
    """The calls a failed call of several samples is retried as: its first sample alone, then the two halves of
    the rest. Splitting isolates a bad sample in about log2(n) rounds of calls; the lone first sample succeeds
    at once unless the oracle itself is failing, so `max_consecutive_failures` tells the two apart."""
    first, rest = members[:1], members[1:]
    half = (len(rest) + 1) // 2
    return [part for part in (first, rest[:half], rest[half:]) if part]


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
        self.failed_calls = 0  # oracle calls failed in a row (any call with a reward resets it)
        self.out_of_contract = 0  # samples in a row whose first answer was neither 0 nor 1 (a 0 or 1 resets it)
        self._owns_ledger = False
        self.lost, self.released = ledger.recover(run_id)
        if self.lost or self.released:
            log.warning(
                "run %s died with %d evaluations in flight: charged once, without a reward (the oracle may have "
                "done them; their samples are sent again when the round is redone, not charged again); %d reserved "
                "but never sent were released",
                run_id,
                self.lost,
                self.released,
            )
        self.used = ledger.charged(run_id)
        self._replay: tuple[int | None, dict[str, deque[float]], dict[str, deque[int]]] | None = None

    @classmethod
    def open(
        cls,
        reward_fn: RewardFn | Callable[[Sequences], Any],
        budget: int,
        path: str | Path,
        config: OracleConfig | None = None,
        run_id: str = "default",
        oracle_id: str | None = None,
        decode: Callable[[Sequences], list[str]] | None = None,
    ) -> LedgerOracle:
        """The fault-tolerant oracle on its own ledger file (created if new; closed with the oracle).

        `run_id` names whose budget this is: a script re-run with the same id continues its budget and, with
        dedupe, gets every sample paid before answered from the file. `oracle_id` (default: the reward
        function's module and name) names the reward: runs sharing a file share the answers of the same one.
        """
        config = config or OracleConfig()
        if oracle_id is None:
            fn = reward_fn if hasattr(reward_fn, "__qualname__") else type(reward_fn)
            oracle_id = f"{fn.__module__}:{fn.__qualname__}"
        ledger = Ledger(path, network_filesystem=config.network_filesystem)
        oracle = cls(reward_fn, budget, ledger, run_id, oracle_id, config, decode=decode)
        oracle._owns_ledger = True
        return oracle

    def __enter__(self) -> LedgerOracle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

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
        assert self._replay is not None
        return sum(len(q) for q in self._replay[1].values()) + sum(len(q) for q in self._replay[2].values())

    def replay_round(self, round_index: int | None) -> int:
        """Answer a round's samples first from this run's ledger rows of it (None: rows of every round, for a
        run restarted from scratch): ok rows with their reward, lost rows by sending their sample again under
        the same, already charged, row. Returns how many rows there are to replay."""
        answers: dict[str, deque[float]] = defaultdict(deque)
        lost: dict[str, deque[int]] = defaultdict(deque)
        rows = self.ledger.round_answers(self.run_id, round_index)
        for h, r in rows:
            answers[h].append(r)
        lost_rows = self.ledger.round_lost(self.run_id, round_index)
        for h, row_id in lost_rows:
            lost[h].append(row_id)
        self._replay = (round_index, answers, lost)
        return len(rows) + len(lost_rows)

    def __call__(self, x: Sequences) -> torch.Tensor:
        """Rewards of a batch: (n,) float64 of 0/1, NaN where evaluation failed; may raise BudgetExceeded, or
        OracleFailing when calls keep failing."""
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
        # with dedupe, a repeat inside the batch is paid once and copied
        groups: dict[Any, list[int]] = defaultdict(list)
        for i in todo:
            groups[hashes[i] if self.config.dedupe else i].append(i)
        payers = [members[0] for members in groups.values()]
        self.answered += n - len(payers)
        try:
            if self.config.dedupe:
                self._pay_once(x, payers, hashes, rewards)
            else:
                self._pay_each(x, payers, hashes, rewards)
        finally:
            self.used = self.ledger.charged(self.run_id)
        for members in groups.values():
            rewards[members[1:]] = float(rewards[members[0]])
        self.queries += n
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

    def _take_lost(self, payers: list[int], hashes: list[str]) -> dict[int, int]:
        """Lost rows of the replayed round to re-use: payer position -> row id."""
        if not self._replaying():
            return {}
        assert self._replay is not None
        lost, reused = self._replay[2], {}
        for i in payers:
            queue = lost.get(hashes[i])
            if queue:
                reused[i] = queue.popleft()
        return reused

    def _requests(self, x: Sequences, payers: list[int], hashes: list[str]) -> list[Request]:
        sub = x[payers]
        texts = self.decode(sub) if self.decode else [",".join(map(str, t)) for t in sub.to_lists()]
        return [
            Request(t, ",".join(map(str, k)), hashes[i]) for t, k, i in zip(texts, sub.to_lists(), payers, strict=True)
        ]

    def _pay_each(self, x: Sequences, payers: list[int], hashes: list[str], rewards: torch.Tensor) -> None:
        """Without dedupe: a new row for every sample, or a replayed round's lost row, sent again under it."""
        if not payers:
            return
        reused, requests = self._take_lost(payers, hashes), self._requests(x, payers, hashes)
        new = [j for j, i in enumerate(payers) if i not in reused]
        new_ids = iter(
            self.ledger.reserve(
                self.run_id, self.oracle_id, self.round, self.method, self.seed, [requests[j] for j in new], self.budget
            )
        )
        self.ledger.reopen(list(reused.values()))
        row_ids = [reused[i] if i in reused else next(new_ids) for i in payers]
        self._pay(x, payers, rewards, row_ids, [r.sample for r in requests])

    def _pay_once(self, x: Sequences, payers: list[int], hashes: list[str], rewards: torch.Tensor) -> None:
        """With dedupe: each distinct sample paid once in the whole ledger, whichever run asks for it.

        The ledger answers a sample some run was paid for, and hands over the ones no live process holds (a
        replayed round's lost rows among them: sent again under the same row); a sample another live process
        holds is asked again once the rest is paid, until its holder settled it (an answer, or an error that
        leaves it to us) or is gone."""
        self._take_lost(payers, hashes)  # only to use up the replay's credit: the ledger finds lost rows itself
        requests = dict(zip(payers, self._requests(x, payers, hashes), strict=True)) if payers else {}
        waiting, pause = payers, WAIT_S
        while waiting:
            claims = self.ledger.claim(
                self.run_id,
                self.oracle_id,
                self.round,
                self.method,
                self.seed,
                [requests[i] for i in waiting],
                self.budget,
            )
            paying = [(i, c.row_id) for i, c in zip(waiting, claims, strict=True) if c.kind == "pay"]
            for i, c in zip(waiting, claims, strict=True):
                if c.kind == "answer":
                    rewards[i] = c.reward
                    self.answered += 1
            self._pay(
                x, [i for i, _ in paying], rewards, [r for _, r in paying], [requests[i].sample for i, _ in paying]
            )
            before, waiting = len(waiting), [i for i, c in zip(waiting, claims, strict=True) if c.kind == "wait"]
            if waiting:
                if getattr(multiprocessing.current_process(), "_inheriting", False):
                    # a spawned pool worker importing a script without a main guard runs the script's oracle
                    # call: waiting there for the parent's samples would keep the pool from ever starting
                    raise RuntimeError("a process-pool worker is bootstrapping: not waiting for its parent's samples")
                if len(waiting) < before:
                    pause = WAIT_S
                log.debug("%d samples are being evaluated by another run; asking again in %.2f s", len(waiting), pause)
                time.sleep(pause)
                pause = min(2 * pause, MAX_WAIT_S)

    def _pay(
        self, x: Sequences, payers: list[int], rewards: torch.Tensor, row_ids: list[int], texts: list[str]
    ) -> None:
        """Send, evaluate (isolating failures, with retries) and settle the samples at `payers` under their rows."""
        if not payers:
            return
        sub = x[payers]
        payment = _Payment(self, row_ids, texts)
        workers = getattr(self.executor, "workers", 1) or 1
        calls = [list(range(len(payers)))[s] for s in split(len(payers), self.config.chunk_size, workers)]
        retries_from = len(calls)
        try:
            while calls:
                payment.start_pass(calls, retries_from)
                self.executor.run(
                    self.reward_fn, [sub[c] for c in calls], self.config.timeout, payment.on_result, payment.on_send
                )
                calls, retries_from = payment.next_calls()
        finally:
            if payment.open:  # interrupted (Ctrl-C, an exception, the oracle failing): charge only what was sent
                lost, _released = self.ledger.interrupt(
                    [payment.row_ids[j] for j in sorted(payment.open)], "interrupted before a reward arrived"
                )
                if lost:
                    log.warning("%d evaluations in flight were interrupted: charged, without a reward", lost)
        for j, v in payment.rewards.items():
            rewards[payers[j]] = v

    def _count_call(self, got_one: bool, retrying: bool, why: str | None) -> None:
        """Count a failed call (none of its samples got a reward) that was not a retry of a sample that failed on
        its own; a call with a reward resets the count. Raise OracleFailing after too many in a row."""
        if got_one:
            self.failed_calls = 0
        elif not retrying:
            self.failed_calls += 1
        limit = self.config.max_consecutive_failures
        if limit and self.failed_calls >= limit:
            raise OracleFailing(f"the oracle is failing: {self.failed_calls} calls in a row failed (the last: {why})")

    def state_dict(self) -> dict[str, int]:
        """Counters, for checkpoints (`used` is re-read from the ledger on load; `rows` is checked against it)."""
        return {
            **super().state_dict(),
            "errors": self.errors,
            "answered": self.answered,
            "round": self.round,
            "rows": self.ledger.tally(self.run_id).rows,
        }

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Restore counters saved by `state_dict`; NREs used come from the ledger."""
        self.queries = int(state["queries"])
        self.errors, self.answered = int(state.get("errors", 0)), int(state.get("answered", 0))
        self.round = int(state.get("round", 0))
        self.used = self.ledger.charged(self.run_id)

    def close(self) -> None:
        """Release the executor, and the ledger if `open` opened it."""
        self.executor.close()
        if self._owns_ledger:
            self.ledger.close()


class _Payment:
    """The samples of one batch being paid for, pass after pass: calls, then the failed calls' parts and the
    samples to retry. Sample j is row row_ids[j]; what is recorded is committed before it counts here."""

    def __init__(self, oracle: LedgerOracle, row_ids: list[int], texts: list[str]) -> None:
        self.oracle, self.ledger, self.retries = oracle, oracle.ledger, oracle.config.retries
        self.row_ids, self.texts = row_ids, texts
        self.attempts, self.strikes = [0] * len(row_ids), [0] * len(row_ids)
        self.open = set(range(len(row_ids)))
        """Samples without a reward or a final error yet."""
        self.rewards: dict[int, float] = {}
        self.calls: list[list[int]] = []
        self.retries_from = 0
        self.parts: list[list[int]] = []  # parts of failed calls, for the next pass
        self.retry: list[int] = []  # samples that failed on their own, to be sent again, alone
        self.given_up: list[str] = []

    def start_pass(self, calls: list[list[int]], retries_from: int) -> None:
        """The calls of the next executor run; those from index retries_from on retry samples that already failed
        on their own."""
        self.calls, self.retries_from, self.parts, self.retry, self.given_up = calls, retries_from, [], [], []

    def next_calls(self) -> tuple[list[list[int]], int]:
        """After a pass: log the samples given up; the calls of the next pass (none: done) and where its retries
        start."""
        if self.given_up:
            self.oracle.errors += len(self.given_up)
            log.warning(
                "%d samples failed on their own %d times (errors, not charged): %s",
                len(self.given_up),
                self.retries + 1,
                self.given_up[0],
            )
        return self.parts + [[j] for j in sorted(self.retry)], len(self.parts)

    def on_send(self, c: int) -> None:
        """Charge call c's rows: it is about to be sent."""
        self.ledger.send([self.row_ids[j] for j in self.calls[c]])

    def on_result(self, c: int, value: Any, err: BaseException | None) -> None:
        """Record call c's outcome: rewards, or errors and what to send next; count it towards the breaker."""
        members = self.calls[c]
        for j in members:
            self.attempts[j] += 1
        failure, values = None, [math.nan] * len(members)
        if err is not None:
            failure = f"{type(err).__name__}: {err}"
        else:
            try:
                values = read_chunk(value, len(members)).tolist()
            except ValueError as bad:
                failure = str(bad)
        outcomes: list[Settlement] = []
        limit, breach = self.oracle.config.max_out_of_contract, None  # the sample that reached the limit
        if failure is None:
            for j, v in zip(members, values, strict=True):
                if v in (0.0, 1.0):
                    self.oracle.out_of_contract = 0
                elif self.strikes[j] == 0:
                    self.oracle.out_of_contract += 1
                    if limit and self.oracle.out_of_contract >= limit and breach is None:
                        breach = (self.texts[j], v)
        if failure is not None and len(members) > 1:  # split it: find the sample(s) to blame
            outcomes = [Settlement(self.row_ids[j], None, failure, self.attempts[j], final=False) for j in members]
            self.ledger.settle(outcomes)
            self.parts.extend(isolate(members))
        else:
            for j, v in zip(members, values, strict=True):
                if failure is None and v in (0.0, 1.0):
                    outcomes.append(Settlement(self.row_ids[j], v, None, self.attempts[j]))
                    continue
                if failure is not None:
                    why = f"{failure} (sample {self.texts[j]!r})"
                else:
                    why = f"oracle returned {v!r} for sample {self.texts[j]!r}; expected 0 or 1"
                self.strikes[j] += 1
                outcomes.append(
                    Settlement(self.row_ids[j], None, why, self.attempts[j], self.strikes[j] > self.retries)
                )
            self.ledger.settle(outcomes)  # committed before any reward leaves the oracle
            for j, v, o in zip(members, values, outcomes, strict=True):
                if o.error is not None and not o.final:
                    self.retry.append(j)
                    continue
                if o.error is None:
                    self.rewards[j] = v
                else:
                    self.given_up.append(o.error)
                self.open.discard(j)
        if breach is not None:  # not errors of some samples but a reward that breaks the contract: stop
            raise OutOfContract(
                f"the oracle answered {breach[1]:.6g} for sample {breach[0]!r}; banel expects 0 or 1 ({limit} samples "
                "in a row answered out of contract: a score or a probability instead of a reward?)"
            )
        # a sample failing again on its own says nothing new about the oracle: only first tries count
        got_one = any(o.error is None for o in outcomes)
        self.oracle._count_call(got_one, c >= self.retries_from, failure or outcomes[0].error)
