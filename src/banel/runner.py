"""A run: one method on one task with one seed, recorded in a run folder. The only round loop of banel.

`Run.execute` steps the method while the oracle can pay for a round of `m` samples: `method.round(oracle, i)`,
then successes and the paid evidence, the generator's drift, metrics and (for a task with free measurement)
success rate when due, the generator the keep rule picks, history, snapshot and an atomic checkpoint of the
run and the method. The task's costly `reward` is reached through the oracle only. So every method gets the
budget, evaluation, kept/final/best generators, history and resume from the same code, and a method never
sees the budget loop.

The folder (names in `banel.rundir`) holds `config.json` (everything needed to reproduce the run),
`history.jsonl` (one row per round, fsynced as the round ends), `successes.jsonl`, `snapshots/`,
`checkpoint.pt`, `ledger.sqlite` (every paid evaluation), `generator-kept.pt` (keep.rule's pick),
`generator-final.pt`, `generator-best.pt` (ground-truth tasks only), and at the end `summary.json`. A killed
run continues with `resume_run` (`banel resume RUN_DIR`) from its last finished round, re-using the ledger
rows it paid for in the interrupted one.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from banel import rundir
from banel.cache import (
    UnreadableFile,
    atomic_torch_save,
    atomic_write_text,
    config_hash,
    folder_lock,
    safe_torch_load,
)
from banel.config import MOVED, RUN_SETTINGS, RunConfig, from_dict, to_dict
from banel.eval.drift import Drift, drift, heldout_samples
from banel.eval.evidence import kept_round, paid_evidence
from banel.eval.success import SuccessRate, evaluation_seed, reestimate, success_rate
from banel.methods import BUILTIN as BUILTIN_METHODS
from banel.methods import Method, MethodSpec, resolve_method
from banel.methods.protocol import Context, Round
from banel.models.protocol import GenerativeModel
from banel.oracle.budget import BudgetedOracle, CheckedOracle
from banel.oracle.integrity import verify_checkpoint
from banel.oracle.ledger import Ledger
from banel.oracle.ledger_oracle import LedgerOracle
from banel.sequences import Sequences, derive_seed
from banel.tasks import TaskFactory, make_task, resolve_task
from banel.tasks import protocol as capability
from banel.tasks.protocol import Task

log = logging.getLogger(__name__)

CHECKPOINT_VERSION = 4  # 2: the run's loop, method state from Method.state_dict; 3: selection-free best; 4: kept
FIRST_CANDIDATE_ROUND = 1
"""Rounds before this are never a run's best: round -1 is the prior, and after round 0 BaNEL's generator is
still the prior (it has no negative model yet), so choosing them would report the prior as the method."""

SUMMARY_FIELDS = (
    "task",
    "method",
    "seed",
    "nre_budget",
    "nre_used",
    "base_success_rate",
    "final_success_rate",
    "best_success_rate",
    "best_success_interval",
    "best_round",
    "selected_best_rate",
    "improvement",
    "successes_found",
    "wall_seconds",
    "prior_nll",
    "drift_nll",
    "kl_to_prior",
)


# -- settings ---------------------------------------------------------------------------------------------


def parse_config(data: dict[str, Any], factory: TaskFactory | None = None) -> RunConfig:
    """A validated RunConfig from plain settings: run-level keys, the method's own table, task options.

    Tables of other built-in methods (a task's defaults for BaNEL when running RND, say) are validated too,
    then left out: a method reads only its own table. Task options are checked by `factory`, or by the
    factory `task` names. Everything is checked here, before any folder exists.
    """
    spec = resolve_method(str(data.get("method", RunConfig.method)))
    run_keys = {k: v for k, v in data.items() if k in RUN_SETTINGS}
    for key in sorted(set(data) - set(run_keys)):
        if key == spec.name:
            continue
        if key in BUILTIN_METHODS:
            resolve_method(key).parse_options(data[key])
            continue
        hint = f" ({key} is now {MOVED[key]})" if key in MOVED else ""
        raise ValueError(
            f"unknown setting {key}; allowed: {', '.join(sorted(RUN_SETTINGS))}, or a method's table "
            f"({', '.join([*BUILTIN_METHODS, *([spec.name] if spec.name not in BUILTIN_METHODS else [])])}){hint}"
        )
    config = from_dict(RunConfig, run_keys)
    config = dataclasses.replace(config, options=spec.parse_options(data.get(spec.name)))
    (factory or resolve_task(config.task)[1]).parse_options(config.task_options)
    return config


def config_dict(config: RunConfig) -> dict[str, Any]:
    """The plain settings of a run, as saved in config.json: the method's options under its table's name."""
    data = to_dict(dataclasses.replace(config, options=None))
    del data["options"]
    if config.options is not None:
        data[resolve_method(config.method).name] = to_dict(config.options)
    return data


def _with_options(config: RunConfig, spec: MethodSpec) -> RunConfig:
    """config with its method's default options filled in where none were given."""
    if config.options is not None:
        return config
    return dataclasses.replace(config, options=spec.parse_options({}))


def context(config: RunConfig, task: Task) -> Context:
    """What every method may know of the run: round size, seed, the free check, successes, the support."""
    return Context(
        m=config.m,
        seed=config.seed,
        feasible=capability.feasibility(task, config.feasible_only),
        check=capability.feasibility(task, True) if isinstance(task, capability.Feasibility) else None,
        train_on_successes=config.train_on_successes,
        support=capability.support(task),
    )


# -- the run ----------------------------------------------------------------------------------------------


class Run:
    """One method on one task: builds the method and the oracle, steps rounds, evaluates, records, resumes."""

    def __init__(
        self,
        config: RunConfig,
        task: Task,
        out: str | Path,
        on_round: Callable[[dict[str, Any]], None] | None = None,
        oracle: BudgetedOracle | None = None,
        run_id: str | None = None,
    ) -> None:
        self.spec = resolve_method(config.method)
        self.config = config = _with_options(config, self.spec)
        self.task, self.out, self.on_round = task, Path(out), on_round
        self.prior = task.prior(config.device)
        self.run_id = run_id or uuid.uuid4().hex
        self.ledger: Ledger | None = None
        if oracle is None:
            self.ledger = Ledger(
                config.oracle.ledger or self.out / rundir.LEDGER, network_filesystem=config.oracle.network_filesystem
            )
            oracle = LedgerOracle(
                task.reward,
                config.nre_budget,
                self.ledger,
                self.run_id,
                oracle_id=f"{task.name}:{config_hash(capability.describe(task))}",
                config=config.oracle,
                method=self.spec.name,
                seed=config.seed,
                decode=lambda x: capability.decode(task, x),
            )
        self.oracle = oracle
        self.context = context(config, task)
        self.method: Method = self.spec.build(self.prior, config.options, self.context)
        # the free check answers 0 unpaid for every method alike; BaNEL also ranks such samples out itself
        self.paying = oracle if self.context.feasible is None else CheckedOracle(oracle, self.context.feasible)
        self.round_index = 0
        self.success_keys: set[bytes] = set()
        self.base: SuccessRate | None = None
        self.last: SuccessRate | None = None
        self.best_round: int | None = None
        """The round whose generator is saved as generator-best.pt: the highest evaluated rate among rounds
        >= FIRST_CANDIDATE_ROUND (the selection; the reported best is its re-estimate, see `finish`)."""
        self.best_round_rate: SuccessRate | None = None
        self.base_drift: Drift | None = None
        self.last_drift: Drift | None = None
        self.base_metrics: dict[str, float] = {}
        self.last_metrics: dict[str, float] = {}
        self.kept_round: int | None = None
        """The round whose generator is generator-kept.pt (-1: the prior), by config.keep.rule."""
        self._rows: list[dict[str, Any]] = []
        """The oracle-free columns of the history rows so far: what the keep rule reads."""
        self._negative: GenerativeModel | None = None
        """Last round's negative model, to score this round's failures (held out from it)."""
        self._heldout = Sequences.empty()
        self.started = time.time()

    # -- lifecycle ----------------------------------------------------------------------------------
    def start(self) -> None:
        """Create the run folder, write config.json and measure the prior."""
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / rundir.SNAPSHOTS).mkdir(exist_ok=True)
        saved = {"run": config_dict(self.config), "task": capability.describe(self.task), "run_id": self.run_id}
        atomic_write_text(json.dumps(saved, indent=2, default=str), self.out / rundir.CONFIG)
        self.base = self.last = self._success_rate(self.prior, "base")
        if self.base is not None:
            log.info("%s: base success rate %.3e", self.task.name, self.base.rate)
        self._heldout = self._heldout_samples()
        self.base_drift = self.last_drift = self._drift(self.prior, -1)
        self.base_metrics = self.last_metrics = self._metrics(self.prior, -1)
        self._save_snapshot(-1, {"prior": self.prior})
        row = {
            "round": -1,
            "nre_used": 0,
            "nre_left": self.oracle.budget,
            "queries": 0,
            "success_rate": self.base.as_dict() if self.base else None,
            "selected_best_rate": None,
            **(self.base_drift.as_dict() if self.base_drift else {}),
            **({"metrics": self.base_metrics} if self.base_metrics else {}),
            "successes": 0,
            "evaluated": 0,
            "successes_found": 0,
            "kept_round": -1,
            "wall_seconds": 0.0,
        }
        self._remember(row)
        self._keep(-1, self.prior)
        self._append(rundir.HISTORY, row)

    def execute(self) -> dict[str, Any]:
        """Step rounds while the oracle can pay for m samples, then write summary.json and return it."""
        while self.oracle.remaining >= self.config.m:
            record = self.method.round(self.paying, self.round_index)
            self.end_round(record)
            self.checkpoint()
        return self.finish()

    def end_round(self, record: Round) -> dict[str, Any]:
        """Record a finished round: successes, the generator's success rate (when due), history row, snapshot."""
        i, rewards, model = self.round_index, record.rewards, self.method.generator
        self._record_successes(i, record.samples, rewards)
        last = self.oracle.remaining < self.config.m or i == self.config.rounds - 1
        due = i % self.config.eval.every == 0 or last
        rate = None
        if due:
            rate = self._success_rate(model, i, curve=not last)
            self.last = rate or self.last
            best_so_far = self.best_round_rate
            if rate and i >= FIRST_CANDIDATE_ROUND and (best_so_far is None or rate.rate > best_so_far.rate):
                self.best_round, self.best_round_rate = i, rate
                self._save_generator(rundir.GENERATOR_BEST, model, i, rate)
            self.last_drift = self._drift(model, i)
            self.last_metrics = self._metrics(model, i)
        row = {
            "round": i,
            "nre_used": self.oracle.used,
            "nre_left": self.oracle.budget - self.oracle.used,
            "queries": self.oracle.queries,
            **record.stats,
            "successes": int((rewards == 1).sum()),
            "evaluated": int((~rewards.isnan()).sum()),
            "evaluation_errors": int(rewards.isnan().sum()),
            "successes_found": len(self.success_keys),
            **paid_evidence(len(self.success_keys), self.oracle.used, self.config.eval.confidence),
            "negative_heldout_gain": self._negative_gain(record),
            "success_rate": rate.as_dict() if rate else None,
            "selected_best_rate": self.best_round_rate.rate if self.best_round_rate else None,
            **(self.last_drift.as_dict() if due and self.last_drift else {}),
            **({"metrics": self.last_metrics} if due and self.last_metrics else {}),
            "wall_seconds": round(time.time() - self.started, 3),
        }
        self._remember(row)
        row["kept_round"] = self._keep(i, model)
        self._append(rundir.HISTORY, row)
        self._save_snapshot(i, {"prior": self.prior, "posterior": model, **record.models})
        self.round_index += 1
        self.oracle.round = self.round_index
        if self.on_round:
            self.on_round(row)
        return row

    def finish(self) -> dict[str, Any]:
        """Save the final generator, re-estimate the best one on fresh samples, write summary.json and return it.

        The best round is chosen on the evaluation samples, so its rate there is biased upward (the maximum
        of noisy estimates); the reported best is its generator measured again on samples of another stream.
        A task without free measurement has no best round: its summary has the paid evidence, the final
        generator and the kept one, and every rate field is None.
        """
        final_round = self.round_index - 1
        self._save_generator(rundir.GENERATOR_FINAL, self.method.generator, final_round, self.last)
        if self.config.keep.rule == "final":
            self._save_generator(rundir.GENERATOR_KEPT, self.method.generator, final_round, None)
        (self.out / rundir.GENERATOR_PREVIOUS).unlink(missing_ok=True)
        if self.base is not None and self.best_round_rate is None:  # no round after round 0 was evaluated
            self.best_round, self.best_round_rate = final_round, self.last
            self._save_generator(rundir.GENERATOR_BEST, self.method.generator, final_round, self.last)
        best = self._reestimate_best() if self.base is not None else None
        base = self.base.rate if self.base else None
        kept = next((r for r in self._rows if r["round"] == self.kept_round), {})
        kept_rate = kept.get("success_rate") if self.kept_round is not None and self.kept_round >= 0 else None
        if self.kept_round == -1 and self.base is not None:
            kept_rate = self.base.as_dict()
        last = self.last if self.base is not None else None
        summary = {
            "task": self.task.name,
            "method": self.spec.name,
            "seed": self.config.seed,
            "nre_budget": self.oracle.budget,
            "nre_used": self.oracle.used,
            "queries": self.oracle.queries,
            "evaluation_errors": self.oracle.errors,
            "rounds": self.round_index,
            "ground_truth": self.base is not None,
            "base_success_rate": base,
            "base_success_interval": [self.base.low, self.base.high] if self.base else None,
            "final_success_rate": last.rate if last else None,
            "final_success_interval": [last.low, last.high] if last else None,
            "best_success_rate": best.rate if best else None,
            "best_success_interval": [best.low, best.high] if best else None,
            "best_success_samples": best.n if best else None,
            "best_success_successes": best.successes if best else None,
            "best_round": self.best_round,
            "selected_best_rate": self.best_round_rate.rate if self.best_round_rate else None,
            "improvement": best.rate / base if best and base else None,
            "success_rate_exact": best.exact if best else None,
            "rate_sources": self._rate_sources(final_round, last, best),
            "kept_rule": self.config.keep.rule,
            "kept_round": self.kept_round,
            "kept_success_rate": kept_rate["rate"] if kept_rate else None,
            "successes_found": len(self.success_keys),
            **paid_evidence(len(self.success_keys), self.oracle.used, self.config.eval.confidence),
            "trained_on_successes": self.config.train_on_successes,
            "prior_nll": self.base_drift.drift_nll if self.base_drift else None,
            "drift_nll": self.last_drift.drift_nll if self.last_drift else None,
            "kl_to_prior": self.last_drift.kl_to_prior if self.last_drift else None,
            "prior_metrics": self.base_metrics,
            "metrics": self.last_metrics,
            "wall_seconds": round(time.time() - self.started, 3),
        }
        atomic_write_text(json.dumps(summary, indent=2), self.out / rundir.SUMMARY)
        self.oracle.close()
        if self.ledger is not None:
            self.ledger.close()
        return summary

    def _rate_sources(
        self, final_round: int, last: SuccessRate | None, best: SuccessRate | None
    ) -> dict[str, str] | None:
        """What each success rate of the summary is, in words: which one is the fresh re-estimate (the final
        and the best can be one generator measured twice, on different samples, with different numbers)."""
        if last is None or best is None or self.best_round_rate is None:
            return None
        if best.exact:
            same = "exact"
            return {"final_success_rate": same, "selected_best_rate": same, "best_success_rate": same}
        return {
            "final_success_rate": f"round {final_round}'s generator on its {last.n:,} evaluation samples",
            "selected_best_rate": f"round {self.best_round}'s generator on its {self.best_round_rate.n:,} "
            "evaluation samples, the maximum it was chosen on (biased upward)",
            "best_success_rate": f"round {self.best_round}'s generator re-estimated on {best.n:,} fresh samples "
            "(selection-free: the number to report)",
        }

    def _reestimate_best(self) -> SuccessRate | None:
        """The saved best generator's success rate on fresh samples (an exact rate needs no second look)."""
        assert self.best_round_rate is not None
        if self.best_round_rate.exact:
            return self.best_round_rate
        model = saved_generator(self.out / rundir.GENERATOR_BEST, self.spec, self.prior, self.config, self.context)
        return reestimate(self.task, model, self.config.eval, self.config.seed)

    # -- paid evidence and the kept generator ------------------------------------------------------------
    def _remember(self, row: dict[str, Any]) -> None:
        """Keep the columns of a history row that the keep rule reads (and the truth, for the summary)."""
        keys = ("round", "kl_to_prior", "successes", "evaluated", "success_rate")
        self._rows.append({k: row[k] for k in keys if k in row})

    def _keep(self, i: int, model: GenerativeModel) -> int:
        """Apply config.keep.rule to the rows so far; save generator-kept.pt when its choice moves."""
        rule = self.config.keep
        chosen = kept_round(self._rows, rule.rule, rule.drift_budget)
        if rule.rule == "final":  # saved once, as the final generator is, in `finish`
            self.kept_round = chosen
            return chosen
        if chosen != self.kept_round:
            if chosen == i:
                self._save_generator(rundir.GENERATOR_KEPT, model, i, None)
            elif chosen == -1:
                self._save_generator(rundir.GENERATOR_KEPT, self.prior, -1, None)
            elif chosen == i - 1 and (self.out / rundir.GENERATOR_PREVIOUS).is_file():
                os.replace(self.out / rundir.GENERATOR_PREVIOUS, self.out / rundir.GENERATOR_KEPT)
            else:  # the rules in banel.eval.evidence never do this
                raise RuntimeError(f"keep rule {rule.rule!r} chose round {chosen}, whose generator is gone")
            self.kept_round = chosen
        if rule.rule == "paid" and i >= 0:  # the next round's paid samples may make this generator the pick
            self._save_generator(rundir.GENERATOR_PREVIOUS, model, i, None)
        return chosen

    def _negative_gain(self, record: Round) -> float | None:
        """Mean log p_phi(x) - log p_theta(x) per token over this round's failures, p_phi being last round's
        negative model (which never saw them): > 0 where the failure evidence generalises beyond its data."""
        previous, self._negative = self._negative, record.models.get("negative")
        if self._negative is not None:
            self._negative = self._negative.clone()  # a method may train its model further next round
        failed = record.samples[record.rewards == 0]
        if previous is None or not len(failed):
            return None
        gain = (previous.log_prob(failed) - self.prior.log_prob(failed)) / self.prior.token_counts(failed).double()
        return float(gain.mean())

    # -- checkpoints and resume ------------------------------------------------------------------------
    def checkpoint(self) -> None:
        """Atomically save the method's state with the run's bookkeeping (a run killed later resumes here)."""
        run_state = {
            "round_index": self.round_index,
            "success_keys": sorted(k.decode() for k in self.success_keys),
            "base": self.base.as_dict() if self.base else None,
            "kept_round": self.kept_round,
            "negative": self._negative.state_dict() if self._negative is not None else None,
            "last": self.last.as_dict() if self.last else None,
            "best_round": self.best_round,
            "best_round_rate": self.best_round_rate.as_dict() if self.best_round_rate else None,
            "base_drift": self.base_drift.as_dict() if self.base_drift else None,
            "last_drift": self.last_drift.as_dict() if self.last_drift else None,
            "base_metrics": self.base_metrics,
            "last_metrics": self.last_metrics,
            "oracle": self.oracle.state_dict(),
            "wall_seconds": time.time() - self.started,
        }
        state = {"version": CHECKPOINT_VERSION, "run": run_state, "method": self.method.state_dict()}
        # the ledger's main file holds every row the checkpoint counts before the checkpoint exists
        if self.ledger is not None and not self.ledger.checkpoint():
            log.warning(
                "%s: another connection reading the ledger kept some rows in %s-wal only; keep that file with it",
                self.out,
                self.ledger.path.name,
            )
        atomic_torch_save(state, self.out / rundir.CHECKPOINT)

    def resume(self) -> None:
        """Continue a killed run from its last checkpoint (instead of `start`): bookkeeping, files, method."""
        path = self.out / rundir.CHECKPOINT
        if not path.is_file():
            log.warning(
                "%s has no checkpoint (killed in its first round, or checkpoint.pt removed): starting it again, "
                "answering from the ledger every evaluation it holds",
                self.out,
            )
            for name in (rundir.HISTORY, rundir.SUCCESSES):
                (self.out / name).unlink(missing_ok=True)
            self.start()
            # a run that died in round 0 starts again: replay every row it paid for
            self.oracle.replay_round(None)
            return
        ckpt = read_checkpoint(self.out)
        if ckpt.get("version") != CHECKPOINT_VERSION:
            raise ValueError(
                f"{path} is checkpoint version {ckpt.get('version')}, this banel writes {CHECKPOINT_VERSION}: "
                "resume it with the banel version that started it"
            )
        state = ckpt["run"]
        self.round_index = int(state["round_index"])
        if self.ledger is not None:  # refuse, rather than pay again for rows the ledger lost
            verify_checkpoint(self.ledger, self.run_id, self.round_index, state["oracle"], path)
        self.success_keys = {k.encode() for k in state["success_keys"]}
        self.base, self.last, self.best_round_rate = (
            SuccessRate(**state[k]) if state[k] else None for k in ("base", "last", "best_round_rate")
        )
        self.best_round = state["best_round"]
        self.base_drift, self.last_drift = (
            Drift(**state[k]) if state.get(k) else None for k in ("base_drift", "last_drift")
        )
        self.base_metrics, self.last_metrics = state["base_metrics"], state["last_metrics"]
        self.kept_round = state["kept_round"]
        if state["negative"] is not None:
            self._negative = self.prior.clone()
            self._negative.load_state_dict(state["negative"])
        self._heldout = self._heldout_samples()
        self.oracle.load_state_dict(state["oracle"])
        self.oracle.round = self.round_index
        replayed = self.oracle.replay_round(self.round_index)
        log.info("resuming %s at round %d; %d ledger rows to replay", self.out, self.round_index, replayed)
        self.started = time.time() - float(state["wall_seconds"])
        # drop what a killed round wrote after the checkpoint: it is redone, identically
        self._keep_rows(rundir.HISTORY, self.round_index)
        self._keep_rows(rundir.SUCCESSES, self.round_index)
        for row in rundir.read_history(self.out):
            self._remember(row)
        self.method.load_state_dict(ckpt["method"])

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

    # -- measurements ---------------------------------------------------------------------------------
    def _success_rate(self, model: GenerativeModel, i: int | str, curve: bool = False) -> SuccessRate | None:
        """The rate after round i; `curve`: an intermediate point, which eval may ask to cheapen."""
        # One subset of targets for the whole run, so the points of its curve are comparable.
        curve_seed = derive_seed(self.config.seed, "exact-subset") if curve else None
        return success_rate(self.task, model, self.config.eval, evaluation_seed(self.config.seed, i), curve_seed)

    def _heldout_samples(self) -> Sequences:
        n, seed = self.config.eval.drift_samples, derive_seed(self.config.seed, "drift", "heldout")
        return heldout_samples(self.prior, n, seed)

    def _drift(self, model: GenerativeModel, i: int) -> Drift | None:
        """Detachment of `model` from the prior (None when eval.drift_samples is 0)."""
        n = self.config.eval.drift_samples
        if not n:
            return None
        return drift(model, self.prior, self._heldout, n, derive_seed(self.config.seed, "drift", i))

    def _metrics(self, model: GenerativeModel, i: int) -> dict[str, float]:
        """The task's extra metrics on fresh model samples (none drawn for a task without metrics)."""
        n = self.config.eval.metric_samples
        if not n or not isinstance(self.task, capability.Feasibility | capability.Metrics):
            return {}
        return capability.metrics(self.task, model, model.sample(n, derive_seed(self.config.seed, "metrics", i)))

    # -- files --------------------------------------------------------------------------------------
    def _record_successes(self, i: int, samples: Sequences, rewards: torch.Tensor) -> None:
        if not rewards.numel():
            return
        wins = samples[rewards == 1]
        for key, text in zip(wins.keys(), capability.decode(self.task, wins), strict=True):
            if key not in self.success_keys:
                self.success_keys.add(key)
                self._append(rundir.SUCCESSES, {"round": i, "sample": text, "tokens": key.decode()})

    def _append(self, name: str, row: dict[str, Any]) -> None:
        with open(self.out / name, "a") as f:
            f.write(json.dumps(row, default=_jsonable) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def _save_snapshot(self, i: int, models: dict[str, GenerativeModel]) -> None:
        arrays = capability.snapshot(self.task, models)
        if arrays:
            np.savez_compressed(self.out / rundir.SNAPSHOTS / f"round_{i + 1:03d}.npz", **arrays)

    def _save_generator(self, name: str, model: GenerativeModel, i: int, rate: SuccessRate | None) -> None:
        rate_dict = rate.as_dict() if rate else None
        state = {"method": self.spec.name, "round": i, "success_rate": rate_dict, "model": model.state_dict()}
        atomic_torch_save(state, self.out / name)


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic | torch.Tensor):
        return value.item() if value.numel() == 1 else value.tolist()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


# -- entry points ---------------------------------------------------------------------------------------


def run(
    config: RunConfig,
    out: str | Path,
    task: Task | None = None,
    cache: str | Path | None = None,
    on_round: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Run config's method on its task (built from config.task unless given) in a new folder; the summary."""
    out = Path(out)
    rundir.check_new_run(out)
    task = task if task is not None else make_task(config.task, config.task_options, cache)
    with folder_lock(out):
        r = Run(config, task, out, on_round=on_round)
        r.start()
        return r.execute()


def resume_run(
    out: str | Path,
    task: Task | None = None,
    cache: str | Path | None = None,
    on_round: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Continue a killed run in `out` from its last checkpoint, paying for nothing twice; the summary."""
    out = Path(out)
    config, run_id = read_config(out, None if task is None else TaskFactory(lambda options, cache: task))
    if (out / rundir.SUMMARY).is_file():
        raise ValueError(f"{out} already finished ({rundir.SUMMARY} exists); nothing to resume")
    task = task if task is not None else make_task(config.task, config.task_options, cache)
    with folder_lock(out):
        r = Run(config, task, out, on_round=on_round, run_id=run_id)
        r.resume()
        if on_round is not None:
            log.info("resumed at round %d", r.round_index)
        return r.execute()


def read_checkpoint(out: str | Path) -> dict[str, Any]:
    """A run folder's checkpoint.pt, or a ValueError saying what to do if it is damaged or not a checkpoint."""
    path = Path(out) / rundir.CHECKPOINT
    remedy = (
        f"delete it and `banel resume {out}` restarts the run from its first round, paying for nothing twice "
        "(the ledger answers every sample already paid for)"
    )
    try:
        checkpoint = safe_torch_load(path)
    except UnreadableFile as err:
        raise ValueError(f"{err}; {remedy}") from None
    if not (isinstance(checkpoint, dict) and {"version", "run", "method"} <= set(checkpoint)):
        raise ValueError(f"{path} holds a {type(checkpoint).__name__}, not a run checkpoint; {remedy}")
    return checkpoint


def read_config(out: str | Path, factory: TaskFactory | None = None) -> tuple[RunConfig, str]:
    """The validated settings and run id saved in a run folder's config.json (task options checked by
    `factory`, or by the factory its task names)."""
    path = Path(out) / rundir.CONFIG
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: not a run folder")
    try:
        saved = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(
            f"{path} is not valid JSON ({err}): the run folder is damaged; restore {path.name} from a copy"
        ) from None
    if not isinstance(saved, dict) or "run_id" not in saved or "run" not in saved:
        raise ValueError(f"{path} has no run_id: the run was not made by a version that can resume")
    return parse_config(saved["run"], factory), str(saved["run_id"])


def load_generator(
    out: str | Path, which: str = "best", cache: str | Path | None = None, device: str = "cpu"
) -> GenerativeModel:
    """The best, final or kept generator saved in a run folder, rebuilt on the run's prior (any method)."""
    files = {"best": rundir.GENERATOR_BEST, "final": rundir.GENERATOR_FINAL, "kept": rundir.GENERATOR_KEPT}
    if which not in files:
        raise ValueError(f"which must be one of {', '.join(map(repr, files))}, got {which!r}")
    path = Path(out) / files[which]
    if not path.is_file():
        why = (
            "only a task with free measurement (an exact rate or a free reward) has a best round; "
            "load 'kept' or 'final'"
            if which == "best" and (Path(out) / rundir.GENERATOR_FINAL).is_file()
            else "the run saves it when it evaluates / finishes"
        )
        raise FileNotFoundError(f"{path} does not exist ({why})")
    config, _ = read_config(out)
    config = dataclasses.replace(config, device=device)
    task = make_task(config.task, config.task_options, cache)
    spec = resolve_method(config.method)
    return saved_generator(path, spec, task.prior(device), _with_options(config, spec), context(config, task))


def saved_generator(
    path: Path, spec: MethodSpec, prior: GenerativeModel, config: RunConfig, ctx: Context
) -> GenerativeModel:
    """A generator file (generator-best.pt, generator-final.pt) loaded into the generator of a fresh method of
    the run's kind, so any method's generator (a distilled model, Algorithm 1's filters, a tempered prior)
    comes back in its own shape."""
    model = spec.build(prior, config.options, ctx).generator
    model.load_state_dict(safe_torch_load(path)["model"])
    return model
