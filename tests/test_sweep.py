"""Sweeps: the seeds x methods grid, its resumption, and its process and Ray backends."""

import json

import pytest

from banel.cache import FolderInUse, folder_lock
from banel.cli import main
from banel.report.table import collect, write_report
from banel.runner import Run, parse_config
from banel.sweep import RunSpec, compare, parse_methods, parse_seeds, run_one, sweep
from banel.testing import TinyOptions, TinyTask, tiny

TINY = "banel.testing:tiny"
BASE = {
    "nre_budget": 60,
    "m": 20,
    "banel": {"negative_epochs": 3, "generator_epochs": 2},
    "eval": {"drift_samples": 200},
    "task_options": {"kind": "categorical"},
}


def test_parse_seeds():
    assert parse_seeds("0-4") == [0, 1, 2, 3, 4]
    assert parse_seeds("0,3,7") == [0, 3, 7]
    assert parse_seeds("0-2, 9") == [0, 1, 2, 9]
    for bad in ("4-2", "a", "1,1", "-3", "0-", ""):
        with pytest.raises(ValueError, match="seeds"):
            parse_seeds(bad)


def test_parse_methods_takes_names_and_import_paths():
    assert parse_methods("banel,rnd") == ["banel", "rnd"]
    all_methods = ["banel", "reinforce", "negrl", "npo", "gfn", "rnd", "count", "diverse", "temperature", "base"]
    assert parse_methods("all") == all_methods
    assert parse_methods("base,banel.baselines.negrl:NegativeRL") == ["base", "banel.baselines.negrl:NegativeRL"]
    with pytest.raises(ValueError, match="unknown method 'ppo'; built-in: banel"):
        parse_methods("banel,ppo")
    with pytest.raises(ValueError, match="cannot import 'nowhere'"):
        parse_methods("nowhere:Method")


def test_compare_writes_one_reproducible_folder_per_run_and_resumes(tmp_path):
    done = []
    paths = compare(TINY, ["base", "negrl"], [0, 1], BASE, tmp_path, jobs=1, on_done=done.append)
    assert sorted((d["method"], d["seed"]) for d in done) == [("base", 0), ("base", 1), ("negrl", 0), ("negrl", 1)]
    # 60 samples asked per run; repeats of a sample already paid for are answered by the ledger for free.
    assert all(d["queries"] == 60 and 0 < d["nre_used"] <= 60 for d in done)
    assert [p.name for p in paths] == ["table.md", "table.csv", "compare.png"]
    table = paths[0].read_text()
    assert "| base | " in table and "(1.00×)" in table
    # A second call finds every run finished and runs nothing.
    again = []
    compare(TINY, ["base", "negrl"], [0, 1], BASE, tmp_path, jobs=1, on_done=again.append)
    assert again == []
    # A method reads only its own table: BaNEL's kappa does not touch a finished baseline; the budget does.
    compare(TINY, ["base", "negrl"], [0, 1], {**BASE, "banel": {"kappa": 3.0}}, tmp_path, jobs=1)
    with pytest.raises(ValueError, match=r"base.seed0 holds a finished run with other settings \(nre_budget differ"):
        compare(TINY, ["base", "negrl"], [0, 1], {**BASE, "nre_budget": 80}, tmp_path, jobs=1)
    with pytest.raises(ValueError, match=r"negrl.seed0 holds a finished run with other settings \(negrl.lr differ"):
        compare(TINY, ["negrl"], [0], {**BASE, "negrl": {"lr": 0.1}}, tmp_path, jobs=1)
    # A run made by a banel that had a setting this one deleted is refused, and the message says so.
    saved = tmp_path / "base" / "seed1" / "config.json"
    record = json.loads(saved.read_text())
    record["run"]["patience"] = 3
    saved.write_text(json.dumps(record))
    with pytest.raises(ValueError, match=r"base.seed1 holds a finished run made by another banel version.*patience"):
        compare(TINY, ["base"], [0, 1], BASE, tmp_path, jobs=1)
    del record["run"]["patience"]
    saved.write_text(json.dumps(record))
    # `banel report` rebuilds the same table from the folders alone.
    paths[0].unlink()
    assert write_report(tmp_path)[0].read_text() == table
    # Every run is reproducible from its config.json.
    folder = tmp_path / "negrl" / "seed1"
    config = parse_config(json.loads((folder / "config.json").read_text())["run"])
    assert config.seed == 1 and config.m == 20
    run = Run(config, tiny(config.task_options, None), tmp_path / "rerun")
    run.start()
    rerun = run.execute()
    saved = json.loads((folder / "summary.json").read_text())
    for key in ("best_success_rate", "final_success_rate", "drift_nll", "kl_to_prior", "successes_found"):
        assert rerun[key] == saved[key]


def test_cli_compare_and_report(tmp_path, capsys):
    out = tmp_path / "cmp"
    argv = ["compare", TINY, "--methods", "base,temperature", "--seeds", "0,2", "--budget", "40"]
    argv += ["--set", "m=20", "--set", "temperature.temperature=2", "--jobs", "1"]
    assert main([*argv, "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "[4/4]" in text and "| temperature |" in text
    config = json.loads((out / "temperature" / "seed2" / "config.json").read_text())["run"]
    assert config["temperature"] == {"temperature": 2.0} and config["nre_budget"] == 40
    assert main(["report", str(out)]) == 0
    assert main(["compare", TINY, "--seeds", "3-1", "--out", str(out)]) == 2
    assert "seeds" in capsys.readouterr().err
    assert main(["compare", TINY, "--set", "seed=4", "--out", str(out)]) == 2
    assert main(["compare", TINY, "--set", "rnd.hiden=3", "--out", str(tmp_path / "typo")]) == 2
    assert "rnd.hiden" in capsys.readouterr().err and not (tmp_path / "typo").exists()


def test_cli_compare_applies_the_task_default_settings_like_banel_run(tmp_path):
    out = tmp_path / "cmp"
    argv = ["compare", "toy1d", "--methods", "banel", "--seeds", "0", "--budget", "40", "--set", "m=20"]
    argv += ["--set", "banel.negative_epochs=1", "--set", "banel.generator_epochs=1", "--jobs", "1"]
    argv += ["--set", "task_options.prior_training.samples=500", "--set", "task_options.prior_training.epochs=1"]
    assert main([*argv, "--set", "banel.filter_factor=3", "--out", str(out)]) == 0
    config = json.loads((out / "banel" / "seed0" / "config.json").read_text())["run"]
    assert config["banel"]["kappa"] == 4.0 and config["banel"]["filter_factor"] == 3  # toy default, then --set


def test_a_factory_or_task_object_runs_in_process_and_needs_a_path_for_workers(tmp_path):
    done = []
    task = TinyTask(TinyOptions(kind="categorical"))
    settings = {k: v for k, v in BASE.items() if k != "task_options"}
    compare(task, ["base"], [0, 1], settings, tmp_path / "object", jobs=1, on_done=done.append)
    assert [d["task"] for d in done] == ["tiny", "tiny"]
    compare(tiny, ["base"], [0], BASE, tmp_path / "factory", jobs=1)  # importable: its path is banel.testing:tiny
    assert json.loads((tmp_path / "factory" / "base" / "seed0" / "config.json").read_text())["run"]["task"] == TINY
    with pytest.raises(ValueError, match="has no import path, so worker processes cannot rebuild it"):
        sweep(task, ["base"], [0], settings, tmp_path / "x", jobs=2)


def test_a_worker_that_cannot_see_the_shared_storage_fails_clearly(tmp_path):
    config = {"task": TINY, "method": "base", "nre_budget": 20, "m": 20}
    spec = RunSpec(config, str(tmp_path / "run"), str(tmp_path), None, markers=(str(tmp_path / "missing"),))
    with pytest.raises(RuntimeError, match="must be on one filesystem, mounted at the same path on every node"):
        run_one(spec)
    assert not (tmp_path / "run").exists()


class Crash(Exception):
    """Stands in for a kill."""


def test_an_interrupted_comparison_resumes_its_run_with_the_paid_evaluations(tmp_path, monkeypatch, capsys):
    reference = []
    compare(TINY, ["banel"], [0], BASE, tmp_path / "ref", jobs=1, on_done=reference.append)
    with pytest.raises(ValueError, match=r"finished run with other settings \(banel.kappa differ"):
        compare(TINY, ["banel"], [0], {**BASE, "banel": {**BASE["banel"], "kappa": 3.0}}, tmp_path / "ref", jobs=1)

    end_round = Run.end_round

    def crash_in_round_1(self, *args, **kwargs):
        end_round(self, *args, **kwargs)
        if self.round_index == 2:  # round 1's history row is written and its evaluations paid, no checkpoint
            raise Crash

    monkeypatch.setattr(Run, "end_round", crash_in_round_1)
    with pytest.raises(Crash):
        compare(TINY, ["banel"], [0], BASE, tmp_path / "cmp", jobs=1)
    monkeypatch.setattr(Run, "end_round", end_round)
    folder = tmp_path / "cmp" / "banel" / "seed0"
    run_id = json.loads((folder / "config.json").read_text())["run_id"]

    # Other settings in the same folder: refused, nothing touched.
    with pytest.raises(ValueError, match="other settings .*nre_budget"):
        compare(TINY, ["banel"], [0], {**BASE, "nre_budget": 80}, tmp_path / "cmp", jobs=1)
    assert json.loads((folder / "config.json").read_text())["run_id"] == run_id

    # Another process working on the folder (here: holding its lock) keeps everyone else out of it.
    with folder_lock(folder):
        with pytest.raises(FolderInUse, match="in use by another process"):
            compare(TINY, ["banel"], [0], BASE, tmp_path / "cmp", jobs=1)
        assert main(["resume", str(folder), "--quiet", "--no-plot"]) == 2
        assert "in use by another process" in capsys.readouterr().err
    assert not (folder / "summary.json").exists()

    done = []
    compare(TINY, ["banel"], [0], BASE, tmp_path / "cmp", jobs=1, on_done=done.append)
    assert json.loads((folder / "config.json").read_text())["run_id"] == run_id  # the same run, continued
    keep = ("best_success_rate", "final_success_rate", "nre_used", "queries", "successes_found", "drift_nll")
    assert {k: done[0][k] for k in keep} == {k: reference[0][k] for k in keep}
    history = [json.loads(line) for line in (folder / "history.jsonl").read_text().splitlines()]
    assert [row["round"] for row in history] == [-1, 0, 1, 2]


@pytest.mark.slow
def test_process_and_ray_backends_write_identical_tables(tmp_path, cache):
    pytest.importorskip("ray")
    methods, seeds = ["banel", "rnd", "base"], [0, 1]
    settings = {**BASE, "rnd": {"hidden": 32, "layers": 2}}
    compare(TINY, methods, seeds, settings, tmp_path / "process", jobs=2)
    compare(TINY, methods, seeds, settings, tmp_path / "ray", jobs=2, backend="ray")
    assert (tmp_path / "ray" / "table.md").read_text() == (tmp_path / "process" / "table.md").read_text()
    assert (tmp_path / "ray" / "table.csv").read_text() == (tmp_path / "process" / "table.csv").read_text()
    assert len(collect(tmp_path / "ray")) == 6


def test_variants_are_labelled_rows_of_one_folder_sharing_one_prior_estimate(tmp_path, capsys):
    out = tmp_path / "cmp"
    argv = ["compare", TINY, "--methods", "temperature", "--seeds", "0,1", "--budget", "40", "--set", "m=20"]
    argv += ["--variant", "hot=method=temperature,temperature.temperature=2", "--jobs", "1", "--out", str(out)]
    argv += ["--set", "task_options.exact=false", "--prior-successes", "20"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    lines = [line for line in text.splitlines() if "prior's success rate" in line]
    assert lines[0].endswith("estimating the prior's success rate once for the comparison (exact, or prior samples "
                             "until 20 successes or 1,000,000 draws)...")  # fmt: skip
    assert lines[1].startswith("banel compare: ") and " in " in lines[1] and " successes in " in lines[1]
    assert "[4/4]" in text and text.index(lines[1]) < text.index("[1/4]")  # before and after, before any run
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["hot", "temperature"]
    assert json.loads((out / "hot" / "seed1" / "config.json").read_text())["run"]["temperature"] == {"temperature": 2.0}
    assert [p.name for p in out.glob("prior.json")] == ["prior.json"]  # one estimate for every row
    table = (out / "table.md").read_text()
    assert "| temperature [temperature.temperature=1.2] |" in table
    assert "| temperature [temperature.temperature=2.0] |" in table
    # the variant is part of the comparison: the same command again runs nothing
    assert main(argv) == 0 and "[1/" not in capsys.readouterr().out


def test_bad_variants_are_one_line_errors_before_anything_runs(tmp_path, capsys):
    out = tmp_path / "cmp"
    base = ["compare", TINY, "--methods", "base", "--seeds", "0", "--out", str(out), "--variant"]
    cases = [
        ("paper", "--variant must look like NAME=KEY=VALUE[,KEY=VALUE...]"),
        ("a/b=m=3", "--variant must look like NAME=KEY=VALUE"),
        ("s=seed=3", "--variant s: seed cannot differ within one comparison"),
        ("base=method=base,m=10", "--variant names a folder a method or another variant already uses: base"),
        ("x=method=magic", "unknown method 'magic'"),
        ("x=banel.kapa=2", "unknown setting(s) banel.kapa"),
    ]
    for variant, message in cases:
        assert main([*base, variant]) == 2, variant
        assert message in capsys.readouterr().err, variant
        assert not out.exists(), variant
