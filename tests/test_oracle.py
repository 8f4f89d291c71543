import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from banel.oracle import BudgetedOracle, BudgetExceeded
from banel.sequences import Sequences
from banel.testing import ScriptedOracle, constant_reward


def batch(n):
    return Sequences.from_lists([[i % 7, i // 7] for i in range(n)])


@settings(max_examples=200, deadline=None)
@given(budget=st.integers(0, 60), requests=st.lists(st.integers(0, 25), max_size=12))
def test_no_sequence_of_calls_exceeds_the_budget(budget, requests):
    inner = ScriptedOracle([])
    oracle = BudgetedOracle(inner, budget)
    expected_used = 0
    for n in requests:
        if n <= budget - expected_used:
            assert len(oracle(batch(n))) == n
            expected_used += n
        else:
            with pytest.raises(BudgetExceeded):
                oracle(batch(n))
        assert oracle.used == expected_used <= budget
        assert oracle.remaining == budget - expected_used
    # Nothing of a refused request reached the reward function.
    assert sum(inner.calls) == expected_used


def test_malformed_returns_are_clear_errors_naming_the_sample():
    x = batch(3)
    with pytest.raises(ValueError, match=r"returned 2 values for a batch of 3"):
        BudgetedOracle(lambda s: torch.zeros(2), 10)(x)
    with pytest.raises(ValueError, match=r"returned 0.5 for sample \[0, 0\]; expected 0 or 1"):
        BudgetedOracle(constant_reward(0.5), 10)(x)
    with pytest.raises(ValueError, match=r"nan"):
        BudgetedOracle(constant_reward(float("nan")), 10)(x)


def test_negative_budget_is_rejected():
    with pytest.raises(ValueError, match="nre_budget must be >= 0"):
        BudgetedOracle(constant_reward(0), -1)
