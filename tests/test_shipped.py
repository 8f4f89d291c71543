"""The reference priors shipped in banel/assets/priors: loaded instead of trained, checksummed, retrainable."""

import json
import shutil
import time
from pathlib import Path

import pytest

from banel import shipped
from banel.cache import config_hash
from banel.cli import main
from banel.models.transformer import TransformerModel
from banel.tasks import addition, make_task

ROOT = Path(__file__).resolve().parents[1]
SMALL_ADDITION = json.loads((ROOT / "benchmarks" / "addition" / "small.json").read_text())["task_options"]

DOCUMENTED = {
    "toy1d": ({}, 3.6276340105900314e-05),
    "toy2d": ({}, 3.4450487316839857e-04),
    "digits": ({}, 5.380095442009555e-12),
    "addition": (SMALL_ADDITION, 2.7708943534430813e-04),
}
"""Each shipped prior's exact success rate as docs/reproducing.md's table of shipped priors gives it."""
EVALUATION_TOLERANCE = 1e-4
"""Relative: scoring a fixed prior differs across CPUs only by float rounding (~1e-6 of a 64-token log-prob);
a retrained prior misses by 10% (toy1d) to 400x (digits), so this still tells them apart."""


class Trained(AssertionError):
    """Raised by the patched training functions: something was trained where a shipped file should load."""


@pytest.fixture
def no_training(monkeypatch):
    def refuse(*args, **kwargs):
        raise Trained("trained instead of loading the shipped file")

    monkeypatch.setattr(TransformerModel, "fit", refuse)
    monkeypatch.setattr(addition, "train_target", refuse)


@pytest.mark.parametrize("name", DOCUMENTED)
def test_a_shipped_prior_loads_without_training_on_an_empty_cache_and_gives_the_documented_rate(
    name, tmp_path, no_training
):
    options, documented = DOCUMENTED[name]
    task = make_task(name, options, tmp_path)
    began = time.perf_counter()
    prior = task.prior()
    if name == "addition":
        task.target()
    seconds = time.perf_counter() - began
    assert task.exact_success_rate(prior) == pytest.approx(documented, rel=EVALUATION_TOLERANCE)
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []  # nothing trained, nothing cached
    assert seconds < 5, seconds  # loading ~430 KB and hashing it; training took 6-200 s


def test_a_corrupted_shipped_file_is_refused_by_its_checksum(tmp_path, monkeypatch, capsys, no_training):
    copy = tmp_path / "priors"
    shutil.copytree(shipped.FOLDER, copy)
    name, settings = make_task("toy1d", {}, tmp_path / "cache").prior_key()
    damaged = copy / shipped.file_name(name, settings)
    raw = bytearray(damaged.read_bytes())
    raw[len(raw) // 2] ^= 0x01  # one bit of one weight
    damaged.write_bytes(bytes(raw))
    monkeypatch.setattr(shipped, "FOLDER", copy)
    with pytest.raises(ValueError, match="fails its checksum"):
        make_task("toy1d", {}, tmp_path / "cache").prior()
    assert main(["run", "toy1d", "--out", str(tmp_path / "run"), "--quiet", "--cache", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"banel: error: the shipped prior {damaged} fails its checksum (sha256 ")
    assert err.endswith("reinstall banel, or set task_options.shipped=false to train the prior on this machine")
    assert len(err.splitlines()) == 1


@pytest.mark.parametrize(
    "name, options",
    [
        ("toy1d", {"shipped": False}),
        ("toy1d", {"prior_training": {"epochs": 7}}),  # settings other than the shipped ones
        ("toy2d", {"shipped": False}),
        ("digits", {"shipped": False}),
        ("addition", {**SMALL_ADDITION, "shipped": False}),
    ],
)
def test_shipped_false_or_other_settings_train_on_this_machine(name, options, tmp_path, no_training):
    task = make_task(name, options, tmp_path)
    with pytest.raises(Trained):
        task.target() if name == "addition" else task.prior()


def test_the_manifest_describes_every_shipped_file_with_how_it_was_made():
    entries = shipped.manifest()
    files = sorted(p.name for p in shipped.FOLDER.iterdir() if p.name != shipped.MANIFEST)
    assert sorted(entries) == files
    zoo = {"zoo-grammar", "zoo-classifier", "zoo-constrained", "zoo-typical"}  # tests/test_zoo.py pins their rates
    assert {e["reference"] for e in entries.values()} == {
        "toy1d",
        "toy2d",
        "digits",
        "addition-small",
        "addition-paper",
        *zoo,
    }
    for file, entry in entries.items():
        path = shipped.FOLDER / file
        assert shipped.sha256(path) == entry["sha256"] and path.stat().st_size == entry["bytes"]
        assert entry["settings_hash"] == config_hash(entry["settings"])
        assert file.endswith(f"-{entry['settings_hash']}.pt")
        assert f"make_priors.py --only {entry['reference']}" in entry["command"] and entry["seed"] == 0
        assert entry["threads"] == 1 and entry["torch"] and entry["machine"]
    assert sum(e["bytes"] for e in entries.values()) < 8_000_000  # the paper-scale target is 3.2 MB of it
    # the defaults of every built-in task with a prior resolve to a shipped file (toy, digits; addition: small.json)
    for name, (options, _) in DOCUMENTED.items():
        task = make_task(name, options)
        keys = (
            [("addition-target", task.target_key()), ("addition-attacker", task.attacker_key())]
            if name == "addition"
            else [task.prior_key()]
        )
        for prior_name, settings in keys:
            assert shipped.find(prior_name, settings) == shipped.FOLDER / shipped.file_name(prior_name, settings)


ADDITION_TARGETS = sorted(f for f, e in shipped.manifest().items() if "target" in e["settings"])


@pytest.mark.parametrize("file", ADDITION_TARGETS)
def test_a_shipped_addition_target_and_its_attacker_load_by_checksum_and_add_as_recorded(file, tmp_path, no_training):
    from banel.tasks.adder import fixed_batch_accuracy

    entry = shipped.manifest()[file]
    settings, check = entry["settings"], entry["check"]
    config = {"addition-small": "small.json", "addition-paper": "paper.json"}[entry["reference"]]
    options = json.loads((ROOT / "benchmarks" / "addition" / config).read_text())["task_options"]
    task = make_task("addition", options, tmp_path)
    assert task.target_key() == settings  # the benchmark's config is what was shipped
    assert task.shipped_target() == shipped.FOLDER / file and task.shipped_attacker() is not None  # checksums
    task.prior()
    accuracy = fixed_batch_accuracy(
        task.target(), settings["max_digits"], task.options.target, check["problems"], check["seed"]
    )
    # greedy decoding: another CPU's rounding could flip a near-tie, so one problem of the batch may differ
    assert abs(accuracy - check["accuracy"]) <= 1 / check["problems"]
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []  # nothing trained, nothing cached
