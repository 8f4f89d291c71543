"""A run SIGKILLed mid-batch with a slow oracle: only the calls in flight are charged, and the resumed run pays
for nothing charged before it and ends exactly as an uninterrupted run (issue 18, fair charging)."""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from _tiny import charged_rows, child_env, killed_run, read_rows
from banel.config import parse_overrides
from banel.runner import Run, parse_config, resume_run
from banel.testing import TinyOptions, TinyTask

WORKERS, CHUNK, M = 2, 2, 16
SETTINGS = {
    "m": M,
    "nre_budget": 4 * M,
    "banel.negative_epochs": 2,
    "banel.generator_epochs": 1,
    "eval.drift_samples": 50,
    "oracle.dedupe": False,  # every sample of a batch is paid, so a batch is M rows in M / CHUNK calls
    "oracle.chunk_size": CHUNK,
    "oracle.workers": WORKERS,
    "task_options.delay": 0.05,
}


def config(**settings):
    data = {"task": "banel.testing:tiny", **parse_overrides([f"{k}={json.dumps(v)}" for k, v in settings.items()])}
    return parse_config(data)


def comparable(summary: dict) -> dict:
    return {k: v for k, v in summary.items() if k != "wall_seconds"}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The same run, uninterrupted (in this process, inline: the executor changes no reward)."""
    out = tmp_path_factory.mktemp("reference") / "run"
    run = Run(config(**{**SETTINGS, "oracle.workers": 1, "task_options.delay": 0.0}), TinyTask(), out)
    run.start()
    return run.execute(), read_rows(out / "ledger.sqlite")


@pytest.mark.parametrize("executor", ["thread", "process"])
def test_a_kill_mid_batch_charges_only_calls_in_flight_and_resume_pays_nothing_again(
    tmp_path, reference, caplog, executor
):
    out = tmp_path / "run"
    killed = killed_run(out, 11, {**SETTINGS, "oracle.executor": executor})  # round 1's 3rd call of 8
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    rows = read_rows(out / "ledger.sqlite")
    answered = [r for r in rows if r["status"] == "ok"]
    in_flight = [r for r in rows if r["status"] == "pending" and r["charged"]]
    never_sent = [r for r in rows if r["status"] == "pending" and not r["charged"]]
    # the call that killed the run was sent, and at most WORKERS calls were in flight; the rest of the batch waits
    assert CHUNK <= len(in_flight) <= WORKERS * CHUNK
    assert never_sent and len(in_flight) + len(never_sent) + len([r for r in answered if r["round"] == 1]) <= M
    assert sum(r["charged"] for r in rows) == len(answered) + len(in_flight)

    caplog.set_level(logging.WARNING)
    summary = resume_run(out, task=TinyTask(TinyOptions(delay=0.0)))
    assert (
        f"died with {len(in_flight)} evaluations in flight: charged once, without a reward" in caplog.text
        and f"{len(never_sent)} reserved but never sent were released" in caplog.text
    )
    ref_summary, ref_rows = reference
    assert comparable(summary) == comparable(ref_summary)
    final = read_rows(out / "ledger.sqlite")
    assert charged_rows(final) == charged_rows(ref_rows)  # the same evaluations paid, each once
    by_id = {r["id"]: r for r in final}
    # every row charged before the kill is still the one paying for its sample: its reward arrived (ok), or it
    # was in flight and the resumed round sent its sample again under it, without a second charge
    assert all(by_id[r["id"]]["status"] == "ok" and by_id[r["id"]]["charged"] == 1 for r in answered + in_flight)
    assert summary["nre_used"] == sum(r["charged"] for r in final) == len(final) == 4 * M


NO_MAIN_GUARD = """
from banel.config import OracleConfig
from banel.oracle import Ledger, LedgerOracle
from banel.sequences import Sequences

def reward(x):
    return (x.tokens[:, 0] % 2).double()

config = OracleConfig(executor="process", workers=2, chunk_size=1)
oracle = LedgerOracle(reward, 100, Ledger({path!r}), "run", "odd", config)
oracle(Sequences.from_lists([[i] for i in range(20)]))
"""


@pytest.mark.slow
def test_a_process_pool_that_cannot_start_charges_nothing_and_says_why(tmp_path):
    # spawned workers import the script, which starts a pool of its own there: the pool breaks at once
    script = tmp_path / "no_guard.py"
    script.write_text(NO_MAIN_GUARD.format(path=str(tmp_path / "l.sqlite")))
    done = subprocess.run([sys.executable, str(script)], env=child_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 1
    assert (
        "RuntimeError: oracle.executor='process' could not start its workers (BrokenProcessPool: "
        in done.stderr.splitlines()[-1]
    )
    assert "`if __name__ == '__main__':`" in done.stderr.splitlines()[-1]
    assert read_rows(Path(tmp_path / "l.sqlite")) == []  # nothing was sent, so nothing is charged or kept
