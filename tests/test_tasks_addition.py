"""The addition-attack task: grammar, reward on hand-written strings, greedy answers, training."""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from banel.cache import safe_torch_load
from banel.models.transformer import TransformerModel
from banel.sequences import derive_seed
from banel.tasks import make_task
from banel.tasks.adder import (
    TARGET_CHARS,
    TARGET_INDEX,
    TargetTraining,
    _lr,
    _target_batch,
    decode,
    encode,
    random_problems,
    target_answers,
    target_config,
    train_target,
    true_sum,
    written_sum,
)
from banel.tasks.addition import (
    ATTACKER_CHARS,
    ATTACKER_INDEX,
    AdditionOptions,
    AdditionTask,
    AttackerTraining,
    all_problems,
    carry_chain,
    count_well_formed,
    has_leading_zero,
    parse_query,
    well_formed_queries,
)


class ScriptedTarget(AdditionTask):
    """The real task with a scripted target: it answers '0' when an operand ends in 7."""

    def __init__(self, leading_zeros: bool = True) -> None:
        super().__init__(AdditionOptions(leading_zeros=leading_zeros), cache=None)
        self.asked: list[tuple[str, str]] = []

    def answers(self, queries: list[tuple[str, str]]) -> list[str]:
        self.asked.extend(queries)
        return ["0" if a.endswith("7") or b.endswith("7") else true_sum(a, b) for a, b in queries]


GARBAGE = [
    "",
    "+",
    "=",
    "1+",
    "1+2",
    "1+2=3",
    "a+b=",
    "1++2=",
    "+1=",
    "1+=",
    "=1+2",
    "1+2==",
    "12a+3=",
    "1 + 2=",
]


@pytest.mark.parametrize("text", GARBAGE)
def test_parse_rejects_malformed_strings(text: str) -> None:
    assert parse_query(text) is None
    assert parse_query(text, leading_zeros=False) is None


def test_parse_accepts_queries_and_splits_operands() -> None:
    assert parse_query("1+2=") == ("1", "2")
    assert parse_query("9999999999+1=") == ("9999999999", "1")
    assert parse_query("0+0=") == ("0", "0")


def test_parse_limits_operand_length() -> None:
    assert parse_query("12345678901+1=") is None  # 11 digits > max_digits=10
    assert parse_query("123+4=", max_digits=2) is None
    assert parse_query("12+4=", max_digits=2) == ("12", "4")


def test_leading_zero_variants() -> None:
    assert parse_query("01+2=") == ("01", "2")
    assert parse_query("01+2=", leading_zeros=False) is None
    assert parse_query("1+002=", leading_zeros=False) is None
    assert parse_query("0+2=", leading_zeros=False) == ("0", "2")  # a lone zero is no leading zero
    assert parse_query("10+20=", leading_zeros=False) == ("10", "20")


def test_parse_never_crashes() -> None:
    assert parse_query(None) is None
    assert parse_query(12) is None
    assert parse_query("1" * 100_000 + "+1=") is None
    assert parse_query("\x00\uffff+=") is None
    rng = np.random.default_rng(0)
    for _ in range(2000):
        text = "".join(rng.choice(list(ATTACKER_CHARS + " -\n"), size=rng.integers(0, 30)))
        parse_query(text)


def test_true_sum_ignores_leading_zeros() -> None:
    assert true_sum("007", "3") == "10"
    assert true_sum("9999999999", "1") == "10000000000"


def test_carry_chain_counts_longest_run() -> None:
    assert carry_chain("1", "2") == 0
    assert carry_chain("5", "5") == 1
    assert carry_chain("999", "1") == 3
    assert carry_chain("191", "919") == 3  # 1+9=10 c, 9+1+1=11 c, 1+9+1=11 c
    assert carry_chain("15", "15") == 1
    assert carry_chain("9090", "1010") == 1


def test_random_problems_have_no_leading_zeros_and_cover_lengths() -> None:
    problems = random_problems(5000, 10, np.random.default_rng(1))
    operands = [x for p in problems for x in p]
    assert not any(len(x) > 1 and x[0] == "0" for x in operands)
    lengths = np.bincount([len(x) for x in operands], minlength=11)[1:]
    assert lengths.min() > 800 and lengths.max() < 1200  # 10,000 operands, ~1000 per length


def test_reward_on_hand_written_strings() -> None:
    task = ScriptedTarget(leading_zeros=True)
    texts = [
        "1+2=",
        "17+2=",
        "a+b=",
        "1+2",
        "",
        "01+2=",
        "07+2=",
        "12+34=5",
        "0+7=",
        "1" * 11 + "+7=",
        "17+2=",
    ]
    r = task.reward(encode(texts, ATTACKER_INDEX)).tolist()
    assert r == [0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0]
    # only well-formed queries reach the target, each distinct query once (answers are memoised)
    assert sorted(task.asked) == [("0", "7"), ("01", "2"), ("07", "2"), ("1", "2"), ("17", "2")]
    strict = ScriptedTarget(leading_zeros=False)
    r = strict.reward(encode(texts, ATTACKER_INDEX)).tolist()
    assert r == [0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 1.0]
    assert ("07", "2") not in strict.asked


def test_feasible_is_exactly_where_the_reward_can_be_one_without_asking_the_target() -> None:
    texts = ["1+2=", "17+2=", "a+b=", "1+2", "", "01+2=", "0+7=", "1" * 11 + "+7=", "12+34=5"]
    texts += [g for g in GARBAGE if set(g) <= set(ATTACKER_CHARS)]  # what the attacker can write
    for leading_zeros in (True, False):
        task = ScriptedTarget(leading_zeros=leading_zeros)
        ok = task.feasible(encode(texts, ATTACKER_INDEX)).tolist()
        assert ok == [parse_query(t, 10, leading_zeros) is not None for t in texts]
        assert ok[:7] == [True, True, False, False, False, leading_zeros, True] and not any(ok[7:])
        assert task.asked == []  # a free check: the target is never queried
        r = task.reward(encode(texts, ATTACKER_INDEX))
        assert not bool(r[~torch.tensor(ok)].any())  # infeasible strings never win


def _tiny_options(**kw) -> AdditionOptions:
    target = TargetTraining(
        d_model=16,
        n_layer=1,
        n_head=2,
        steps=40,
        batch_size=16,
        warmup=5,
        eval_every=20,
        eval_problems=32,
        start_digits=1,
    )
    attacker = AttackerTraining(samples=200, epochs=1, d_model=16, n_layer=1, n_head=2)
    return AdditionOptions(max_digits=2, target=target, attacker=attacker, **kw)


def test_target_answers_match_a_one_token_at_a_time_loop() -> None:
    model = TransformerModel(target_config(_tiny_options().target, _tiny_options().max_digits), seed=3)
    queries = [("1", "2"), ("34", "5"), ("7", "8"), ("99", "99"), ("0", "0")]
    net, end = model.net, model.config.vocab_size
    for (a, b), got in zip(queries, target_answers(model, queries), strict=True):
        seq = [TARGET_INDEX[c] for c in f"{a}+{b}="]
        out = ""
        with torch.no_grad():
            while len(seq) < model.config.max_len:
                t = int(net(torch.tensor([[net.begin, *seq]]))[0, -1].argmax())
                if t == end:
                    break
                out += TARGET_CHARS[t]
                seq.append(t)
        assert got == out


def original_target_training(options: AdditionOptions) -> tuple[dict[str, torch.Tensor], float]:
    """train_target's loop as it was before TransformerModel.nll (d9109a6): weights and last loss, no checkpoints."""
    t = options.target
    model = TransformerModel(target_config(options.target, options.max_digits), seed=t.seed)
    net, end = model.net, model.config.vocab_size
    opt = torch.optim.AdamW(net.parameters(), lr=t.lr, weight_decay=t.weight_decay)
    for step in range(t.steps):
        for group in opt.param_groups:
            group["lr"] = _lr(t, step)
        rng = np.random.default_rng(derive_seed(t.seed, "batch", step))
        problems = random_problems(t.batch_size, t.start_digits, rng)
        texts = [f"{a}+{b}={true_sum(a, b)}" for a, b in problems]
        inputs = torch.zeros((len(texts), max(map(len, texts)) + 1), dtype=torch.long)
        labels = torch.full(inputs.shape, -100, dtype=torch.long)
        for i, (text, (a, b)) in enumerate(zip(texts, problems, strict=True)):
            ids = [TARGET_INDEX[c] for c in text]
            inputs[i, : len(ids) + 1] = torch.tensor([net.begin, *ids])
            q = len(a) + len(b) + 2  # the answer starts after `a+b=`
            labels[i, q : len(ids)] = torch.tensor(ids[q:])
            labels[i, len(ids)] = end  # also after a full-length `a+b=c`, a term log p(x) leaves out
        net.train()
        loss = F.cross_entropy(net(inputs).reshape(-1, net.n_out), labels.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
    return net.state_dict(), float(loss.detach())


@pytest.mark.parametrize("max_digits", [1, 2])
def test_target_training_gives_the_weights_of_the_original_loop_bit_for_bit(tmp_path, max_digits: int) -> None:
    # Cached targets stay valid only if training from a seed still gives the same weights. Training at the
    # top length puts full-length sums like 99+99=198 (max_len tokens) in most batches.
    options = _tiny_options()
    target = replace(options.target, steps=12, eval_every=100, start_digits=max_digits)
    options = replace(options, max_digits=max_digits, target=target)
    model, state = train_target(options.target, options.max_digits, tmp_path / "t.pt")
    assert state["step"] == 12 and state["digits"] == max_digits  # no promotion: the reference has none
    reference, loss = original_target_training(options)
    assert state["curve"][-1]["loss"] == loss
    for key, value in model.state_dict()["weights"].items():
        assert torch.equal(value, reference[key]), key


def test_real_target_reward_is_consistent_with_its_answers(tmp_path) -> None:
    task = AdditionTask(_tiny_options(), tmp_path)
    target = task.target()
    texts = ["1+2=", "9+9=", "12+34=", "1+2", "a+b=", "01+2="]
    r = task.reward(encode(texts, ATTACKER_INDEX))
    answers = target_answers(target, [("1", "2"), ("9", "9"), ("12", "34"), ("01", "2")])
    expected = [float(a != s) for a, s in zip(answers, ["3", "18", "46", "3"], strict=True)]
    assert r.tolist() == [*expected[:3], 0.0, 0.0, expected[3]]


def test_target_training_is_deterministic_and_resumes(tmp_path) -> None:
    options = _tiny_options()
    a, state_a = train_target(options.target, options.max_digits, tmp_path / "a.pt")
    b, _ = train_target(options.target, options.max_digits, tmp_path / "b.pt")
    for (k, va), vb in zip(a.net.state_dict().items(), b.net.state_dict().values(), strict=True):
        assert torch.equal(va, vb), k
    assert state_a["step"] == 40 and state_a["done"]
    assert [row["step"] for row in state_a["curve"]] == [20, 40]
    # stop after the first step, then resume: the same weights as an uninterrupted run
    c, state_c = train_target(options.target, options.max_digits, tmp_path / "c.pt", max_seconds=0.0)
    assert state_c["step"] == 1 and not state_c["done"]
    c, state_c = train_target(options.target, options.max_digits, tmp_path / "c.pt")
    assert state_c["step"] == 40
    for va, vc in zip(a.net.state_dict().values(), c.net.state_dict().values(), strict=True):
        assert torch.equal(va, vc)


def test_calibrated_training_stops_at_the_first_check_at_or_below_the_rate(tmp_path) -> None:
    options = _tiny_options()
    options = replace(options, target=replace(options.target, steps=200, calibrate_rate=0.05, eval_every=10))
    rates = iter([0.5, 0.2, 0.05, 0.01])
    model, state = train_target(options.target, options.max_digits, tmp_path / "t.pt", prior_rate=lambda m: next(rates))
    assert state["done"] and state["calibrated"] and state["step"] == 30
    assert [row["prior_rate"] for row in state["curve"]] == [0.5, 0.2, 0.05]
    # the calibrated checkpoint is finished: loading it trains no further
    again, state_again = train_target(options.target, options.max_digits, tmp_path / "t.pt", prior_rate=lambda m: 1.0)
    assert state_again["step"] == 30
    for va, vb in zip(model.net.state_dict().values(), again.net.state_dict().values(), strict=True):
        assert torch.equal(va, vb)
    # the real rate is the attacker's exact success rate against the target without leading zeros
    task = AdditionTask(replace(_tiny_options(), leading_zeros=False), tmp_path)
    assert task._prior_rate(task.target()) == pytest.approx(task.exact_success_rate(task.prior()), rel=1e-9)
    with pytest.raises(ValueError, match="calibrate_rate"):
        AdditionOptions(max_digits=3, target=TargetTraining(calibrate_rate=1e-3))
    # calibrating makes a different cache entry, keyed by the attacker too
    assert AdditionTask(options, tmp_path).target_path() != AdditionTask(_tiny_options(), tmp_path).target_path()


def test_attacker_prior_is_deterministic_and_cached(tmp_path) -> None:
    p1 = AdditionTask(_tiny_options(), tmp_path / "one").prior()
    p2 = AdditionTask(_tiny_options(), tmp_path / "two").prior()
    x = encode(["1+2=", "a", "12+3="], ATTACKER_INDEX)
    assert torch.equal(p1.log_prob(x), p2.log_prob(x))
    again = AdditionTask(_tiny_options(), tmp_path / "one").prior()
    assert torch.equal(p1.log_prob(x), again.log_prob(x))


def test_unfinished_target_is_an_error_unless_allowed(tmp_path, caplog) -> None:
    options = _tiny_options()
    task = AdditionTask(options, tmp_path)
    train_target(options.target, options.max_digits, task.target_path(), max_seconds=0.0)
    with pytest.raises(ValueError, match="unfinished_target"):
        AdditionTask(options, tmp_path).target(max_seconds=0.0)  # resumes for 0 s, still unfinished
    checkpoint = task.target_path().read_bytes()
    saved = torch.load(task.target_path(), weights_only=True)
    assert not saved["state"]["done"] and saved["state"]["step"] < options.target.steps
    allowed = AdditionTask(_tiny_options(unfinished_target=True), tmp_path)
    with caplog.at_level("WARNING", logger="banel.tasks.addition"):
        target = allowed.target()
    # allowed means used as it stands: the checkpoint's weights, not trained on to the end of the schedule
    got, want = target.state_dict()["weights"], saved["model"]["weights"]
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
    assert task.target_path().read_bytes() == checkpoint
    assert f"using an unfinished target (step {saved['state']['step']})" in caplog.text


def test_task_options_are_validated() -> None:
    with pytest.raises(ValueError, match="max_digits"):
        make_task("addition", {"max_digits": 0})
    with pytest.raises(ValueError, match="start_digits"):
        make_task("addition", {"max_digits": 2})
    with pytest.raises(ValueError):
        make_task("addition", {"nonsense": 1})


def test_has_leading_zero() -> None:
    assert has_leading_zero("01", "2") and has_leading_zero("1", "00")
    assert not has_leading_zero("0", "0") and not has_leading_zero("10", "2")


def test_all_problems_enumerates_pairs_without_leading_zeros() -> None:
    pairs = all_problems(1)
    assert len(pairs) == 100 and pairs[0] == ("0", "0") and pairs[-1] == ("9", "9")
    assert len(all_problems(2)) == 10_000
    with pytest.raises(ValueError, match="max_digits"):
        all_problems(4)


@pytest.mark.parametrize("digits", [1, 2])
@pytest.mark.parametrize("leading_zeros", [True, False])
def test_well_formed_queries_are_every_query_the_grammar_accepts(digits: int, leading_zeros: bool) -> None:
    queries = well_formed_queries(digits, leading_zeros)
    assert len(queries) == len(set(queries)) == count_well_formed(digits, leading_zeros)
    assert all(parse_query(f"{a}+{b}=", digits, leading_zeros) == (a, b) for a, b in queries)
    if not leading_zeros:
        assert sorted(queries) == sorted(all_problems(digits))
    # every operand the grammar accepts is there: 1..digits characters over 0-9
    operands = {a for a, _ in queries}
    accepted = {s for d in range(1, digits + 1) for s in map("".join, itertools.product("0123456789", repeat=d))}
    assert operands == {s for s in accepted if parse_query(f"{s}+1=", digits, leading_zeros)}
    assert count_well_formed(2, True) == 110**2 and count_well_formed(3, False) == 1000**2


class ScriptedSmallTarget(AdditionTask):
    """A tiny real attacker against a scripted target that is wrong when the operands are equal."""

    def answers(self, queries: list[tuple[str, str]]) -> list[str]:
        return ["x" if a == b else true_sum(a, b) for a, b in queries]


def test_exact_success_rate_sums_the_winning_queries_and_agrees_with_sampling(tmp_path) -> None:
    options = AdditionOptions(
        max_digits=1,
        target=TargetTraining(start_digits=1),
        attacker=AttackerTraining(samples=4000, epochs=5, d_model=16, n_layer=1, n_head=2, extra_len=1),
    )
    task = ScriptedSmallTarget(options, tmp_path)
    prior = task.prior()
    assert task.winning_queries() == [f"{d}+{d}=" for d in "0123456789"]
    exact = task.exact_success_rate(prior)
    by_hand = sum(math.exp(float(prior.log_prob(encode([f"{d}+{d}="], ATTACKER_INDEX))[0])) for d in "0123456789")
    assert exact == pytest.approx(by_hand, rel=1e-9)
    # an unbiased Monte-Carlo estimate from 40,000 draws lies within 5 standard errors of it
    n = 40_000
    mc = float(task.reward(prior.sample(n, seed=11)).mean())
    assert 0.01 < exact < 0.5
    assert abs(mc - exact) < 5 * math.sqrt(exact * (1 - exact) / n)
    # Monte Carlo where asked for, or where the queries cannot be enumerated
    assert ScriptedSmallTarget(replace(options, exact_rate=False), tmp_path).exact_success_rate(prior) is None
    assert ScriptedSmallTarget(replace(options, max_digits=3), tmp_path).exact_success_rate(prior) is None


def test_prepare_command_on_a_tiny_configuration(tmp_path, capsys) -> None:
    from banel.cli import main

    sets = [
        "max_digits=1",
        "target.d_model=16",
        "target.n_layer=1",
        "target.n_head=2",
        "target.steps=20",
        "target.batch_size=16",
        "target.warmup=5",
        "target.eval_every=10",
        "target.eval_problems=16",
        "target.start_digits=1",
        "attacker.samples=100",
        "attacker.epochs=1",
        "attacker.d_model=16",
        "attacker.n_layer=1",
        "attacker.n_head=2",
    ]
    argv = ["prepare", "addition", "--cache", str(tmp_path), "--samples", "200", "--problems", "50"]
    argv += [a for s in sets for a in ("--set", s)]
    assert main([*argv, "--out", str(tmp_path / "r.json")]) == 0
    out = capsys.readouterr().out
    assert "step 20/20, finished" in out and "base success rate" in out
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["base_success"]["n"] == 200 and 0 <= report["accuracy_exact"] <= 1
    # a second call finds both models cached and reports the same numbers
    assert main([*argv, "--out", str(tmp_path / "s.json")]) == 0
    again = json.loads((tmp_path / "s.json").read_text())
    assert again["base_success"] == report["base_success"] and again["accuracy"] == report["accuracy"]
    # the same options from a run settings file's task_options find the same cached models
    options: dict = {}
    for item in sets:
        key, value = item.split("=")
        *parents, leaf = key.split(".")
        node = options
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = int(value)
    (tmp_path / "run.json").write_text(json.dumps({"task_options": options, "nre_budget": 100}))
    argv = ["prepare", "addition", "--config", str(tmp_path / "run.json"), "--cache", str(tmp_path)]
    assert main([*argv, "--samples", "200", "--problems", "50", "--out", str(tmp_path / "c.json")]) == 0
    from_file = json.loads((tmp_path / "c.json").read_text())
    assert from_file["target_path"] == report["target_path"] and from_file["base_success"] == report["base_success"]


def test_a_reversed_target_is_trained_on_reversed_sums_and_answers_in_normal_order(tmp_path) -> None:

    options = replace(_tiny_options(), target=replace(_tiny_options().target, answer_order="reversed"))
    x, trained = _target_batch(options.target, 2, 0)
    for text in decode(x, TARGET_CHARS):
        a, rest = text.split("+")
        b, c = rest.split("=")
        assert c == written_sum(a, b, "reversed") == str(int(a) + int(b))[::-1]
    # the answers a reversed target writes are turned back before they are compared with the true sum
    model = TransformerModel(target_config(options.target, options.max_digits), seed=0)
    raw = decode(model.greedy(encode(["12+34="], TARGET_INDEX)), TARGET_CHARS)[0]
    assert target_answers(model, [("12", "34")], options.target) == [raw[::-1]]
    # a different target: its own cache key, while a plain-order target keeps the key it always had
    assert "answer_order" in AdditionTask(options, tmp_path).target_key()["target"]
    assert "answer_order" not in AdditionTask(_tiny_options(), tmp_path).target_key()["target"]
    with pytest.raises(ValueError, match="answer_order"):
        TargetTraining(answer_order="backwards")


def test_monte_carlo_calibration_counts_wins_among_fixed_attacker_draws(tmp_path) -> None:
    options = replace(_tiny_options(), max_digits=3)
    options = replace(options, target=replace(options.target, calibrate_rate=1e-3, calibrate_samples=500))
    # an attacker trained enough to write well-formed queries, so that some are scored
    options = replace(options, attacker=replace(options.attacker, samples=3000, epochs=3))
    task = AdditionTask(options, tmp_path)
    target = TransformerModel(
        target_config(options.target, options.max_digits), seed=1
    )  # untrained: it gets most queries wrong
    x = task.prior().sample(500, derive_seed(options.attacker.seed, "calibrate"))
    parsed = [p for s in task.decode(x) if (p := parse_query(s, 3, True))]
    wrong = sum(c != true_sum(a, b) for (a, b), c in zip(parsed, target_answers(target, parsed), strict=True))
    assert len(parsed) > 10 and task._prior_rate(target) == wrong / 500 > 0


def test_a_rotary_target_has_its_own_key_and_architecture_and_a_learned_one_keeps_its_key(tmp_path) -> None:
    learned = _tiny_options()
    rotary = replace(learned, target=replace(learned.target, positions="rotary"))
    assert "positions" not in AdditionTask(learned, tmp_path).target_key()["target"]
    assert AdditionTask(rotary, tmp_path).target_key()["target"]["positions"] == "rotary"
    assert AdditionTask(rotary, tmp_path).target_path() != AdditionTask(learned, tmp_path).target_path()
    model, state = train_target(rotary.target, 2, tmp_path / "t.pt", max_seconds=None)
    assert model.config.positions == "rotary" and state["done"]
    assert TransformerModel.from_state_dict(safe_torch_load(tmp_path / "t.pt")["model"]).config.positions == "rotary"


def test_an_abacus_target_reads_reversed_operands_with_places_and_has_its_own_key(tmp_path) -> None:
    plain = replace(_tiny_options(), target=replace(_tiny_options().target, answer_order="reversed"))
    abacus = replace(plain, target=replace(plain.target, abacus=True))
    x, trained = _target_batch(abacus.target, 2, 0)
    for text, (a, b, _) in zip(
        decode(x, TARGET_CHARS),
        (t.replace("+", "=").split("=") for t in decode(_target_batch(plain.target, 2, 0)[0], TARGET_CHARS)),
        strict=True,
    ):  # the same problems, each operand least significant digit first, the answer as the reversed target's
        assert text == f"{a[::-1]}+{b[::-1]}={written_sum(a, b, 'reversed')}"
    model = TransformerModel(target_config(abacus.target, abacus.max_digits), seed=0)
    assert model.config.places == 10
    raw = decode(model.greedy(encode(["21+43="], TARGET_INDEX)), TARGET_CHARS)[0]
    assert target_answers(model, [("12", "34")], abacus.target) == [raw[::-1]]  # the attacker's `12+34=`, read reversed
    assert "abacus" not in AdditionTask(plain, tmp_path).target_key()["target"]
    assert AdditionTask(abacus, tmp_path).target_path() != AdditionTask(plain, tmp_path).target_path()
    model, state = train_target(abacus.target, 2, tmp_path / "t.pt", max_seconds=None)
    assert (
        state["done"]
        and TransformerModel.from_state_dict(safe_torch_load(tmp_path / "t.pt")["model"]).config.places == 10
    )
    with pytest.raises(ValueError, match="abacus"):
        TargetTraining(abacus=True)  # a normal-order answer's places would not match the operands'


def test_monte_carlo_calibration_waits_for_the_accuracy_over_all_lengths(tmp_path, monkeypatch) -> None:
    import banel.tasks.adder as adder

    t = replace(_tiny_options().target, steps=3, eval_every=1, start_digits=2, calibrate_rate=0.5, calibrate_samples=10)
    checked = []

    def rate(model):
        checked.append(model)
        return 1.0  # never calibrated: training runs its three steps

    # untrained, the target gets every problem wrong: no check costs its minutes
    _, state = adder.train_target(t, 2, tmp_path / "a.pt", prior_rate=rate)
    assert checked == [] and all("prior_rate" not in row for row in state["curve"])
    # at promote_at's accuracy every check is made
    monkeypatch.setattr(adder, "exact_match", lambda *args: t.promote_at)
    _, state = adder.train_target(t, 2, tmp_path / "b.pt", prior_rate=rate)
    assert len(checked) == 3 and [row["prior_rate"] for row in state["curve"]] == [1.0] * 3


def test_top_share_draws_that_share_of_a_batch_with_both_operands_at_the_top_length(tmp_path) -> None:

    plain = replace(_tiny_options(), max_digits=6)
    shared = replace(plain, target=replace(plain.target, batch_size=40, top_share=0.25))
    plain = replace(plain, target=replace(plain.target, batch_size=40))
    texts = decode(_target_batch(shared.target, 5, 7)[0], TARGET_CHARS)
    operands = [t.split("=")[0].split("+") for t in texts]
    assert all(len(a) == len(b) == 5 for a, b in operands[:10])
    # the rest is the uniform draw it always was, so top_share = 0 keeps every batch and the cache key
    assert texts[10:] == decode(_target_batch(plain.target, 5, 7)[0], TARGET_CHARS)[10:]
    assert "top_share" not in AdditionTask(plain, tmp_path).target_key()["target"]
    assert AdditionTask(shared, tmp_path).target_key()["target"]["top_share"] == 0.25
    with pytest.raises(ValueError, match="top_share"):
        TargetTraining(top_share=1.5)
