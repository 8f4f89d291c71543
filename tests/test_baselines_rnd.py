import numpy as np
import torch

from banel.baselines.encoding import one_hot, sequence_shape
from banel.baselines.rnd import RND, RNDConfig, RunningStd, mlp
from banel.sequences import Sequences


def test_one_hot_encoding_marks_positions_past_the_end():
    x = Sequences.from_lists([[1, 0], [2]])
    e = one_hot(x, max_len=3, vocab_size=3)
    assert e.shape == (2, 12)
    # rows: [1, 0, end] and [2, end, end]; each position has 4 symbols, the 4th meaning "no token".
    assert e[0].reshape(3, 4).argmax(1).tolist() == [1, 0, 3]
    assert e[1].reshape(3, 4).argmax(1).tolist() == [2, 3, 3]
    assert float(e.sum()) == 6.0


def test_running_std_matches_the_std_of_everything_seen():
    rng = np.random.default_rng(0)
    a, b = rng.normal(2, 3, 50), rng.normal(-1, 0.5, 70)
    rs = RunningStd()
    rs.update(torch.tensor(a))
    rs.update(torch.tensor(b))
    both = np.concatenate([a, b])
    assert abs(rs.mean - both.mean()) < 1e-5
    assert abs(rs.std - both.std()) < 1e-5


def test_mlp_shape_and_seeded_init():
    net = mlp(12, 32, 4, seed=5)
    assert sum(isinstance(m, torch.nn.Linear) for m in net) == 4
    assert torch.equal(net[0].weight, mlp(12, 32, 4, seed=5)[0].weight)


def test_rnd_error_falls_on_trained_samples_more_than_on_others():
    rnd = RND(12, RNDConfig(hidden=64, layers=2, predictor_lr=1e-2), seed=0)
    seen = one_hot(Sequences.from_lists([[0, 0, 0]] * 8), 3, 3)
    unseen = one_hot(Sequences.from_lists([[2, 1, 2]]), 3, 3)
    before_seen, before_unseen = float(rnd.error(seen)[0]), float(rnd.error(unseen)[0])
    rnd.train(seen, epochs=50)
    after_seen, after_unseen = float(rnd.error(seen)[0]), float(rnd.error(unseen)[0])
    assert after_seen < 0.1 * before_seen
    assert after_unseen / before_unseen > after_seen / before_seen


def test_sequence_shape_of_the_models():
    from _tiny import TinyTask

    assert sequence_shape(TinyTask("transformer").prior()) == (3, 4)
    assert sequence_shape(TinyTask("categorical").prior()) == (3, 4)
