"""Where pre-trained priors and other derived artefacts are cached, and how they are written and read safely."""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import torch

from banel.config import config_hash

if TYPE_CHECKING:
    from banel.models.protocol import GenerativeModel

try:
    import fcntl
except ImportError:  # not POSIX: folders are not locked
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

CACHE_ENV = "BANEL_CACHE"
LOCK_FILE = "run.lock"


def cache_dir(override: str | Path | None = None) -> Path:
    """The cache folder: the override, else $BANEL_CACHE, else $XDG_CACHE_HOME/banel or ~/.cache/banel."""
    if override:
        path = Path(override)
    elif os.environ.get(CACHE_ENV):
        path = Path(os.environ[CACHE_ENV])
    else:
        path = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "banel"
    path.mkdir(parents=True, exist_ok=True)
    return path


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """torch.save to a temporary file in the same folder, fsync, then rename over path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(text: str, path: str | Path) -> None:
    """Write text to a temporary file, fsync, then rename over path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class UnreadableFile(ValueError):
    """A file banel saved with torch cannot be read back: truncated, overwritten, or not one banel wrote."""

    def __init__(self, path: Path, reason: str) -> None:
        self.path = path
        super().__init__(f"{path} cannot be read ({reason}): it is truncated, damaged or not a file banel wrote")


def safe_torch_load(path: str | Path) -> Any:
    """torch.load with weights_only=True: tensors and plain containers only, never arbitrary pickles.

    A file that cannot be read (truncated, random bytes, empty, a pickle of other objects) raises
    UnreadableFile naming it; a missing or forbidden file raises its OSError as usual.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (FileNotFoundError, PermissionError, IsADirectoryError):
        raise
    except Exception as err:  # by the damage: RuntimeError, UnpicklingError, EOFError, KeyError, OSError(EINVAL)...
        # torch's own message suggests weights_only=False, which would run whatever the file holds: not shown
        raise UnreadableFile(Path(path), type(err).__name__) from err


@contextmanager
def one_thread(device: str) -> Iterator[None]:
    """Run on one torch thread on CPU: a cached prior must not depend on --threads or the core count.

    The summation order changes with the thread count, and so do trained weights (the digits prior's exact
    rate: 1.346e-14 trained on one thread, 8.3e-13 on two).
    """
    if torch.device(device).type != "cpu":
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def load_or_train(model: GenerativeModel, path: Path, train: Callable[[], object], device: str, what: str) -> None:
    """Load a prior's weights from its cache file, or train it on one CPU thread and cache it atomically."""
    if path.is_file():
        model.load_state_dict(safe_torch_load(path))
        return
    log.info("pre-training the %s (cached at %s)", what, path)
    with one_thread(device):
        losses = train()
    if isinstance(losses, list) and losses:
        log.info("%s: final NLL per token %.4f", what, losses[-1])
    atomic_torch_save(model.state_dict(), path)


M = TypeVar("M", bound="GenerativeModel")


def pretrained(
    model: M,
    train: Callable[[M], object],
    settings: dict[str, Any],
    name: str,
    cache: str | Path | None = None,
    device: str = "cpu",
    shipped: bool = True,
) -> M:
    """`model` with pre-trained weights: the reference prior shipped with banel for exactly these settings
    (`banel.shipped`, with `shipped`), else loaded from the cache if these settings were trained before, else
    trained by `train(model)` on one CPU thread and cached.

    The cache file is `CACHE/priors/NAME-HASH.pt`, HASH a hash of `settings` (JSON-able: put everything the
    weights depend on in it, a version number too), so changed settings train a new prior and never load a
    stale one. Training runs on one torch thread on CPU because the weights depend on the thread count.
    """
    from banel import shipped as references  # imported on use: loading a prior is the only reason

    reference = references.find(name, settings) if shipped else None
    if reference is not None:
        model.load_state_dict(safe_torch_load(reference))
        return model
    path = cache_dir(cache) / "priors" / f"{name}-{config_hash(settings)}.pt"
    load_or_train(model, path, lambda: train(model), device, f"{name} prior")
    return model


class FolderInUse(RuntimeError):
    """Another process holds the run folder."""


@contextmanager
def folder_lock(out: str | Path) -> Iterator[None]:
    """Hold an exclusive lock on a run folder while a process runs or resumes it (freed on exit, even on kill).

    Two processes continuing the same run would each pay for its next rounds: the second one is refused.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / LOCK_FILE, "a") as handle:
        if fcntl is not None:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise FolderInUse(
                    f"{out} is in use by another process ({LOCK_FILE} is locked): wait for it to finish; if you "
                    f"stop it, `banel resume {out}` continues it"
                ) from None
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(handle, fcntl.LOCK_UN)


def check_writable_folder(folder: str | Path, setting: str) -> None:
    """Raise a ValueError naming `setting` unless `folder` is, or can be made, a folder this process can write.

    Catches an existing file, a file somewhere above, and a location without write permission (tried, not
    guessed from the mode bits: root, read-only mounts and /sys answer differently) before any work is done.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{setting}: {folder} is an existing file, not a folder; choose another {setting}")
    existing = folder
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"{setting}: {folder} lies below {existing}, which is a file; choose another {setting}")
    try:
        tempfile.TemporaryDirectory(dir=existing, prefix=".banel-write-check-").cleanup()
    except OSError as err:
        raise ValueError(
            f"{setting}: {folder} cannot be written ({existing}: {err.strerror}); choose another {setting} or "
            f"make {existing} writable"
        ) from None
