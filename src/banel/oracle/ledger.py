"""A durable ledger of reward evaluations in SQLite (WAL): one row per paid evaluation, committed before use.

Row life cycle: `reserve` inserts `pending` rows (charged) in one IMMEDIATE transaction that first checks the
run's charged rows against the budget, so concurrent writers (threads, processes, several runs sharing a
file) can never overspend. `settle` turns each row into `ok` (charged, reward stored) or `error` (not
charged) and commits before the reward is handed back. A `pending` row whose process died (SIGKILL,
power loss) becomes `lost` the next time the ledger is opened for that run: it stays charged, because the
oracle may have done the work, and its sample has no reward, so a resumed run asks for it again.
"""

from __future__ import annotations

import os
import socket
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from banel.oracle.budget import BudgetExceeded

SCHEMA = """
CREATE TABLE IF NOT EXISTS evaluations (
    id INTEGER PRIMARY KEY,
    run_id TEXT NOT NULL,
    oracle TEXT NOT NULL,
    round INTEGER NOT NULL,
    method TEXT NOT NULL,
    seed INTEGER NOT NULL,
    sample TEXT NOT NULL,
    tokens TEXT NOT NULL,
    hash TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'ok', 'error', 'lost')),
    reward REAL,
    error TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    charged INTEGER NOT NULL,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    started REAL NOT NULL,
    ended REAL
);
CREATE INDEX IF NOT EXISTS evaluations_answer ON evaluations (oracle, hash, status);
CREATE INDEX IF NOT EXISTS evaluations_run ON evaluations (run_id, round);
"""

SYNCHRONOUS = ("OFF", "NORMAL", "FULL")


@dataclass(frozen=True)
class Request:
    """One sample to pay for: its text (for people), token ids and hash (for de-duplication)."""

    sample: str
    tokens: str
    hash: str


@dataclass(frozen=True)
class Settlement:
    """The outcome of one reserved row: a reward, or an error message (then the row is not charged)."""

    row_id: int
    reward: float | None
    error: str | None
    attempts: int


class Ledger:
    """One SQLite file of evaluations, shared safely by threads of this process and by other processes.

    `synchronous` is SQLite's durability level: FULL (default) fsyncs every commit, so a paid reward
    survives a power cut; NORMAL survives a crash of the process only, and is faster.
    """

    def __init__(self, path: str | Path, synchronous: str = "FULL") -> None:
        if synchronous not in SYNCHRONOUS:
            raise ValueError(f"ledger synchronous must be one of {', '.join(SYNCHRONOUS)}; got {synchronous!r}")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # autocommit mode: every transaction below is explicit, so none is left open by accident
        self._db = sqlite3.connect(self.path, timeout=60.0, isolation_level=None, check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        self._until_unlocked(lambda: self._db.execute("PRAGMA journal_mode=WAL"))
        self._db.execute(f"PRAGMA synchronous={synchronous}")
        self._until_unlocked(lambda: self._db.executescript(SCHEMA))
        self._host, self._pid = socket.gethostname(), os.getpid()

    @staticmethod
    def _until_unlocked(statement: Callable[[], object], seconds: float = 60.0) -> None:
        """Run a set-up statement, retrying while another connection opening the same new file holds it.

        Switching a fresh file to WAL needs an exclusive lock, and SQLite answers "database is locked" at once
        (without its busy handler) when several connections open the same new ledger together.
        """
        deadline = time.monotonic() + seconds
        while True:
            try:
                statement()
                return
            except sqlite3.OperationalError as err:
                if "locked" not in str(err) or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)

    def close(self) -> None:
        """Close the connection (committed rows are already on disk)."""
        self._db.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writing ------------------------------------------------------------------------------------
    def recover(self, run_id: str) -> int:
        """Mark this run's pending rows left by dead processes on this host as lost; returns how many."""
        rows = self._db.execute(
            "SELECT id, host, pid FROM evaluations WHERE run_id = ? AND status = 'pending'", (run_id,)
        ).fetchall()
        dead = [r["id"] for r in rows if r["host"] == self._host and not _alive(r["pid"])]
        if dead:
            self._mark_lost(dead, "the evaluating process died before the reward was recorded")
        return len(dead)

    def reserve(
        self,
        run_id: str,
        oracle: str,
        round_index: int,
        method: str,
        seed: int,
        requests: Sequence[Request],
        budget: int,
    ) -> list[int]:
        """Insert charged pending rows for requests, or raise BudgetExceeded (inserting nothing)."""
        if not requests:
            return []
        now = time.time()
        self._db.execute("BEGIN IMMEDIATE")  # a write lock before the count: no other writer can overspend
        try:
            used = self._charged(run_id)
            if used + len(requests) > budget:
                raise BudgetExceeded(
                    f"request of {len(requests)} evaluations exceeds the {budget - used} NREs left of {budget}"
                )
            ids = []
            for r in requests:
                cur = self._db.execute(
                    "INSERT INTO evaluations (run_id, oracle, round, method, seed, sample, tokens, hash,"
                    " status, charged, host, pid, started)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'pending', 1, ?, ?, ?)",
                    (
                        run_id,
                        oracle,
                        round_index,
                        method,
                        seed,
                        r.sample,
                        r.tokens,
                        r.hash,
                        self._host,
                        self._pid,
                        now,
                    ),
                )
                ids.append(int(cur.lastrowid))
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        return ids

    def settle(self, settlements: Iterable[Settlement]) -> None:
        """Record outcomes and commit: ok rows stay charged, error rows are released."""
        now = time.time()
        rows = [
            (
                "ok" if s.error is None else "error",
                s.reward if s.error is None else None,
                s.error,
                s.attempts,
                int(s.error is None),
                now,
                s.row_id,
            )
            for s in settlements
        ]
        if not rows:
            return
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.executemany(
                "UPDATE evaluations SET status = ?, reward = ?, error = ?, attempts = ?, charged = ?,"
                " ended = ? WHERE id = ?",
                rows,
            )
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def mark_lost(self, row_ids: Sequence[int], why: str) -> None:
        """Rows whose evaluation was interrupted: charged (the oracle may have done the work), no reward."""
        if row_ids:
            self._mark_lost(row_ids, why)

    def _mark_lost(self, row_ids: Sequence[int], why: str) -> None:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.executemany(
                "UPDATE evaluations SET status = 'lost', error = ?, ended = ? WHERE id = ? AND status = 'pending'",
                [(why, time.time(), i) for i in row_ids],
            )
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    # -- reading ------------------------------------------------------------------------------------
    def _charged(self, run_id: str) -> int:
        row = self._db.execute(
            "SELECT COALESCE(SUM(charged), 0) FROM evaluations WHERE run_id = ?", (run_id,)
        ).fetchone()
        return int(row[0])

    def charged(self, run_id: str) -> int:
        """NREs spent by a run: its ok, pending and lost rows (errors are free)."""
        return self._charged(run_id)

    def answers(self, oracle: str, hashes: Iterable[str]) -> dict[str, float]:
        """Rewards already paid for, by any run of the same oracle, keyed by sample hash."""
        out: dict[str, float] = {}
        unique = list(dict.fromkeys(hashes))
        for i in range(0, len(unique), 500):  # SQLite caps the number of bound parameters
            part = unique[i : i + 500]
            marks = ",".join("?" * len(part))
            for row in self._db.execute(
                f"SELECT hash, reward FROM evaluations WHERE oracle = ? AND status = 'ok' AND hash IN ({marks})",
                (oracle, *part),
            ):
                out[row["hash"]] = float(row["reward"])
        return out

    def round_answers(self, run_id: str, round_index: int | None) -> list[tuple[str, float]]:
        """(hash, reward) of a run's ok rows of one round (None: every round), in the order they were reserved."""
        query = "SELECT hash, reward FROM evaluations WHERE run_id = ? AND status = 'ok'"
        params: tuple = (run_id,)
        if round_index is not None:
            query, params = query + " AND round = ?", (run_id, round_index)
        return [(r["hash"], float(r["reward"])) for r in self._db.execute(query + " ORDER BY id", params)]

    def rows(self, run_id: str | None = None) -> list[dict[str, Any]]:
        """Every row (of one run, if given) as a dict, oldest first."""
        if run_id is None:
            cur = self._db.execute("SELECT * FROM evaluations ORDER BY id")
        else:
            cur = self._db.execute("SELECT * FROM evaluations WHERE run_id = ? ORDER BY id", (run_id,))
        return [dict(r) for r in cur]


def _alive(pid: int) -> bool:
    """Whether a process of this id exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
