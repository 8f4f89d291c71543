"""Reference priors shipped with banel, so that a documented number does not depend on the machine.

One-thread training is bit-identical on one machine, not across CPUs (the digits prior's exact rate was
1.858e-12 retrained elsewhere against 1.346e-14 here: issue 18). So the built-in tasks' default priors are
shipped in `banel/assets/priors/` and loaded instead of trained when the requested settings are exactly the
shipped ones. `manifest.json` gives, per file, the settings dict the cache key hashes, its sha256 (checked at
every load), the command and seed that made it, the torch version and the machine.
`benchmarks/references/make_priors.py` regenerates the files and the manifest.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from banel.config import config_hash

log = logging.getLogger(__name__)

FOLDER = Path(__file__).parent / "assets" / "priors"
"""Where the shipped files and their manifest live (inside the installed package)."""
MANIFEST = "manifest.json"
FORMAT = 1
"""Version of manifest.json's layout."""


def file_name(name: str, settings: dict[str, Any]) -> str:
    """The file a prior named `name` with these settings is shipped as (its cache file's name)."""
    return f"{name}-{config_hash(settings)}.pt"


def sha256(path: str | Path) -> str:
    """Hex sha256 of a file's bytes."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def manifest(folder: Path | None = None) -> dict[str, Any]:
    """The manifest's entries by file name ({} when nothing is shipped)."""
    path = (folder or FOLDER) / MANIFEST
    if not path.is_file():
        return {}
    data = json.loads(path.read_text())
    if data.get("format") != FORMAT:
        raise ValueError(f"{path} is manifest format {data.get('format')}, this banel reads {FORMAT}: reinstall banel")
    return data["files"]


def find(name: str, settings: dict[str, Any]) -> Path | None:
    """The shipped file of exactly these settings, its checksum verified; None when none was shipped for them.

    The settings are compared whole (as JSON, tuples as lists), not only by their hash. A file whose bytes do
    not match its manifest checksum is an error, never loaded.
    """
    file = file_name(name, settings)
    entry = manifest().get(file)
    if entry is None or entry["settings"] != json.loads(json.dumps(settings)):
        return None
    path = FOLDER / file
    if not path.is_file():
        raise ValueError(
            f"the shipped prior {path} is listed in {MANIFEST} but missing: reinstall banel, or set "
            "task_options.shipped=false to train the prior on this machine"
        )
    digest = sha256(path)
    if digest != entry["sha256"]:
        raise ValueError(
            f"the shipped prior {path} fails its checksum (sha256 {digest[:16]}..., {MANIFEST} says "
            f"{entry['sha256'][:16]}...): the installed file is damaged; reinstall banel, or set "
            "task_options.shipped=false to train the prior on this machine"
        )
    log.info("using the shipped reference prior %s", path)
    return path
