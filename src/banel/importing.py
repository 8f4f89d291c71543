"""`module:attribute` import paths: how a user's own task, method or model reaches every process.

A spawned worker or a Ray worker cannot see objects registered at run time in another process, but it can
import a path. The CLI puts the working folder on `sys.path` (as `python -m` does), so `examples.seqdesign:make`
works from the project's root without installing anything.
"""

from __future__ import annotations

import importlib
from typing import Any


def is_import_path(text: str) -> bool:
    """Whether `text` is a `module:attribute` path rather than a built-in name."""
    return ":" in text


def import_object(path: str, what: str) -> Any:
    """The object at `module.sub:attr.inner`; a ValueError naming `what` and the path if it cannot be imported."""
    module, _, attr = path.partition(":")
    if not module or not attr:
        raise ValueError(f"{what} {path!r} must be a built-in name or an import path module:attribute")
    try:
        obj: Any = importlib.import_module(module)
    except ImportError as err:
        raise ValueError(
            f"{what} {path!r}: cannot import {module!r} ({err}). The module must be importable in every process "
            "that runs it: install its package, or run banel from the folder that holds it"
        ) from None
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ValueError(f"{what} {path!r}: module {module!r} has no attribute {attr!r}") from None
    return obj


def path_of(obj: Any) -> str | None:
    """The `module:qualname` import path of a function or class defined at a module's top level, else None
    (a lambda, a closure, or something defined in `__main__` or a notebook cannot be imported by a worker)."""
    module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    if not module or not qualname or module == "__main__" or "<" in qualname:
        return None
    try:
        found = import_object(f"{module}:{qualname}", "object")
    except ValueError:
        return None
    return f"{module}:{qualname}" if found is obj else None
