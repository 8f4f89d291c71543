import pytest

from banel.algorithm import BanelConfig
from banel.config import RunConfig, SettingError, from_dict, merge, parse_overrides, settings
from banel.runner import config_dict, parse_config


def test_parse_config_builds_nested_configs_and_coerces_strings():
    cfg = parse_config({"seed": "3", "banel": {"kappa": "2", "length_normalise": "false", "algorithm": 1}})
    assert cfg.seed == 3 and cfg.options.kappa == 2.0 and cfg.options.length_normalise is False
    assert cfg.options.algorithm == 1 and isinstance(cfg.options, BanelConfig)
    assert cfg.rounds == 7500 // 250
    # config.json keeps the method's options under its table, and reads back to the same config
    assert parse_config(config_dict(cfg)) == cfg


def test_unknown_keys_are_errors_listing_allowed_ones():
    with pytest.raises(ValueError, match=r"unknown setting\(s\) banel.kapa; allowed in banel: .*kappa"):
        parse_config({"banel": {"kapa": 2}})
    with pytest.raises(ValueError, match=r"unknown setting seeed; allowed: .*seed"):
        parse_config({"seeed": 2})


def test_wrong_types_and_values_name_the_setting_as_written():
    with pytest.raises(SettingError, match=r"^m must be an integer; got 'ten'"):
        parse_config({"m": "ten"})
    with pytest.raises(ValueError, match=r"^banel.numerator must be one of 'base', 'generator'"):
        parse_config({"banel": {"numerator": "prior"}})
    with pytest.raises(ValueError, match=r"^nre_budget \(100\) must be >= m \(250\)"):
        RunConfig(nre_budget=100)
    with pytest.raises(ValueError, match=r"^device must be"):
        RunConfig(device="tpu")
    with pytest.raises(ValueError, match=r"^negative_epochs must be >= 0"):
        BanelConfig(negative_epochs=-1)
    with pytest.raises(ValueError, match=r"^banel.generator_fit.batch_size must be >= 1, got 0$"):
        parse_config({"banel": {"generator_fit": {"batch_size": 0}}})
    with pytest.raises(ValueError, match=r"^eval.confidence must be in \(0, 1\)"):
        from_dict(RunConfig, {"eval": {"confidence": 2}})
    # a baseline's table is validated even when another method runs (a task's defaults set banel.*)
    with pytest.raises(ValueError, match=r"^rnd.hidden must be >= 1"):
        parse_config({"method": "banel", "rnd": {"hidden": 0}})


def test_overrides_parse_json_values_into_nested_tables():
    got = parse_overrides(["banel.kappa=2", "seed=4", "task_options.prior_training.epochs=3", "method=banel"])
    assert got == {
        "banel": {"kappa": 2},
        "seed": 4,
        "task_options": {"prior_training": {"epochs": 3}},
        "method": "banel",
    }
    assert merge({"banel": {"m": 5, "kappa": 1}}, got)["banel"] == {"m": 5, "kappa": 2}
    with pytest.raises(ValueError, match="key=value"):
        parse_overrides(["banel.kappa"])


def test_the_doc_of_a_setting_is_the_string_under_its_field():
    docs = {s.path: s.doc for s in settings(BanelConfig)}
    assert docs["kappa"] == "Sharpness of the negative model in the ratio p_theta(x) / p_phi(x)^kappa (Eq. 5)."
    assert docs["distil_samples"].startswith("Free (never evaluated) draws of the filtered proposal")
    assert "\n" not in docs["distil_samples"]
