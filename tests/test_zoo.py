"""The zoo (banel.tasks.zoo): rewards on hand-written strings, shipped priors pinning base rates, the contract."""

import numpy as np
import pytest
import torch

from banel.algorithm import PAPER, BanelConfig
from banel.config import from_dict
from banel.models.transformer import TransformerModel
from banel.runner import parse_config
from banel.tasks import make_task, resolve_task, zoo
from banel.tasks.protocol import ExactSuccess, Feasibility, Task

SHIPPED_RATES = {
    "grammar": 1.648836662885202e-04,
    "classifier": 2.9836486206511956e-04,
    "constrained": 2.1578736690080935e-04,
    "typical": 1.5036261202056627e-04,
}
"""Each shipped zoo prior's exact success rate (banel.tasks.zoo's docstring). Scoring a fixed prior differs across
CPUs only by float rounding, so the tolerance is tight; a retrained prior would differ in every digit."""
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("zoo-cache")


def strings(task, texts):
    return task.encode(np.array([[task.letters.index(c) for c in t] for t in texts]))


def test_grammar_rewards_balanced_strings_nested_deep_enough(cache):
    task = zoo.grammar({}, cache)
    good = ["((((ab))))ab", "a((((()))))b", "(((())))()ab"]
    shallow = ["((()))ab()ab", "()()()()()()", "abababababab"]
    broken = ["((((ab)))))(", ")(((())))(ab", "((((ab))))a("]
    r = task.reward(strings(task, good + shallow + broken)).tolist()
    assert r == [1.0] * 3 + [0.0] * 6
    assert task.decode(strings(task, good[:1])) == good[:1]


def test_grammar_with_depth_one_rewards_any_balanced_string(cache):
    task = zoo.grammar({"depth": 1}, cache)
    assert task.reward(strings(task, ["()abababab()", "abababababab", ")(ababababab"])).tolist() == [1.0, 0.0, 0.0]


def test_classifier_reward_is_its_hidden_network_above_the_threshold(cache):
    task = zoo.classifier({}, cache)
    x = np.random.default_rng(0).integers(0, 8, size=(500, 8))
    # the network by hand: sum over positions of the first layer's (position, token) rows, tanh, readout
    h = np.stack([sum(task.w1[t, row[t]] for t in range(8)) for row in x]) + task.b1
    expected = (np.tanh(h) @ task.w2 > task.options.threshold).astype(float)
    assert task.reward(task.encode(x)).numpy().tolist() == expected.tolist()
    best = task.successes()[:3]
    assert task.reward(best).tolist() == [1.0, 1.0, 1.0]


def test_constrained_feasibility_and_reward_on_hand_written_designs(cache):
    task = zoo.constrained({}, cache)
    assert task.forbidden == (6, 0)  # 'GA', the bigram nearest a 4% share of seed 0's data
    run, bigram, clean = "AAAB" + "CDEF", "BCDGAFEC", "ABABCDCD"
    feasible = task.feasible(strings(task, [run, bigram, clean])).tolist()
    assert feasible == [False, False, True]
    # a success is a feasible design above the threshold; the same tokens made infeasible score 0
    winner = task.decode(task.successes()[:1])[0]
    assert task.reward(strings(task, [winner])).tolist() == [1.0]
    score = task.score(strings(task, [winner]).tokens.numpy())[0]
    assert score > task.options.threshold
    below = zoo.constrained({"threshold": float(score) + 1e-6}, cache)
    assert below.reward(strings(below, [winner])).tolist() == [0.0]
    assert task.reward(strings(task, [run, bigram])).tolist() == [0.0, 0.0]


def test_typical_rewards_typical_strings_picked_by_the_hash(cache):
    task = zoo.typical({}, cache)
    successes = task.successes()
    tokens = successes.tokens.numpy()
    lp = zoo.chain_log_prob(task.start, task.transition, tokens)
    assert np.all(np.abs(lp + task.entropy) <= task.options.band)
    index = tokens @ (8 ** np.arange(7, -1, -1))
    assert np.all(zoo.hash_index(index, zoo.derive_seed(0, "hash")) % np.uint64(2000) == 0)
    assert task.reward(successes).tolist() == [1.0] * len(successes)
    # the most likely string under the chain is far from typical: never a success
    greedy = [int(task.start.argmax())]
    for _ in range(7):
        greedy.append(int(task.transition[greedy[-1]].argmax()))
    assert zoo.chain_log_prob(task.start, task.transition, np.array([greedy]))[0] > -task.entropy + 1
    assert task.reward(task.encode(np.array([greedy]))).tolist() == [0.0]


def test_malformed_samples_have_reward_zero_and_are_infeasible(cache):
    task = zoo.constrained({}, cache)
    from banel.sequences import Sequences

    x = Sequences(torch.tensor([[0, 1, 2, 3, 4, 5, 6, 9], [0, 1, 2, 3, 0, 0, 0, 0]]), torch.tensor([8, 4]))
    assert task.reward(x).tolist() == [0.0, 0.0]
    assert task.feasible(x).tolist() == [False, False]
    assert task.decode(x) == ["invalid", "invalid"]


def test_the_entropy_of_the_chain_is_its_mean_negative_log_likelihood():
    start, transition = zoo.markov_chain(3, 0.7, 1)
    x = zoo.index_tokens(np.arange(3**4), 3, 4)
    lp = zoo.chain_log_prob(start, transition, x)
    assert np.exp(lp).sum() == pytest.approx(1.0)
    assert zoo.chain_entropy(start, transition, 4) == pytest.approx(-(np.exp(lp) * lp).sum())


def test_listed_success_sets_match_the_reward_on_random_strings(cache):
    for name in zoo.TASKS:
        task = make_task(f"zoo-{name}", {}, cache)
        listed = {tuple(r) for r in task.successes().tokens.tolist()}
        x = np.random.default_rng(1).integers(0, task.vocab, size=(20_000, task.length))
        x[:50] = task.successes().tokens.numpy()[:50]  # include some successes
        r = task.reward(task.encode(x)).numpy()
        assert [tuple(row) in listed for row in x.tolist()] == (r == 1).tolist()


@pytest.mark.parametrize("name", zoo.TASKS)
def test_a_zoo_task_is_an_ordinary_task_with_a_shipped_prior_and_a_pinned_base_rate(name, tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("trained instead of loading the shipped prior")

    spec, factory = resolve_task(f"banel.tasks.zoo:{name}")
    assert spec == f"banel.tasks.zoo:{name}" and resolve_task(f"zoo-{name}")[1] is factory
    assert factory.defaults == {}  # no task-specific BaNEL settings: the zoo measures the defaults
    task = factory({}, tmp_path)
    assert isinstance(task, Task) and isinstance(task, ExactSuccess)
    assert isinstance(task, Feasibility) == (name == "constrained")
    task.successes()  # listed (and cached) before training is refused
    monkeypatch.setattr(TransformerModel, "fit", refuse)
    rate = task.exact_success_rate(task.prior())
    assert rate == pytest.approx(SHIPPED_RATES[name], rel=TOLERANCE)
    assert 1e-5 <= rate <= 1e-3


# -- the paper preset ----------------------------------------------------------------------------------------


def test_the_paper_configuration_is_its_settings_under_the_explicit_ones():
    paper = BanelConfig.paper()
    assert {k: getattr(paper, k) for k in PAPER} == PAPER
    # an explicit setting wins, even one equal to the default the preset changes (the old preset lost it)
    assert BanelConfig.paper(free_check=True).free_check is True
    assert from_dict(BanelConfig, {"preset": "paper", "free_check": True}).free_check is True
    assert from_dict(BanelConfig, {"preset": "paper"}) == paper
    assert parse_config({"banel": {"preset": "paper", "kappa": 4}}).options == BanelConfig.paper(kappa=4)
    with pytest.raises(ValueError, match=r"^banel.preset must be one of 'default', 'paper'; got 'robust'"):
        from_dict(BanelConfig, {"preset": "robust"}, "banel.")


def _toy1d(tmp_path, name, banel):
    from banel.cache import safe_torch_load
    from banel.rundir import GENERATOR_FINAL, read_history
    from banel.runner import parse_config, run

    config = parse_config({"task": "toy1d", "m": 50, "nre_budget": 150, "banel": banel, "eval": {"drift_samples": 50}})
    run(config, tmp_path / name, make_task("toy1d", {}, tmp_path / "cache"))
    rates = [row["success_rate"]["rate"] for row in read_history(tmp_path / name) if row.get("success_rate")]
    return rates, safe_torch_load(tmp_path / name / GENERATOR_FINAL)


def test_the_paper_preset_is_bit_for_bit_the_paper_settings_passed_one_by_one(tmp_path):
    torch.set_num_threads(1)
    preset_rates, preset_state = _toy1d(tmp_path, "preset", {"preset": "paper"})
    explicit_rates, explicit_state = _toy1d(tmp_path, "explicit", dict(PAPER))
    assert preset_rates == explicit_rates and len(preset_rates) == 4  # the prior, then rounds 0-2
    assert json_equal(preset_state, explicit_state) and "Tensor" in repr(type(first_tensor(preset_state)))


def json_equal(a, b):
    """Nested states equal, tensors bit for bit."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def first_tensor(state):
    """The first tensor in a nested state (None if it holds none)."""
    if isinstance(state, torch.Tensor):
        return state
    items = state.values() if isinstance(state, dict) else state if isinstance(state, list | tuple) else []
    return next((t for t in map(first_tensor, items) if t is not None), None)


# -- the robust defaults -------------------------------------------------------------------------------------


def _banel(task, options, rounds):
    from banel.algorithm import Banel
    from banel.methods.protocol import Context

    torch.set_num_threads(1)
    method = Banel(
        task.prior(), options, Context(m=50, seed=3, check=task.feasible if isinstance(task, Feasibility) else None)
    )
    return method, [method.round(task.reward, i) for i in range(rounds)]


def test_banel_ranks_out_what_the_free_check_rules_out_by_default_and_the_paper_preset_does_not(cache):
    task = zoo.constrained({}, cache)
    cheap = {"negative_epochs": 5, "generator_epochs": 2}
    _, robust = _banel(task, BanelConfig(**cheap), 3)
    _, paper = _banel(task, BanelConfig.paper(**cheap), 3)
    assert all(task.feasible(r.samples).all() for r in robust)
    assert sum(int((~task.feasible(r.samples)).sum()) for r in paper) > 0  # the prior draws ~6.6% infeasible


def test_with_nothing_feasible_the_free_check_steps_aside_instead_of_stopping_the_run(cache):
    from banel.algorithm import Banel
    from banel.methods.protocol import Context

    task = zoo.constrained({}, cache)
    never = lambda x: torch.zeros(len(x), dtype=torch.bool)  # noqa: E731
    options = BanelConfig(negative_epochs=2, generator_epochs=1)
    method = Banel(task.prior(), options, Context(m=20, seed=1, check=never))
    rounds = [method.round(task.reward, i) for i in range(2)]
    assert [len(r.samples) for r in rounds] == [20, 20]  # the paper's draw and cut
    with pytest.raises(RuntimeError, match="no feasible candidate"):  # feasible_only cannot pay for anything
        strict = Banel(task.prior(), options, Context(m=20, seed=1, feasible=never, check=never))
        for i in range(2):
            strict.round(task.reward, i)
