"""A run's ledger against its checkpoint: the main file alone is complete, a ledger missing rows is refused on
resume (never paid again silently), and `banel ledger check` / `export` (issue 18, ledger integrity)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from _tiny import charged_rows, killed_run, read_rows, run_tiny
from banel.cli import main
from banel.config import parse_overrides
from banel.oracle import Ledger
from banel.runner import Run, parse_config, resume_run
from banel.testing import TinyOptions, TinyTask

M = 16
SETTINGS = {
    "m": M,
    "nre_budget": 4 * M,
    "banel.negative_epochs": 2,
    "banel.generator_epochs": 1,
    "eval.drift_samples": 50,
    "oracle.dedupe": False,  # a round pays M rows in M / 2 calls
    "oracle.chunk_size": 2,
    "task_options.delay": 0.02,
}
KILL_AT = 11  # the 3rd call of round 1: round 0 is checkpointed, round 1 half paid


def comparable(summary: dict) -> dict:
    return {k: v for k, v in summary.items() if k != "wall_seconds"}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The same run, uninterrupted."""
    out = tmp_path_factory.mktemp("reference") / "run"
    data = parse_overrides([f"{k}={json.dumps(v)}" for k, v in {**SETTINGS, "task_options.delay": 0.0}.items()])
    run = Run(parse_config({"task": "banel.testing:tiny", **data}), TinyTask(), out)
    run.start()
    return run.execute(), read_rows(out / "ledger.sqlite")


def damage(folder: Path, how: str) -> None:
    """What a user or a disk does to a killed run's write-ahead log."""
    wal = folder / "ledger.sqlite-wal"
    if how == "delete":  # as when ledger.sqlite alone is copied
        wal.unlink()
        (folder / "ledger.sqlite-shm").unlink()
    else:  # 4 KB of garbage in the middle
        size = wal.stat().st_size
        assert size > 8192
        with open(wal, "r+b") as f:
            f.seek(size // 2)
            f.write(os.urandom(4096))


@pytest.fixture(scope="module")
def killed(tmp_path_factory):
    """A run SIGKILLed mid-round 1, and its ledger rows then."""
    out = tmp_path_factory.mktemp("killed") / "run"
    done = killed_run(out, KILL_AT, SETTINGS)
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    assert (out / "ledger.sqlite-wal").exists()
    return out, read_rows(out / "ledger.sqlite")


@pytest.mark.parametrize("how", ["delete", "garble"])
def test_a_killed_runs_main_ledger_file_alone_is_complete(tmp_path, killed, reference, how):
    folder, rows_at_kill = killed
    out = tmp_path / "run"
    shutil.copytree(folder, out)
    damage(out, how)
    rows = read_rows(out / "ledger.sqlite")
    # every row and every settlement was in the main file; only the charge of the calls in flight (sent after
    # the last settlement) may be missing: such rows look never sent, and are charged once when sent again
    assert [r["id"] for r in rows] == [r["id"] for r in rows_at_kill]
    assert [r for r in rows if r["status"] != "pending"] == [r for r in rows_at_kill if r["status"] != "pending"]
    assert any(r["status"] == "pending" and r["charged"] for r in rows_at_kill)  # calls were in flight
    summary = resume_run(out, task=TinyTask(TinyOptions()))
    ref_summary, ref_rows = reference
    assert comparable(summary) == comparable(ref_summary)
    assert charged_rows(read_rows(out / "ledger.sqlite")) == charged_rows(ref_rows)  # nothing paid twice


PIN = """
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN")
db.execute("SELECT COUNT(*) FROM evaluations").fetchone()
print("pinned", flush=True)
time.sleep(600)
"""


@pytest.fixture(scope="module")
def killed_while_read(tmp_path_factory):
    """A run SIGKILLed mid-round 1 while another process (a user's SQLite shell) held a read transaction open
    on its ledger since before the first row: no checkpoint could copy a row into the main file."""
    out = tmp_path_factory.mktemp("pinned") / "run"
    out.mkdir()
    Ledger(out / "ledger.sqlite").close()
    reader = subprocess.Popen(
        [sys.executable, "-c", PIN, str(out / "ledger.sqlite")], stdout=subprocess.PIPE, text=True
    )
    try:
        assert reader.stdout.readline() == "pinned\n"
        done = killed_run(out, KILL_AT, SETTINGS)
    finally:
        reader.send_signal(signal.SIGKILL)
        reader.wait()
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    assert "another connection reading the ledger kept some rows in ledger.sqlite-wal only" in done.stderr
    return out


@pytest.mark.parametrize("how", ["delete", "garble"])
def test_resume_refuses_a_ledger_that_lost_rows_its_checkpoint_counts(tmp_path, killed_while_read, how):
    out = tmp_path / "run"
    shutil.copytree(killed_while_read, out)
    damage(out, how)
    with pytest.raises(ValueError) as err:
        resume_run(out, task=TinyTask(TinyOptions()))
    message = str(err.value)
    found = re.fullmatch(
        rf"{re.escape(str(out / 'ledger.sqlite'))} does not match {re.escape(str(out / 'checkpoint.pt'))}: the "
        rf"checkpoint recorded {M} NREs paid in round 0 \({M} rows\), the ledger holds (\d+) \((\d+) rows\): rows "
        r"are missing \(a deleted or damaged ledger.sqlite-wal, or a ledger copied without it\?\) and resuming would "
        r"pay for them again. Put back the ledger and checkpoint that go together \(ledger.sqlite with its -wal file, "
        r"if it has one\) and resume again; or delete checkpoint.pt and resume to redo the run from round 0, "
        r"answering from the ledger every evaluation it holds \(and paying again for any it lacks\)",
        message,
    )
    assert found, message
    held = int(found[1])
    assert held == 0 if how == "delete" else held < M  # garbage ends the log where it starts
    assert not (out / "summary.json").exists() and len(read_rows(out / "ledger.sqlite")) < M  # nothing paid
    assert main(["resume", str(out), "--quiet", "--no-plot"]) == 2  # the CLI: one line, exit 2


class Crash(Exception):
    """Stands in for a kill."""


def test_resume_refuses_a_checkpoint_older_than_its_ledger(tmp_path):
    out = tmp_path / "run"
    checkpoints = []

    def keep_and_crash(row: dict) -> None:
        if row["round"] == 1:
            checkpoints.append((out / "checkpoint.pt").read_bytes())  # written after round 0
        if row["round"] == 2:
            raise Crash

    with pytest.raises(Crash):
        run_tiny(out, "banel", on_round=keep_and_crash, m=8, nre_budget=32, eval={"drift_samples": 50})
    (out / "checkpoint.pt").write_bytes(checkpoints[0])  # a backup of the folder taken earlier
    with pytest.raises(ValueError) as err:
        resume_run(out, task=TinyTask(TinyOptions()))
    assert str(err.value) == (
        f"{out / 'ledger.sqlite'} does not match {out / 'checkpoint.pt'}: the ledger holds rows of round 2, after the "
        "checkpoint's round 1: more than the checkpoint knows of (an older checkpoint?). Put back the ledger and "
        "checkpoint that go together (ledger.sqlite with its -wal file, if it has one) and resume again; or delete "
        "checkpoint.pt and resume to redo the run from round 0, answering from the ledger every evaluation it holds "
        "(and paying again for any it lacks)"
    )


def test_ledger_check_and_export(tmp_path, capsys):
    out = tmp_path / "run"
    run, summary, _ = run_tiny(out, "banel", m=8, nre_budget=24, eval={"drift_samples": 50})
    run_id, path = run.run_id, out / "ledger.sqlite"
    paid = summary["nre_used"]
    assert main(["ledger", "check", str(out)]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"{path}: integrity ok",
        f"run {run_id}: {paid} rows ({paid} ok, 0 error, 0 lost, 0 sent, 0 pending); {paid} NREs charged",
        f"summary.json: nre_used {paid}, as charged",
        f"checkpoint.pt: {paid} NREs paid before round 3, as in the ledger",
        "no sample was paid for twice",
    ]

    assert main(["ledger", "export", str(out), "--format", "csv", "--out", str(tmp_path / "rows.csv")]) == 0
    assert capsys.readouterr().out == f"wrote {paid} rows to {tmp_path / 'rows.csv'}\n"
    lines = (tmp_path / "rows.csv").read_text().splitlines()
    assert lines[0].startswith("id,run_id,oracle,round,method,seed,sample,tokens,hash,status,reward,") and len(
        lines
    ) == (paid + 1)
    assert main(["ledger", "export", str(out), "--format", "jsonl"]) == 0
    exported = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert exported == Ledger(path).rows()

    db = sqlite3.connect(path)  # the first sample paid a second time, behind the run's back
    first = db.execute("SELECT * FROM evaluations ORDER BY id LIMIT 1").fetchone()
    db.execute(f"INSERT INTO evaluations VALUES (NULL{', ?' * (len(first) - 1)})", first[1:])
    db.commit()
    db.close()
    assert main(["ledger", "check", str(out)]) == 1
    problems = [line for line in capsys.readouterr().out.splitlines() if line.startswith("PROBLEM")]
    assert problems == [
        f"PROBLEM: summary.json says nre_used {paid}, the ledger charges {paid + 1}",
        f"PROBLEM: checkpoint.pt: the checkpoint recorded {paid} NREs paid in rounds 0-2 ({paid} rows), the ledger "
        f"holds {paid + 1} ({paid + 1} rows): more than the checkpoint knows of (an older checkpoint?)",
        "PROBLEM: 1 samples were paid for more than once (1 extra NREs)",
    ]


def test_ledger_check_of_a_folder_without_a_run(tmp_path, capsys):
    assert main(["ledger", "check", str(tmp_path)]) == 2
    assert capsys.readouterr().err == f"banel: error: {tmp_path / 'config.json'} does not exist: not a run folder\n"


def test_ledger_check_of_a_ledger_that_is_not_sqlite(tmp_path, capsys):
    (tmp_path / "config.json").write_text(json.dumps({"run": {}, "run_id": "x"}))
    (tmp_path / "ledger.sqlite").write_bytes(b"not a database" * 300)
    assert main(["ledger", "check", str(tmp_path)]) == 1
    assert capsys.readouterr().out == (
        f"PROBLEM: {tmp_path / 'ledger.sqlite'}: SQLite cannot read it (file is not a database)\n"
    )
    assert main(["ledger", "export", str(tmp_path), "--format", "jsonl"]) == 2
    assert capsys.readouterr().err == (
        f"banel: error: the ledger of {tmp_path} cannot be read: file is not a database (`banel ledger check` it)\n"
    )
