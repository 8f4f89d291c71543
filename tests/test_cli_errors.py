"""Every failure a user met as a traceback (issue 18) is one line through `banel.cli.main`: exit 2 (130 for
Ctrl-C), `banel: error: ...` naming the file or setting and the remedy."""

import fcntl
import gzip
import json
import os
import shutil
import struct
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from banel import runner
from banel.cli import main

HELD: list = []
"""Locks a case holds while main runs (closed after the test)."""
TINY = ["banel.testing:tiny", "--budget", "30", "--set", "m=10", "--quiet", "--no-plot"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """A finished run of the tiny task (3 rounds), copied by the cases that damage it."""
    out = tmp_path_factory.mktemp("tiny") / "run"
    assert main(["run", *TINY, "--out", str(out)]) == 0
    return out


def resumable(tiny_run: Path, tmp: Path) -> Path:
    """A copy of the tiny run that looks killed after its last round (no summary.json)."""
    out = tmp / "run"
    shutil.copytree(tiny_run, out)
    (out / "summary.json").unlink()
    return out


def unwritable_folder(tmp: Path) -> Path:
    """A folder this process cannot create anything in (as root: /sys, where even root gets EPERM)."""
    if os.geteuid() != 0:
        folder = tmp / "locked"
        folder.mkdir()
        folder.chmod(0o500)
        return folder
    try:
        tempfile.TemporaryDirectory(dir="/sys").cleanup()
    except OSError:
        return Path("/sys")
    pytest.skip("running as root with a writable /sys: no unwritable folder to test with")


def damaged_checkpoint(content: Callable[[bytes], bytes]) -> Callable[[Path, Path], tuple[list[str], list[str]]]:
    def setup(tiny_run: Path, tmp: Path) -> tuple[list[str], list[str]]:
        out = resumable(tiny_run, tmp)
        path = out / "checkpoint.pt"
        path.write_bytes(content(path.read_bytes()))
        words = [str(path), "delete it", f"`banel resume {out}` restarts the run", "paying for nothing twice"]
        return ["resume", str(out), "--quiet"], words

    return setup


def tensor_bytes(_: bytes) -> bytes:
    path = Path(tempfile.mkdtemp()) / "t.pt"
    torch.save(torch.zeros(3), path)
    return path.read_bytes()


def out_is_a_file(tiny_run: Path, tmp: Path) -> tuple[list[str], list[str]]:
    (tmp / "f").write_text("x")
    return ["run", *TINY, "--out", str(tmp / "f")], [f"--out: {tmp / 'f'} is an existing file", "choose another --out"]


def out_below_a_file(tiny_run: Path, tmp: Path) -> tuple[list[str], list[str]]:
    (tmp / "f").write_text("x")
    out = tmp / "f" / "run"
    return ["run", *TINY, "--out", str(out)], [f"--out: {out} lies below {tmp / 'f'}, which is a file"]


def out_unwritable(tiny_run: Path, tmp: Path) -> tuple[list[str], list[str]]:
    out = unwritable_folder(tmp) / "banel-run"
    return ["run", *TINY, "--out", str(out)], [f"--out: {out} cannot be written", "choose another --out"]


def ledger_not_sqlite(tiny_run: Path, tmp: Path) -> tuple[list[str], list[str]]:
    (tmp / "bad.sqlite").write_text("these are my notes, not a ledger\n")
    argv = ["run", *TINY, "--out", str(tmp / "run"), "--set", f"oracle.ledger={tmp / 'bad.sqlite'}"]
    return argv, [f"oracle.ledger: {tmp / 'bad.sqlite'} is not an SQLite ledger", "restore the ledger from a copy"]


def ledger_is_a_folder(tiny_run: Path, tmp: Path) -> tuple[list[str], list[str]]:
    argv = ["run", *TINY, "--out", str(tmp / "run"), "--set", f"oracle.ledger={tmp}"]
    return argv, [f"oracle.ledger: {tmp} is a folder", "must name a file"]


def ledger_below_a_file(tiny_run: Path, tmp: Path) -> tuple[list[str], list[str]]:
    (tmp / "f").write_text("x")
    argv = ["run", *TINY, "--out", str(tmp / "run"), "--set", f"oracle.ledger={tmp / 'f' / 'l.sqlite'}"]
    return argv, [f"oracle.ledger: {tmp / 'f'} is an existing file", "choose another oracle.ledger"]


def ledger_malformed(tiny_run: Path, tmp: Path) -> tuple[list[str], list[str]]:
    out = resumable(tiny_run, tmp)
    for name in ("ledger.sqlite-wal", "ledger.sqlite-shm"):
        (out / name).unlink(missing_ok=True)
    ledger = out / "ledger.sqlite"
    ledger.write_bytes(b"SQLite format 3\x00" + b"\xa5" * 4080)  # the right header over garbage pages
    return ["resume", str(out), "--quiet"], [f"the ledger {ledger} cannot be used", "restore it from a copy"]


def ledger_of_a_run_not_sqlite(tiny_run: Path, tmp: Path) -> tuple[list[str], list[str]]:
    out = resumable(tiny_run, tmp)
    (out / "ledger.sqlite").write_bytes(os.urandom(4096))
    return ["resume", str(out), "--quiet"], [f"the run's ledger: {out / 'ledger.sqlite'} is not an SQLite ledger"]


def gzip_with_garbage_inside(tiny_run: Path, tmp: Path) -> tuple[list[str], list[str]]:
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-labels-idx1-ubyte"):
        (tmp / f"{name}.gz").write_bytes(gzip.compress(struct.pack(">II", 2049, 0)))
    bad = tmp / "t10k-images-idx3-ubyte.gz"
    bad.write_bytes(gzip.compress(b"\0" * 64)[:10] + b"\xff" * 64)  # a valid gzip header over a broken stream
    argv = ["run", "mnist", "--out", str(tmp / "run"), "--quiet", "--set", f"task_options.data_dir={tmp}"]
    return argv, [f"{bad}: corrupt gzip data", "replace it with the original gzipped IDX file"]


def config_file(name: str, content: bytes, words: list[str]) -> Callable[[Path, Path], tuple[list[str], list[str]]]:
    def setup(tiny_run: Path, tmp: Path) -> tuple[list[str], list[str]]:
        (tmp / name).write_bytes(content)
        return ["run", *TINY, "--out", str(tmp / "run"), "--config", str(tmp / name)], [
            f"config file {tmp / name}",
            *words,
        ]

    return setup


def device(name: str, available: Callable[[], bool]) -> Callable[[Path, Path], tuple[list[str], list[str]]]:
    def setup(tiny_run: Path, tmp: Path) -> tuple[list[str], list[str]]:
        if available():
            pytest.skip(f"this machine has {name}")
        return ["run", *TINY, "--out", str(tmp / "run"), "--device", name], [f"device is '{name}', but", "use cpu"]

    return setup


def occupied(tiny_run: Path, tmp: Path) -> tuple[list[str], list[str]]:
    out = resumable(tiny_run, tmp)
    return ["run", *TINY, "--out", str(out)], [f"{out} already holds a run", f"`banel resume {out}` continues it"]


def killed_before_its_first_row(tiny_run: Path, tmp: Path) -> tuple[list[str], list[str]]:
    out = tmp / "run"
    out.mkdir()
    (out / "config.json").write_text((tiny_run / "config.json").read_text())
    words = [f"{out} holds a run killed before its first round", f"`banel resume {out}`", "does not overwrite it"]
    return ["run", *TINY, "--out", str(out), "--seed", "5"], words


def locked(tiny_run: Path, tmp: Path) -> tuple[list[str], list[str]]:
    out = tmp / "run"
    out.mkdir()
    handle = open(out / "run.lock", "a")  # noqa: SIM115 - another process's lock, released when it closes
    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    HELD.append(handle)
    return ["run", *TINY, "--out", str(out)], [f"{out} is in use by another process", f"`banel resume {out}`"]


def run_config_not_json(tiny_run: Path, tmp: Path) -> tuple[list[str], list[str]]:
    out = resumable(tiny_run, tmp)
    (out / "config.json").write_bytes(b'{"run": ')
    return ["resume", str(out), "--quiet"], [f"{out / 'config.json'} is not valid JSON"]


CASES = {
    "out-is-a-file": out_is_a_file,
    "out-below-a-file": out_below_a_file,
    "out-unwritable": out_unwritable,
    "checkpoint-truncated": damaged_checkpoint(lambda raw: raw[: len(raw) // 2]),
    "checkpoint-random-bytes": damaged_checkpoint(lambda raw: os.urandom(len(raw))),
    "checkpoint-empty": damaged_checkpoint(lambda raw: b""),
    "checkpoint-wrong-type": damaged_checkpoint(tensor_bytes),
    "ledger-not-sqlite": ledger_not_sqlite,
    "ledger-is-a-folder": ledger_is_a_folder,
    "ledger-below-a-file": ledger_below_a_file,
    "ledger-malformed": ledger_malformed,
    "run-ledger-not-sqlite": ledger_of_a_run_not_sqlite,
    "gzip-garbage-inside": gzip_with_garbage_inside,
    "json-config-a-list": config_file("c.json", b"[1, 2]", ["holds a list at its top level", "table of settings"]),
    "json-config-invalid": config_file("c.json", b"{nre_budget: 3}", ["is not valid JSON"]),
    "toml-config-invalid": config_file("c.toml", b"nre_budget = = 3", ["is not valid TOML"]),
    "config-not-utf8": config_file("c.toml", "m = 'é'".encode("latin-1"), ["is not UTF-8 text", "save it as UTF-8"]),
    "device-mps": device("mps", torch.backends.mps.is_available),
    "device-cuda": device("cuda", torch.cuda.is_available),
    "occupied-folder": occupied,
    "killed-before-first-row": killed_before_its_first_row,
    "folder-in-use": locked,
    "run-config-not-json": run_config_not_json,
}


@pytest.mark.parametrize("case", CASES)
def test_a_user_error_is_one_line_naming_the_file_or_setting_and_the_remedy(case, tiny_run, tmp_path, capsys):
    argv, words = CASES[case](tiny_run, tmp_path)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file() and p.name != "run.lock"}
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("banel: error: "), err
    for word in words:
        assert word in lines[0], (word, lines[0])
    after = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file() and p.name != "run.lock"}
    assert after == before  # nothing the user had was changed: no config.json overwritten, no ledger touched
    while HELD:
        HELD.pop().close()


@pytest.mark.parametrize("started", [True, False])
def test_ctrl_c_exits_130_with_one_line_saying_how_to_continue(started, tmp_path, capsys, monkeypatch):
    def interrupt(self, *args, **kwargs):
        raise KeyboardInterrupt

    if started:  # in a round: the folder holds a run to resume
        monkeypatch.setattr(runner.Run, "end_round", interrupt)
    else:  # while the prior loads: nothing was written, nothing paid
        monkeypatch.setattr(runner.Run, "__init__", interrupt)
    out = tmp_path / "run"
    capsys.readouterr()
    assert main(["run", *TINY, "--out", str(out)]) == 130
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    if started:
        assert err.strip() == (
            f"banel: error: interrupted; `banel resume {out}` continues it from its last finished round, paying "
            "for nothing twice"
        )
        assert json.loads((out / "config.json").read_text())["run"]["task"] == "banel.testing:tiny"
    else:
        assert err.strip() == "banel: error: interrupted; nothing was paid yet; run the same command again"


def _raising_factory(options, cache):
    raise KeyError("weights_path")


def test_a_task_factory_that_raises_is_one_line_naming_the_factory(tmp_path, capsys, monkeypatch):
    import dataclasses
    import sys
    import types

    from banel import task_factory

    module = types.ModuleType("raising_task")
    module.make = dataclasses.replace(task_factory("raises")(_raising_factory), path="raising_task:make")
    monkeypatch.setitem(sys.modules, "raising_task", module)
    out = tmp_path / "run"
    assert main(["run", "raising_task:make", "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err == "banel: error: the task factory raising_task:make raised KeyError: 'weights_path'\n"
    assert not out.exists()
    # a factory's own ValueError already says what is wrong: it is shown as it is
    module.make = task_factory("bad")(lambda options, cache: (_ for _ in ()).throw(ValueError("no data in X")))
    assert main(["run", "raising_task:make", "--out", str(out), "--quiet"]) == 2
    assert capsys.readouterr().err == "banel: error: no data in X\n"
