"""The ledger oracle: rows committed, repeats free, budget held under faults, concurrency and executors."""

from __future__ import annotations

import asyncio
import math
import sqlite3
import threading
import time
from pathlib import Path

import pytest
import torch

from banel.config import OracleConfig, RunConfig, from_dict
from banel.oracle import BudgetExceeded, Ledger, LedgerOracle
from banel.oracle.ledger import Request, Settlement
from banel.sequences import Sequences


def first_token_odd(x: Sequences) -> torch.Tensor:
    """Reward 1 iff the first token is odd (module level: picklable for the process pool)."""
    return (x.tokens[:, 0] % 2).double()


def batch(*rows: list[int]) -> Sequences:
    return Sequences.from_lists(rows)


def make_oracle(tmp_path, fn=first_token_odd, budget=100, run_id="r", **options) -> LedgerOracle:
    ledger = Ledger(tmp_path / "ledger.sqlite", synchronous="NORMAL")
    return LedgerOracle(fn, budget, ledger, run_id, "toy", OracleConfig(**options))


class Counting:
    """A reward function that counts the samples it is asked about."""

    def __init__(self, fn=first_token_odd) -> None:
        self.fn, self.samples, self.calls = fn, 0, 0

    def __call__(self, x: Sequences) -> torch.Tensor:
        self.calls += 1
        self.samples += len(x)
        return self.fn(x)


def test_ledger_reserve_settle_charge_and_refuse_overspending(tmp_path):
    with Ledger(tmp_path / "l.sqlite") as ledger:
        reqs = [Request(f"s{i}", str(i), f"h{i}") for i in range(3)]
        ids = ledger.reserve("run", "toy", 0, "banel", 0, reqs, budget=4)
        assert ledger.charged("run") == 3  # pending rows are charged
        ledger.settle([Settlement(ids[0], 1.0, None, 1), Settlement(ids[1], None, "boom", 3)])
        assert ledger.charged("run") == 2  # the error row is released, the pending one stays charged
        with pytest.raises(BudgetExceeded):
            ledger.reserve("run", "toy", 0, "banel", 0, reqs, budget=4)  # 2 + 3 > 4
        assert len(ledger.rows("run")) == 3  # nothing inserted by the refused request
        assert ledger.answers("toy", ["h0", "h1", "h2"]) == {"h0": 1.0}
        assert ledger.answers("other-task", ["h0"]) == {}
        rows = ledger.rows("run")
        assert [r["status"] for r in rows] == ["ok", "error", "pending"]
        assert rows[1]["error"] == "boom" and rows[1]["attempts"] == 3
        mode = sqlite3.connect(tmp_path / "l.sqlite").execute("PRAGMA journal_mode").fetchone()[0]
        assert mode == "wal"


def test_pending_rows_of_a_dead_process_become_lost_and_stay_charged(tmp_path):
    ledger = Ledger(tmp_path / "l.sqlite")
    ids = ledger.reserve("run", "toy", 0, "banel", 0, [Request("a", "1", "ha")], budget=5)
    ledger._db.execute("UPDATE evaluations SET pid = ? WHERE id = ?", (2**22 + 12345, ids[0]))  # no such pid
    assert ledger.recover("run") == 1
    row = ledger.rows("run")[0]
    assert row["status"] == "lost" and row["charged"] == 1 and row["reward"] is None
    assert ledger.charged("run") == 1


def test_repeats_are_answered_from_the_ledger_for_free(tmp_path):
    fn = Counting()
    oracle = make_oracle(tmp_path, fn, budget=10)
    r = oracle(batch([1, 2], [1, 2], [4]))
    assert r.tolist() == [1.0, 1.0, 0.0]
    assert (fn.samples, oracle.used, oracle.queries, oracle.answered) == (2, 2, 3, 1)
    r = oracle(batch([4], [3]))
    assert r.tolist() == [0.0, 1.0]
    assert (fn.samples, oracle.used, oracle.queries, oracle.answered) == (3, 3, 5, 2)
    rows = oracle.ledger.rows()
    assert len(rows) == 3 and len({row["hash"] for row in rows}) == 3


def test_dedupe_off_pays_for_every_sample(tmp_path):
    fn = Counting()
    oracle = make_oracle(tmp_path, fn, budget=10, dedupe=False)
    oracle(batch([1], [1], [1]))
    oracle(batch([1]))
    assert (fn.samples, oracle.used, oracle.queries) == (4, 4, 4)


def test_a_ledger_shared_across_runs_answers_the_second_run(tmp_path):
    make_oracle(tmp_path, run_id="first")(batch([1], [2]))
    fn = Counting()
    second = make_oracle(tmp_path, fn, run_id="second")
    assert second(batch([2], [1], [5])).tolist() == [0.0, 1.0, 1.0]
    assert (fn.samples, second.used, second.queries) == (1, 1, 3)


def test_budget_is_checked_before_anything_is_evaluated(tmp_path):
    fn = Counting()
    oracle = make_oracle(tmp_path, fn, budget=3, dedupe=False, query_limit=10)
    oracle(batch([1], [2]))
    with pytest.raises(BudgetExceeded):
        oracle(batch([3], [4]))
    assert (fn.samples, oracle.used, oracle.remaining) == (2, 2, 1)
    # with dedupe a repeat costs nothing, so a request of known samples fits even with no NREs left
    oracle2 = make_oracle(tmp_path / "b", budget=2, query_limit=10)
    oracle2(batch([1], [2]))
    assert oracle2(batch([2], [1])).tolist() == [0.0, 1.0] and oracle2.used == 2


def test_query_limit_defaults_to_the_budget(tmp_path):
    oracle = make_oracle(tmp_path, budget=4)
    oracle(batch([1], [1], [1]))
    assert (oracle.used, oracle.queries, oracle.remaining) == (1, 3, 1)


class Flaky:
    """Raises on every 10th call (10% of calls); thread-safe counter."""

    def __init__(self) -> None:
        self.calls, self.lock = 0, threading.Lock()

    def __call__(self, x: Sequences) -> torch.Tensor:
        with self.lock:
            self.calls += 1
            n = self.calls
        if n % 10 == 0:
            raise ConnectionError("simulated outage")
        return first_token_odd(x)


def test_calls_that_raise_are_retried_and_every_paid_evaluation_is_in_the_ledger(tmp_path):
    fn = Flaky()
    oracle = make_oracle(tmp_path, fn, budget=50, chunk_size=1, retries=2)
    x = batch(*[[i] for i in range(40)])
    r = oracle(x)
    assert r.tolist() == [float(i % 2) for i in range(40)]  # every failed call succeeded on retry
    rows = oracle.ledger.rows()
    assert fn.calls == 44  # 40 samples + 4 retries (calls 10, 20, 30, 40 raised)
    assert len(rows) == 40 and all(row["status"] == "ok" for row in rows)
    assert sorted(row["attempts"] for row in rows)[-4:] == [2, 2, 2, 2]
    assert oracle.used == 40 and oracle.errors == 0


def test_a_sample_that_always_fails_is_an_uncharged_error_row_and_nan(tmp_path):
    def broken_on_7(x: Sequences) -> torch.Tensor:
        if 7 in x.tokens[:, 0].tolist():
            raise RuntimeError("simulator crashed")
        return first_token_odd(x)

    oracle = make_oracle(tmp_path, broken_on_7, budget=10, chunk_size=1, retries=1)
    r = oracle(batch([6], [7], [9]))
    assert r[0] == 0 and math.isnan(r[1]) and r[2] == 1
    rows = {row["tokens"]: row for row in oracle.ledger.rows()}
    assert rows["7"]["status"] == "error" and rows["7"]["charged"] == 0 and rows["7"]["attempts"] == 2
    assert "simulator crashed" in rows["7"]["error"] and "'7'" in rows["7"]["error"]
    assert (oracle.used, oracle.queries, oracle.errors) == (2, 3, 1)
    # the failed sample was not paid for, so it is asked again next time
    assert math.isnan(oracle(batch([7]))[0]) and oracle.used == 2


def test_a_call_past_the_timeout_is_abandoned_retried_and_recorded(tmp_path):
    def hangs_on_5(x: Sequences) -> torch.Tensor:
        if 5 in x.tokens[:, 0].tolist():
            time.sleep(30)
        return first_token_odd(x)

    oracle = make_oracle(
        tmp_path, hangs_on_5, budget=10, executor="thread", workers=2, chunk_size=1, timeout=0.3, retries=1
    )
    start = time.monotonic()
    r = oracle(batch([4], [5], [3]))
    assert time.monotonic() - start < 5  # two 0.3 s timeouts, not 30 s
    assert r[0] == 0 and math.isnan(r[1]) and r[2] == 1
    row = [row for row in oracle.ledger.rows() if row["tokens"] == "5"][0]
    assert row["status"] == "error" and row["charged"] == 0 and "TimeoutError" in row["error"]
    assert oracle.used == 2


def test_garbage_rewards_are_errors_that_name_the_sample(tmp_path):
    def garbage(x: Sequences) -> torch.Tensor:
        first = x.tokens[:, 0].tolist()
        if first == [8]:
            return torch.tensor([1.0, 0.0])  # wrong length
        return torch.tensor([{2: 2.0, 3: math.nan}.get(t, 0.0) for t in first])

    oracle = make_oracle(tmp_path, garbage, budget=10, chunk_size=1, retries=0)
    r = oracle(batch([1], [2], [3], [8]))
    assert r[0] == 0 and r[1:].isnan().all()
    errors = {row["tokens"]: row["error"] for row in oracle.ledger.rows() if row["status"] == "error"}
    assert errors["2"] == "oracle returned 2.0 for sample '2'; expected 0 or 1"
    assert errors["3"] == "oracle returned nan for sample '3'; expected 0 or 1"
    assert errors["8"].startswith("oracle returned 2 values for a call of 1 samples")
    assert oracle.used == 1


def test_a_malformed_value_in_a_big_chunk_fails_only_its_sample(tmp_path):
    oracle = make_oracle(tmp_path, lambda x: torch.tensor([0.0, 5.0, 1.0]), budget=10, retries=0)
    r = oracle(batch([1], [2], [3]))
    assert r[0] == 0 and math.isnan(r[1]) and r[2] == 1 and oracle.used == 2


def test_budget_holds_when_threads_share_one_run_in_one_ledger(tmp_path):
    def slow(x: Sequences) -> torch.Tensor:
        time.sleep(0.01)
        return first_token_odd(x)

    path = tmp_path / "shared.sqlite"
    refused = []

    def worker(k: int) -> None:
        oracle = LedgerOracle(slow, 25, Ledger(path), "same-run", "toy", OracleConfig(dedupe=False))
        for j in range(5):
            try:
                oracle(batch([k * 100 + j], [k * 100 + j + 50]))
            except BudgetExceeded:
                refused.append(k)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ledger = Ledger(path)
    assert ledger.charged("same-run") <= 25  # 4 x 5 x 2 = 40 asked of a 25 budget
    assert ledger.charged("same-run") == 24 and len(refused) == 8  # 12 requests of 2 fit


def test_many_connections_opening_one_new_ledger_at_once_all_succeed(tmp_path):
    # Switching a new file to WAL needs an exclusive lock; SQLite refuses at once when others hold it.
    for attempt in range(10):
        path = tmp_path / f"new{attempt}.sqlite"
        start, errors = threading.Barrier(8), []

        def open_it(path: Path, start: threading.Barrier, errors: list) -> None:
            start.wait()
            try:
                Ledger(path).close()
            except sqlite3.OperationalError as err:
                errors.append(err)

        threads = [threading.Thread(target=open_it, args=(path, start, errors)) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


EXECUTORS = [
    {"executor": "inline"},
    {"executor": "thread", "workers": 3, "chunk_size": 2},
    {"executor": "process", "workers": 2},
]


@pytest.mark.parametrize("options", EXECUTORS, ids=[o["executor"] for o in EXECUTORS])
def test_executors_return_the_same_rewards_in_order(tmp_path, options):
    x = batch(*[[i, i + 1] for i in range(17)])
    oracle = make_oracle(tmp_path, budget=20, **options)
    try:
        assert oracle(x).tolist() == first_token_odd(x).tolist()
    finally:
        oracle.close()
    assert [row["tokens"] for row in oracle.ledger.rows()] == [f"{i},{i + 1}" for i in range(17)]


async def async_odd(x: Sequences) -> torch.Tensor:
    await asyncio.sleep(0.01)
    return first_token_odd(x)


@pytest.mark.parametrize("executor", ["inline", "thread"])
def test_async_oracles_are_accepted(tmp_path, executor):
    x = batch(*[[i] for i in range(9)])
    oracle = make_oracle(tmp_path, async_odd, budget=10, executor=executor, workers=3, chunk_size=1)
    assert oracle(x).tolist() == first_token_odd(x).tolist()
    assert oracle.used == 9


def test_oracle_config_validation_names_the_field():
    with pytest.raises(ValueError, match="^executor must be one of"):
        OracleConfig(executor="dask")
    with pytest.raises(ValueError, match="^workers must be >= 1"):
        OracleConfig(executor="thread", workers=0)
    with pytest.raises(ValueError, match="^timeout"):
        OracleConfig(timeout=-1)
    with pytest.raises(ValueError, match="^oracle.timeout must be >= 0 seconds"):
        from_dict(RunConfig, {"oracle": {"timeout": -1}})


def hang_on_zero(x: Sequences) -> torch.Tensor:
    """Hangs on sample [0] (module level: picklable for the process pool)."""
    if int(x.tokens[0, 0]) == 0:
        time.sleep(60)
    return first_token_odd(x)


@pytest.mark.slow
def test_process_pool_kills_a_call_past_its_timeout(tmp_path):
    oracle = make_oracle(
        tmp_path, hang_on_zero, budget=10, executor="process", workers=2, chunk_size=1, timeout=5.0, retries=0
    )
    try:
        start = time.monotonic()
        r = oracle(batch([0], [1], [2], [3]))
        assert time.monotonic() - start < 40
    finally:
        oracle.close()
    assert math.isnan(r[0]) and r[1:].tolist() == [1.0, 0.0, 1.0]
    assert (oracle.used, oracle.errors) == (3, 1)


def test_replay_answers_a_restarted_run_in_order_and_credits_its_nres(tmp_path):
    first = make_oracle(tmp_path, budget=4, dedupe=False)
    first(batch([1], [2]))
    first.round = 1
    first(batch([1], [3]))
    assert first.used == 4 and first.remaining == 0
    fn = Counting()
    again = make_oracle(tmp_path, fn, budget=4, dedupe=False)  # same run id, restarted from scratch
    assert again.replay_round(None) == 4
    assert again.used == 4 and again.remaining == 4  # the 4 paid NREs are credited until replayed
    assert again(batch([1], [2])).tolist() == [1.0, 0.0] and again.remaining == 2
    again.round = 1
    assert again(batch([1], [3])).tolist() == [1.0, 1.0]
    assert fn.samples == 0 and again.used == 4 and again.remaining == 0
