"""Does a run's ledger hold what its checkpoint says was paid? The resume cross-check, `banel ledger check`
and `banel ledger export`.

A checkpoint written after round R-1 records the NREs the run had paid (`used`) and its ledger rows (`rows`);
every later row belongs to round R or after. So on resume the rows of rounds before R must add up to exactly
those numbers. Fewer means paid rows are missing (a deleted or damaged `-wal`, a ledger copied without it, an
older copy) and resuming would pay for them again; more, or rows of a round after R, means the ledger holds
what the checkpoint does not know of (an older checkpoint). Either way resuming is refused, with the numbers
and what to do.
"""

from __future__ import annotations

import csv
import json
import sqlite3
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from banel import rundir
from banel.oracle.ledger import Ledger


class LedgerMismatch(ValueError):
    """A run's ledger does not hold the rows its checkpoint recorded; resuming would pay for some twice."""


def mismatch(ledger: Ledger, run_id: str, round_index: int, state: dict[str, Any]) -> str | None:
    """How the run's ledger rows of rounds before round_index differ from its checkpoint's oracle `state`
    (None: they agree)."""
    before = ledger.tally(run_id, round_index)
    used, rows = int(state["used"]), state.get("rows")  # checkpoints before issue 18 have no row count
    rounds = "round 0" if round_index == 1 else f"rounds 0-{round_index - 1}"
    recorded = f"{used} NREs paid in {rounds}" + (f" ({rows} rows)" if rows is not None else "")
    held = f"{before.charged}" + (f" ({before.rows} rows)" if rows is not None else "")
    if before.charged < used or (rows is not None and before.rows < int(rows)):
        return (
            f"the checkpoint recorded {recorded}, the ledger holds {held}: rows are missing (a deleted or damaged "
            f"{ledger.path.name}-wal, or a ledger copied without it?) and resuming would pay for them again"
        )
    if before.charged > used or (rows is not None and before.rows > int(rows)):
        return (
            f"the checkpoint recorded {recorded}, the ledger holds {held}: more than the checkpoint knows of (an older "
            "checkpoint?)"
        )
    all_rows = ledger.tally(run_id)
    if all_rows.last_round is not None and all_rows.last_round > round_index:
        return (
            f"the ledger holds rows of round {all_rows.last_round}, after the checkpoint's round {round_index}: "
            "more than the checkpoint knows of (an older checkpoint?)"
        )
    return None


def verify_checkpoint(ledger: Ledger, run_id: str, round_index: int, state: dict[str, Any], checkpoint: Path) -> None:
    """Raise LedgerMismatch, naming the numbers and the remedies, unless the ledger matches the checkpoint."""
    problem = mismatch(ledger, run_id, round_index, state)
    if problem is not None:
        raise LedgerMismatch(
            f"{ledger.path} does not match {checkpoint}: {problem}. Put back the ledger and checkpoint that go "
            f"together (ledger.sqlite with its -wal file, if it has one) and resume again; or delete {checkpoint.name} "
            "and resume to redo the run from round 0, answering from the ledger every evaluation it holds (and "
            "paying again for any it lacks)"
        )


@dataclass
class Report:
    """What `banel ledger check` found: lines to print, and the problems among them."""

    lines: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def problem(self, text: str) -> None:
        """Record a problem (printed as one)."""
        self.problems.append(text)
        self.lines.append(f"PROBLEM: {text}")


def run_ledger(out: str | Path) -> tuple[Path, str, dict[str, Any]]:
    """A run folder's ledger path, run id and saved settings (read from config.json without importing the task)."""
    out = Path(out)
    path = out / rundir.CONFIG
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: not a run folder")
    saved = json.loads(path.read_text())
    if "run_id" not in saved:
        raise ValueError(f"{path} has no run_id: the run was made by a version without a ledger")
    run = saved.get("run", {})
    ledger = Path(run.get("oracle", {}).get("ledger") or out / rundir.LEDGER)
    if not ledger.is_file():
        raise FileNotFoundError(f"{ledger} does not exist: the run's ledger is missing")
    return ledger, str(saved["run_id"]), run


def check_run(out: str | Path) -> Report:
    """Integrity, counts by status, charged NREs against summary.json and checkpoint.pt, samples paid twice."""
    from banel.cache import safe_torch_load

    out = Path(out)
    path, run_id, settings = run_ledger(out)
    report = Report()
    try:
        ledger = Ledger(path, network_filesystem=settings.get("oracle", {}).get("network_filesystem", False))
        verdict = ledger.integrity()
    except sqlite3.DatabaseError as err:
        report.problem(f"{path}: SQLite cannot read it ({err})")
        return report
    with ledger:
        if verdict == ["ok"]:
            report.lines.append(f"{path}: integrity ok")
        else:
            report.problem(f"{path}: integrity_check found {len(verdict)} problems, the first: {verdict[0]}")
        counts, total = ledger.status_counts(run_id), ledger.tally(run_id)
        by_status = ", ".join(f"{n} {s}" for s, n in counts.items())
        report.lines.append(f"run {run_id}: {total.rows} rows ({by_status}); {total.charged} NREs charged")
        if counts["sent"]:
            report.lines.append(
                f"{counts['sent']} rows were sent and have no answer yet: in flight, or their process died"
            )
        if counts["lost"]:
            report.lines.append(
                f"{counts['lost']} lost rows: in flight at a kill, charged without a reward (a resumed round sends "
                "their samples again under the same rows)"
            )
        if others := ledger.other_runs(run_id):
            report.lines.append(f"{others} rows of other runs share this ledger")
        summary = out / rundir.SUMMARY
        if summary.is_file():
            used = json.loads(summary.read_text()).get("nre_used")
            if used == total.charged:
                report.lines.append(f"{rundir.SUMMARY}: nre_used {used}, as charged")
            else:
                report.problem(f"{rundir.SUMMARY} says nre_used {used}, the ledger charges {total.charged}")
        checkpoint = out / rundir.CHECKPOINT
        if checkpoint.is_file():
            state = safe_torch_load(checkpoint)["run"]
            round_index, oracle = int(state["round_index"]), state["oracle"]
            problem = mismatch(ledger, run_id, round_index, oracle)
            if problem is None:
                report.lines.append(
                    f"{rundir.CHECKPOINT}: {oracle['used']} NREs paid before round {round_index}, as in the ledger"
                )
            else:
                report.problem(f"{rundir.CHECKPOINT}: {problem}")
        samples, extra = ledger.paid_twice(run_id)
        shared, their_rows = ledger.paid_by_other_runs(run_id) if others else (0, 0)
        dedupe = settings.get("oracle", {}).get("dedupe", True)
        if not samples and not shared:
            report.lines.append(
                "no sample was paid for twice" + (", by this run or by it and another run" if others else "")
            )
        if samples and dedupe:
            report.problem(f"{samples} samples were paid for more than once ({extra} extra NREs)")
        elif samples:
            report.lines.append(f"{samples} samples paid for more than once ({extra} NREs): oracle.dedupe is off")
        across = (
            f"{shared} samples this run was charged for were charged to other runs of the same oracle too "
            f"({their_rows} rows)"
        )
        if shared and dedupe:  # runs sharing a ledger with dedupe pay for a sample once between them (issue 27)
            report.problem(across)
        elif shared:
            report.lines.append(f"{across}: oracle.dedupe is off")
    return report


def export_rows(out: str | Path, fmt: str, file: IO[str] | None = None) -> int:
    """Write the run's ledger rows, oldest first, as CSV (a header, then one line per row) or JSON lines to
    `file` (default stdout); returns how many."""
    if fmt not in ("csv", "jsonl"):
        raise ValueError(f"--format must be csv or jsonl, got {fmt!r}")
    path, run_id, settings = run_ledger(out)
    file = file or sys.stdout
    with Ledger(path, network_filesystem=settings.get("oracle", {}).get("network_filesystem", False)) as ledger:
        rows, names = ledger.rows(run_id), ledger.columns()
    if fmt == "jsonl":
        for row in rows:
            file.write(json.dumps(row) + "\n")
    else:
        writer = csv.DictWriter(file, names, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return len(rows)
