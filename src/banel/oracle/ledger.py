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

With de-duplication, `claim` replaces `reserve`: in the same IMMEDIATE transaction it looks at every row of the
same oracle and sample, whichever run wrote it, so runs sharing the file (other processes, other run ids) pay
for a sample once. A sample with an `ok` row is answered from it; one held by a live pending row of another
process is waited for; one whose holder is gone (its process dead on this host, or its lease not renewed for
`lease` seconds) is taken over: a charged row (sent, or `lost`) is sent again under the same row, still charged
once to the run that sent it, an uncharged one becomes the claimer's reservation. A process renews the lease
of its pending rows from a thread (`Heartbeat`) while it holds any.

Every settlement is copied into the main file at once (a passive WAL checkpoint) and `checkpoint` copies all
at a round boundary, so `ledger.sqlite` alone holds every settled row: a deleted or damaged `-wal`, or the
main file copied without it, loses at most a settlement a kill interrupted, and rows in flight then look
never sent (released, and charged once when sent again). `tally` is what a run's checkpoint is
compared with on resume (`banel.oracle.integrity`).
"""

from __future__ import annotations

import logging
import os
import re
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from banel.oracle.budget import BudgetExceeded

log = logging.getLogger(__name__)

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
    ended REAL,
    lease REAL
);
CREATE INDEX IF NOT EXISTS evaluations_answer ON evaluations (oracle, hash, status);
CREATE INDEX IF NOT EXISTS evaluations_run ON evaluations (run_id, round);
"""
# after the lease column exists (ledgers made before issue 27 get it by ALTER TABLE)
HOLDER_INDEX = "CREATE INDEX IF NOT EXISTS evaluations_holder ON evaluations (host, pid) WHERE status = 'pending'"

SYNCHRONOUS = ("OFF", "NORMAL", "FULL")
MOUNTS = Path("/proc/mounts")  # where the filesystem type of the ledger's folder is read (Linux)
NETWORK_FILESYSTEMS = frozenset(
    {"nfs", "nfs4", "cifs", "smb3", "smbfs", "ncpfs", "afs", "9p", "ceph", "glusterfs", "lustre", "gpfs"}
    | {"beegfs", "orangefs", "pvfs2", "davfs", "coda", "fuse"}
)
"""Filesystem types (as /proc/mounts names them) on which SQLite's WAL shared memory does not work between
machines; so does every FUSE type (`fuse.sshfs`, `fuse.s3fs`, `fuse.gcsfuse`, ...) but `fuseblk` (a local disk)."""
BUSY_S = 60.0  # how long a writer waits for another connection's transaction before failing
CHECKPOINT_WAIT_S = 2.0  # how long a round-boundary checkpoint waits for readers of older rows to finish
LEASE_S = 60.0
"""How long a pending row holds its sample against other runs without its process renewing the lease (every
LEASE_S / 4 seconds, from a thread). A dead holder on this host loses its hold at once (its pid is checked), so
the lease matters only for holders another host or container wrote, a re-used pid, or a process stalled for a
minute: long enough that a busy machine never takes a live run's sample, short enough that a crash delays the
other runs by a minute at most."""


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
class Claim:
    """What a run may do about one sample (`Ledger.claim`): `pay` under row `row_id` (new, or taken over from a
    holder that is gone), take the `answer` an ok row holds, or `wait` for the live process that holds it
    (`new` only inside `claim`)."""

    kind: str
    row_id: int | None = None
    reward: float | None = None


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

    def __init__(
        self, path: str | Path, synchronous: str = "FULL", lease: float = LEASE_S, network_filesystem: bool = False
    ) -> None:
        if synchronous not in SYNCHRONOUS:
            raise ValueError(f"ledger synchronous must be one of {', '.join(SYNCHRONOUS)}; got {synchronous!r}")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.lease = lease
        self.network = network_type(self.path)
        if self.network and not network_filesystem:
            raise NetworkFilesystem(
                f"the ledger {self.path} is on a network filesystem ({self.network}): SQLite's WAL, which the ledger "
                "relies on, does not work across machines there, so runs sharing it could pay twice or damage it. "
                "Put the ledger on a local disk (--set oracle.ledger=/local/path/ledger.sqlite), or set "
                "oracle.network_filesystem=true to let one process at a time use it there (docs/oracle.md)"
            )
        # autocommit mode: every transaction below is explicit, so none is left open by accident
        self._db = sqlite3.connect(self.path, timeout=BUSY_S, isolation_level=None, check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        if self.network:  # WAL without shared memory, for one connection only: what SQLite allows there
            self._db.execute("PRAGMA locking_mode=EXCLUSIVE")
        self._until_unlocked(lambda: self._db.execute("PRAGMA journal_mode=WAL"))
        self._db.execute(f"PRAGMA synchronous={synchronous}")
        self._synchronous, self._durable = synchronous, synchronous == "FULL"
        self._until_unlocked(lambda: self._db.executescript(SCHEMA))
        if "lease" not in self.columns():
            self._until_unlocked(lambda: self._add_lease_column())
        self._until_unlocked(lambda: self._db.execute(HOLDER_INDEX))
        self._host, self._pid = socket.gethostname(), os.getpid()
        self._heartbeat: Heartbeat | None = None

    def _add_lease_column(self) -> None:
        with self._transaction():  # another process may have added it since we looked
            if "lease" not in self.columns():
                self._db.execute("ALTER TABLE evaluations ADD COLUMN lease REAL")

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
        """Stop renewing leases and close the connection (committed rows are already on disk)."""
        if self._heartbeat is not None:
            self._heartbeat.stop()
            self._heartbeat = None
        self._db.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writing ------------------------------------------------------------------------------------
    def recover(self, run_id: str) -> tuple[int, int]:
        """Settle this run's pending rows left by dead processes on this host: (lost, released) as in `interrupt`."""
        # one transaction: a row that another run takes over between the look and the change stays its
        # (pending, its process alive), instead of being marked lost under it and taken over a second time
        with self._transaction():
            rows = self._db.execute(
                "SELECT id, host, pid FROM evaluations WHERE run_id = ? AND status = 'pending'", (run_id,)
            ).fetchall()
            dead = [r["id"] for r in rows if r["host"] == self._host and not _alive(r["pid"])]
            counts = (
                self._interrupt(dead, "the evaluating process died before the reward was recorded") if dead else (0, 0)
            )
        if dead:
            self._copy_to_main()
        return counts

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
        self._beat()
        with self._transaction():  # a write lock before the count: no other writer can overspend
            self._check_budget(run_id, len(requests), 0, budget)
            return [self._insert(run_id, oracle, round_index, method, seed, r) for r in requests]

    def claim(
        self,
        run_id: str,
        oracle: str,
        round_index: int,
        method: str,
        seed: int,
        requests: Sequence[Request],
        budget: int,
    ) -> list[Claim]:
        """Per request (distinct samples), in one transaction: `answer` from an ok row of the oracle (any run),
        `wait` while a live process holds a pending row of it, else `pay` under a row that is now this
        process's: a row taken over from a holder that is gone (a charged one stays charged to its run, once),
        or a new pending row, uncharged, counted against the budget. Raises BudgetExceeded, changing nothing,
        unless the new rows and the samples waited for (each might still have to be paid) fit."""
        if not requests:
            return []
        self._beat()
        now = time.time()
        with self._transaction():
            claims: list[Claim | None] = []
            for r in requests:
                rows = self._db.execute(
                    "SELECT id, run_id, status, charged, reward, host, pid, lease, started FROM evaluations"
                    " WHERE oracle = ? AND hash = ? AND status IN ('ok', 'pending', 'lost') ORDER BY id",
                    (oracle, r.hash),
                ).fetchall()
                ok = [row for row in rows if row["status"] == "ok"]
                if ok:
                    claims.append(Claim("answer", reward=float(ok[0]["reward"])))
                elif any(row["status"] == "pending" and self._holds(row, now) for row in rows):
                    claims.append(Claim("wait"))
                else:  # every holder is gone: a charged row is sent again (this run's first), else a new row
                    charged = sorted((row["run_id"] != run_id, row["id"]) for row in rows if row["charged"])
                    if charged:
                        self._take_over(charged[0][1], now)
                        claims.append(Claim("pay", row_id=charged[0][1]))
                    else:  # a reservation never sent (or none): this run's, counted against its budget below
                        claims.append(Claim("new", row_id=rows[0]["id"] if rows else None))
            new = [i for i, c in enumerate(claims) if c.kind == "new"]
            waits = sum(c.kind == "wait" for c in claims)
            self._check_budget(run_id, len(new), waits, budget)
            for i in new:
                row_id, fields = claims[i].row_id, (run_id, oracle, round_index, method, seed, requests[i])
                # a reservation left by a process that is gone becomes ours rather than being deleted, so that
                # the holder, if it was only stalled, still records what it sends under the row
                claims[i] = Claim("pay", self._insert(*fields) if row_id is None else self._reassign(row_id, *fields))
        return claims

    def _check_budget(self, run_id: str, new: int, waits: int, budget: int) -> None:
        committed = self._committed(run_id)
        if committed + new + waits > budget:
            raise BudgetExceeded(
                f"request of {new + waits} evaluations exceeds the {budget - committed} NREs left of {budget}"
                + (
                    f" ({waits} of them being evaluated by another run, which may leave them to this one)"
                    if waits
                    else ""
                )
            )

    def _insert(self, run_id: str, oracle: str, round_index: int, method: str, seed: int, r: Request) -> int:
        now = time.time()
        cur = self._db.execute(
            "INSERT INTO evaluations (run_id, oracle, round, method, seed, sample, tokens, hash,"
            " status, charged, host, pid, started, lease)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'pending', 0, ?, ?, ?, ?)",
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
                now + self.lease,
            ),
        )
        return int(cur.lastrowid)

    def _reassign(
        self, row_id: int, run_id: str, oracle: str, round_index: int, method: str, seed: int, r: Request
    ) -> int:
        now = time.time()
        self._db.execute(
            "UPDATE evaluations SET run_id = ?, round = ?, method = ?, seed = ?, sample = ?, host = ?, pid = ?,"
            " started = ?, lease = ? WHERE id = ?",
            (run_id, round_index, method, seed, r.sample, self._host, self._pid, now, now + self.lease, row_id),
        )
        return row_id

    def _take_over(self, row_id: int, now: float) -> None:
        """A charged row (lost, or pending with its holder gone) becomes this process's pending row."""
        self._db.execute(
            "UPDATE evaluations SET status = 'pending', error = NULL, ended = NULL, host = ?, pid = ?, lease = ?"
            " WHERE id = ?",
            (self._host, self._pid, now + self.lease, row_id),
        )

    def _holds(self, row: sqlite3.Row, now: float) -> bool:
        """Whether a pending row's process still holds it: alive if on this host, its lease renewed if not.

        Both tests apply on this host too: a re-used pid does not renew the lease."""
        if row["host"] == self._host and not _alive(row["pid"]):
            return False
        lease = row["lease"] if row["lease"] is not None else row["started"] + self.lease
        return lease > now

    def _beat(self) -> None:
        """Renew this process's leases from now on (a thread, started once per ledger; none when the ledger is
        locked for this connection alone: no one else can read the leases)."""
        if self._heartbeat is None and not self.network:
            self._heartbeat = Heartbeat(self.path, self._host, self._pid, self.lease)

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
        self._beat()
        lease = time.time() + self.lease
        self._write(
            "UPDATE evaluations SET status = 'pending', error = NULL, ended = NULL, host = ?, pid = ?, lease = ?"
            " WHERE id = ? AND status = 'lost'",
            [(self._host, self._pid, lease, i) for i in row_ids],
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
        with self._transaction():
            counts = self._interrupt(row_ids, why)
        self._copy_to_main()
        return counts

    def _interrupt(self, row_ids: Sequence[int], why: str) -> tuple[int, int]:
        now = time.time()
        lost = self._db.executemany(
            "UPDATE evaluations SET status = 'lost', error = ?, ended = ?"
            " WHERE id = ? AND status = 'pending' AND charged = 1",
            [(why, now, i) for i in row_ids],
        ).rowcount
        released = self._db.executemany(
            "DELETE FROM evaluations WHERE id = ? AND status = 'pending' AND charged = 0", [(i,) for i in row_ids]
        ).rowcount
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

    def paid_by_other_runs(self, run_id: str) -> tuple[int, int]:
        """(samples a run was charged for that other runs of the same oracle were charged for too, those rows)."""
        samples, rows = self._db.execute(
            "SELECT COUNT(DISTINCT a.oracle || ' ' || a.hash), COUNT(DISTINCT b.id) FROM evaluations a"
            " JOIN evaluations b ON b.oracle = a.oracle AND b.hash = a.hash AND b.run_id != a.run_id"
            " WHERE a.run_id = ? AND a.charged = 1 AND b.charged = 1",
            (run_id,),
        ).fetchone()
        return int(samples), int(rows)

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


class NetworkFilesystem(ValueError):
    """The ledger's folder is on a network filesystem and oracle.network_filesystem is not set."""


def filesystem_type(path: Path) -> str | None:
    """The type of the filesystem holding path: that of the longest mount point above it in /proc/mounts;
    None where that file cannot be read (not Linux: then nothing is checked)."""
    try:
        mounts = MOUNTS.read_text()
    except OSError:
        return None
    target, best, kind = str(path.resolve()), -1, None
    for line in mounts.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        mount = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[1])  # \040 is a space
        if (target == mount or target.startswith(mount.rstrip("/") + "/")) and len(mount) > best:
            best, kind = len(mount), fields[2]
    return kind


def network_type(path: Path) -> str | None:
    """The network filesystem type holding path, or None (a local one, or unknown)."""
    kind = filesystem_type(path)
    if kind is None or kind == "fuseblk":
        return None
    return kind if kind in NETWORK_FILESYSTEMS or kind.startswith("fuse.") else None


class Heartbeat:
    """A daemon thread that renews the lease of this process's pending rows every lease / 4 seconds, on a
    connection of its own, so that a reward call of a day keeps its samples from other runs."""

    def __init__(self, path: Path, host: str, pid: int, lease: float) -> None:
        self.path, self.host, self.pid, self.lease = path, host, pid, lease
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="banel-ledger-heartbeat", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        db = sqlite3.connect(self.path, timeout=BUSY_S, isolation_level=None, check_same_thread=False)
        try:
            db.execute("PRAGMA synchronous=NORMAL")  # a lost renewal only shortens a lease
            while not self._stopped.wait(self.lease / 4):
                try:
                    db.execute(
                        "UPDATE evaluations SET lease = ? WHERE status = 'pending' AND host = ? AND pid = ?",
                        (time.time() + self.lease, self.host, self.pid),
                    )
                except sqlite3.Error as err:  # the next beat tries again; a lapsed lease costs a re-evaluation
                    log.warning("could not renew the ledger leases of %s: %s", self.path, err)
        finally:
            db.close()

    def stop(self) -> None:
        """Stop renewing (the thread exits at once)."""
        self._stopped.set()
        self._thread.join()


def _alive(pid: int) -> bool:
    """Whether a process of this id exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
