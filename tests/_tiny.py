"""The package's tiny enumerable task (banel.testing.TinyTask) under the short constructor the tests use."""

from __future__ import annotations

from banel.sequences import Sequences
from banel.testing import TINY_LENGTH, TINY_VOCAB, TinyOptions, enumerate_sequences
from banel.testing import TinyTask as _TinyTask

VOCAB, LENGTH = TINY_VOCAB, TINY_LENGTH


def support() -> Sequences:
    """All 64 sequences of length 3 over range(4)."""
    return enumerate_sequences(VOCAB, LENGTH, end_token=False)


class TinyTask(_TinyTask):
    """Reward 1 exactly for [3, 3, 3]; the prior: a random tiny transformer, or a skewed categorical table."""

    def __init__(self, kind: str = "transformer", seed: int = 0) -> None:
        super().__init__(TinyOptions(kind=kind, seed=seed))


def tiny_config(method: str, **settings):
    """A validated RunConfig on the tiny task (settings as in a config file: {"m": 10, "banel": {...}})."""
    from banel.runner import parse_config

    return parse_config({"task": "banel.testing:tiny", "method": method, **settings})


def run_tiny(out, method: str, task=None, use_oracle=None, on_round=None, **settings):
    """Run a method on the tiny task in-process: (the Run, its summary, its history rows)."""
    from banel.rundir import read_history
    from banel.runner import Run

    run = Run(tiny_config(method, **settings), task or TinyTask(), out, oracle=use_oracle, on_round=on_round)
    run.start()
    summary = run.execute()
    return run, summary, read_history(out)
