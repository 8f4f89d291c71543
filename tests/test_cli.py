import json

import pytest

from banel.cli import main
from banel.config import RunConfig, settings
from banel.methods import BUILTIN as METHODS
from banel.methods import resolve_method
from banel.oracle import Ledger
from banel.rundir import read_history
from banel.runner import SUMMARY_FIELDS
from banel.tasks import BUILTIN as TASKS
from banel.tasks import resolve_task

FAST = [
    "--set",
    "task_options.prior_training.samples=2000",
    "--set",
    "task_options.prior_training.epochs=1",
    "--set",
    "m=50",
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
    assert config["run"]["m"] == 50 and config["run"]["seed"] == 2 and config["run"]["banel"]["kappa"] == 4.0
    for name in ("success.png", "densities.png"):
        assert (out / name).stat().st_size > 1000
    assert len(list((out / "snapshots").glob("round_*.npz"))) == 4
    assert (out / "generator-best.pt").is_file() and (out / "generator-final.pt").is_file()


def test_same_seed_same_result(tmp_path, cache):
    for name in ("a", "b"):
        assert main(["run", "toy1d", "--out", str(tmp_path / name), "--no-plot", *FAST]) == 0
    a = json.loads((tmp_path / "a" / "summary.json").read_text())
    b = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert a["best_success_rate"] == b["best_success_rate"] and a["final_success_rate"] == b["final_success_rate"]


def test_bad_settings_exit_2_with_a_clear_message_before_any_folder_exists(tmp_path, capsys):
    cases = [
        (["--set", "banel.kappa=-1"], "banel.kappa must be >= 0"),
        (["--method", "magic"], "unknown method 'magic'"),
        (["--set", "banel.kapa=2"], "unknown setting(s) banel.kapa"),
        (["--threads", "0"], "--threads must be >= 1, got 0"),
        (["--set", "feasible_only=true"], "task 'toy1d' has none"),
        (["--set", "banel.negative_fit.lr=-1"], "banel.negative_fit.lr must be > 0, got -1\n"),
        (["--set", "task_options.prior_training.d_model=30"], "task_options.prior_training.d_model (30) must be"),
        (["--method", "rnd", "--set", "rnd.hiden=8"], "unknown setting(s) rnd.hiden; allowed in rnd:"),
        (["--method", "rnd", "--set", "rnd.kl_coef=-1"], "rnd.kl_coef must be >= 0"),
        (["--set", "banel.m=10"], "banel.m is now m"),
        (["--set", "method_options.hidden=8"], "method_options is now a table named after the method"),
    ]
    for k, (extra, message) in enumerate(cases):
        out = tmp_path / f"run{k}"
        assert main(["run", "toy1d", "--out", str(out), *extra]) == 2, extra
        assert message in capsys.readouterr().err, extra
        assert not out.exists(), extra  # validated before anything is written


def test_refuses_to_overwrite_a_run(tmp_path, cache, capsys):
    out = tmp_path / "run"
    assert main(["run", "toy1d", "--out", str(out), "--no-plot", *FAST]) == 0
    assert main(["run", "toy1d", "--out", str(out), *FAST]) == 2
    assert "already holds a run" in capsys.readouterr().err


def test_digits_defaults_apply_under_overrides():
    from banel.cli import _parser, build_config

    config = build_config(_parser().parse_args(["run", "digits"]))
    b = config.options
    assert (b.kappa, b.filter_factor, b.generator_epochs, b.reset_generator) == (2.0, 4, 3, False)
    assert (config.m, b.negative_epochs) == (250, 50)  # the paper's, untouched
    config = build_config(_parser().parse_args(["run", "digits", "--set", "banel.reset_generator=true"]))
    assert config.options.reset_generator is True and config.options.kappa == 2.0
    # a baseline on digits ignores BaNEL's defaults: its own table only
    config = build_config(_parser().parse_args(["run", "digits", "--method", "rnd"]))
    assert config.options == resolve_method("rnd").options()


def test_run_help_all_lists_every_setting_with_its_docstring(capsys):
    with pytest.raises(SystemExit):
        main(["run", "toy1d", "--help-all"])
    text = capsys.readouterr().out
    expected = [s for s in settings(RunConfig) if s.path not in ("options", "task_options")]
    for name in METHODS:
        spec = resolve_method(name)
        expected += settings(spec.options, f"{spec.name}.") if spec.options else []
    for name in TASKS:
        factory = resolve_task(name)[1]
        expected += settings(factory.options, "task_options.") if factory.options else []
    assert len(expected) > 100
    for s in expected:
        assert f"  {s.path} (" in text, s.path
        assert s.doc and s.doc.split()[0] in text, s.path  # every field has a docstring, and it is shown
    assert "banel.negative_fit.lr (float, default 0.001, > 0)" in text  # the bound, from the declaration
    assert "rnd.hidden (int, default 1024, >= 1)" in text


def test_help_of_a_user_task_and_method_by_import_path_lists_their_options(capsys):
    with pytest.raises(SystemExit):
        main(["run", "banel.testing:tiny", "--method", "banel.baselines.reinforce:Reinforce", "--help"])
    text = capsys.readouterr().out
    assert "task banel.testing:tiny: 3 tokens over 4 symbols" in text
    assert "task_options.delay (float, default 0.0, >= 0)" in text
    assert main(["run", "no_such_module:make", "--help"]) == 2
    assert "cannot import 'no_such_module'" in capsys.readouterr().err


def test_a_user_task_and_method_run_by_import_path(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["run", "banel.testing:tiny", "--method", "banel.baselines.reinforce:Reinforce", "--out", str(out)]
    assert main([*argv, "--budget", "30", "--set", "m=10", "--quiet", "--no-plot"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["task"] == "tiny" and summary["method"] == "reinforce" and summary["rounds"] == 3
    config = json.loads((out / "config.json").read_text())["run"]
    assert config["task"] == "banel.testing:tiny" and config["method"] == "banel.baselines.reinforce:Reinforce"
    assert config["reinforce"] == {"lr": 0.001, "grad_clip": 1.0}
    capsys.readouterr()
    assert main(["resume", str(out)]) == 2
    assert "already finished" in capsys.readouterr().err


def test_run_help_lists_the_run_the_chosen_method_and_the_task_only_and_names_help_all(capsys):
    with pytest.raises(SystemExit):
        main(["run", "toy1d", "--method", "rnd", "--help"])
    short = capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["run", "toy1d", "--help-all"])
    full = capsys.readouterr().out
    assert "rnd.hidden (int, default 1024, >= 1)" in short and "  nre_budget (" in short
    assert "task toy1d: 1D line" in short and "task_options.shipped (" in short
    assert "banel.kappa (" not in short and "task toy2d" not in short and "  task_options.resolution (" not in short
    assert short.rstrip().endswith(
        "these are the settings of method rnd and task toy1d only; --help-all lists every built-in method's and "
        "task's settings"
    )
    assert "--help-all" in short and len(short.splitlines()) < len(full.splitlines()) / 2
    with pytest.raises(SystemExit):
        main(["compare", "toy1d", "--methods", "banel,count", "--help"])
    text = capsys.readouterr().out
    assert "banel.kappa (" in text and "method 'count'" in text and "  rnd.hidden (" not in text


def test_default_folders_are_named_after_the_task_not_its_factory(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["run", "banel.testing:tiny", "--budget", "20", "--set", "m=10", "--quiet", "--no-plot"]) == 0
    assert "-> runs/tiny-banel-seed0" in capsys.readouterr().out
    assert (tmp_path / "runs" / "tiny-banel-seed0" / "summary.json").is_file()
    argv = ["compare", "banel.testing:tiny", "--methods", "base", "--seeds", "0", "--jobs", "1", "--budget", "20"]
    assert main([*argv, "--set", "m=10"]) == 0
    assert "-> runs/compare-tiny" in capsys.readouterr().out
    assert (tmp_path / "runs" / "compare-tiny" / "base" / "seed0" / "summary.json").is_file()
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["compare-tiny", "tiny-banel-seed0"]


def test_the_summary_says_which_rate_is_the_fresh_re_estimate(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["run", "banel.testing:tiny", "--budget", "30", "--set", "m=10", "--set", "task_options.exact=false"]
    assert main([*argv, "--quiet", "--no-plot", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["best_round"] == 2 and summary["rounds"] == 3  # the final generator is the best one
    assert summary["rate_sources"] == {
        "final_success_rate": "round 2's generator on its 10,000 evaluation samples",
        "selected_best_rate": "round 2's generator on its 10,000 evaluation samples, the maximum it was chosen on "
        "(biased upward)",
        "best_success_rate": "round 2's generator re-estimated on 10,000 fresh samples (selection-free: the number "
        "to report)",
    }
    printed = capsys.readouterr().out
    assert (
        f"final: round 2's generator, {summary['final_success_rate']:.3e} on its evaluation samples; the same "
        "generator as the best: the best's fresh re-estimate is the number to report"
    ) in printed
    exact = tmp_path / "exact"
    assert main([*argv[:-2], "--quiet", "--no-plot", "--out", str(exact)]) == 0
    rates = json.loads((exact / "summary.json").read_text())["rate_sources"]
    assert rates == {"final_success_rate": "exact", "selected_best_rate": "exact", "best_success_rate": "exact"}
    assert "\nfinal: " not in capsys.readouterr().out
