"""Hugging Face causal LMs as GenerativeModels, on tiny random models (no download): exact likelihoods,
sampling that follows them, LoRA clones, and every method through an ordinary run folder."""

import itertools
import json
import math

import pytest
import torch

transformers = pytest.importorskip("transformers")
pytest.importorskip("peft")

from _tiny import run_tiny  # noqa: E402
from banel.algorithm import Banel, BanelConfig  # noqa: E402
from banel.methods import Context  # noqa: E402
from banel.models.hf import HFModel, LMSettings  # noqa: E402
from banel.models.protocol import FitConfig  # noqa: E402
from banel.oracle.ledger import Ledger  # noqa: E402
from banel.sequences import Sequences  # noqa: E402
from banel.testing import TinyLMOptions, TinyLMTask, check_model, tiny_llama  # noqa: E402

END, PROMPT = 4, [1, 2]


def _net(seed: int = 0):
    return tiny_llama(5, END, seed, max_positions=16)


def _model(rank: int = 4, max_new: int = 3, seed: int = 0) -> HFModel:
    settings = LMSettings(max_new_tokens=max_new, lora_rank=rank, lora_targets=("q_proj", "v_proj"), micro_batch=64)
    return HFModel(_net(seed), PROMPT, [END], settings)


def _support(prompt=PROMPT, max_new: int = 3) -> Sequences:
    rows = [list(t) for n in range(max_new + 1) for t in itertools.product(range(END), repeat=n)]
    return Sequences.from_lists(rows).with_context(Sequences.from_lists([prompt] * len(rows)))


@pytest.mark.parametrize("rank", [0, 4])
def test_check_model_passes_with_full_copies_and_lora_clones(rank):
    model = _model(rank)
    if rank:  # move the prior's own adapter off zero so that LoRA changes what is computed
        model.fit(model.sample(64, 5), 2, 0, FitConfig(lr=0.05, batch_size=32))
    got = check_model(model, _support(), n=6000, seed=0)
    assert abs(got["total_mass"] - 1) < 1e-5  # float32 log-softmax, summed in float64
    assert got["tv_sampling"] < 0.05  # 6,000 draws over 156 completions
    assert got["clone_drift"] == 0.0 and got["state_roundtrip"] == 0.0


def test_log_likelihood_is_a_hand_loop_over_the_completion_with_the_prompt_unscored():
    model = _model(rank=0)
    net = model.net
    x = Sequences.from_lists([[0, 3], [], [2, 2, 1]]).with_context(Sequences.from_lists([PROMPT] * 3))
    got = model.log_prob(x)
    torch.set_grad_enabled(False)
    for i, completion in enumerate(x.to_lists()):
        total, ids = 0.0, list(PROMPT)
        for token in completion:
            logits = net(input_ids=torch.tensor([ids])).logits[0, -1]
            total += float(torch.log_softmax(logits.double(), -1)[token])
            ids.append(token)
        if len(completion) < 3:  # the end term; a completion cut at max_new_tokens has none
            logits = net(input_ids=torch.tensor([ids])).logits[0, -1]
            total += float(torch.log_softmax(logits.double(), -1)[END])
        assert got[i] == pytest.approx(total, abs=1e-5)
    torch.set_grad_enabled(True)
    assert model.token_counts(x).tolist() == [3, 1, 3]


def test_several_end_ids_are_summed():
    settings = LMSettings(max_new_tokens=2, lora_rank=0)
    one, two = HFModel(_net(), PROMPT, [END], settings), HFModel(_net(), PROMPT, [END, 0], settings)
    x = Sequences.from_lists([[3]]).with_context(Sequences.from_lists([PROMPT]))
    logits = one.net(input_ids=torch.tensor([[1, 2, 3]])).logits[0, -1].double().log_softmax(-1)
    gap = float(two.log_prob(x)[0] - one.log_prob(x)[0])
    assert gap == pytest.approx(float(torch.logaddexp(logits[END], logits[0]) - logits[END]), abs=1e-5)
    assert 0 not in two.sample(500, 1).to_lists()[0]  # token 0 ends a completion: it never appears inside


def test_the_same_completion_under_two_prompts_is_two_samples():
    x = Sequences.from_lists([[3, 3], [3, 3]]).with_context(Sequences.from_lists([[1, 2], [2, 1]]))
    assert len(set(x.keys())) == 2 and len(set(x.hashes())) == 2
    model = _model()
    assert model.log_prob(x)[0] != model.log_prob(x)[1]
    assert Sequences.from_lists([[3, 3]]).keys() == [b"3,3;"]  # without a context, keys are unchanged


def test_lora_clones_are_independent_and_fit_lowers_the_nll():
    prior = _model()
    support = _support()
    before = prior.log_prob(support)
    twin = prior.clone()
    data = Sequences.from_lists([[3, 3]] * 16).with_context(Sequences.from_lists([PROMPT] * 16))
    losses = twin.fit(data, 5, 0, FitConfig(lr=0.05, batch_size=8))
    assert losses[-1] < losses[0]
    assert float(twin.log_prob(data[[0]])[0]) > float(before[_index(support, [3, 3])])
    torch.testing.assert_close(prior.log_prob(support), before)  # the prior did not move
    state = twin.state_dict()
    assert set(state) == {"adapter"} and all("lora_" in k for k in state["adapter"])  # the adapter alone
    third = prior.clone()
    third.load_state_dict(state)
    torch.testing.assert_close(third.log_prob(support), twin.log_prob(support))


def _index(support: Sequences, row: list[int]) -> int:
    return support.to_lists().index(row)


def test_sampling_is_seeded():
    model = _model()
    a, b = model.sample(40, 7), model.sample(40, 7)
    assert a.to_lists() == b.to_lists() and a.keys() == b.keys()
    assert a.to_lists() != model.sample(40, 8).to_lists()


def test_what_makes_no_sense_for_an_lm_is_refused_before_the_first_round():
    prior = _model()
    with pytest.raises(ValueError, match="banel.algorithm=1: Algorithm 1 samples its posterior by rejection"):
        Banel(prior, BanelConfig(algorithm=1), Context(m=4))
    with pytest.raises(ValueError, match="banel.negative_init=scratch: a pre-trained language model cannot"):
        Banel(prior, BanelConfig(negative_init="scratch"), Context(m=4))


@pytest.mark.parametrize("method", ["banel", "rnd", "count", "temperature", "diverse", "npo"])
def test_every_method_completes_two_rounds_on_an_lm_through_the_run_folder_and_ledger(tmp_path, method):
    settings = {"m": 16, "nre_budget": 32, "banel": {"negative_epochs": 2, "generator_epochs": 2}}
    settings["rnd"] = {"hidden": 32, "layers": 2}
    settings["diverse"] = {"generator_epochs": 2}
    run, summary, history = run_tiny(tmp_path / method, method, TinyLMTask(TinyLMOptions()), **settings)
    assert summary["rounds"] == 2 and summary["queries"] == 32 and summary["nre_used"] <= 32
    rows = Ledger(tmp_path / method / "ledger.sqlite").rows()
    assert len(rows) == summary["nre_used"] and all(r["status"] == "ok" for r in rows)
    assert [r["round"] for r in history] == [-1, 0, 1]
    assert math.isfinite(summary["final_success_rate"]) and summary["drift_nll"] > 0
    saved = json.loads((tmp_path / method / "config.json").read_text())
    assert saved["run"]["method"] == method
    if method == "rnd":  # the LM has no one-hot shape: RND reads the model's embedding of the text
        assert run.method.shape is None


def test_a_lora_model_warns_nothing_but_other_future_warnings_still_show():
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = _model(rank=4)
        model.clone()
        warnings.warn("someone else's", FutureWarning, stacklevel=1)
    assert [str(w.message) for w in caught if issubclass(w.category, FutureWarning)] == ["someone else's"]


def test_represent_is_the_mean_last_hidden_state_over_the_completion_with_its_adapter():
    model = _model(rank=4)
    model.fit(model.sample(32, 5), 2, 0, FitConfig(lr=0.05, batch_size=32))  # an adapter that changes the states
    x = Sequences.from_lists([[0, 3], [], [2, 2, 1]]).with_context(Sequences.from_lists([PROMPT] * 3))
    got = model.represent(x)
    assert got.shape == (3, model.net.config.hidden_size) and got.dtype == torch.float64
    with torch.no_grad():
        for i, completion in enumerate(x.to_lists()):
            ids = torch.tensor([PROMPT + completion])
            h = model.net(input_ids=ids, output_hidden_states=True).hidden_states[-1][0].double()
            want = h[len(PROMPT) :].mean(0) if completion else h[len(PROMPT) - 1]
            torch.testing.assert_close(got[i], want, rtol=0, atol=1e-5)
    assert not torch.allclose(_model(rank=4).represent(x), got)  # the prior's own states differ from the fitted
