"""A ledger on a network filesystem is refused, unless oracle.network_filesystem locks it for one process
(issue 27): SQLite's WAL does not work across machines there."""

from __future__ import annotations

import sqlite3

import pytest

import banel.oracle.ledger as ledger_module
from banel.config import OracleConfig
from banel.oracle import Ledger, LedgerOracle
from banel.oracle.ledger import NetworkFilesystem, filesystem_type, network_type
from banel.sequences import Sequences


@pytest.fixture
def nfs(tmp_path, monkeypatch):
    """tmp_path/nfs mounted as NFS, tmp_path/nfs/local as ext4 inside it, tmp_path/with space as CIFS."""
    mounts = tmp_path / "mounts"
    mounts.write_text(
        "/dev/vda / ext4 rw 0 0\n"
        f"server:/export {tmp_path}/nfs nfs4 rw,relatime 0 0\n"
        f"/dev/vdb {tmp_path}/nfs/local ext4 rw 0 0\n"
        f"//nas/share {str(tmp_path).replace(' ', '_')}/with\\040space cifs rw 0 0\n"
        f"sshfs#me@host: {tmp_path}/ssh fuse.sshfs rw 0 0\n"
        f"/dev/sdc1 {tmp_path}/ntfs fuseblk rw 0 0\n"
    )
    monkeypatch.setattr(ledger_module, "MOUNTS", mounts)
    return tmp_path / "nfs"


def test_the_filesystem_of_a_path_is_that_of_its_longest_mount_point(nfs, tmp_path):
    assert filesystem_type(nfs / "runs" / "a" / "ledger.sqlite") == "nfs4"  # not there yet: its folder's
    assert filesystem_type(nfs / "local" / "ledger.sqlite") == "ext4"
    assert filesystem_type(tmp_path / "nfsx" / "l.sqlite") == "ext4"  # a prefix of the name is not a mount
    assert filesystem_type(tmp_path / "with space" / "l.sqlite") == "cifs"
    assert [network_type(tmp_path / d / "l") for d in ("ssh", "ntfs", "nfs", "other")] == [
        "fuse.sshfs",
        None,
        "nfs4",
        None,
    ]


def test_a_ledger_on_a_network_filesystem_is_refused_with_what_to_do(nfs):
    path = nfs / "runs" / "ledger.sqlite"
    with pytest.raises(NetworkFilesystem) as err:
        Ledger(path)
    assert str(err.value) == (
        f"the ledger {path} is on a network filesystem (nfs4): SQLite's WAL, which the ledger relies on, does not "
        "work across machines there, so runs sharing it could pay twice or damage it. Put the ledger on a local "
        "disk (--set oracle.ledger=/local/path/ledger.sqlite), or set oracle.network_filesystem=true to let one "
        "process at a time use it there (docs/oracle.md)"
    )
    assert not path.exists()
    Ledger(nfs / "local" / "ledger.sqlite").close()  # a local disk mounted inside it is fine


def test_allowed_on_a_network_filesystem_the_ledger_is_one_processs_alone(nfs):
    path = nfs / "ledger.sqlite"
    oracle = LedgerOracle.open(
        lambda x: (x.tokens[:, 0] % 2).double(), 5, path, OracleConfig(network_filesystem=True), oracle_id="odd"
    )
    assert oracle(Sequences.from_lists([[1], [2], [1]])).tolist() == [1.0, 0.0, 1.0] and oracle.used == 2
    assert oracle.ledger._db.execute("PRAGMA locking_mode").fetchone()[0] == "exclusive"
    assert oracle.ledger._heartbeat is None  # nobody else can read the leases
    other = sqlite3.connect(path, timeout=0.1)
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        other.execute("SELECT COUNT(*) FROM evaluations").fetchone()
    oracle.close()
    assert other.execute("SELECT COUNT(*) FROM evaluations").fetchone()[0] == 2  # released when closed


def test_banel_run_with_a_ledger_on_a_network_filesystem_is_one_line(nfs, tmp_path, capsys):
    from banel.cli import main

    path = nfs / "ledger.sqlite"
    args = ["run", "banel.testing:tiny", "--out", str(tmp_path / "run"), "--budget", "20", "--quiet", "--no-plot"]
    assert main([*args, "--set", "m=10", "--set", f"oracle.ledger={path}", "--threads", "1"]) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith(f"banel: error: the ledger {path} is on a network filesystem (nfs4): ") and err.count("\n") == 1
    )
