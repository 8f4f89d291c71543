"""Regenerate the reference priors shipped with banel (src/banel/assets/priors) and their manifest.json.

    PYTHONPATH=src python benchmarks/references/make_priors.py                  # all: ~7 min on one thread
    PYTHONPATH=src python benchmarks/references/make_priors.py --only toy1d,digits

Each prior is trained from scratch on one torch thread in an empty temporary cache (`task_options.shipped`
false, so nothing shipped is reused), then copied into the package with its sha256, the settings dict its
cache key hashes, the command and seed that made it, the torch version and the machine. Retrained on another
CPU the weights differ (issue 18): regenerate only to change what is shipped, then re-measure the numbers that
depend on it (benchmarks/regression/pin.py, docs/reproducing.md).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from banel import shipped
from banel.cache import atomic_torch_save, atomic_write_text, config_hash, safe_torch_load
from banel.tasks import make_task

ROOT = Path(__file__).resolve().parents[2]
SMALL_ADDITION = ROOT / "benchmarks" / "addition" / "small.json"
REFERENCES = (
    "toy1d",
    "toy2d",
    "digits",
    "addition-small",
    "zoo-grammar",
    "zoo-classifier",
    "zoo-constrained",
    "zoo-typical",
)
"""What is shipped: the built-in tasks' default priors (the zoo's too) and the small addition setting's target
and attacker."""


def machine() -> str:
    """CPU model, architecture and OS of this machine, in words."""
    model = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{model}, {platform.machine()}, {platform.system()} {platform.release()}"


def train(reference: str, cache: Path) -> list[tuple[str, dict[str, Any], int, Path]]:
    """Train one reference from scratch in `cache`; (name, settings, seed, file to ship) per file it yields."""
    if reference == "addition-small":
        options = json.loads(SMALL_ADDITION.read_text())["task_options"]
        task = make_task("addition", {**options, "shipped": False}, cache)
        task.target()  # trains the attacker too: the calibrated target stops on the attacker's exact rate
        saved = safe_torch_load(task.target_path())
        assert saved["state"]["done"], "the target's training did not finish"
        target = cache / "shipped-target.pt"
        # the optimiser state is only for resuming training: a shipped target is finished
        atomic_torch_save({"model": saved["model"], "state": saved["state"]}, target)
        o = task.options
        return [
            ("addition-target", task.target_key(), o.target.seed, target),
            ("addition-attacker", task.attacker_key(), o.attacker.seed, task.attacker_path()),
        ]
    task = make_task(reference, {"shipped": False}, cache)
    task.prior()
    name, settings = task.prior_key()
    if reference.startswith("toy"):
        seed = task.training.seed
    elif reference.startswith("zoo-"):
        seed = task.options.prior.seed
    else:
        seed = task.options.prior_training.seed
    return [(name, settings, seed, cache / "priors" / f"{name}-{config_hash(settings)}.pt")]


def main(argv: list[str] | None = None) -> int:
    """Train the chosen references and rewrite their files and manifest entries."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--only", default=",".join(REFERENCES), help=f"comma-separated, of {', '.join(REFERENCES)}")
    p.add_argument("--out", default=str(shipped.FOLDER), help="where the files and manifest.json go")
    args = p.parse_args(argv)
    chosen = [r.strip() for r in args.only.split(",") if r.strip()]
    unknown = sorted(set(chosen) - set(REFERENCES))
    if unknown:
        p.error(f"unknown reference(s) {', '.join(unknown)}; choose from {', '.join(REFERENCES)}")
    torch.set_num_threads(1)  # the shipped weights are the one-thread ones, as the cache's
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    entries = shipped.manifest(out)
    for reference in chosen:
        with tempfile.TemporaryDirectory(prefix="banel-make-priors-") as tmp:
            began = time.time()
            files = train(reference, Path(tmp))
            seconds = round(time.time() - began, 1)
            for stale in [f for f, e in entries.items() if e["reference"] == reference]:
                (out / stale).unlink(missing_ok=True)
                del entries[stale]
            for name, settings, seed, source in files:
                file = shipped.file_name(name, settings)
                shutil.copyfile(source, out / file)
                entries[file] = {
                    "reference": reference,
                    "sha256": shipped.sha256(out / file),
                    "bytes": (out / file).stat().st_size,
                    "command": f"PYTHONPATH=src python benchmarks/references/make_priors.py --only {reference}",
                    "seed": seed,
                    "settings_hash": config_hash(settings),
                    "settings": json.loads(json.dumps(settings)),
                    "train_seconds": seconds,
                    "threads": 1,
                    "torch": torch.__version__,
                    "python": platform.python_version(),
                    "machine": machine(),
                    "made": datetime.date.today().isoformat(),
                }
                print(f"{reference}: {file} ({entries[file]['bytes']:,} bytes, {seconds} s)", flush=True)
    manifest = {"format": shipped.FORMAT, "files": dict(sorted(entries.items()))}
    atomic_write_text(json.dumps(manifest, indent=2) + "\n", out / shipped.MANIFEST)
    os.chmod(out / shipped.MANIFEST, 0o644)  # a temporary file's 0600 would not be readable once installed
    return 0


if __name__ == "__main__":
    sys.exit(main())
