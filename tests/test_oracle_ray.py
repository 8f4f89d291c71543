"""A batch evaluated on a local Ray cluster gives exactly the in-process rewards (extra banel[ray])."""

from __future__ import annotations

import pytest
import torch

from banel.config import OracleConfig
from banel.oracle import Ledger, LedgerOracle
from banel.sequences import Sequences

ray = pytest.importorskip("ray")


def make_parity():
    """Reward 1 iff the token sum is odd; a local function, so Ray pickles it by value (the test module is
    not importable on Ray workers)."""

    def parity_of_sum(x: Sequences) -> torch.Tensor:
        return (x.tokens.sum(1) % 2).double()

    return parity_of_sum


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_ray_batch_equals_in_process(tmp_path, local_ray):
    parity_of_sum = make_parity()
    x = Sequences.from_lists([[i, (3 * i) % 7, i % 5][: 1 + i % 3] for i in range(60)])
    inline = LedgerOracle(parity_of_sum, 100, Ledger(tmp_path / "a.sqlite"), "a", "toy", OracleConfig())
    on_ray = LedgerOracle(
        parity_of_sum,
        100,
        Ledger(tmp_path / "b.sqlite"),
        "b",
        "toy",
        OracleConfig(executor="ray", workers=0, chunk_size=7, dedupe=False),
    )
    expected = inline(x)
    got = on_ray(x)
    assert got.tolist() == expected.tolist()
    assert got.tolist() == parity_of_sum(x).tolist()
    assert on_ray.used == 60 and inline.used == len(set(x.keys()))
    rows = on_ray.ledger.rows()
    assert [r["reward"] for r in rows] == expected.tolist()  # ledger rows in batch order


def test_ray_timeout_cancels_and_records_an_error(tmp_path, local_ray):
    import time

    parity_of_sum = make_parity()

    def slow_on_zero(x: Sequences) -> torch.Tensor:
        if int(x.tokens[0, 0]) == 0:
            time.sleep(60)
        return parity_of_sum(x)

    oracle = LedgerOracle(
        slow_on_zero,
        10,
        Ledger(tmp_path / "c.sqlite"),
        "c",
        "toy",
        OracleConfig(executor="ray", workers=2, chunk_size=1, timeout=3.0, retries=0),
    )
    r = oracle(Sequences.from_lists([[0], [1], [2]]))
    assert torch.isnan(r[0]) and r[1:].tolist() == [1.0, 0.0]
    assert oracle.used == 2 and oracle.errors == 1


def test_ray_interrupted_mid_batch_charges_only_calls_in_flight_and_a_restart_pays_nothing_again(tmp_path, local_ray):
    import time

    parity_of_sum = make_parity()

    def slow(x: Sequences) -> torch.Tensor:
        time.sleep(0.3)
        return parity_of_sum(x)

    x = Sequences.from_lists([[i, i + 1] for i in range(16)])
    config = OracleConfig(executor="ray", workers=2, chunk_size=2, dedupe=False)
    path = tmp_path / "l.sqlite"
    oracle = LedgerOracle(slow, 16, Ledger(path), "run", "toy", config)
    settle, settled = oracle.ledger.settle, []

    def ctrl_c_at_the_third_answer(outcomes):  # Ctrl-C as the 3rd call's answer arrives, before it is recorded
        if len(settled) == 2:
            raise KeyboardInterrupt
        settled.append(outcomes)
        settle(outcomes)

    oracle.ledger.settle = ctrl_c_at_the_third_answer
    with pytest.raises(KeyboardInterrupt):
        oracle(x)
    rows = Ledger(path).rows("run")
    statuses = [r["status"] for r in rows]
    # 2 calls answered; the 3rd (answered, not recorded) and the one beside it were in flight: charged, no reward;
    # the 12 samples never sent are released
    assert statuses.count("ok") == 4 and statuses.count("lost") == 4 and len(rows) == 8, [
        (r["status"], r["charged"], r["tokens"]) for r in rows
    ]
    assert Ledger(path).charged("run") == 8

    again = LedgerOracle(slow, 16, Ledger(path), "run", "toy", config)  # the run restarted
    assert again.replay_round(0) == 8 and again.remaining == 16
    assert again(x).tolist() == parity_of_sum(x).tolist()
    final = Ledger(path).rows("run")
    assert [r["id"] for r in final if r["id"] in {r["id"] for r in rows}] == [r["id"] for r in rows]
    assert all(r["status"] == "ok" and r["charged"] == 1 for r in final)
    assert len(final) == 16 and again.used == 16  # each sample paid once: lost rows were re-sent, not re-charged
