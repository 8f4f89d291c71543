"""What each of BaNEL's less-used settings does, observed on an enumerable space: where p_phi starts
(`negative_init`), what it trains on (`negative_data`), the ratio's numerator (`numerator`), soft selection in a
run (`selection=importance`) and cheaper intermediate evaluations (`eval.bf16_curves`)."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

import banel.algorithm
from _tiny import run_tiny
from banel.algorithm import Banel, BanelConfig
from banel.methods import Context
from banel.models.categorical import CategoricalModel
from banel.models.protocol import FitConfig
from banel.oracle import BudgetedOracle
from banel.testing import ScriptedOracle, enumerate_sequences

NEGATIVE_EPOCHS, GENERATOR_EPOCHS, M, ROUNDS = 7, 3, 6, 4


class RecordingModel(CategoricalModel):
    """A categorical table whose clones share one log of every `fit`: the logits it started from, its data."""

    def __init__(self, support, logits=None, log=None):
        super().__init__(support, logits)
        self.log = [] if log is None else log

    def clone(self):
        return RecordingModel(self.support, self.logits, self.log)

    def fit(self, x, epochs, seed, config=None):
        self.log.append({"epochs": epochs, "start": self.logits.detach().clone(), "data": Counter(x.keys())})
        losses = super().fit(x, epochs, seed, config)
        self.log[-1]["end"] = self.logits.detach().clone()
        return losses


def _run(**options):
    """ROUNDS rounds of BaNEL on 16 sequences; the prior, each round's record and p_phi's fits in order."""
    support = enumerate_sequences(4, 2, end_token=False)
    gen = torch.Generator().manual_seed(0)
    prior = RecordingModel(support, torch.randn(16, generator=gen, dtype=torch.float64) * 1.5)
    config = BanelConfig(
        filter_factor=3,
        negative_epochs=NEGATIVE_EPOCHS,
        generator_epochs=GENERATOR_EPOCHS,
        negative_fit=FitConfig(lr=0.2),
        **options,
    )
    method = Banel(prior, config, Context(m=M, support=support))
    oracle = BudgetedOracle(ScriptedOracle([[3, 3]]), M * ROUNDS)
    records = [method.round(oracle, i) for i in range(ROUNDS)]
    negative_fits = [f for f in prior.log if f["epochs"] == NEGATIVE_EPOCHS]
    assert len(negative_fits) == ROUNDS  # one fit of p_phi per round
    return prior, records, negative_fits


def _failures(record) -> Counter:
    return Counter(record.samples[record.rewards == 0].keys())


def test_negative_init_sets_where_each_round_starts_p_phi():
    prior, _, fits = _run(negative_init="base")
    assert all(torch.equal(f["start"], prior.logits) for f in fits)  # the paper: from p_theta every round

    _, _, fits = _run(negative_init="continue")
    assert torch.equal(fits[0]["start"], prior.logits)  # round 0 has no previous p_phi
    for before, fit in zip(fits, fits[1:], strict=False):
        assert torch.equal(fit["start"], before["end"])  # last round's weights, trained on
        assert not torch.equal(fit["start"], prior.logits)

    _, _, fits = _run(negative_init="scratch")
    assert all(torch.equal(f["start"], torch.zeros(16, dtype=torch.float64)) for f in fits)  # uniform table


def test_negative_data_all_trains_p_phi_on_every_failure_seen():
    _, records, fits = _run(negative_data="round")
    assert [f["data"] for f in fits] == [_failures(r) for r in records]

    _, records, fits = _run(negative_data="all")
    seen = Counter()
    for record, fit in zip(records, fits, strict=True):
        seen += _failures(record)
        assert fit["data"] == seen
    assert fits[-1]["data"].total() > _failures(records[-1]).total()  # more than this round's alone


@pytest.mark.parametrize("numerator", ["base", "generator"])
def test_numerator_is_the_prior_or_the_previous_generator(monkeypatch, numerator):
    seen = []
    ratio_scores = banel.algorithm.ratio_scores

    def recording(x, top, negative, kappa, normalise):
        seen.append(top.log_prob(top.support))
        return ratio_scores(x, top, negative, kappa, normalise)

    monkeypatch.setattr(banel.algorithm, "ratio_scores", recording)
    support = enumerate_sequences(4, 2, end_token=False)
    prior = CategoricalModel(support, torch.randn(16, generator=torch.Generator().manual_seed(0), dtype=torch.float64))
    config = BanelConfig(filter_factor=3, negative_epochs=5, generator_epochs=5, numerator=numerator)
    method = Banel(prior, config, Context(m=M, support=support))
    oracle = BudgetedOracle(ScriptedOracle([[3, 3]]), M * ROUNDS)
    generators = []
    for i in range(ROUNDS):
        generators.append(method.generator.log_prob(support))  # the generator this round samples from
        method.round(oracle, i)
    assert len(seen) == ROUNDS - 1  # round 0 has no p_phi to rank by
    for i, top in enumerate(seen, start=1):
        want = prior.log_prob(support) if numerator == "base" else generators[i]
        torch.testing.assert_close(top, want, rtol=0, atol=0)
    # from round 2 on the generator has moved off the prior, so the two settings rank by different numbers
    assert not torch.equal(generators[2], prior.log_prob(support))


def test_importance_selection_in_a_run_keeps_some_candidates_below_the_cut(tmp_path):
    # top_m keeps the m highest ratios: every kept one at or above every rejected one. Importance resampling
    # draws m in proportion to the ratio: lower ratios are kept too, and the run records it.
    settings = {"m": 10, "seed": 1, "nre_budget": 50, "banel": {"negative_epochs": 3, "generator_epochs": 2}}
    _, _, top = run_tiny(tmp_path / "top", "banel", **settings)
    settings["banel"] = {**settings["banel"], "selection": "importance"}
    _, summary, soft = run_tiny(tmp_path / "soft", "banel", **settings)
    ranked = [r for r in top if r.get("log_ratio_rejected")]
    assert ranked and all(r["log_ratio_kept"][0] >= r["log_ratio_rejected"][-1] for r in ranked)
    ranked = [r for r in soft if r.get("log_ratio_rejected")]
    assert len(ranked) == 4 and summary["nre_used"] <= 50
    assert all(r["kept"] == 10 and r["candidates"] == 20 for r in ranked)
    overlap = [r["log_ratio_kept"][0] < r["log_ratio_rejected"][-1] for r in ranked]
    assert sum(overlap) >= 3, [(r["log_ratio_kept"], r["log_ratio_rejected"]) for r in ranked]


def test_bf16_curves_changes_intermediate_evaluations_only(tmp_path):
    settings = {"m": 10, "seed": 2, "nre_budget": 40, "banel": {"negative_epochs": 3, "generator_epochs": 2}}
    _, _, full = run_tiny(tmp_path / "full", "banel", **settings)
    _, bf16_summary, bf16 = run_tiny(tmp_path / "bf16", "banel", **{**settings, "eval": {"bf16_curves": True}})
    # what the method learned is the same: evaluation never feeds back into training
    assert [r["nre_used"] for r in bf16] == [r["nre_used"] for r in full]
    assert [r.get("generator_loss") for r in bf16] == [r.get("generator_loss") for r in full]
    # the prior's and the last round's rates are computed in full, so they agree to the bit
    for i in (0, -1):
        assert bf16[i]["success_rate"] == full[i]["success_rate"]
    # the rounds between are bfloat16 approximations: marked, not exact, and close to but not the full rate
    middle = list(zip(full[1:-1], bf16[1:-1], strict=True))
    assert middle and all(b["success_rate"]["approximation"] == "bf16" for _, b in middle)
    assert not any(b["success_rate"]["exact"] for _, b in middle)
    differences = [abs(b["success_rate"]["rate"] / f["success_rate"]["rate"] - 1) for f, b in middle]
    assert max(differences) > 0  # the autocast really ran
    assert max(differences) < 0.1, differences
    # the best round is chosen on the cheap points, and its rate is then measured in full
    chosen = next(r for r in full if r["round"] == bf16_summary["best_round"])
    assert bf16_summary["best_success_rate"] == chosen["success_rate"]["rate"]
