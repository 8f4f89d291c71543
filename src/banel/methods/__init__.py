"""Methods: built-in names and `module:Class` import paths, both resolved to a `MethodSpec`.

A method is a class built as `Method(prior, options, context)` that steps one round at a time
(`banel.methods.protocol.Method`). Its class attribute `Options` (a frozen dataclass) declares its settings,
read from the table named after the method (`banel.kappa`, `rnd.hidden`, `greedy.width`) and validated before
any run folder is written.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

from banel.config import RUN_SETTINGS, from_dict
from banel.importing import import_object, is_import_path, path_of
from banel.methods.protocol import Context, Method, Oracle, Round, training_batch

BUILTIN: dict[str, str] = {
    "banel": "banel.algorithm:Banel",
    "reinforce": "banel.baselines.reinforce:Reinforce",
    "negrl": "banel.baselines.negrl:NegativeRL",
    "npo": "banel.baselines.npo:NPO",
    "gfn": "banel.baselines.gfn:GFlowNet",
    "rnd": "banel.baselines.rnd:RNDBonus",
    "count": "banel.baselines.count:PseudoCount",
    "diverse": "banel.baselines.diverse:Diverse",
    "temperature": "banel.baselines.temperature:Temperature",
    "base": "banel.baselines.base:Base",
}
"""The built-in methods by name (imported on first use)."""


@dataclass(frozen=True)
class MethodSpec:
    """A method class with the name of its settings table, its options dataclass and a one-line description."""

    cls: type
    """Built as cls(prior, options, context)."""
    name: str
    """Its settings table (`--set NAME.KEY=VALUE`), its row in tables and its folder in comparisons."""
    path: str
    """The string a worker rebuilds it from: a built-in name or `module:Class`."""

    @property
    def options(self) -> type | None:
        """The options dataclass, or None for a method without settings."""
        return getattr(self.cls, "Options", None)

    @property
    def description(self) -> str:
        """One line for `banel methods`."""
        return getattr(self.cls, "description", "") or (inspect.getdoc(self.cls) or "").split("\n")[0]

    def parse_options(self, data: dict[str, Any] | None) -> Any:
        """The method's table validated into its options dataclass (errors name NAME.KEY), or None."""
        if self.options is None:
            if data:
                raise ValueError(
                    f"unknown setting(s) {', '.join(f'{self.name}.{k}' for k in data)}: "
                    f"method {self.name!r} has no settings"
                )
            return None
        return from_dict(self.options, data or {}, f"{self.name}.")

    def build(self, prior: Any, options: Any, context: Context) -> Method:
        """A fresh method on `prior`."""
        return self.cls(prior, options, context)


def resolve_method(spec: str | type) -> MethodSpec:
    """The MethodSpec of a built-in name, a `module:Class` import path, or a class."""
    if isinstance(spec, str) and spec in BUILTIN:
        return MethodSpec(import_object(BUILTIN[spec], "method"), spec, spec)
    if isinstance(spec, str):
        if not is_import_path(spec):
            raise ValueError(f"unknown method {spec!r}; built-in: {', '.join(BUILTIN)}; or an import path module:Class")
        cls, path = import_object(spec, "method"), spec
    else:
        cls, path = spec, path_of(spec) or ""
    if not isinstance(cls, type):
        raise ValueError(
            f"method {spec!r} is a {type(cls).__name__}, not a class built as cls(prior, options, context)"
        )
    for member in ("round", "state_dict", "load_state_dict", "generator"):
        if not hasattr(cls, member):
            raise ValueError(f"method {spec!r} has no {member}: see banel.methods.protocol.Method")
    name = str(getattr(cls, "name", "") or cls.__name__.lower())
    if name in RUN_SETTINGS or (name in BUILTIN and BUILTIN[name] != f"{cls.__module__}:{cls.__qualname__}"):
        raise ValueError(f"method {spec!r} is named {name!r}, which is taken; give the class another `name`")
    return MethodSpec(cls, name, path)


__all__ = ["BUILTIN", "Context", "Method", "MethodSpec", "Oracle", "Round", "resolve_method", "training_batch"]
