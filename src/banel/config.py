"""Configuration dataclasses, validated at construction, and their loading from files and `key=value` overrides."""

from __future__ import annotations

import dataclasses
import json
import tomllib
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from banel.models.protocol import FitConfig


def _choice(section: str, name: str, value: object, allowed: tuple) -> None:
    if value not in allowed:
        raise ValueError(f"{section}.{name} must be one of {', '.join(map(repr, allowed))}; got {value!r}")


@dataclass(frozen=True)
class BanelConfig:
    """Every knob of BaNEL (paper Sections 4.1-4.2, Algorithms 1-2, Appendix B.2-B.3)."""

    m: int = 250
    """Samples evaluated per round (the number kept by the adaptive threshold tau)."""
    filter_factor: int = 2
    """f: draw m*f candidates and keep the top m by likelihood ratio (f=1 keeps everything)."""
    kappa: float = 1.0
    """Sharpness of the negative model in the ratio p_theta(x) / p_phi(x)^kappa (Eq. 5)."""
    length_normalise: bool = True
    """Rank by log-likelihoods divided by length l(x), i.e. p^(1/l) (Appendix B.2)."""
    numerator: Literal["base", "generator"] = "base"
    """Ratio numerator: the base model p_theta, or the previous generator p_theta_(i-1) (ablation B.3)."""
    negative_init: Literal["base", "scratch", "continue"] = "base"
    """How p_phi starts each round: from the base weights, from a fresh initialisation, or from last round's."""
    negative_data: Literal["round", "all"] = "round"
    """Train p_phi on this round's failures (Algorithm 2 as written) or on every failure seen so far."""
    negative_epochs: int = 50
    """Epochs of maximum-likelihood training of p_phi per round."""
    generator_epochs: int = 15
    """Epochs of distillation of the filtered posterior into the generator per round."""
    reset_generator: bool = True
    """Reset the generator to the base weights before each distillation (Appendix B.2)."""
    distil_samples: int = 0
    """Extra draws from the filtered proposal added to the distillation set: free (never evaluated), they
    make the fit approximate the filtered distribution instead of memorising m samples. 0: the m evaluated
    samples only, as in the paper (Section 4.2)."""
    feasible_only: bool = False
    """Use the task's free feasibility check (`Task.feasible`, e.g. well-formed addition queries): a sample
    whose reward is 0 by the reward's own definition is never paid for. BaNEL ranks such candidates out
    (never kept, evaluated or drawn for distillation); the baselines score them 0 without an evaluation.
    Off in the paper; needs a task that has the check."""
    algorithm: Literal[1, 2] = 2
    """1: sequential filtering, keep every negative model, no distillation. 2: filtering with distillation."""
    selection: Literal["top_m", "importance"] = "top_m"
    """Hard top-m cut by ratio (CEM-style), or importance resampling without replacement by ratio (Sec. 4.1)."""
    train_on_successes: bool = False
    """Distil reward-1 samples too. Off in the paper's protocol: successes are recorded, never trained on."""
    negative_fit: FitConfig = field(default_factory=FitConfig)
    """Optimiser settings for p_phi."""
    generator_fit: FitConfig = field(default_factory=FitConfig)
    """Optimiser settings for the generator."""

    def __post_init__(self) -> None:
        if self.m < 1:
            raise ValueError(f"banel.m must be >= 1, got {self.m}")
        if self.filter_factor < 1:
            raise ValueError(f"banel.filter_factor must be an integer >= 1, got {self.filter_factor}")
        if not self.kappa >= 0:
            raise ValueError(f"banel.kappa must be >= 0, got {self.kappa}")
        _choice("banel", "numerator", self.numerator, ("base", "generator"))
        _choice("banel", "negative_init", self.negative_init, ("base", "scratch", "continue"))
        _choice("banel", "negative_data", self.negative_data, ("round", "all"))
        _choice("banel", "algorithm", self.algorithm, (1, 2))
        _choice("banel", "selection", self.selection, ("top_m", "importance"))
        for name in ("negative_epochs", "generator_epochs", "distil_samples"):
            if getattr(self, name) < 0:
                raise ValueError(f"banel.{name} must be >= 0, got {getattr(self, name)}")
        if self.algorithm == 1 and self.selection != "top_m":
            raise ValueError("banel.selection='importance' needs banel.algorithm=2: Algorithm 1 filters by a hard tau")
        if self.algorithm == 1 and self.distil_samples:
            raise ValueError("banel.distil_samples needs banel.algorithm=2: Algorithm 1 does not distil")
        if self.algorithm == 1 and self.numerator != "base":
            raise ValueError("banel.numerator='generator' needs banel.algorithm=2: Algorithm 1 has no generator")


@dataclass(frozen=True)
class EvalConfig:
    """How the generator's success rate is measured each round (never charged to the NRE budget)."""

    every: int = 1
    """Evaluate after every this many rounds (and always after the first and the last)."""
    samples: int = 10_000
    """Monte-Carlo samples per estimate, for tasks without an exact success rate."""
    confidence: float = 0.95
    """Confidence level of the Clopper-Pearson interval."""
    drift_samples: int = 1000
    """Samples for the drift from the prior (held-out prior NLL, sample KL) per evaluation; 0 disables."""

    def __post_init__(self) -> None:
        if self.every < 1:
            raise ValueError(f"eval.every must be >= 1, got {self.every}")
        if self.samples < 1:
            raise ValueError(f"eval.samples must be >= 1, got {self.samples}")
        if not 0 < self.confidence < 1:
            raise ValueError(f"eval.confidence must be in (0, 1), got {self.confidence}")
        if self.drift_samples < 0:
            raise ValueError(f"eval.drift_samples must be >= 0 (0 disables), got {self.drift_samples}")


@dataclass(frozen=True)
class OracleConfig:
    """How reward evaluations are paid for: ledger, de-duplication, executor, timeouts and retries."""

    ledger: str = ""
    """SQLite ledger file; empty: ledger.sqlite in the run folder. Runs sharing a file share answers."""
    dedupe: bool = True
    """Answer an exact repeat of a sample already in the ledger (same task) from it, at no NRE cost."""
    executor: Literal["inline", "thread", "process", "ray"] = "inline"
    """Where oracle calls run: in this process, a thread pool, a process pool, or Ray (extra banel[ray])."""
    workers: int = 1
    """Oracle calls in flight at once (thread/process pool size; Ray tasks in flight, 0 = all)."""
    chunk_size: int = 0
    """Samples per oracle call; 0: the batch split evenly over the workers (inline: one call per batch)."""
    timeout: float = 0.0
    """Seconds one oracle call may take before it is abandoned and retried; 0: no limit."""
    retries: int = 2
    """Extra attempts for samples whose call raised, timed out or returned a malformed reward."""
    ray_address: str = ""
    """Ray cluster address for executor='ray'; empty: a local ray.init()."""
    query_limit: int = 0
    """Samples a run may ask, paid or answered from the ledger; 0: the NRE budget, so dedupe saves NREs
    without changing the rounds a method runs. Raise it to spend the saved NREs on more rounds."""

    def __post_init__(self) -> None:
        _choice("oracle", "executor", self.executor, ("inline", "thread", "process", "ray"))
        for name, low in (("workers", 0), ("chunk_size", 0), ("retries", 0), ("query_limit", 0)):
            if getattr(self, name) < low:
                raise ValueError(f"oracle.{name} must be >= {low}, got {getattr(self, name)}")
        if self.executor != "ray" and self.workers < 1:
            raise ValueError(f"oracle.workers must be >= 1 for executor {self.executor!r}, got {self.workers}")
        if not self.timeout >= 0:
            raise ValueError(f"oracle.timeout must be >= 0 seconds (0: no limit), got {self.timeout}")


@dataclass(frozen=True)
class RunConfig:
    """One run: a method on a task with a seed and an NRE budget."""

    task: str = "toy1d"
    """Task name (see `banel tasks`)."""
    method: str = "banel"
    """Method name (see `banel run --help`)."""
    seed: int = 0
    """Root seed; every random stream is derived from it."""
    nre_budget: int = 7500
    """Hard limit on reward evaluations."""
    device: str = "cpu"
    """Torch device for models: cpu, cuda, cuda:N."""
    banel: BanelConfig = field(default_factory=BanelConfig)
    """BaNEL settings (also the round size m and filter settings shared by baselines)."""
    eval: EvalConfig = field(default_factory=EvalConfig)
    """Success-rate evaluation."""
    oracle: OracleConfig = field(default_factory=OracleConfig)
    """Reward evaluation: ledger, de-duplication, executor, timeouts and retries."""
    task_options: dict[str, Any] = field(default_factory=dict)
    """Task-specific options (see the task's documentation), e.g. {"prior_steps": 2000}."""
    method_options: dict[str, Any] = field(default_factory=dict)
    """Method-specific options for baselines."""

    def __post_init__(self) -> None:
        if self.nre_budget < 1:
            raise ValueError(f"run.nre_budget must be >= 1, got {self.nre_budget}")
        if self.nre_budget < self.banel.m:
            raise ValueError(
                f"run.nre_budget ({self.nre_budget}) must be >= banel.m ({self.banel.m}): not one round fits"
            )
        if not (self.device == "cpu" or self.device.startswith("cuda") or self.device == "mps"):
            raise ValueError(f"run.device must be 'cpu', 'cuda', 'cuda:N' or 'mps'; got {self.device!r}")

    @property
    def rounds(self) -> int:
        """Number of rounds the budget allows (budget // m)."""
        return self.nre_budget // self.banel.m


# -- plain-data conversion --------------------------------------------------------------------------


def to_dict(config: Any) -> dict[str, Any]:
    """A JSON-ready dict of a config dataclass."""
    return dataclasses.asdict(config)


def from_dict(cls: type, data: dict[str, Any], where: str = "") -> Any:
    """Build a (nested) config dataclass from a dict; unknown keys are errors naming the allowed ones."""
    if not isinstance(data, dict):
        raise ValueError(f"{where or cls.__name__} must be a table of settings, got {data!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in fields(cls)}
    unknown = set(data) - set(known)
    if unknown:
        raise ValueError(
            f"unknown setting(s) {', '.join(sorted(f'{where}{k}' for k in unknown))}; "
            f"allowed in {where.rstrip('.') or cls.__name__}: {', '.join(sorted(known))}"
        )
    kwargs = {}
    for name, value in data.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = from_dict(hint, value, f"{where}{name}.")
        else:
            kwargs[name] = _coerce(hint, value, f"{where}{name}")
    return cls(**kwargs)


def _coerce(hint: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    if origin is Literal:
        allowed = typing.get_args(hint)
        for a in allowed:
            if value == a or (isinstance(value, str) and value == str(a)):
                return a
        raise ValueError(f"{where} must be one of {', '.join(map(repr, allowed))}; got {value!r}")
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no", "on", "off"):
            return value.lower() in ("true", "1", "yes", "on")
        raise ValueError(f"{where} must be true or false; got {value!r}")
    if hint in (int, float):
        try:
            number = hint(value) if not isinstance(value, bool) else None
        except (TypeError, ValueError):
            number = None
        if number is None or (hint is int and isinstance(value, float) and not value.is_integer()):
            raise ValueError(f"{where} must be {'an integer' if hint is int else 'a number'}; got {value!r}")
        return number
    if hint is str:
        return str(value)
    if origin is dict:
        if not isinstance(value, dict):
            raise ValueError(f"{where} must be a table; got {value!r}")
        return dict(value)
    return value


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """Turn ['banel.m=100', 'seed=3'] into a nested dict; values are parsed as JSON when they can be."""
    out: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise ValueError(f"--set expects key=value, got {pair!r}")
        key, raw = pair.split("=", 1)
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        node = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"--set {key}: {part} is not a table")
        node[parts[-1]] = value
    return out


def merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge update into a copy of base."""
    out = dict(base)
    for k, v in update.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_file(path: str | Path) -> dict[str, Any]:
    """Read a config file (.toml or .json) into a dict."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    if path.suffix == ".toml":
        return tomllib.loads(path.read_text())
    if path.suffix == ".json":
        return json.loads(path.read_text())
    raise ValueError(f"config file {path} must end in .toml or .json")
