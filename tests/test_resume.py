"""Crash and resume: a killed run continues from its checkpoint, pays nothing twice, ends as if unkilled."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import banel
from banel.cli import main
from banel.config import RunConfig
from banel.runner import Run, parse_config
from banel.sequences import Sequences
from banel.tasks import make_task
from banel.tasks.toy import Toy1D

SMALL = ["--set", "m=100", "--set", "banel.negative_epochs=3", "--set", "banel.generator_epochs=2"]


def small_config(budget: int = 300, **oracle) -> RunConfig:
    banel_cfg = {"negative_epochs": 3, "generator_epochs": 2}
    return parse_config({"task": "toy1d", "nre_budget": budget, "m": 100, "banel": banel_cfg, "oracle": oracle})


class Crash(Exception):
    """Stands in for a kill."""


def comparable(summary: dict) -> dict:
    return {k: v for k, v in summary.items() if k != "wall_seconds"}


def history(out: Path) -> list[dict]:
    rows = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "wall_seconds"} for r in rows]


def ledger_rows(out: Path) -> list[dict]:
    db = sqlite3.connect(out / "ledger.sqlite")
    db.row_factory = sqlite3.Row
    return [dict(r) for r in db.execute("SELECT * FROM evaluations ORDER BY id")]


@pytest.fixture(scope="module")
def prior_cache(tmp_path_factory) -> Path:
    """The session's private prior cache (the same folder as conftest's `cache`)."""
    return tmp_path_factory.getbasetemp() / "banel-cache"


@pytest.fixture(scope="module")
def reference(tmp_path_factory, prior_cache):
    out = tmp_path_factory.mktemp("reference") / "run"
    run = Run(small_config(), make_task("toy1d", cache=prior_cache), out)
    run.start()
    return out, run.execute()


@pytest.mark.parametrize("crash_round", [0, 2])
def test_resume_after_a_crash_between_a_round_and_its_checkpoint(tmp_path, reference, prior_cache, crash_round):
    ref_out, ref = reference
    out = tmp_path / "run"
    config = small_config()

    def crash(row: dict) -> None:
        if row["round"] == crash_round:  # the round's history row is written, its checkpoint not yet
            raise Crash

    run = Run(config, make_task("toy1d", cache=prior_cache), out, on_round=crash)
    run.start()
    with pytest.raises(Crash):
        run.execute()
    run.oracle.close()
    paid_before = len(ledger_rows(out))
    run_id = json.loads((out / "config.json").read_text())["run_id"]

    resumed = Run(config, make_task("toy1d", cache=prior_cache), out, run_id=run_id)
    resumed.resume()
    assert resumed.round_index == crash_round and resumed.oracle.used == paid_before
    summary = resumed.execute()

    assert comparable(summary) == comparable(ref)
    assert history(out) == history(ref_out)  # round 2's row was dropped and redone, identically
    rows = ledger_rows(out)
    assert len(rows) == len(ledger_rows(ref_out)) == summary["nre_used"] <= config.nre_budget
    assert len({r["hash"] for r in rows}) == len(rows)  # no sample paid twice
    assert all(r["status"] == "ok" for r in rows)


class CheckedToy1D(Toy1D):
    """toy1d with a free check ruling out sequences whose first token is even (about half the line)."""

    def feasible(self, x: Sequences) -> torch.Tensor:
        return x.tokens[:, 0] % 2 == 1


def _checked_toy1d(prior_cache):
    return CheckedToy1D(cache=prior_cache)


def test_resume_with_feasible_only_matches_an_uninterrupted_run(tmp_path, prior_cache):
    banel_cfg = {"negative_epochs": 3, "generator_epochs": 2, "distil_samples": 50}
    config = parse_config({"task": "toy1d", "nre_budget": 300, "m": 100, "feasible_only": True, "banel": banel_cfg})
    ref = Run(config, _checked_toy1d(prior_cache), tmp_path / "ref")
    ref.start()
    ref_summary = ref.execute()

    def crash(row: dict) -> None:
        if row["round"] == 1:
            raise Crash

    out = tmp_path / "run"
    run = Run(config, _checked_toy1d(prior_cache), out, on_round=crash)
    run.start()
    with pytest.raises(Crash):
        run.execute()
    run.oracle.close()
    resumed = Run(
        config, _checked_toy1d(prior_cache), out, run_id=json.loads((out / "config.json").read_text())["run_id"]
    )
    resumed.resume()
    summary = resumed.execute()
    assert comparable(summary) == comparable(ref_summary) and history(out) == history(tmp_path / "ref")
    rows = ledger_rows(out)
    assert [r["hash"] for r in rows] == [r["hash"] for r in ledger_rows(tmp_path / "ref")]
    assert rows and all(int(r["tokens"].split(",")[0]) % 2 == 1 for r in rows)  # nothing ruled out was paid
    assert summary["queries"] < summary["rounds"] * config.m  # the check did rule samples out


def test_ctrl_c_mid_batch_keeps_every_paid_row_and_the_budget(tmp_path, prior_cache):
    task = make_task("toy1d", cache=prior_cache)
    calls = {"n": 0}
    real_reward = task.reward

    def interrupted_on_call_5(x: Sequences) -> torch.Tensor:
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return real_reward(x)

    config = small_config(chunk_size=10, dedupe=False)
    task.reward = interrupted_on_call_5
    run = Run(config, task, tmp_path / "run")
    run.start()
    with pytest.raises(KeyboardInterrupt):
        run.execute()
    statuses = [r["status"] for r in ledger_rows(tmp_path / "run")]
    # 4 calls of 10 returned and were committed; the 5th was in flight: charged (the oracle may have done the
    # work), no reward; the 50 samples of the batch never sent are released, not charged
    assert statuses == ["ok"] * 40 + ["lost"] * 10
    assert run.oracle.used == 50 <= config.nre_budget


def _env() -> dict[str, str]:
    env = dict(os.environ)
    src = str(Path(banel.__file__).resolve().parents[1])
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    return env


@pytest.mark.slow
def test_sigkill_mid_round_then_resume_matches_an_uninterrupted_run(tmp_path, prior_cache):
    out = tmp_path / "killed"
    # One torch thread everywhere (the in-process reference too): the reduction order, hence the last bits of
    # every float, depends on the thread count.
    args = ["toy1d", "--budget", "600", *SMALL, "--quiet", "--no-plot", "--cache", str(prior_cache), "--threads", "1"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "banel.cli", "run", *args, "--out", str(out)],
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 600
    try:
        while time.monotonic() < deadline:  # wait for round 2's evaluations to be committed
            if proc.poll() is not None:
                pytest.fail(f"run ended before it could be killed: {proc.stderr.read().decode()[-2000:]}")
            if (out / "ledger.sqlite").exists():
                try:
                    if any(r["round"] >= 2 and r["status"] == "ok" for r in ledger_rows(out)):
                        break
                except sqlite3.OperationalError:
                    pass  # the schema is being created
            time.sleep(0.05)
        else:
            pytest.fail("round 2 never started")
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "summary.json").exists()

    done = subprocess.run(
        [sys.executable, "-m", "banel.cli", "resume", str(out), "--quiet", "--no-plot", "--cache", str(prior_cache)]
        + ["--threads", "1"],
        env=_env(),
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    resumed = json.loads((out / "summary.json").read_text())

    ref_out = tmp_path / "reference"
    assert main(["run", *args, "--out", str(ref_out)]) == 0
    reference = json.loads((ref_out / "summary.json").read_text())

    rows = ledger_rows(out)
    paid = [r for r in rows if r["charged"]]
    assert len({r["hash"] for r in rows}) == len(rows), "a sample was evaluated twice"
    assert len(paid) == resumed["nre_used"] <= 600
    assert resumed.keys() == reference.keys()
    assert comparable(resumed) == comparable(reference)
    assert history(out) == history(ref_out)


def test_resume_refuses_what_it_cannot_continue(tmp_path, capsys):
    assert main(["resume", str(tmp_path)]) == 2
    assert "not a run folder" in capsys.readouterr().err
    (tmp_path / "config.json").write_text(json.dumps({"run": {}, "run_id": "x"}))
    (tmp_path / "summary.json").write_text("{}")
    assert main(["resume", str(tmp_path)]) == 2
    assert "already finished" in capsys.readouterr().err
