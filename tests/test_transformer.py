import pytest
import torch

from banel.cache import atomic_torch_save, safe_torch_load
from banel.models.transformer import TransformerConfig, TransformerModel, _digit_places
from banel.sequences import Sequences
from banel.testing import check_model, enumerate_sequences

ARCHITECTURES = {"learned": {}, "rotary": {"positions": "rotary"}, "places": {"positions": "rotary", "places": 2}}
"""Position schemes every sampling, scoring and caching path is checked under (places: digits are tokens 0 and 1)."""


def tiny(end_token=True, seed=0, positions="learned"):
    cfg = TransformerConfig(
        vocab_size=3, max_len=3, end_token=end_token, d_model=16, n_layer=2, n_head=2, **ARCHITECTURES[positions]
    )
    model = TransformerModel(cfg, seed=seed)
    # Random weights are near-uniform; sharpen them so the checks are not trivially satisfied.
    with torch.no_grad():
        model.net.head.weight.mul_(60)
    return model


@pytest.mark.parametrize("positions", sorted(ARCHITECTURES))
@pytest.mark.parametrize("end_token", [True, False])
def test_distribution_is_normalised_and_sampling_matches_log_prob(end_token, positions):
    model = tiny(end_token, positions=positions)
    support = enumerate_sequences(3, 3, end_token)
    report = check_model(model, support, n=30_000, seed=1)
    assert report["total_mass"] == pytest.approx(1.0, abs=1e-5)
    assert report["tv_sampling"] < 0.03  # 40 outcomes, 30k draws: expected TV ~0.01
    assert report["clone_drift"] == 0.0
    assert report["state_roundtrip"] == 0.0


def test_batched_log_prob_equals_per_sample_loop():
    model = tiny()
    x = model.sample(50, seed=3)
    batched = model.log_prob(x)
    looped = torch.cat([model.log_prob(x[i]) for i in range(len(x))])
    assert batched.dtype == torch.float64
    torch.testing.assert_close(batched, looped, rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    "chunks",
    [
        [1] * 9,  # one token at a time
        [9],  # an empty cache and t > 1: the causal fast path
        [4, 3, 2],  # prefill a prompt, then several new tokens at once through a non-empty cache
        [1, 5, 1, 2],
    ],
)
@pytest.mark.parametrize("positions", sorted(ARCHITECTURES))
def test_kv_cache_matches_full_forward(chunks, positions):
    cfg = TransformerConfig(vocab_size=5, max_len=8, d_model=16, n_layer=2, n_head=2, **ARCHITECTURES[positions])
    net = TransformerModel(cfg, seed=1).net.eval()
    gen = torch.Generator().manual_seed(0)
    # tokens 0-2 only (of 0-5) where places count: long digit runs that cross the chunks' borders
    high = 3 if cfg.places else net.n_out
    idx = torch.cat([torch.full((3, 1), net.begin), torch.randint(0, high, (3, 8), generator=gen)], 1)
    with torch.no_grad():
        full = net(idx)
        caches = net.caches()
        start, pieces = 0, []
        for t in chunks:
            pieces.append(net(idx[:, start : start + t], start=start, caches=caches))
            start += t
    torch.testing.assert_close(torch.cat(pieces, 1), full)


def test_rotary_attention_sees_offsets_only_and_learned_positions_do_not():
    gen = torch.Generator().manual_seed(0)
    for positions, invariant in (("rotary", True), ("learned", False)):
        cfg = TransformerConfig(vocab_size=5, max_len=12, d_model=16, n_layer=2, n_head=2, positions=positions)
        net = TransformerModel(cfg, seed=1).net.eval()
        idx = torch.randint(0, net.n_out, (3, 6), generator=gen)
        with torch.no_grad():
            here, shifted = net(idx, start=0), net(idx, start=5)
        # a whole window moved by 5 positions: with rotary every query-key offset is the same, so is the output
        assert torch.allclose(here, shifted, atol=1e-5) == invariant
    rotary = TransformerModel(TransformerConfig(vocab_size=5, max_len=12, positions="rotary"))
    assert not any(k.startswith("pos") for k in rotary.net.state_dict())  # the angles are not weights
    with pytest.raises(ValueError, match="positions"):
        TransformerConfig(vocab_size=5, max_len=4, d_model=6, n_head=2, positions="rotary")
    with pytest.raises(ValueError, match="positions"):
        TransformerConfig(vocab_size=5, max_len=4, positions="sinusoidal")


def test_a_digit_s_place_counts_its_run_of_digits_and_carries_across_calls():
    begin, plus = 9, 2  # digits are tokens 0 and 1
    idx = torch.tensor([[begin, 1, 0, 0, plus, 1, 1, plus], [begin, plus, 0, 1, 1, 1, 0, 0]])
    expected = torch.tensor([[0, 1, 2, 3, 0, 1, 2, 0], [0, 0, 1, 2, 3, 4, 5, 6]])
    assert torch.equal(_digit_places(idx, 2, torch.zeros(2, dtype=torch.long)), expected)
    # in pieces, each piece told the run the one before ended with: the same places
    first = _digit_places(idx[:, :4], 2, torch.zeros(2, dtype=torch.long))
    second = _digit_places(idx[:, 4:], 2, first[:, -1])
    assert torch.equal(torch.cat([first, second], 1), expected)
    # a place embedding is a weight of the net, and only where asked for
    with_places = TransformerModel(TransformerConfig(vocab_size=5, max_len=6, places=3)).net.state_dict()
    assert (
        "place.weight" in with_places
        and "place.weight" not in TransformerModel(TransformerConfig(5, 6)).net.state_dict()
    )
    with pytest.raises(ValueError, match="places"):
        TransformerConfig(vocab_size=5, max_len=4, places=6)


def slow_greedy(model, prompt):
    """Reference for `greedy`: the full uncached forward pass over the whole prefix for every new token."""
    net, cfg = model.net, model.config
    seq, out = list(prompt), []
    with torch.no_grad():
        while len(seq) < cfg.max_len:
            t = int(net(torch.tensor([[net.begin, *seq]]))[0, -1].argmax())
            if cfg.end_token and t == cfg.vocab_size:
                break
            out.append(t)
            seq.append(t)
    return out


@pytest.mark.parametrize("positions", sorted(ARCHITECTURES))
@pytest.mark.parametrize("end_token", [True, False])
def test_greedy_equals_an_uncached_forward_pass_per_token(end_token, positions):
    cfg = TransformerConfig(
        vocab_size=4, max_len=7, end_token=end_token, d_model=16, n_layer=2, n_head=2, **ARCHITECTURES[positions]
    )
    model = TransformerModel(cfg, seed=0)
    gen = torch.Generator().manual_seed(0)
    lengths = torch.randint(0, cfg.max_len + 1, (60,), generator=gen).tolist()
    prompts = [torch.randint(0, cfg.vocab_size, (k,), generator=gen).tolist() for k in lengths]
    got = model.greedy(Sequences.from_lists(prompts), batch=4)  # several batches per prompt length
    assert got.to_lists() == [slow_greedy(model, p) for p in prompts]
    if not end_token:
        assert (got.lengths + torch.tensor(lengths) == 7).all()
    elif positions == "learned":  # the seed is one where continuations end early at several lengths
        assert len({len(r) for r, k in zip(got.to_lists(), lengths, strict=True) if k + len(r) < 7}) > 2
    assert len(model.greedy(Sequences.from_lists([]))) == 0
    with pytest.raises(ValueError, match="max_len"):
        model.greedy(Sequences.from_lists([[0] * 8]))


def test_nll_is_the_mean_of_the_picked_next_token_terms():
    model = tiny()
    x = Sequences.from_lists([[0, 1, 2], [1], [2, 2]])
    nll, mask = model._nll_terms(x)
    with torch.no_grad():
        torch.testing.assert_close(model.nll(x), (nll * mask).sum() / mask.sum())
    # the log p(x) terms of a full-length sequence stop at max_len; `positions` can also pick its end token
    logits = model.net(torch.tensor([[model.net.begin, 0, 1, 2]]))[0]
    end_after_max_len = torch.log_softmax(logits[3], -1)[model.config.vocab_size]
    picked = torch.zeros(3, 4, dtype=torch.bool)
    picked[0, 2:] = True  # token 2 and the end token of [0, 1, 2]
    picked[1, 0] = True  # token 1 of [1]
    first = torch.log_softmax(logits[0], -1)[1]  # the first prediction sees only the begin token
    expected = -(torch.log_softmax(logits[2], -1)[2] + end_after_max_len + first) / 3
    loss = model.nll(x, picked)
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert model.net.head.weight.grad is not None and not model.net.training
    with pytest.raises(ValueError, match="past a sequence's end"):
        model.nll(x, torch.ones(3, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="shape"):
        model.nll(x, torch.ones(3, 3, dtype=torch.bool))


def test_sampling_is_reproducible_and_respects_lengths():
    model = tiny()
    a, b = model.sample(200, seed=7), model.sample(200, seed=7)
    assert a.to_lists() == b.to_lists()
    assert a.to_lists() != model.sample(200, seed=8).to_lists()
    assert int(a.lengths.max()) <= 3
    counts = model.token_counts(a)
    assert torch.equal(counts, a.lengths + (a.lengths < 3).long())


def test_fit_lowers_nll_and_learns_the_data():
    cfg = TransformerConfig(vocab_size=4, max_len=4, end_token=True, d_model=32, n_layer=2, n_head=2)
    model = TransformerModel(cfg, seed=0)
    data = Sequences.from_lists([[1, 2, 3]] * 32 + [[0]] * 32)
    losses = model.fit(data, epochs=120, seed=0)
    # Optimum: the first token is a fair coin (ln 2 per sequence) and the rest deterministic,
    # 64 ln 2 nats over 192 scored tokens = 0.231 per token.
    assert losses[-1] < 0.28 < losses[0]
    p = model.log_prob(Sequences.from_lists([[1, 2, 3], [0], [3, 3]])).exp()
    assert p[0] > 0.4 and p[1] > 0.4 and p[2] < 0.01


def test_state_dict_survives_weights_only_load(tmp_path):
    model = tiny()
    atomic_torch_save(model.state_dict(), tmp_path / "m.pt")
    restored = TransformerModel.from_state_dict(safe_torch_load(tmp_path / "m.pt"))
    x = model.sample(20, seed=0)
    torch.testing.assert_close(restored.log_prob(x), model.log_prob(x))


def test_reinitialise_changes_weights_deterministically():
    a, b = tiny(), tiny()
    a.reinitialise(5)
    b.reinitialise(5)
    x = Sequences.from_lists([[0, 1], [2]])
    torch.testing.assert_close(a.log_prob(x), b.log_prob(x))
    assert not torch.allclose(a.log_prob(x), tiny().log_prob(x))


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match="^d_model"):
        TransformerConfig(vocab_size=3, max_len=3, d_model=30, n_head=4)
    with pytest.raises(ValueError, match="^vocab_size"):
        TransformerConfig(vocab_size=0, max_len=3)


def test_represent_is_the_mean_final_hidden_state_over_the_content_tokens():
    model = tiny()
    x = Sequences.from_lists([[2, 0, 1], [1], []])
    got = model.represent(x)
    assert got.shape == (3, 16) and got.dtype == torch.float64
    begin = model.net.begin
    with torch.no_grad():
        for i, seq in enumerate(x.to_lists()):
            h = model.net.hidden(torch.tensor([[begin, *seq]]))[0].double()  # columns: begin, then the tokens
            want = h[1:].mean(0) if seq else h[0]
            torch.testing.assert_close(got[i], want, rtol=0, atol=1e-6)
        # what the head reads: forward's logits are the head of these states
        idx = torch.tensor([[begin, 2, 0]])
        assert torch.equal(model.net.head(model.net.hidden(idx)), model.net(idx))
    # a function of the sample alone: the same row in a batch of another width
    torch.testing.assert_close(model.represent(x[1:2]), got[1:2], rtol=0, atol=1e-6)
