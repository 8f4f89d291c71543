"""Regenerate the reference priors shipped with banel (src/banel/assets/priors) and their manifest.json.

    PYTHONPATH=src python benchmarks/references/make_priors.py                  # all: ~7 min on one thread
    PYTHONPATH=src python benchmarks/references/make_priors.py --only toy1d,digits
    PYTHONPATH=src python benchmarks/references/make_priors.py --only addition-paper --cache DIR
    PYTHONPATH=src python benchmarks/references/make_priors.py --checks    # record shipped targets' checks

The paper-scale addition target (`addition-paper`, benchmarks/addition/paper.json) trains for hours in
resumable pieces, so it is not retrained here: `--cache DIR` names the cache where `banel prepare addition
--config benchmarks/addition/paper.json` finished it (and its attacker), and those files are shipped. Each
other prior is trained from scratch on one torch thread in an empty temporary cache (`task_options.shipped`
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
from banel.models.transformer import TransformerModel
from banel.tasks import make_task
from banel.tasks.adder import TargetTraining, fixed_batch_accuracy

ROOT = Path(__file__).resolve().parents[2]
SMALL_ADDITION = ROOT / "benchmarks" / "addition" / "small.json"
PAPER_ADDITION = ROOT / "benchmarks" / "addition" / "paper.json"
REFERENCES = (
    "toy1d",
    "toy2d",
    "digits",
    "addition-small",
    "zoo-grammar",
    "zoo-classifier",
    "zoo-constrained",
    "zoo-typical",
    "addition-paper",
)
"""What can be shipped: the built-in tasks' default priors (the zoo's too), the small addition setting's target
and attacker, and the paper-scale ones (from a finished cache only)."""
TRAINED_HERE = tuple(r for r in REFERENCES if r != "addition-paper")
"""What `make_priors.py` with no --only trains (in minutes)."""


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
    """Train one reference from scratch in `cache` (addition-paper: take it from the finished `cache`); (name,
    settings, seed, file to ship) per file it yields."""
    if reference in ("addition-small", "addition-paper"):
        config = SMALL_ADDITION if reference == "addition-small" else PAPER_ADDITION
        options = json.loads(config.read_text())["task_options"]
        task = make_task("addition", {**options, "shipped": False}, cache)
        if reference == "addition-paper" and not task.target_path().is_file():
            raise SystemExit(f"{task.target_path()} does not exist: finish it with `banel prepare addition --config "
                             f"{config.relative_to(ROOT)} --cache {cache}` first")  # fmt: skip
        task.target()  # trains the attacker too: the calibrated target stops on the attacker's rate
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


def command(reference: str) -> str:
    """The commands that made a reference's files (addition-paper: its training, then the shipping)."""
    ship = f"PYTHONPATH=src python benchmarks/references/make_priors.py --only {reference}"
    if reference != "addition-paper":
        return ship
    train = "banel prepare addition --config benchmarks/addition/paper.json --samples 60000 --threads 1"
    return f"{train} && {ship} --cache ~/.cache/banel"


def target_check(path: Path, settings: dict[str, Any]) -> dict[str, Any]:
    """A shipped target's exact-match accuracy on the fixed batch tests/test_shipped.py replays."""
    model = TransformerModel.from_state_dict(safe_torch_load(path)["model"])
    training = TargetTraining(**settings["target"])
    check = {"problems": 2000, "seed": 0}
    return check | {"accuracy": fixed_batch_accuracy(model, settings["max_digits"], training, **check)}


def main(argv: list[str] | None = None) -> int:
    """Train the chosen references and rewrite their files and manifest entries."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--only", default=",".join(TRAINED_HERE), help=f"comma-separated, of {', '.join(REFERENCES)}")
    p.add_argument("--cache", help="addition-paper: the cache where `banel prepare` finished its target")
    p.add_argument("--checks", action="store_true", help="only record each shipped target's fixed-batch check")
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
    for reference in [] if args.checks else chosen:
        if reference == "addition-paper" and not args.cache:
            p.error("addition-paper ships a finished target: give --cache DIR")
        with tempfile.TemporaryDirectory(prefix="banel-make-priors-") as tmp:
            began = time.time()
            files = train(reference, Path(args.cache) if reference == "addition-paper" else Path(tmp))
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
                    "command": command(reference),
                    "seed": seed,
                    "settings_hash": config_hash(settings),
                    "settings": json.loads(json.dumps(settings)),
                    # addition-paper was trained in resumable pieces by `banel prepare` (docs/LOG.md has the times)
                    "train_seconds": None if reference == "addition-paper" else seconds,
                    "threads": 1,
                    "torch": torch.__version__,
                    "python": platform.python_version(),
                    "machine": machine(),
                    "made": datetime.date.today().isoformat(),
                }
                print(f"{reference}: {file} ({entries[file]['bytes']:,} bytes, {seconds} s)", flush=True)
    for file, entry in entries.items():
        if entry["settings"].get("target") and (args.checks or entry["reference"] in chosen):
            entry["check"] = target_check(out / file, entry["settings"])
            print(f"{file}: fixed-batch accuracy {entry['check']['accuracy']}", flush=True)
    manifest = {"format": shipped.FORMAT, "files": dict(sorted(entries.items()))}
    atomic_write_text(json.dumps(manifest, indent=2) + "\n", out / shipped.MANIFEST)
    os.chmod(out / shipped.MANIFEST, 0o644)  # a temporary file's 0600 would not be readable once installed
    return 0


if __name__ == "__main__":
    sys.exit(main())
