"""Settings: the run-level dataclasses, their validation errors, and their loading from files and `--set`.

Every settings dataclass is frozen and validated in `__post_init__` with `check`/`choice`, which raise a
`SettingError` naming the field; `from_dict` prefixes it with where the user wrote it, so an error reads
`banel.negative_fit.lr must be > 0, got -1`. The docstring under each field is its `--help` (`settings`).
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import hashlib
import inspect
import json
import textwrap
import tomllib
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal


class SettingError(ValueError):
    """A setting with a value it cannot take; `path` names it as the user wrote it (banel.negative_fit.lr)."""

    def __init__(self, path: str, problem: str) -> None:
        self.path, self.problem = path, problem
        super().__init__(f"{path} {problem}")

    def under(self, prefix: str) -> SettingError:
        """The same error with the path written under `prefix` ('banel.negative_fit.')."""
        return SettingError(prefix + self.path, self.problem)


def config_hash(data: dict[str, Any]) -> str:
    """A short stable hash of a JSON-able dict of settings (the cache key of an artefact made from them)."""
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def check(ok: bool, name: str, problem: str) -> None:
    """Raise SettingError(name, problem) unless ok."""
    if not ok:
        raise SettingError(name, problem)


def choice(name: str, value: object, allowed: tuple) -> None:
    """Raise a SettingError naming the allowed values unless value is one of them."""
    check(value in allowed, name, f"must be one of {', '.join(map(repr, allowed))}; got {value!r}")


@dataclass(frozen=True)
class EvalConfig:
    """How the generator is measured between rounds: its success rate where the task has free measurement
    (an exact rate or a free reward; the costly reward is never called), its drift and metrics always."""

    every: int = 1
    """Evaluate after every this many rounds (and always after the first and the last)."""
    samples: int = 10_000
    """Monte-Carlo samples per estimate, scored by the task's free reward, for tasks without an exact rate."""
    confidence: float = 0.95
    """Confidence level of the Clopper-Pearson interval."""
    drift_samples: int = 1000
    """Samples for the drift from the prior (held-out prior NLL, sample KL) per evaluation; 0 disables."""
    metric_samples: int = 2000
    """Model samples for the task's extra metrics (infeasible fraction, Task.metrics) per evaluation; 0
    disables. Only drawn for tasks that have such metrics."""
    reestimate_samples: int = 0
    """Fresh samples for the selection-free re-estimate of the best round's generator at the end of a run
    (Monte-Carlo tasks); 0: as many as eval.samples."""
    exact_subset: int = 0
    """For tasks whose exact rate sums over a target set (digits, mnist): score only this many targets, a
    fixed random subset, at the intermediate evaluations (an unbiased estimate, targets/subset times the
    subset's sum). The prior's, the last round's and the reported best rates always sum over every target.
    0: every target at every evaluation."""
    bf16_curves: bool = False
    """Score the intermediate evaluations under bfloat16 autocast (faster on GPUs and on CPUs with
    AVX512-BF16; the curve moves by about a percent). The prior's, the last round's and the reported best
    rates are always computed at full precision."""

    def __post_init__(self) -> None:
        check(self.every >= 1, "every", f"must be >= 1, got {self.every}")
        check(self.samples >= 1, "samples", f"must be >= 1, got {self.samples}")
        check(self.reestimate_samples >= 0, "reestimate_samples", f"must be >= 0, got {self.reestimate_samples}")
        check(self.exact_subset >= 0, "exact_subset", f"must be >= 0 (0: every target), got {self.exact_subset}")

        check(0 < self.confidence < 1, "confidence", f"must be in (0, 1), got {self.confidence}")
        check(self.drift_samples >= 0, "drift_samples", f"must be >= 0 (0 disables), got {self.drift_samples}")
        check(self.metric_samples >= 0, "metric_samples", f"must be >= 0 (0 disables), got {self.metric_samples}")


@dataclass(frozen=True)
class OracleConfig:
    """How reward evaluations are paid for: ledger, de-duplication, executor, timeouts and retries."""

    ledger: str = ""
    """SQLite ledger file; empty: ledger.sqlite in the run folder. Runs sharing a file share answers."""
    network_filesystem: bool = False
    """Allow the ledger on a network filesystem (NFS, SMB, Lustre, FUSE...), locked for one process at a time:
    SQLite's WAL does not work across machines there, so by default such a ledger is refused."""
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
    max_consecutive_failures: int = 20
    """Stop the run after this many oracle calls in a row failed (raised, timed out or gave no valid reward;
    retries of a sample that failed alone do not count): the oracle is down, and `banel resume` continues the
    run once it works. 0: never stop."""
    max_out_of_contract: int = 5
    """Stop the run after this many samples in a row were answered with a value other than 0 or 1 (a score,
    NaN; a sample's first answer counts, not its retries): the reward breaks banel's contract, and `banel resume`
    continues the run once it is fixed. 0: never stop (such samples are uncharged errors)."""

    def __post_init__(self) -> None:
        choice("executor", self.executor, ("inline", "thread", "process", "ray"))
        for name in (
            "workers",
            "chunk_size",
            "retries",
            "query_limit",
            "max_consecutive_failures",
            "max_out_of_contract",
        ):
            check(getattr(self, name) >= 0, name, f"must be >= 0, got {getattr(self, name)}")
        if self.executor != "ray":
            check(self.workers >= 1, "workers", f"must be >= 1 for executor {self.executor!r}, got {self.workers}")
        check(self.timeout >= 0, "timeout", f"must be >= 0 seconds (0: no limit), got {self.timeout}")


@dataclass(frozen=True)
class KeepConfig:
    """Which generator a run keeps as generator-kept.pt, by a rule that sees no ground truth (docs/stopping.md)."""

    rule: Literal["final", "drift", "paid"] = "paid"
    """paid: the generator whose next round of paid samples had the highest success fraction ((k + 1) /
    (n + 2)), as drift until the first paid success (the default since issue 26: never significantly worse
    than final on the benchmarks of docs/stopping.md, and better on average). drift: the newest generator
    whose KL from the prior (eval.drift_samples model samples; with 0, the newest) is at most drift_budget.
    final: the last generator."""
    drift_budget: float = 9.2
    """Nats per sequence the drift rule lets a generator move from the prior. The prior conditioned on success
    is log(1 / rate) nats from it, so 9.2 is that distance for a prior rate of 1e-4: a generator further away
    than the ideal posterior of a 1e-4 prior has moved on noise."""

    def __post_init__(self) -> None:
        choice("rule", self.rule, ("final", "drift", "paid"))
        check(self.drift_budget >= 0, "drift_budget", f"must be >= 0 nats, got {self.drift_budget}")


@dataclass(frozen=True)
class RunConfig:
    """One run: a method on a task with a seed and an NRE budget, and the settings every method reads."""

    task: str = "toy1d"
    """Built-in task name (`banel tasks`) or an import path module:factory."""
    method: str = "banel"
    """Built-in method name (`banel methods`) or an import path module:Class."""
    seed: int = 0
    """Root seed; every random stream is derived from it."""
    nre_budget: int = 7500
    """Hard limit on reward evaluations (NREs)."""
    m: int = 250
    """Samples evaluated per round, by every method (BaNEL keeps the top m of m*f candidates)."""
    feasible_only: bool = False
    """Never pay for a sample the task's free check (`feasible`) rules out: its reward is 0 without an
    evaluation. BaNEL also ranks such candidates out. Off in the paper; needs a task that has the check."""
    train_on_successes: bool = False
    """Let methods learn from reward-1 samples too. Off in the paper's protocol: successes are recorded,
    never trained on."""
    device: str = "cpu"
    """Torch device for models: cpu, cuda, cuda:N."""
    eval: EvalConfig = field(default_factory=EvalConfig)
    """Success-rate evaluation."""
    oracle: OracleConfig = field(default_factory=OracleConfig)
    """Reward evaluation: ledger, de-duplication, executor, timeouts and retries."""
    keep: KeepConfig = field(default_factory=KeepConfig)
    """The generator kept without ground truth (generator-kept.pt)."""
    task_options: dict[str, Any] = field(default_factory=dict)
    """The task's own settings (`banel run TASK --help` lists them)."""
    options: Any = None
    """The method's own settings: its options dataclass, read from the table named after the method."""

    def __post_init__(self) -> None:
        check(self.nre_budget >= 1, "nre_budget", f"must be >= 1, got {self.nre_budget}")
        check(self.m >= 1, "m", f"must be >= 1, got {self.m}")
        check(
            self.nre_budget >= self.m, "nre_budget", f"({self.nre_budget}) must be >= m ({self.m}): not one round fits"
        )
        check(
            self.device in ("cpu", "mps") or self.device.startswith("cuda"),
            "device",
            f"must be 'cpu', 'cuda', 'cuda:N' or 'mps'; got {self.device!r}",
        )

    @property
    def rounds(self) -> int:
        """Number of rounds the budget allows (budget // m)."""
        return self.nre_budget // self.m


RUN_SETTINGS = frozenset(f.name for f in fields(RunConfig)) - {"options"}
"""Top-level setting names of a run; every other top-level table is a method's."""

MOVED = {
    "banel.m": "m",
    "banel.feasible_only": "feasible_only",
    "banel.train_on_successes": "train_on_successes",
    "method_options": "a table named after the method (rnd.hidden, count.kl_coef)",
}
"""Settings of earlier versions and where they live now (named in the error for a stale config)."""


# -- plain-data conversion --------------------------------------------------------------------------


def to_dict(config: Any) -> dict[str, Any]:
    """A JSON-ready dict of a config dataclass."""
    return dataclasses.asdict(config)


def from_dict(cls: type, data: dict[str, Any], where: str = "") -> Any:
    """Build a (nested) config dataclass from a dict; unknown keys and bad values are errors naming the setting
    as `where` + its path."""
    if not isinstance(data, dict):
        raise SettingError(where.rstrip(".") or cls.__name__, f"must be a table of settings, got {data!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        moved = [f"{where}{k} is now {MOVED[where + k]}" for k in unknown if where + k in MOVED]
        raise ValueError(
            f"unknown setting(s) {', '.join(f'{where}{k}' for k in unknown)}; "
            f"allowed in {where.rstrip('.') or cls.__name__}: {', '.join(sorted(known))}"
            + (f" ({'; '.join(moved)})" if moved else "")
        )
    kwargs = {}
    for name, value in data.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = from_dict(hint, value, f"{where}{name}.")
        else:
            kwargs[name] = _coerce(hint, value, f"{where}{name}")
    try:
        return cls(**kwargs)
    except SettingError as err:
        raise err.under(where) from None


def _coerce(hint: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    if origin is Literal:
        allowed = typing.get_args(hint)
        for a in allowed:
            if value == a or (isinstance(value, str) and value == str(a)):
                return a
        raise SettingError(where, f"must be one of {', '.join(map(repr, allowed))}; got {value!r}")
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no", "on", "off"):
            return value.lower() in ("true", "1", "yes", "on")
        raise SettingError(where, f"must be true or false; got {value!r}")
    if hint in (int, float):
        try:
            number = hint(value) if not isinstance(value, bool) else None
        except (TypeError, ValueError):
            number = None
        if number is None or (hint is int and isinstance(value, float) and not value.is_integer()):
            raise SettingError(where, f"must be {'an integer' if hint is int else 'a number'}; got {value!r}")
        return number
    if hint is str:
        return str(value)
    if origin is dict:
        if not isinstance(value, dict):
            raise SettingError(where, f"must be a table; got {value!r}")
        return dict(value)
    return value


# -- help text from the field docstrings -----------------------------------------------------------------


@dataclass(frozen=True)
class Setting:
    """One leaf setting of a dataclass: its dotted path, type, default and docstring."""

    path: str
    type: str
    default: Any
    doc: str


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """The docstring written under each field of a dataclass (and of its dataclass bases)."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError, SyntaxError):
            continue
        body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
        for node, after in zip(body, body[1:], strict=False):
            if (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and isinstance(after, ast.Expr)
                and isinstance(after.value, ast.Constant)
                and isinstance(after.value.value, str)
            ):
                docs[node.target.id] = " ".join(inspect.cleandoc(after.value.value).split())
    return docs


def settings(cls: type, prefix: str = "") -> list[Setting]:
    """Every leaf setting of a config dataclass, nested ones flattened to dotted paths, in declaration order."""
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    out = []
    for f in fields(cls):
        hint = hints[f.name]
        default = (
            f.default
            if f.default is not dataclasses.MISSING
            else (f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        )
        if dataclasses.is_dataclass(hint):
            out.extend(settings(hint, f"{prefix}{f.name}."))
        else:
            out.append(Setting(f"{prefix}{f.name}", _type_text(hint), default, docs.get(f.name, "")))
    return out


def _type_text(hint: Any) -> str:
    if typing.get_origin(hint) is Literal:
        return "|".join(map(str, typing.get_args(hint)))
    if hint is bool:
        return "true|false"
    if typing.get_origin(hint) is dict:
        return "table"
    if typing.get_origin(hint) in (tuple, list):
        return "list"
    return getattr(hint, "__name__", str(hint))


def format_settings(items: list[Setting], width: int = 100) -> str:
    """`path (type, default X)` and its wrapped docstring, one block per setting (the body of --help)."""
    lines = []
    for s in items:
        default = json.dumps(s.default) if isinstance(s.default, str | bool | type(None)) else repr(s.default)
        if isinstance(s.default, dict | tuple | list):
            default = json.dumps(s.default)
        lines.append(f"  {s.path} ({s.type}, default {default})")
        if s.doc:
            lines.extend(textwrap.wrap(s.doc, width, initial_indent="      ", subsequent_indent="      "))
    return "\n".join(lines)


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """Turn ['banel.kappa=2', 'seed=3'] into a nested dict; values are parsed as JSON when they can be."""
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
    """Read a config file (.toml or .json) into a dict; every error names the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    if path.suffix not in (".toml", ".json"):
        raise ValueError(f"config file {path} must end in .toml or .json")
    kind = path.suffix[1:].upper()
    try:
        text = path.read_text(encoding="utf-8")
        data = tomllib.loads(text) if kind == "TOML" else json.loads(text)
    except UnicodeDecodeError as err:
        raise ValueError(f"config file {path} is not UTF-8 text (byte {err.start}); save it as UTF-8") from None
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"config file {path} is not valid {kind}: {err}") from None
    if not isinstance(data, dict):
        raise ValueError(
            f"config file {path} holds a {type(data).__name__} at its top level; it must be a table of settings "
            '({"nre_budget": 2500, "banel": {"kappa": 2}, ...})'
        )
    return data
