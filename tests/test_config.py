import pytest

from banel.config import BanelConfig, RunConfig, from_dict, merge, parse_overrides


def test_from_dict_builds_nested_configs_and_coerces_strings():
    cfg = from_dict(RunConfig, {"seed": "3", "banel": {"kappa": "2", "length_normalise": "false", "algorithm": "1"}})
    assert cfg.seed == 3 and cfg.banel.kappa == 2.0 and cfg.banel.length_normalise is False
    assert cfg.banel.algorithm == 1
    assert cfg.rounds == 7500 // 250


def test_unknown_keys_are_errors_listing_allowed_ones():
    with pytest.raises(ValueError, match=r"unknown setting\(s\) banel.kapa; allowed in banel: .*kappa"):
        from_dict(RunConfig, {"banel": {"kapa": 2}})


def test_wrong_types_and_values_name_the_field():
    with pytest.raises(ValueError, match=r"banel.m must be an integer; got 'ten'"):
        from_dict(RunConfig, {"banel": {"m": "ten"}})
    with pytest.raises(ValueError, match=r"banel.numerator must be one of 'base', 'generator'"):
        from_dict(RunConfig, {"banel": {"numerator": "prior"}})
    with pytest.raises(ValueError, match=r"nre_budget \(100\) must be >= banel.m \(250\)"):
        RunConfig(nre_budget=100)
    with pytest.raises(ValueError, match=r"run.device"):
        RunConfig(device="tpu")
    with pytest.raises(ValueError, match=r"banel.negative_epochs must be >= 0"):
        BanelConfig(negative_epochs=-1)


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
