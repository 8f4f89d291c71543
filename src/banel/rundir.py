"""The files of a run folder, and reading them back (the run writes them; reports only read them)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

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
"""The generator of the round with the highest evaluated success rate: {method, round, success_rate, model}."""
GENERATOR_FINAL = "generator-final.pt"
"""The generator after the last round, in the same format."""


def read_history(out: str | Path) -> list[dict[str, Any]]:
    """The rows of a run folder's history.jsonl (a torn last line from a crash is skipped)."""
    rows = []
    for line in (Path(out) / HISTORY).read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            log.warning("skipping a torn line in %s/%s", out, HISTORY)
    return rows


def read_json(out: str | Path, name: str) -> dict[str, Any]:
    """A JSON file of a run folder."""
    return json.loads((Path(out) / name).read_text())
