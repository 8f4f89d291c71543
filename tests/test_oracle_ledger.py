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
from banel.oracle import BudgetExceeded, Ledger, LedgerOracle, OracleFailing
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


def test_ledger_reserve_send_settle_charge_and_refuse_overspending(tmp_path):
    with Ledger(tmp_path / "l.sqlite") as ledger:
        reqs = [Request(f"s{i}", str(i), f"h{i}") for i in range(3)]
        ids = ledger.reserve("run", "toy", 0, "banel", 0, reqs, budget=4)
        assert ledger.charged("run") == 0  # reserved rows are not charged until their call is sent...
        with pytest.raises(BudgetExceeded, match="exceeds the 1 NREs left of 4"):
            ledger.reserve("run", "toy", 0, "banel", 0, reqs[:2], budget=4)  # ...but count against the budget
        ledger.send(ids[:2])
        assert ledger.charged("run") == 2
        ledger.settle([Settlement(ids[0], 1.0, None, 1), Settlement(ids[1], None, "boom", 3)])
        assert ledger.charged("run") == 1  # the error row is released, the unsent one was never charged
        with pytest.raises(BudgetExceeded):
            ledger.reserve("run", "toy", 0, "banel", 0, reqs, budget=4)  # 1 charged + 1 reserved + 3 > 4
        assert len(ledger.rows("run")) == 3  # nothing inserted by the refused requests
        assert ledger.answers("toy", ["h0", "h1", "h2"]) == {"h0": 1.0}
        assert ledger.answers("other-task", ["h0"]) == {}
        rows = ledger.rows("run")
        assert [(r["status"], r["charged"]) for r in rows] == [("ok", 1), ("error", 0), ("pending", 0)]
        assert rows[1]["error"] == "boom" and rows[1]["attempts"] == 3
        assert ledger.status_counts("run") == {"ok": 1, "error": 1, "lost": 0, "sent": 0, "pending": 1}
        mode = sqlite3.connect(tmp_path / "l.sqlite").execute("PRAGMA journal_mode").fetchone()[0]
        assert mode == "wal"


def test_rows_of_a_dead_process_sent_become_lost_and_charged_unsent_ones_are_released(tmp_path):
    ledger = Ledger(tmp_path / "l.sqlite")
    ids = ledger.reserve("run", "toy", 0, "banel", 0, [Request("a", "1", "ha"), Request("b", "2", "hb")], budget=5)
    ledger.send(ids[:1])
    ledger._db.execute("UPDATE evaluations SET pid = ?", (2**22 + 12345,))  # no such pid
    assert ledger.recover("run") == (1, 1)
    (row,) = ledger.rows("run")
    assert row["id"] == ids[0] and row["status"] == "lost" and row["charged"] == 1 and row["reward"] is None
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
    with pytest.raises(ValueError, match=r"^oracle.timeout must be >= 0, got -1$"):
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


class RaisesOnBadSamples:
    """A batched reward that raises if any sample of the call is bad: 10 of every 200 (5%), like a simulator
    that crashes on some inputs. Counts its calls."""

    def __init__(self) -> None:
        self.calls = 0

    @staticmethod
    def bad(first: int) -> bool:
        return first % 20 == 7

    def __call__(self, x: Sequences) -> torch.Tensor:
        self.calls += 1
        first = x.tokens[:, 0].tolist()
        if any(self.bad(t) for t in first):
            raise RuntimeError(f"simulator crashed on {next(t for t in first if self.bad(t))}")
        return first_token_odd(x)


def test_one_raising_sample_in_a_batch_costs_only_itself(tmp_path):
    fn = RaisesOnBadSamples()
    oracle = make_oracle(tmp_path, fn, budget=200)  # default chunking: one call for the whole batch
    x = batch(*[[i] for i in range(200)])
    r = oracle(x)
    bad = [i for i in range(200) if fn.bad(i)]
    assert len(bad) == 10
    assert r.isnan().nonzero().flatten().tolist() == bad
    good = [i for i in range(200) if i not in bad]
    assert r[good].tolist() == [float(i % 2) for i in good]  # every other sample got its reward
    rows = {int(row["tokens"]): row for row in oracle.ledger.rows()}
    assert [i for i, row in rows.items() if row["status"] == "error"] == bad
    assert all(rows[i]["status"] == "ok" and rows[i]["charged"] == 1 for i in good)
    assert all(rows[i]["charged"] == 0 and f"RuntimeError: simulator crashed on {i}" in rows[i]["error"] for i in bad)
    assert all(rows[i]["error"].endswith(f"(sample '{i}')") for i in bad)
    assert (oracle.used, oracle.errors, oracle.failed_calls) == (190, 10, 0)
    # isolation splits down to single samples; then each bad one is retried twice: far fewer calls than samples
    assert all(rows[i]["attempts"] > 3 for i in bad) and fn.calls < 200


def test_a_wrong_length_answer_is_split_like_a_raise(tmp_path):
    def drops_the_last_of_a_big_call(x: Sequences) -> torch.Tensor:
        r = first_token_odd(x)
        return r[:-1] if len(x) > 2 else r

    oracle = make_oracle(tmp_path, drops_the_last_of_a_big_call, budget=10, retries=0)
    assert oracle(batch(*[[i] for i in range(7)])).tolist() == [float(i % 2) for i in range(7)]
    rows = oracle.ledger.rows()
    assert [r["status"] for r in rows] == ["ok"] * 7 and oracle.used == 7
    assert rows[0]["error"] is None and rows[0]["attempts"] == 2  # the failed call of 7, then itself alone


def test_a_failing_oracle_stops_after_max_consecutive_failures_and_charges_nothing(tmp_path):
    calls = []

    def down(x: Sequences) -> torch.Tensor:
        calls.append(len(x))
        raise ConnectionError("connection refused")

    oracle = make_oracle(tmp_path, down, budget=100, max_consecutive_failures=5)
    with pytest.raises(OracleFailing) as err:
        oracle(batch(*[[i] for i in range(40)]))
    assert str(err.value) == (
        "the oracle is failing: 5 calls in a row failed (the last: ConnectionError: connection refused)"
    )
    # the batch of 40, then its first sample alone and the two halves of the rest, then the first of those
    assert calls == [40, 1, 20, 19, 1]
    assert oracle.ledger.rows() == [] and oracle.used == 0 and oracle.queries == 0  # all released


def test_a_call_with_one_reward_resets_the_count_of_failed_calls(tmp_path):
    outcomes = iter([False, False, True, False, False, True] + [False] * 10)

    def sometimes(x: Sequences) -> torch.Tensor:
        if not next(outcomes):
            raise TimeoutError("slow")
        return first_token_odd(x)

    oracle = make_oracle(tmp_path, sometimes, budget=100, chunk_size=1, retries=0, max_consecutive_failures=3)
    r = oracle(batch(*[[i] for i in range(6)]))
    assert r.isnan().tolist() == [True, True, False, True, True, False] and oracle.failed_calls == 0
    with pytest.raises(OracleFailing, match="3 calls in a row failed"):
        oracle(batch(*[[i] for i in range(6, 12)]))
    # the 3 failed samples are final errors (retries=0); the 3 never sent were released
    assert [r["status"] for r in oracle.ledger.rows()] == ["error", "error", "ok", "error", "error", "ok"] + [
        "error"
    ] * 3
    assert oracle.used == 2 and len(oracle.ledger.rows()) == 9


def test_open_is_the_fault_tolerant_oracle_on_its_own_file_and_a_rerun_pays_nothing_twice(tmp_path):
    fn = Counting()
    path = tmp_path / "evaluations.sqlite"
    x = batch(*[[i, i] for i in range(8)])
    with LedgerOracle.open(fn, 8, path, OracleConfig(executor="thread", workers=2, retries=0)) as oracle:
        assert oracle(x).tolist() == first_token_odd(x).tolist()
        assert oracle.oracle_id == "test_oracle_ledger:Counting" and oracle.run_id == "default"
    assert oracle.ledger._db is not None and fn.samples == 8
    with pytest.raises(sqlite3.ProgrammingError):  # closed with the oracle
        oracle.ledger.rows()
    with LedgerOracle.open(fn, 8, path) as again:  # the script run again: its budget continues, answers are free
        assert again.used == 8 and again.remaining == 0
        assert again(x).tolist() == first_token_odd(x).tolist() and fn.samples == 8


def test_a_ctrl_c_just_after_a_commit_is_a_keyboard_interrupt_and_the_commit_holds(tmp_path):
    class CtrlCAfterCommit:
        """The connection, with a Ctrl-C delivered as COMMIT returns (Python checks signals right after)."""

        def __init__(self, db: sqlite3.Connection) -> None:
            self.db = db

        def __getattr__(self, name: str):
            return getattr(self.db, name)

        def execute(self, sql: str, *args):
            cursor = self.db.execute(sql, *args)
            if sql == "COMMIT":
                raise KeyboardInterrupt
            return cursor

    ledger = Ledger(tmp_path / "l.sqlite")
    (row,) = ledger.reserve("run", "toy", 0, "banel", 0, [Request("a", "1", "ha")], budget=5)
    ledger._db = CtrlCAfterCommit(ledger._db)
    with pytest.raises(KeyboardInterrupt):  # not "cannot rollback - no transaction is active"
        ledger.send([row])
    assert ledger.charged("run") == 1


def test_an_oracle_answering_scores_stops_after_max_out_of_contract_samples_not_calls(tmp_path):
    from banel.oracle import OutOfContract

    calls = []

    def scores(x: Sequences) -> torch.Tensor:
        calls.append(len(x))
        return torch.full((len(x),), 0.3)

    oracle = make_oracle(tmp_path, scores, budget=100)  # one call per batch: the old breaker counted 1 per batch
    with pytest.raises(OutOfContract) as err:
        oracle(batch(*[[i] for i in range(40)]))
    assert str(err.value) == (
        "the oracle answered 0.3 for sample '4'; banel expects 0 or 1 (5 samples in a row answered out of contract: "
        "a score or a probability instead of a reward?)"
    )
    assert calls == [40]  # stopped at the first call: its first 5 samples were enough
    assert oracle.ledger.rows() == [] and oracle.used == 0  # none kept as an answer, nothing charged


def test_isolated_out_of_contract_samples_are_errors_and_the_run_goes_on(tmp_path):
    def nan_every_third(x: Sequences) -> torch.Tensor:
        r = first_token_odd(x)
        r[x.tokens[:, 0] % 3 == 0] = math.nan
        return r

    oracle = make_oracle(tmp_path, nan_every_third, budget=100, retries=0, max_out_of_contract=2)
    r = oracle(batch(*[[i] for i in range(30)]))
    assert r.isnan().nonzero().flatten().tolist() == list(range(0, 30, 3))
    assert (oracle.used, oracle.errors, oracle.out_of_contract) == (20, 10, 0)  # never 2 in a row
    with pytest.raises(ValueError, match="^max_out_of_contract must be >= 0"):
        OracleConfig(max_out_of_contract=-1)
