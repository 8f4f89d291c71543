"""A run: one method on one task with one seed, recorded in a run folder.

The folder holds `config.json` (everything needed to reproduce the run), `history.jsonl` (one row per
round, appended and fsynced as the round ends), `successes.jsonl` (every reward-1 sample found, with the
round it was found in), `snapshots/round_NNN.npz` (exact densities, for tasks that can enumerate them)
and, at the end, `summary.json`. Plots are made from the folder afterwards (`banel.report`).

Reward evaluations go through a `LedgerOracle` writing `ledger.sqlite` (or `oracle.ledger`), and the method
calls `run.checkpoint(state)` after each round, which writes `checkpoint.pt` atomically, so a killed run
continues with `Run.resume()` (`banel resume RUN_DIR`) from its last finished round, re-using the ledger
rows it paid for in the interrupted one.
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from banel.cache import atomic_torch_save, atomic_write_text, config_hash, safe_torch_load
from banel.config import RunConfig, to_dict
from banel.eval.drift import Drift, drift, heldout_samples
from banel.eval.success import SuccessRate, success_rate
from banel.models.protocol import GenerativeModel
from banel.oracle.budget import BudgetedOracle
from banel.oracle.ledger import Ledger
from banel.oracle.ledger_oracle import LedgerOracle
from banel.sequences import Sequences, derive_seed
from banel.tasks.protocol import Task

log = logging.getLogger(__name__)

LEDGER_FILE = "ledger.sqlite"
CHECKPOINT_FILE = "checkpoint.pt"
CHECKPOINT_VERSION = 1

SUMMARY_FIELDS = (
    "task",
    "method",
    "seed",
    "nre_budget",
    "nre_used",
    "base_success_rate",
    "final_success_rate",
    "best_success_rate",
    "improvement",
    "successes_found",
    "wall_seconds",
    "prior_nll",
    "drift_nll",
    "kl_to_prior",
)


class Run:
    """The shared bookkeeping of every method: oracle, evaluation, history, best-so-far, summary."""

    def __init__(
        self,
        config: RunConfig,
        task: Task,
        out: str | Path,
        on_round: Callable[[dict[str, Any]], None] | None = None,
        oracle: BudgetedOracle | None = None,
        run_id: str | None = None,
    ) -> None:
        self.config, self.task, self.out = config, task, Path(out)
        self.on_round = on_round
        self.prior = task.prior(config.device)
        self.run_id = run_id or uuid.uuid4().hex
        self.ledger: Ledger | None = None
        if oracle is None:
            self.ledger = Ledger(config.oracle.ledger or self.out / LEDGER_FILE)
            oracle = LedgerOracle(
                task.reward,
                config.nre_budget,
                self.ledger,
                self.run_id,
                oracle_id=f"{task.name}:{config_hash(task.describe())}",
                config=config.oracle,
                method=config.method,
                seed=config.seed,
                decode=task.decode,
            )
        self.oracle = oracle
        self._method_state: dict[str, Any] | None = None
        self.round_index = 0
        self.success_keys: set[bytes] = set()
        self.best: SuccessRate | None = None
        self.base: SuccessRate | None = None
        self.last: SuccessRate | None = None
        self.base_drift: Drift | None = None
        self.last_drift: Drift | None = None
        self._heldout = Sequences.empty()
        self.trained_on_successes: bool | None = None
        """Set by a method whose flag is not banel.train_on_successes (the baselines)."""
        self.started = time.time()

    # -- lifecycle ----------------------------------------------------------------------------------
    def start(self) -> None:
        """Create the run folder, write config.json and measure the prior's success rate."""
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "snapshots").mkdir(exist_ok=True)
        config = {"run": to_dict(self.config), "task": self.task.describe(), "run_id": self.run_id}
        atomic_write_text(json.dumps(config, indent=2, default=str), self.out / "config.json")
        self.base = success_rate(self.task, self.prior, self.config.eval, derive_seed(self.config.seed, "eval", "base"))
        self.best = self.last = self.base
        log.info("%s: base success rate %.3e", self.task.name, self.base.rate)
        self._heldout = heldout_samples(
            self.prior, self.config.eval.drift_samples, derive_seed(self.config.seed, "drift", "heldout")
        )
        self.base_drift = self.last_drift = self._drift(self.prior, -1)
        self._save_snapshot(-1, {"prior": self.prior})
        self._append(
            "history.jsonl",
            {
                "round": -1,
                "nre_used": 0,
                "nre_left": self.oracle.budget,
                "queries": 0,
                "success_rate": self.base.as_dict(),
                "best_success_rate": self.base.rate,
                **(self.base_drift.as_dict() if self.base_drift else {}),
                "successes_found": 0,
                "wall_seconds": 0.0,
            },
        )

    def end_round(
        self,
        model: GenerativeModel,
        kept: Sequences,
        rewards: torch.Tensor,
        stats: dict[str, Any],
        snapshot_models: dict[str, GenerativeModel] | None = None,
    ) -> dict[str, Any]:
        """Record a finished round: successes, the model's success rate (when due), history row, snapshot."""
        i = self.round_index
        if rewards.numel():
            wins = kept[rewards == 1]
            new = []
            for key, text in zip(wins.keys(), self.task.decode(wins), strict=True):
                if key not in self.success_keys:
                    self.success_keys.add(key)
                    new.append({"round": i, "sample": text, "tokens": key.decode()})
            for row in new:
                self._append("successes.jsonl", row)
        rounds_total = self.config.rounds
        due = i % self.config.eval.every == 0 or self.oracle.remaining < self.config.banel.m or i == rounds_total - 1
        rate = None
        if due:
            rate = success_rate(self.task, model, self.config.eval, derive_seed(self.config.seed, "eval", i))
            self.last = rate
            if self.best is None or rate.rate > self.best.rate:
                self.best = rate
            self.last_drift = self._drift(model, i)
        row = {
            "round": i,
            "nre_used": self.oracle.used,
            "nre_left": self.oracle.budget - self.oracle.used,
            "queries": self.oracle.queries,
            **stats,
            "successes": int((rewards == 1).sum()),
            "evaluation_errors": int(rewards.isnan().sum()),
            "successes_found": len(self.success_keys),
            "success_rate": rate.as_dict() if rate else None,
            "best_success_rate": self.best.rate if self.best else None,
            **(self.last_drift.as_dict() if due and self.last_drift else {}),
            "wall_seconds": round(time.time() - self.started, 3),
        }
        self._append("history.jsonl", row)
        if snapshot_models:
            self._save_snapshot(i, snapshot_models)
        self.round_index += 1
        if hasattr(self.oracle, "round"):
            self.oracle.round = self.round_index
        if self.on_round:
            self.on_round(row)
        return row

    def finish(self) -> dict[str, Any]:
        """Write summary.json and return it."""
        assert self.base is not None and self.best is not None and self.last is not None
        base = self.base.rate
        summary = {
            "task": self.task.name,
            "method": self.config.method,
            "seed": self.config.seed,
            "nre_budget": self.oracle.budget,
            "nre_used": self.oracle.used,
            "queries": self.oracle.queries,
            "evaluation_errors": getattr(self.oracle, "errors", 0),
            "rounds": self.round_index,
            "base_success_rate": base,
            "final_success_rate": self.last.rate,
            "best_success_rate": self.best.rate,
            "improvement": self.best.rate / base if base > 0 else None,
            "success_rate_exact": self.best.exact,
            "best_success_interval": [self.best.low, self.best.high],
            "successes_found": len(self.success_keys),
            "trained_on_successes": bool(
                self.config.banel.train_on_successes if self.trained_on_successes is None else self.trained_on_successes
            ),
            "prior_nll": self.base_drift.drift_nll if self.base_drift else None,
            "drift_nll": self.last_drift.drift_nll if self.last_drift else None,
            "kl_to_prior": self.last_drift.kl_to_prior if self.last_drift else None,
            "wall_seconds": round(time.time() - self.started, 3),
        }
        atomic_write_text(json.dumps(summary, indent=2), self.out / "summary.json")
        if isinstance(self.oracle, LedgerOracle):
            self.oracle.close()
        if self.ledger is not None:
            self.ledger.close()
        return summary

    # -- checkpoints and resume ------------------------------------------------------------------------
    def checkpoint(self, state: dict[str, Any]) -> None:
        """Atomically save the method's state (tensors and plain values) with the run's bookkeeping.

        Call it right after `end_round`: a run killed later resumes after this round.
        """
        run_state = {
            "round_index": self.round_index,
            "success_keys": sorted(k.decode() for k in self.success_keys),
            "base": self.base.as_dict() if self.base else None,
            "best": self.best.as_dict() if self.best else None,
            "last": self.last.as_dict() if self.last else None,
            "base_drift": self.base_drift.as_dict() if self.base_drift else None,
            "last_drift": self.last_drift.as_dict() if self.last_drift else None,
            "oracle": self.oracle.state_dict(),
            "wall_seconds": time.time() - self.started,
        }
        atomic_torch_save(
            {"version": CHECKPOINT_VERSION, "run": run_state, "method": state}, self.out / CHECKPOINT_FILE
        )

    def restore(self) -> dict[str, Any] | None:
        """The method state saved by the last `checkpoint` when this run was resumed, else None."""
        state, self._method_state = self._method_state, None
        return state

    def resume(self) -> None:
        """Continue a killed run from its last checkpoint (instead of `start`): bookkeeping, files, oracle."""
        path = self.out / CHECKPOINT_FILE
        if not path.is_file():
            log.warning("%s has no checkpoint (killed in its first round): starting it again", self.out)
            for name in ("history.jsonl", "successes.jsonl"):
                (self.out / name).unlink(missing_ok=True)
            self.start()
            if hasattr(self.oracle, "replay_round"):
                # a method that never checkpoints (or died in round 0) starts again: replay every row it paid
                self.oracle.replay_round(None)
            return
        ckpt = safe_torch_load(path)
        if ckpt.get("version") != CHECKPOINT_VERSION:
            raise ValueError(f"{path} is checkpoint version {ckpt.get('version')}, expected {CHECKPOINT_VERSION}")
        state = ckpt["run"]
        self.round_index = int(state["round_index"])
        self.success_keys = {k.encode() for k in state["success_keys"]}
        self.base, self.best, self.last = (
            SuccessRate(**state[k]) if state[k] else None for k in ("base", "best", "last")
        )
        self.base_drift, self.last_drift = (
            Drift(**state[k]) if state.get(k) else None for k in ("base_drift", "last_drift")
        )
        self._heldout = heldout_samples(
            self.prior, self.config.eval.drift_samples, derive_seed(self.config.seed, "drift", "heldout")
        )
        self.oracle.load_state_dict(state["oracle"])
        if hasattr(self.oracle, "round"):
            self.oracle.round = self.round_index
        if hasattr(self.oracle, "replay_round"):
            replayed = self.oracle.replay_round(self.round_index)
            log.info("resuming %s at round %d; %d ledger rows to replay", self.out, self.round_index, replayed)
        self.started = time.time() - float(state["wall_seconds"])
        # drop what a killed round wrote after the checkpoint: it is redone, identically
        self._keep_rows("history.jsonl", self.round_index)
        self._keep_rows("successes.jsonl", self.round_index)
        self._method_state = ckpt["method"]

    def _keep_rows(self, name: str, before_round: int) -> None:
        path = self.out / name
        if not path.is_file():
            return
        kept = []
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a torn last line
            if row["round"] < before_round:
                kept.append(line + "\n")
        atomic_write_text("".join(kept), path)

    def _drift(self, model: GenerativeModel, i: int) -> Drift | None:
        """Detachment of `model` from the prior (None when eval.drift_samples is 0)."""
        n = self.config.eval.drift_samples
        if not n:
            return None
        return drift(model, self.prior, self._heldout, n, derive_seed(self.config.seed, "drift", i))

    # -- files --------------------------------------------------------------------------------------
    def _append(self, name: str, row: dict[str, Any]) -> None:
        with open(self.out / name, "a") as f:
            f.write(json.dumps(row, default=_jsonable) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def _save_snapshot(self, i: int, models: dict[str, GenerativeModel]) -> None:
        arrays = self.task.snapshot(models)
        if arrays:
            np.savez_compressed(self.out / "snapshots" / f"round_{i + 1:03d}.npz", **arrays)


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic | torch.Tensor):
        return value.item() if value.numel() == 1 else value.tolist()
    if hasattr(value, "__dataclass_fields__"):
        return asdict(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def read_history(out: str | Path) -> list[dict[str, Any]]:
    """The rows of a run folder's history.jsonl (a torn last line from a crash is skipped)."""
    rows = []
    for line in (Path(out) / "history.jsonl").read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            log.warning("skipping a torn line in %s/history.jsonl", out)
    return rows
