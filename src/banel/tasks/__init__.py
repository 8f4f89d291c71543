"""Tasks: built-in names and `module:factory` import paths, both resolved to a `TaskFactory`.

A factory builds a task from its `task_options` and the cache folder. Its one-line description, the settings
runs on it default to, and the dataclass of its options travel with it (`@task_factory(...)`), so the CLI,
spawned workers and Ray workers all rebuild the same task from one string: `toy1d` or `my_pkg.task:make`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from banel.cache import cache_dir
from banel.config import from_dict
from banel.importing import import_object, is_import_path, path_of
from banel.tasks.protocol import Task


@dataclass(frozen=True)
class TaskFactory:
    """How to build a task: `make(options, cache) -> Task`, with its description, defaults and options."""

    make: Callable[[Any, Path], Task]
    """Builds the task from its options (the `options` dataclass, or a dict without one) and the cache folder."""
    description: str = ""
    """One line for `banel tasks`."""
    defaults: dict[str, Any] = field(default_factory=dict)
    """Settings a run on this task starts from (under the config file and --set), e.g. {"banel": {"kappa": 2}}."""
    options: type | None = None
    """The dataclass of `task_options`, validated before any run folder is written; None: a plain dict."""
    path: str = ""
    """`module:name` where the decorated function was defined (how a worker imports this factory)."""

    def parse_options(self, options: Any) -> Any:
        """`task_options` validated into the options dataclass (errors name task_options.KEY); an instance of
        that dataclass is taken as it is."""
        if self.options is None:
            return dict(options or {})
        if isinstance(options, self.options):
            return options
        return from_dict(self.options, options or {}, "task_options.")

    def __call__(self, options: Any = None, cache: str | Path | None = None) -> Task:
        """The task built from `task_options` (a dict, or the options dataclass) and a cache folder (default:
        $BANEL_CACHE or ~/.cache/banel)."""
        options = self.parse_options(options)
        try:
            task = self.make(options, cache_dir(cache))
        except (ValueError, FileNotFoundError):
            raise  # already says what is wrong with an input (a bad option, a missing data file)
        except Exception as err:
            # a bug or unmet assumption inside the user's factory: one line naming the factory, the cause chained
            raise ValueError(
                f"the task factory {self.path or getattr(self.make, '__qualname__', repr(self.make))} raised "
                f"{type(err).__name__}: {err}"
            ) from err
        missing = [m for m in ("name", "prior", "reward") if not hasattr(task, m)]
        if missing:
            raise ValueError(
                f"the task factory returned a {type(task).__name__} without {', '.join(missing)}: a task needs "
                "name, prior(device) and reward(x) (banel.tasks.protocol.Task)"
            )
        return task


def task_factory(
    description: str = "", defaults: dict[str, Any] | None = None, options: type | None = None
) -> Callable[[Callable[[Any, Path], Task]], TaskFactory]:
    """Decorator: make `fn(options, cache) -> Task` a TaskFactory with a description, defaults and options."""

    def wrap(fn: Callable[[Any, Path], Task]) -> TaskFactory:
        text = description or (inspect.getdoc(fn) or "").split("\n")[0]
        return TaskFactory(fn, text, dict(defaults or {}), options, f"{fn.__module__}:{fn.__qualname__}")

    return wrap


BUILTIN: dict[str, str] = {
    "toy1d": "banel.tasks.toy:toy1d",
    "toy2d": "banel.tasks.toy:toy2d",
    "digits": "banel.tasks.mnist:digits",
    "mnist": "banel.tasks.mnist:mnist",
    "addition": "banel.tasks.addition:addition",
    "gsm8k": "banel.tasks.gsm8k:gsm8k",
    "zoo-grammar": "banel.tasks.zoo:grammar",
    "zoo-classifier": "banel.tasks.zoo:classifier",
    "zoo-constrained": "banel.tasks.zoo:constrained",
    "zoo-typical": "banel.tasks.zoo:typical",
}
"""The built-in tasks by name (imported on first use: MNIST and addition pull in more than toy1d needs)."""


def resolve_task(spec: str | TaskFactory | Callable[..., Task]) -> tuple[str, TaskFactory]:
    """(the string a worker rebuilds it from, the factory) of a built-in name, an import path or a factory.

    A factory object must live at the top level of an importable module, so that its path can be given to
    workers; one defined in `__main__` or a notebook has no path, and the string is then ''.
    """
    if isinstance(spec, str):
        if spec in BUILTIN:
            return spec, import_object(BUILTIN[spec], "task")
        if not is_import_path(spec):
            raise ValueError(f"unknown task {spec!r}; built-in: {', '.join(BUILTIN)}; or an import path module:factory")
        obj = import_object(spec, "task")
        return spec, _as_factory(obj, spec)
    path = path_of(spec)
    if isinstance(spec, TaskFactory) and spec.path and "<" not in spec.path and "__main__" not in spec.path:
        try:
            path = spec.path if import_object(spec.path, "task") is spec else None
        except ValueError:
            path = None
    return path or "", _as_factory(spec, repr(spec))


def _as_factory(obj: Any, where: str) -> TaskFactory:
    if isinstance(obj, TaskFactory):
        return obj
    if callable(obj):
        return TaskFactory(obj, (inspect.getdoc(obj) or "").split("\n")[0])
    raise ValueError(f"task {where} is a {type(obj).__name__}, not a factory make(options, cache) -> Task")


def make_task(spec: str | TaskFactory, options: dict[str, Any] | None = None, cache: str | Path | None = None) -> Task:
    """Build a task by built-in name, import path or factory."""
    return resolve_task(spec)[1](options, cache)


__all__ = ["BUILTIN", "Task", "TaskFactory", "make_task", "resolve_task", "task_factory"]
