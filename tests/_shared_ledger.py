"""A worker of the shared-ledger stress test (tests/test_oracle_shared.py): one run of a slow reward on a ledger
that other processes write at the same time. `python -m _shared_ledger LEDGER COUNTER K SAMPLES BATCHES SIZE`.

Run K asks BATCHES batches of SIZE samples drawn (with repeats) from SAMPLES distinct ones, the same batches
after every restart; each reward call appends one line per sample, `pid hash`, to COUNTER (O_APPEND: one write
per call, whole lines, whatever the other processes write) before it evaluates, so a call a kill interrupts is
counted too."""

from __future__ import annotations

import os
import random
import sys
import time
from pathlib import Path

import torch

from banel.config import OracleConfig
from banel.oracle import Ledger, LedgerOracle
from banel.sequences import Sequences

DELAY_S = 0.01  # per sample: a slow reward, so that kills land in calls and runs overlap in time
CHUNK = 4  # samples per call: a kill interrupts one call of at most CHUNK samples (inline executor)


class CountedSlowReward:
    """Reward 1 iff the first token is odd, after DELAY_S per sample; every call recorded in a file first."""

    def __init__(self, counter: Path) -> None:
        self.counter = counter

    def __call__(self, x: Sequences) -> torch.Tensor:
        lines = "".join(f"{os.getpid()} {h}\n" for h in x.hashes())
        fd = os.open(self.counter, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        try:
            os.write(fd, lines.encode())
        finally:
            os.close(fd)
        time.sleep(DELAY_S * len(x))
        return (x.tokens[:, 0] % 2).double()


def batches(k: int, samples: int, count: int, size: int) -> list[list[int]]:
    """Run k's batches: the same after every restart, overlapping the other runs' (and repeating inside)."""
    rng = random.Random(k)
    return [[rng.randrange(samples) for _ in range(size)] for _ in range(count)]


def main(argv: list[str]) -> int:
    ledger, counter, k, samples, count, size = argv
    torch.set_num_threads(1)
    todo = batches(int(k), int(samples), int(count), int(size))
    oracle = LedgerOracle(
        CountedSlowReward(Path(counter)),
        budget=int(count) * int(size),
        ledger=Ledger(ledger),
        run_id=f"run{k}",
        oracle_id="stress",
        config=OracleConfig(chunk_size=CHUNK, retries=0),
    )
    print("ready", flush=True)
    for round_index, tokens in enumerate(todo):
        oracle.round = round_index
        rewards = oracle(Sequences.from_lists([[t] for t in tokens]))
        assert rewards.tolist() == [float(t % 2) for t in tokens], (tokens, rewards.tolist())
    oracle.close()
    print("done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
