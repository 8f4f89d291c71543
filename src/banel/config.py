"""Settings, declared once: every settings class is a frozen pydantic dataclass (`@settings_dataclass`).

One line per setting carries its type, bound, default and doc: `lr: Annotated[float, Gt(0)] = 1e-3` with the
docstring under it. Validation and coercion (pydantic), the errors (`SettingError`, naming the setting as the
user wrote it: `banel.negative_fit.lr must be > 0, got -1`), `--help`, config files (`from_dict`) and
docs/settings.md (`banel settings --markdown`) all read that declaration; nothing else restates a bound or a
doc. A rule between two settings is a `model_validator` that raises `SettingError` through `check`.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import textwrap
import tomllib
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Annotated, Any, Literal

import pydantic
from annotated_types import Ge, Gt, Le, Lt
from pydantic import ConfigDict, TypeAdapter, ValidationError, model_validator

__all__ = ["Annotated", "Ge", "Gt", "Le", "Lt", "model_validator"]  # re-exported for the declarations


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
    """Raise SettingError(name, problem) unless ok: a rule between settings, inside a `model_validator`."""
    if not ok:
        raise SettingError(name, problem)


SETTINGS = ConfigDict(extra="forbid", use_attribute_docstrings=True, coerce_numbers_to_str=True)
"""What every settings class shares: unknown keys are errors, the docstring under a field is its doc, and a
number given for a string setting (`--set task=5`) is read as text."""


def settings_dataclass(cls: type) -> type:
    """Declare a settings class: a frozen pydantic dataclass (so `dataclasses.fields/replace/asdict` work and
    cache keys built from `asdict` are unchanged) whose constructor raises `SettingError` with the field's path."""
    cls = pydantic.dataclasses.dataclass(frozen=True, config=SETTINGS)(cls)
    init = cls.__init__

    @functools.wraps(init)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        try:
            init(self, *args, **kwargs)
        except ValidationError as err:
            raise setting_error(err, type(self)) from None

    cls.__init__ = __init__
    return cls


# -- errors: pydantic's, in the words of the declaration -------------------------------------------------


def _got(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def setting_error(err: ValidationError, cls: type) -> SettingError:
    """The first error of a validation as a SettingError naming the dotted path of the setting and what it
    may be (the bound or the allowed values, read from the declaration)."""
    first = err.errors()[0]
    loc = [str(part) for part in first["loc"] if not isinstance(part, int)]
    cause = (first.get("ctx") or {}).get("error")
    if isinstance(cause, SettingError):  # a rule between settings (model_validator) named its setting
        return cause.under("".join(f"{part}." for part in loc))
    path, value, kind = ".".join(loc) or cls.__name__, first["input"], first["type"]
    owner, name = _owner(cls, loc)
    info = getattr(owner, "__pydantic_fields__", {}).get(name)
    bound = bound_text(info) if info is not None else ""
    if kind in ("unexpected_keyword_argument", "extra_forbidden"):
        allowed = ", ".join(f.name for f in fields(owner)) if dataclasses.is_dataclass(owner) else ""
        return SettingError(path, f"is not a setting; allowed: {allowed}")
    if kind == "literal_error" or (bound and bound.startswith("one of")):
        return SettingError(path, f"must be {bound}; got {_got(value)}")
    if bound and kind.startswith(("greater", "less")):
        return SettingError(path, f"must be {bound}, got {_got(value)}")
    if kind.startswith("int_"):
        return SettingError(path, f"must be an integer; got {_got(value)}")
    if kind.startswith("float_"):
        return SettingError(path, f"must be a number; got {_got(value)}")
    if kind.startswith("bool_"):
        return SettingError(path, f"must be true or false; got {_got(value)}")
    if kind.startswith(("dict_", "dataclass_")):
        return SettingError(path, f"must be a table of settings; got {_got(value)}")
    return SettingError(path, f"{first['msg'][0].lower()}{first['msg'][1:]}; got {_got(value)}")


def _owner(cls: type, loc: list[str]) -> tuple[Any, str]:
    """The settings class holding the field at `loc` and the field's name."""
    for part in loc[:-1]:
        hint = typing.get_type_hints(cls).get(part) if dataclasses.is_dataclass(cls) else None
        cls = hint if dataclasses.is_dataclass(hint) else None
    return cls, (loc[-1] if loc else "")


def bound_text(info: pydantic.fields.FieldInfo) -> str:
    """What a field may be, from its declaration: '>= 1', 'in [0, 1)', "one of 'a', 'b'", or ''."""
    allowed = _literal(info.annotation)
    if allowed:
        return f"one of {', '.join(map(repr, allowed))}"
    low = high = None
    for m in info.metadata:
        if isinstance(m, Ge | Gt):
            low = ("[", m.ge) if isinstance(m, Ge) else ("(", m.gt)
        elif isinstance(m, Le | Lt):
            high = ("]", m.le) if isinstance(m, Le) else (")", m.lt)
    if low and high:
        return f"in {low[0]}{low[1]}, {high[1]}{high[0]}"
    if low:
        return f"{'>=' if low[0] == '[' else '>'} {low[1]}"
    if high:
        return f"{'<=' if high[0] == ']' else '<'} {high[1]}"
    return ""


def _literal(hint: Any) -> tuple:
    return typing.get_args(hint) if typing.get_origin(hint) is Literal else ()


@settings_dataclass
class EvalConfig:
    """How the generator is measured between rounds: its success rate where the task has free measurement
    (an exact rate or a free reward; the costly reward is never called), its drift and metrics always."""

    every: Annotated[int, Ge(1)] = 1
    """Evaluate after every this many rounds (and always after the first and the last)."""
    samples: Annotated[int, Ge(1)] = 10_000
    """Monte-Carlo samples per estimate, scored by the task's free reward, for tasks without an exact rate."""
    confidence: Annotated[float, Gt(0), Lt(1)] = 0.95
    """Confidence level of the Clopper-Pearson interval."""
    drift_samples: Annotated[int, Ge(0)] = 1000
    """Samples for the drift from the prior (held-out prior NLL, sample KL) per evaluation; 0 disables."""
    metric_samples: Annotated[int, Ge(0)] = 2000
    """Model samples for the task's extra metrics (infeasible fraction, Task.metrics) per evaluation; 0
    disables. Only drawn for tasks that have such metrics."""
    reestimate_samples: Annotated[int, Ge(0)] = 0
    """Fresh samples for the selection-free re-estimate of the best round's generator at the end of a run
    (Monte-Carlo tasks); 0: as many as eval.samples."""
    exact_subset: Annotated[int, Ge(0)] = 0
    """For tasks whose exact rate sums over a target set (digits, mnist): score only this many targets, a
    fixed random subset, at the intermediate evaluations (an unbiased estimate, targets/subset times the
    subset's sum). The prior's, the last round's and the reported best rates always sum over every target.
    0: every target at every evaluation."""
    bf16_curves: bool = False
    """Score the intermediate evaluations under bfloat16 autocast (faster on GPUs and on CPUs with
    AVX512-BF16; the curve moves by about a percent). The prior's, the last round's and the reported best
    rates are always computed at full precision."""


@settings_dataclass
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
    workers: Annotated[int, Ge(0)] = 1
    """Oracle calls in flight at once (thread/process pool size; Ray tasks in flight, 0 = all)."""
    chunk_size: Annotated[int, Ge(0)] = 0
    """Samples per oracle call; 0: the batch split evenly over the workers (inline: one call per batch)."""
    timeout: Annotated[float, Ge(0)] = 0.0
    """Seconds one oracle call may take before it is abandoned and retried; 0: no limit."""
    retries: Annotated[int, Ge(0)] = 2
    """Extra attempts for samples whose call raised, timed out or returned a malformed reward."""
    ray_address: str = ""
    """Ray cluster address for executor='ray'; empty: a local ray.init()."""
    query_limit: Annotated[int, Ge(0)] = 0
    """Samples a run may ask, paid or answered from the ledger; 0: the NRE budget, so dedupe saves NREs
    without changing the rounds a method runs. Raise it to spend the saved NREs on more rounds."""
    max_consecutive_failures: Annotated[int, Ge(0)] = 20
    """Stop the run after this many oracle calls in a row failed (raised, timed out or gave no valid reward;
    retries of a sample that failed alone do not count): the oracle is down, and `banel resume` continues the
    run once it works. 0: never stop."""
    max_out_of_contract: Annotated[int, Ge(0)] = 5
    """Stop the run after this many samples in a row were answered with a value other than 0 or 1 (a score,
    NaN; a sample's first answer counts, not its retries): the reward breaks banel's contract, and `banel resume`
    continues the run once it is fixed. 0: never stop (such samples are uncharged errors)."""

    @model_validator(mode="after")
    def _workers(self) -> OracleConfig:
        # 0 workers means "all" only for Ray, whose tasks are not a pool of fixed size
        check(
            self.executor == "ray" or self.workers >= 1,
            "workers",
            f"must be >= 1 for executor {self.executor!r}, got {self.workers}",
        )
        return self


@settings_dataclass
class KeepConfig:
    """Which generator a run keeps as generator-kept.pt, by a rule that sees no ground truth (docs/stopping.md)."""

    rule: Literal["final", "drift", "paid"] = "paid"
    """paid: the generator whose next round of paid samples had the highest success fraction ((k + 1) /
    (n + 2)), as drift until the first paid success (the default since issue 26: never significantly worse
    than final on the benchmarks of docs/stopping.md, and better on average). drift: the newest generator
    whose KL from the prior (eval.drift_samples model samples; with 0, the newest) is at most drift_budget.
    final: the last generator."""
    drift_budget: Annotated[float, Ge(0)] = 9.2
    """Nats per sequence the drift rule lets a generator move from the prior. The prior conditioned on success
    is log(1 / rate) nats from it, so 9.2 is that distance for a prior rate of 1e-4: a generator further away
    than the ideal posterior of a 1e-4 prior has moved on noise."""


@settings_dataclass
class RunConfig:
    """One run: a method on a task with a seed and an NRE budget, and the settings every method reads."""

    task: str = "toy1d"
    """Built-in task name (`banel tasks`) or an import path module:factory."""
    method: str = "banel"
    """Built-in method name (`banel methods`) or an import path module:Class."""
    seed: int = 0
    """Root seed; every random stream is derived from it."""
    nre_budget: Annotated[int, Ge(1)] = 7500
    """Hard limit on reward evaluations (NREs)."""
    m: Annotated[int, Ge(1)] = 250
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

    @model_validator(mode="after")
    def _fits(self) -> RunConfig:
        check(
            self.nre_budget >= self.m, "nre_budget", f"({self.nre_budget}) must be >= m ({self.m}): not one round fits"
        )
        check(
            self.device in ("cpu", "mps") or self.device.startswith("cuda"),
            "device",
            f"must be 'cpu', 'cuda', 'cuda:N' or 'mps'; got {self.device!r}",
        )
        return self

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

_EARLY_STOP = "2026-12-07, docs/LOG.md: held-out early stopping of p_phi switched BaNEL off"
RETIRED: dict[str, tuple[Any, str]] = {
    "banel.negative_holdout": (0.0, _EARLY_STOP),
    "banel.negative_check_every": (5, _EARLY_STOP),
    "banel.negative_patience": (0, _EARLY_STOP),
    "banel.negative_evidence": (2.0, _EARLY_STOP),
}
"""Deleted settings: their inert value (what an old config.json holds, read as if absent) and why they went."""


# -- plain-data conversion --------------------------------------------------------------------------


def to_dict(config: Any) -> dict[str, Any]:
    """A JSON-ready dict of a config dataclass."""
    return dataclasses.asdict(config)


def from_dict(cls: type, data: dict[str, Any], where: str = "") -> Any:
    """Build a (nested) settings class from plain data; unknown keys and bad values are errors naming the setting
    as `where` + its path. A `preset` key, where the class has `PRESETS`, names settings laid under the given
    ones: a setting given explicitly always wins."""
    data = _known(cls, data, where)
    try:
        return _adapter(cls).validate_python(data)
    except ValidationError as err:
        raise setting_error(err, cls).under(where) from None
    except SettingError as err:
        raise err.under(where) from None


@functools.cache
def _adapter(cls: type) -> TypeAdapter:
    # also validates and coerces a user's plain dataclass (its unknown keys are caught by _known)
    return TypeAdapter(cls)


def _known(cls: type, data: Any, where: str) -> dict[str, Any]:
    """data with its preset laid under it and retired settings at their inert values dropped; an error for an
    unknown key, naming where it moved."""
    if not isinstance(data, dict):
        raise SettingError(where.rstrip(".") or cls.__name__, f"must be a table of settings, got {data!r}")
    data = dict(data)
    presets = getattr(cls, "PRESETS", {})
    if presets and "preset" in data:
        name = data.pop("preset")
        if name not in presets:
            raise SettingError(f"{where}preset", f"must be one of {', '.join(map(repr, presets))}; got {name!r}")
        data = {**presets[name], **data}  # by presence, not by value: an explicit setting wins
    for key in [k for k in data if where + k in RETIRED]:
        inert, why = RETIRED[where + key]
        if data[key] != inert:
            raise SettingError(where + key, f"was deleted ({why}); only {inert!r}, its inert value, is accepted")
        del data[key]
    hints = typing.get_type_hints(cls)
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        moved = [f"{where}{k} is now {MOVED[where + k]}" for k in unknown if where + k in MOVED]
        raise ValueError(
            f"unknown setting(s) {', '.join(f'{where}{k}' for k in unknown)}; "
            f"allowed in {where.rstrip('.') or cls.__name__}: {', '.join(sorted(known | set(presets and ['preset'])))}"
            + (f" ({'; '.join(moved)})" if moved else "")
        )
    for name, value in data.items():
        if dataclasses.is_dataclass(hints[name]) and isinstance(value, dict):
            data[name] = _known(hints[name], value, f"{where}{name}.")
    return data


# -- help and docs, from the declarations -------------------------------------------------------------------


@dataclass(frozen=True)
class Setting:
    """One leaf setting: its dotted path, type, default, bound (or allowed values) and doc."""

    path: str
    type: str
    default: Any
    bound: str
    doc: str


def settings(cls: type, prefix: str = "") -> list[Setting]:
    """Every leaf setting of a settings class, nested ones flattened to dotted paths, in declaration order."""
    hints = typing.get_type_hints(cls, include_extras=False)
    infos = getattr(cls, "__pydantic_fields__", {})
    out = []
    presets = getattr(cls, "PRESETS", {})
    if presets:
        named = "; ".join(f"{k}: {json.dumps(v)}" for k, v in presets.items())
        doc = f"A named set of settings laid under the ones given with it (an explicit setting wins): {named}."
        out.append(Setting(f"{prefix}preset", "|".join(presets), None, "", doc))
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
            info = infos.get(f.name)
            # a subclass that redeclares some fields (ZooPrior) keeps its bases' docs for the others
            docs = [getattr(k, "__pydantic_fields__", {}).get(f.name) for k in cls.__mro__]
            doc = next((" ".join(d.description.split()) for d in docs if d is not None and d.description), "")
            bound = bound_text(info) if info is not None else ""
            out.append(Setting(f"{prefix}{f.name}", _type_text(hint), default, bound, doc))
    return out


def _type_text(hint: Any) -> str:
    if _literal(hint):
        return "|".join(map(str, _literal(hint)))
    if hint is bool:
        return "true|false"
    if typing.get_origin(hint) is dict:
        return "table"
    if typing.get_origin(hint) in (tuple, list):
        return "list"
    return getattr(hint, "__name__", str(hint))


def default_text(value: Any) -> str:
    """A default as the user would write it in JSON."""
    if isinstance(value, str | bool | type(None) | dict | tuple | list):
        return json.dumps(value)
    return repr(value)


def format_settings(items: list[Setting], width: int = 100) -> str:
    """`path (type, default X, bound)` and its wrapped doc, one block per setting (the body of --help)."""
    lines = []
    for s in items:
        bound = f", {s.bound}" if s.bound and not s.bound.startswith("one of") else ""
        lines.append(f"  {s.path} ({s.type}, default {default_text(s.default)}{bound})")
        if s.doc:
            lines.extend(textwrap.wrap(s.doc, width, initial_indent="      ", subsequent_indent="      "))
    return "\n".join(lines)


def markdown_settings(title: str, items: list[Setting]) -> str:
    """One docs/settings.md section: a heading and a table of every setting."""

    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    rows = [f"## {title}", "", "| setting | type | default | allowed | doc |", "|---|---|---|---|---|"]
    for s in items:
        row = [f"`{s.path}`", s.type, f"`{default_text(s.default)}`", s.bound, s.doc]
        rows.append("| " + " | ".join(cell(c) for c in row) + " |")
    return "\n".join(rows)


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
