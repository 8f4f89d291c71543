"""Does a run's ledger hold what its checkpoint says was paid? The resume cross-check (`banel ledger check`
reads run folders with it: banel.audit).

A checkpoint written after round R-1 records the NREs the run had paid (`used`) and its ledger rows (`rows`);
every later row belongs to round R or after. So on resume the rows of rounds before R must add up to exactly
those numbers. Fewer means paid rows are missing (a deleted or damaged `-wal`, a ledger copied without it, an
older copy) and resuming would pay for them again; more, or rows of a round after R, means the ledger holds
what the checkpoint does not know of (an older checkpoint). Either way resuming is refused, with the numbers
and what to do.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

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
