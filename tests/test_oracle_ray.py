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
