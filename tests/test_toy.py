import numpy as np
import pytest
import torch

from banel.models.transformer import TransformerModel
from banel.tasks import make_task
from banel.tasks.toy import PriorTraining, Toy1D, Toy2D

QUICK = {"prior_training": {"samples": 2000, "epochs": 1}}


@pytest.mark.parametrize("cls", [Toy1D, Toy2D])
def test_encoding_roundtrip_and_reward_cells(cls, cache):
    task = cls(PriorTraining(samples=100, epochs=1), cache)
    x = task.encode(task.grid)
    assert np.array_equal(task.decode_cells(x), task.grid)
    r = task.reward(x).numpy().astype(bool)
    assert r.sum() == len(task.success_cells) > 0
    assert np.array_equal(task.grid[r], task.success_cells)


def test_toy1d_reward_is_near_minus_two_and_two(cache):
    task = Toy1D(PriorTraining(samples=100, epochs=1), cache)
    centres = task.cell_centres(task.success_cells)[:, 0]
    assert np.all(np.minimum(np.abs(centres - 2), np.abs(centres + 2)) < task.half_width)
    assert (centres < 0).any() and (centres > 0).any()


def test_toy2d_reward_is_on_the_inner_circle(cache):
    task = Toy2D(PriorTraining(samples=100, epochs=1), cache)
    c = task.cell_centres(task.success_cells)
    r = np.hypot(c[:, 0], c[:, 1])
    assert np.all(np.abs(r - 0.5) < task.ring_half_width)


@pytest.mark.parametrize("name", ["toy1d", "toy2d"])
def test_exact_success_rate_equals_brute_force_over_the_grid(name, cache):
    task = make_task(name, QUICK)
    prior = task.prior()
    assert isinstance(prior, TransformerModel)
    everything = task.support()
    p = prior.log_prob(everything).exp()
    assert float(p.sum()) == pytest.approx(1.0, abs=1e-5)  # fixed-length model: the grid is the whole space
    brute = float((p * task.reward(everything)).sum())
    assert task.exact_success_rate(prior) == pytest.approx(brute, rel=1e-9)


def test_malformed_sequences_get_reward_zero(cache):
    from banel.sequences import Sequences

    task = Toy1D(PriorTraining(samples=100, epochs=1), cache)
    good = task.encode(task.success_cells[:1])
    bad = Sequences.from_lists([[good.tokens[0, 0].item()], []])
    assert task.reward(good).tolist() == [1.0]
    assert task.reward(bad).tolist() == [0.0, 0.0]


def test_prior_is_cached_and_deterministic(cache):
    a = make_task("toy1d", QUICK).prior()
    files = list((cache / "priors").glob("toy1d-*.pt"))
    assert files
    b = make_task("toy1d", QUICK).prior()  # loaded from the cache
    x = a.sample(64, seed=0)
    torch.testing.assert_close(a.log_prob(x), b.log_prob(x))


def test_prior_does_not_depend_on_the_torch_threads(tmp_path):
    before, weights = torch.get_num_threads(), []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        try:
            prior = Toy1D(PriorTraining(samples=2000, epochs=2), tmp_path / f"threads{threads}").prior()
            assert torch.get_num_threads() == threads  # restored after training
        finally:
            torch.set_num_threads(before)
        weights.append(prior.state_dict()["weights"])
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])  # bit-identical


def test_unknown_task_options_are_errors():
    with pytest.raises(ValueError, match=r"unknown setting\(s\) task_options.prior_steps"):
        make_task("toy1d", {"prior_steps": 3})
    with pytest.raises(ValueError, match=r"unknown setting\(s\) task_options.prior_training.epoch"):
        make_task("toy1d", {"prior_training": {"epoch": 3}})
    with pytest.raises(ValueError, match="unknown task 'toy3d'; built-in: toy1d, toy2d, digits, mnist, addition"):
        make_task("toy3d")
