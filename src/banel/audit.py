"""`banel ledger check` and `banel ledger export`: a run folder's ledger against its summary and checkpoint.

It reads the run-folder layout (banel.rundir), which the oracle package knows nothing of.
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
from banel.oracle.integrity import mismatch
from banel.oracle.ledger import Ledger


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
