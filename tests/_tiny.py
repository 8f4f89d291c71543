"""The package's tiny enumerable task (banel.testing.TinyTask) under the short constructor the tests use, and a
variant that kills its run at a known oracle call, run in a child process."""

from __future__ import annotations

import fcntl
import json
import multiprocessing
import os
import signal
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from banel.sequences import Sequences
from banel.tasks import task_factory
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


# -- runs in a child process that kills itself at a known oracle call -----------------------------------


@dataclass(frozen=True)
class KillOptions(TinyOptions):
    """The tiny task's options, and a crash."""

    kill_at: int = 0
    """SIGKILL the run's process as reward call number kill_at starts; 0: never."""


COUNTER_ENV = "BANEL_TEST_CALL_COUNTER"


def next_call() -> int:
    """The number of this reward call among all processes of the run (the file named by $BANEL_TEST_CALL_COUNTER
    counts them, under a lock: a process pool's workers share it)."""
    with open(os.environ[COUNTER_ENV], "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.seek(0)
        n = int(f.read() or 0) + 1
        f.seek(0)
        f.truncate()
        f.write(str(n))
        f.flush()
        return n


class KillingTinyTask(_TinyTask):
    """The tiny task whose reward SIGKILLs the run at its kill_at-th call: a kill at a known point, mid-batch,
    while the calls in flight wait in the reward (never inside a ledger commit)."""

    def reward(self, x: Sequences) -> torch.Tensor:
        """The tiny reward, after a SIGKILL of the run at call kill_at."""
        if next_call() == self.options.kill_at:
            in_pool = multiprocessing.parent_process() is not None  # a process-pool worker: its parent is the run
            os.kill(os.getppid() if in_pool else os.getpid(), signal.SIGKILL)
            os._exit(1)
        return super().reward(x)


@task_factory("the tiny task, killing its run at a given reward call", {}, KillOptions)
def killing_tiny(options: KillOptions, cache: Path) -> KillingTinyTask:
    """The tiny task that SIGKILLs its run (import path `_tiny:killing_tiny`, tests/ on PYTHONPATH)."""
    return KillingTinyTask(options)


def child_env() -> dict[str, str]:
    """The environment of a child `banel` process: this checkout's src/ and tests/ first on its path."""
    import banel

    env = dict(os.environ)
    paths = [str(Path(banel.__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]
    env["PYTHONPATH"] = os.pathsep.join([*paths, env.get("PYTHONPATH", "")])
    return env


def killed_run(out: Path, kill_at: int, settings: dict, timeout: float = 300) -> subprocess.CompletedProcess:
    """`banel run _tiny:killing_tiny` in a child process with settings (key: value, as --set) until the reward
    SIGKILLs it at call kill_at; returns the finished process (returncode -9)."""
    args = [sys.executable, "-m", "banel.cli", "run", "_tiny:killing_tiny", "--out", str(out), "--threads", "1"]
    args += ["--quiet", "--no-plot", "--set", f"task_options.kill_at={kill_at}"]
    for key, value in settings.items():
        args += ["--set", f"{key}={json.dumps(value)}"]
    env = {**child_env(), COUNTER_ENV: str(out.parent / f".{out.name}-calls")}
    # output to files, not pipes: a process-pool worker orphaned by the kill may hold a pipe open for a while
    log = out.parent / f".{out.name}-output"
    with open(log, "w") as f:
        done = subprocess.run(args, env=env, stdout=f, stderr=subprocess.STDOUT, timeout=timeout)
    return subprocess.CompletedProcess(args, done.returncode, log.read_text(), log.read_text())


def read_rows(path: Path) -> list[dict]:
    """Every row of a ledger file, oldest first, through a read-only connection (no checkpoint on close)."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        db.row_factory = sqlite3.Row
        return [dict(r) for r in db.execute("SELECT * FROM evaluations ORDER BY id")]
    finally:
        db.close()


def charged_rows(rows: list[dict]) -> list[tuple]:
    """(round, hash, reward) of the charged rows, sorted: what a run paid for, whatever the executor's order."""
    return sorted((r["round"], r["hash"], r["reward"]) for r in rows if r["charged"])


def state_tensors(state) -> list[torch.Tensor]:
    """Every tensor of a (nested) state dict, in a fixed order: for bit-for-bit comparisons of saved models."""
    if isinstance(state, torch.Tensor):
        return [state]
    if isinstance(state, dict):
        return [t for k in sorted(state) for t in state_tensors(state[k])]
    if isinstance(state, list | tuple):
        return [t for v in state for t in state_tensors(v)]
    return []
