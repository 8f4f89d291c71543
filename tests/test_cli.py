import json

import pytest

from banel.cli import main
from banel.oracle import Ledger
from banel.runner import SUMMARY_FIELDS, read_history

FAST = [
    "--set",
    "task_options.prior_training.samples=2000",
    "--set",
    "task_options.prior_training.epochs=1",
    "--set",
    "banel.m=50",
    "--set",
    "banel.negative_epochs=3",
    "--set",
    "banel.generator_epochs=2",
    "--budget",
    "160",
    "--quiet",
]


def ledger_rows(path):
    with Ledger(path) as ledger:
        return ledger.rows()


def test_tasks_and_methods_list(capsys):
    assert main(["tasks"]) == 0
    out = capsys.readouterr().out
    assert "toy1d" in out and "toy2d" in out
    assert main(["methods"]) == 0
    assert "banel" in capsys.readouterr().out


def test_run_writes_the_run_folder(tmp_path, cache, capsys):
    out = tmp_path / "run"
    assert main(["run", "toy1d", "--seed", "2", "--out", str(out), *FAST]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert set(SUMMARY_FIELDS) <= set(summary)
    assert summary["task"] == "toy1d" and summary["method"] == "banel" and summary["seed"] == 2
    assert summary["nre_budget"] == 160 and summary["queries"] == 150  # 3 rounds of 50; 10 left unasked
    # repeats are answered from the ledger for free (oracle.dedupe, on by default): one row per NRE paid
    assert summary["nre_used"] <= 150 and summary["nre_used"] == len(ledger_rows(out / "ledger.sqlite"))
    assert summary["trained_on_successes"] is False
    assert summary["improvement"] == pytest.approx(summary["best_success_rate"] / summary["base_success_rate"])
    rows = read_history(out)
    assert [r["round"] for r in rows] == [-1, 0, 1, 2]
    assert rows[1]["tau"] is None and rows[2]["candidates"] == 100 and rows[2]["kept"] == 50
    assert all(r["nre_used"] + r["nre_left"] == 160 for r in rows)
    config = json.loads((out / "config.json").read_text())
    assert config["run"]["banel"]["m"] == 50 and config["run"]["seed"] == 2
    for name in ("success.png", "densities.png"):
        assert (out / name).stat().st_size > 1000
    assert len(list((out / "snapshots").glob("round_*.npz"))) == 4


def test_same_seed_same_result(tmp_path, cache):
    for name in ("a", "b"):
        assert main(["run", "toy1d", "--out", str(tmp_path / name), "--no-plot", *FAST]) == 0
    a = json.loads((tmp_path / "a" / "summary.json").read_text())
    b = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert a["best_success_rate"] == b["best_success_rate"] and a["final_success_rate"] == b["final_success_rate"]


def test_bad_settings_exit_2_with_a_clear_message(tmp_path, capsys):
    assert main(["run", "toy1d", "--set", "banel.kappa=-1", "--out", str(tmp_path / "x")]) == 2
    assert "banel.kappa must be >= 0" in capsys.readouterr().err
    assert main(["run", "toy1d", "--method", "magic", "--out", str(tmp_path / "y")]) == 2
    assert "unknown method 'magic'" in capsys.readouterr().err
    assert main(["run", "toy1d", "--set", "banel.kapa=2", "--out", str(tmp_path / "z")]) == 2
    assert "unknown setting(s) banel.kapa" in capsys.readouterr().err
    assert main(["run", "toy1d", "--threads", "0", "--out", str(tmp_path / "t")]) == 2
    assert "--threads must be >= 1, got 0" in capsys.readouterr().err
    assert main(["run", "toy1d", "--set", "banel.feasible_only=true", "--out", str(tmp_path / "f")]) == 2
    assert "task 'toy1d' has no feasibility check" in capsys.readouterr().err
    assert not (tmp_path / "f").exists()


def test_refuses_to_overwrite_a_run(tmp_path, cache, capsys):
    out = tmp_path / "run"
    assert main(["run", "toy1d", "--out", str(out), "--no-plot", *FAST]) == 0
    assert main(["run", "toy1d", "--out", str(out), *FAST]) == 2
    assert "already holds a run" in capsys.readouterr().err


def test_digits_defaults_apply_under_overrides():
    from banel.cli import _parser, build_config

    config = build_config(_parser().parse_args(["run", "digits"]))
    b = config.banel
    assert (b.kappa, b.filter_factor, b.generator_epochs, b.reset_generator) == (2.0, 4, 3, False)
    assert (b.m, b.negative_epochs) == (250, 50)  # the paper's, untouched
    config = build_config(_parser().parse_args(["run", "digits", "--set", "banel.reset_generator=true"]))
    assert config.banel.reset_generator is True and config.banel.kappa == 2.0
