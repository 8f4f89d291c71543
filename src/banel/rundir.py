"""The files of a run folder, and reading them back (the run writes them; reports only read them)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from banel.cache import check_writable_folder

log = logging.getLogger(__name__)

CONFIG = "config.json"
"""The run's settings, its task's description and its run id."""
HISTORY = "history.jsonl"
"""One row per round (and round -1 for the prior), appended and fsynced as the round ends."""
SUCCESSES = "successes.jsonl"
"""Every distinct reward-1 sample found, with its round."""
SUMMARY = "summary.json"
"""Written when the run finishes."""
CHECKPOINT = "checkpoint.pt"
"""The run's bookkeeping and the method's state after the last finished round."""
LEDGER = "ledger.sqlite"
"""Every paid evaluation (unless oracle.ledger names another file)."""
SNAPSHOTS = "snapshots"
"""The task's arrays per round (densities, sample images)."""
GENERATOR_BEST = "generator-best.pt"
"""The generator of the round with the highest evaluated success rate: {method, round, success_rate, model}.
Only for tasks with free measurement (ground truth): without it no run knows its best round."""
GENERATOR_FINAL = "generator-final.pt"
"""The generator after the last round, in the same format."""
GENERATOR_KEPT = "generator-kept.pt"
"""The generator the run's keep.rule picked without ground truth, in the same format."""
GENERATOR_PREVIOUS = "generator-previous.pt"
"""The previous round's generator, while a rule may still pick it (keep.rule=paid); removed at the end."""


def read_history(out: str | Path) -> list[dict[str, Any]]:
    """The rows of a run folder's history.jsonl (a torn last line from a crash is skipped)."""
    rows = []
    for line in (Path(out) / HISTORY).read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            log.warning("skipping a torn line in %s/%s", out, HISTORY)
    return rows


def check_new_run(out: str | Path) -> None:
    """Raise a ValueError saying what to do unless `out` can take a new run: `banel run` never overwrites one.

    A folder with config.json holds a run, even one killed before its first history row: a new run there would
    replace its run id, and with it the claim on what its ledger paid for.
    """
    out = Path(out)
    check_writable_folder(out, "--out")
    if (out / SUMMARY).is_file():
        raise ValueError(f"{out} already holds a run, finished ({SUMMARY}); choose another --out, or remove the folder")
    if (out / HISTORY).exists() or (out / CHECKPOINT).exists():
        raise ValueError(
            f"{out} already holds a run; `banel resume {out}` continues it, or choose another --out, or remove "
            "the folder"
        )
    if (out / CONFIG).exists():
        raise ValueError(
            f"{out} holds a run killed before its first round ({CONFIG}, no {HISTORY}); `banel resume {out}` "
            "starts it again, paying for nothing twice, or remove the folder; `banel run` does not overwrite it"
        )
