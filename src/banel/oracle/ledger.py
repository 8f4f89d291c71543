"""A durable ledger of reward evaluations in SQLite (WAL): one row per paid evaluation, committed before use.

Row life cycle, each step one committed transaction:

- `reserve` inserts `pending` rows, **not charged**, in an IMMEDIATE transaction that first counts the run's
  charged rows plus its reserved ones against the budget, so concurrent writers (threads, processes, several
  runs sharing a file) can never overspend;
- `send` charges a call's rows just before the executor dispatches it (`started` is when it was sent);
- `settle` turns each row into `ok` (charged, reward stored) or `error` (not charged; a failed call whose
  samples will be retried releases its charge until they are sent again) before the reward is handed back;
- `interrupt` (Ctrl-C, an exception) and `recover` (a process that died: SIGKILL, power loss) turn the rows
  in flight, sent without an answer, into `lost` (charged: the oracle may have done the work) and delete the
  rows never sent. A resumed run re-sends a lost row's sample under the same row, without charging it again.

Every settlement is copied into the main file at once (a passive WAL checkpoint) and `checkpoint` copies all
at a round boundary, so `ledger.sqlite` alone holds every settled row: a deleted or damaged `-wal`, or the
main file copied without it, loses at most a settlement a kill interrupted, and rows in flight then look
never sent (released, and charged once when sent again). `tally` is what a run's checkpoint is
compared with on resume (`banel.oracle.integrity`).
"""

from __future__ import annotations

import os
import socket
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
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
BUSY_S = 60.0  # how long a writer waits for another connection's transaction before failing
CHECKPOINT_WAIT_S = 2.0  # how long a round-boundary checkpoint waits for readers of older rows to finish


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
    final: bool = True
    """An error that is not final leaves the row pending and uncharged, to be sent again (a retry)."""


@dataclass(frozen=True)
class Tally:
    """A run's rows (of the rounds before some round, or of all): charged NREs, row count, the last round."""

    charged: int
    rows: int
    last_round: int | None


class Ledger:
    """One SQLite file of evaluations, shared safely by threads of this process and by other processes.

    `synchronous` is SQLite's durability level: FULL (default) fsyncs every commit and copies every settlement
    into the main file, so a paid reward survives a power cut and a lost `-wal`; NORMAL survives a crash of the
    process only, with the main file complete at round boundaries, and is faster.
    """

    def __init__(self, path: str | Path, synchronous: str = "FULL") -> None:
        if synchronous not in SYNCHRONOUS:
            raise ValueError(f"ledger synchronous must be one of {', '.join(SYNCHRONOUS)}; got {synchronous!r}")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # autocommit mode: every transaction below is explicit, so none is left open by accident
        self._db = sqlite3.connect(self.path, timeout=BUSY_S, isolation_level=None, check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        self._until_unlocked(lambda: self._db.execute("PRAGMA journal_mode=WAL"))
        self._db.execute(f"PRAGMA synchronous={synchronous}")
        self._synchronous, self._durable = synchronous, synchronous == "FULL"
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
    def recover(self, run_id: str) -> tuple[int, int]:
        """Settle this run's pending rows left by dead processes on this host: (lost, released) as in `interrupt`."""
        rows = self._db.execute(
            "SELECT id, host, pid FROM evaluations WHERE run_id = ? AND status = 'pending'", (run_id,)
        ).fetchall()
        dead = [r["id"] for r in rows if r["host"] == self._host and not _alive(r["pid"])]
        return self.interrupt(dead, "the evaluating process died before the reward was recorded")

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
        """Insert uncharged pending rows for requests, or raise BudgetExceeded (inserting nothing).

        The run's charged rows and its rows reserved but not yet settled count against the budget, so what is
        reserved can always be paid, whoever else writes to the file.
        """
        if not requests:
            return []
        now = time.time()
        with self._transaction():  # a write lock before the count: no other writer can overspend
            committed = self._committed(run_id)
            if committed + len(requests) > budget:
                raise BudgetExceeded(
                    f"request of {len(requests)} evaluations exceeds the {budget - committed} NREs left of {budget}"
                )
            ids = []
            for r in requests:
                cur = self._db.execute(
                    "INSERT INTO evaluations (run_id, oracle, round, method, seed, sample, tokens, hash,"
                    " status, charged, host, pid, started)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'pending', 0, ?, ?, ?)",
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
        return ids

    def send(self, row_ids: Sequence[int]) -> None:
        """Charge pending rows whose call is about to be sent (again: a no-op for rows already charged).

        Committed without an fsync of its own (the next settlement's fsyncs it): a charge mark lost with the
        machine only makes its row look never sent, released and charged once when sent again.
        """
        now = time.time()
        self._db.execute("PRAGMA synchronous=NORMAL")
        try:
            self._write(
                "UPDATE evaluations SET charged = 1, started = ? WHERE id = ? AND status = 'pending'",
                [(now, i) for i in row_ids],
            )
        finally:
            self._db.execute(f"PRAGMA synchronous={self._synchronous}")

    def reopen(self, row_ids: Sequence[int]) -> None:
        """Lost rows whose sample a resumed run sends again: pending and still charged (once), owned by this
        process (so that they are lost again, not released, if it dies too)."""
        self._write(
            "UPDATE evaluations SET status = 'pending', error = NULL, ended = NULL, host = ?, pid = ?"
            " WHERE id = ? AND status = 'lost'",
            [(self._host, self._pid, i) for i in row_ids],
        )

    def settle(self, settlements: Iterable[Settlement]) -> None:
        """Record outcomes, commit and copy them into the main file: ok rows stay charged, error rows are released
        (final or not)."""
        now = time.time()
        rows = [
            (
                "ok" if s.error is None else ("error" if s.final else "pending"),
                s.reward if s.error is None else None,
                s.error,
                s.attempts,
                int(s.error is None),
                now if s.error is None or s.final else None,
                s.row_id,
            )
            for s in settlements
        ]
        self._write(
            "UPDATE evaluations SET status = ?, reward = ?, error = ?, attempts = ?, charged = ?, ended = ?"
            " WHERE id = ?",
            rows,
        )
        self._copy_to_main()

    def interrupt(self, row_ids: Sequence[int], why: str) -> tuple[int, int]:
        """Pending rows whose evaluation was cut short: those sent become `lost` (charged: the oracle may have
        done the work; no reward), those never sent are deleted. Returns (lost, released)."""
        if not row_ids:
            return 0, 0
        now = time.time()
        with self._transaction():
            lost = self._db.executemany(
                "UPDATE evaluations SET status = 'lost', error = ?, ended = ?"
                " WHERE id = ? AND status = 'pending' AND charged = 1",
                [(why, now, i) for i in row_ids],
            ).rowcount
            released = self._db.executemany(
                "DELETE FROM evaluations WHERE id = ? AND status = 'pending' AND charged = 0", [(i,) for i in row_ids]
            ).rowcount
        self._copy_to_main()
        return lost, released

    def checkpoint(self, wait: float = CHECKPOINT_WAIT_S) -> bool:
        """Copy every committed row into the main file (a TRUNCATE WAL checkpoint, which also empties the -wal);
        False if a reader of older rows kept it from copying all of them within `wait` seconds."""
        self._db.execute(f"PRAGMA busy_timeout = {int(wait * 1000)}")
        try:
            _busy, log, copied = self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        finally:
            self._db.execute(f"PRAGMA busy_timeout = {int(BUSY_S * 1000)}")
        return log == copied  # busy with every frame copied: only the -wal could not be emptied

    def _copy_to_main(self) -> None:
        """Copy committed rows into the main file now (a passive checkpoint: it waits for no one), so that the main
        file alone holds every settled row: after a kill the -wal is otherwise their only copy (issue 18).

        Done after the commits that settle what was paid (ok, error, lost), not after reserving or sending,
        whose loss only releases rows that are then sent and charged once; and only at synchronous=FULL, since
        the copy fsyncs, which NORMAL is chosen to avoid (there the main file is complete at round boundaries).
        """
        if self._durable:
            self._db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()

    def _write(self, statement: str, rows: list[tuple]) -> None:
        if not rows:
            return
        with self._transaction():
            self._db.executemany(statement, rows)

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """One write transaction (BEGIN IMMEDIATE: the write lock first), committed, or rolled back on any error."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:  # a Ctrl-C can arrive just after COMMIT returned
                self._db.execute("ROLLBACK")
            raise

    # -- reading ------------------------------------------------------------------------------------
    def _charged(self, run_id: str) -> int:
        row = self._db.execute(
            "SELECT COALESCE(SUM(charged), 0) FROM evaluations WHERE run_id = ?", (run_id,)
        ).fetchone()
        return int(row[0])

    def _committed(self, run_id: str) -> int:
        row = self._db.execute(
            "SELECT COALESCE(SUM(charged), 0) + COALESCE(SUM(status = 'pending' AND charged = 0), 0)"
            " FROM evaluations WHERE run_id = ?",
            (run_id,),
        ).fetchone()
        return int(row[0])

    def charged(self, run_id: str) -> int:
        """NREs spent by a run: its ok and lost rows and those sent and in flight (errors are free)."""
        return self._charged(run_id)

    def tally(self, run_id: str, before_round: int | None = None) -> Tally:
        """A run's charged NREs and rows of the rounds before `before_round` (None: all), and its last round."""
        where, params = "run_id = ?", (run_id,)
        if before_round is not None:
            where, params = where + " AND round < ?", (run_id, before_round)
        charged, rows = self._db.execute(
            f"SELECT COALESCE(SUM(charged), 0), COUNT(*) FROM evaluations WHERE {where}", params
        ).fetchone()
        last = self._db.execute("SELECT MAX(round) FROM evaluations WHERE run_id = ?", (run_id,)).fetchone()[0]
        return Tally(int(charged), int(rows), None if last is None else int(last))

    def status_counts(self, run_id: str) -> dict[str, int]:
        """A run's rows per status; `sent` counts the pending rows already charged (in flight, or their process
        died), `pending` the others (reserved, not sent)."""
        counts = {"ok": 0, "error": 0, "lost": 0, "sent": 0, "pending": 0}
        for status, charged, n in self._db.execute(
            "SELECT status, charged, COUNT(*) FROM evaluations WHERE run_id = ? GROUP BY 1, 2", (run_id,)
        ):
            counts["sent" if status == "pending" and charged else status] += n
        return counts

    def paid_twice(self, run_id: str) -> tuple[int, int]:
        """(samples of a run charged more than once for the same oracle, the NREs charged beyond one each)."""
        samples, extra = self._db.execute(
            "SELECT COUNT(*), COALESCE(SUM(n - 1), 0) FROM (SELECT COUNT(*) AS n FROM evaluations"
            " WHERE run_id = ? AND charged = 1 GROUP BY oracle, hash HAVING n > 1)",
            (run_id,),
        ).fetchone()
        return int(samples), int(extra)

    def other_runs(self, run_id: str) -> int:
        """Rows of other runs sharing this file."""
        return int(self._db.execute("SELECT COUNT(*) FROM evaluations WHERE run_id != ?", (run_id,)).fetchone()[0])

    def integrity(self) -> list[str]:
        """SQLite's integrity_check: ['ok'], or the problems it found."""
        return [r[0] for r in self._db.execute("PRAGMA integrity_check").fetchall()]

    def columns(self) -> list[str]:
        """The column names of a row, in table order."""
        return [r[1] for r in self._db.execute("PRAGMA table_info(evaluations)")]

    def round_lost(self, run_id: str, round_index: int | None) -> list[tuple[str, int]]:
        """(hash, row id) of a run's lost rows of one round (None: every round), oldest first."""
        query = "SELECT hash, id FROM evaluations WHERE run_id = ? AND status = 'lost'"
        params: tuple = (run_id,)
        if round_index is not None:
            query, params = query + " AND round = ?", (run_id, round_index)
        return [(r["hash"], int(r["id"])) for r in self._db.execute(query + " ORDER BY id", params)]

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
