import math

from banel.baselines.count import DensityModel, bonus, decayed_gain, pseudo_count
from banel.models.categorical import CategoricalModel
from banel.sequences import Sequences


def test_pseudo_count_equals_its_closed_form_for_a_known_prediction_gain():
    # rho = 0.1, rho' = 0.12 (gain ln 1.2): N = rho (1 - rho') / (rho' - rho) = 0.1 * 0.88 / 0.02 = 4.4
    assert math.isclose(pseudo_count(math.log(0.1), math.log(1.2)), 4.4, rel_tol=1e-12)
    # bonus (N + 0.01)^(-1/2) = 4.41^(-1/2) = 1 / 2.1
    assert math.isclose(bonus(4.4), 1 / 2.1, rel_tol=1e-12)
    # No gain, no novelty: infinite count, zero bonus.
    assert pseudo_count(math.log(0.1), 0.0) == math.inf and bonus(math.inf) == 0.0
    # For rho -> 0 the closed form tends to Ostrovski et al.'s 1 / (exp(PG) - 1).
    assert math.isclose(pseudo_count(-50.0, 0.3), 1 / math.expm1(0.3), rel_tol=1e-12)


def test_prediction_gain_decay_schedule():
    # c n^(-1/2) PG_+ with c = 0.1: n = 4 halves it, negative gains count as 0.
    assert math.isclose(decayed_gain(0.5, 4, 0.1), 0.025, rel_tol=1e-12)
    assert math.isclose(decayed_gain(0.5, 1, 0.1), 0.05, rel_tol=1e-12)
    assert decayed_gain(-0.2, 1, 0.1) == 0.0


def test_density_model_prediction_gain_of_one_sgd_step_on_a_uniform_table():
    # Uniform over 4 items; one SGD step of size ln 3 on -log rho(item0) moves the logits by
    # ln3 * (e0 - 1/4), so rho'(item0) = 3 / (3 + 3) = 1/2: the gain is ln 2.
    s = Sequences.from_lists([[0], [1], [2], [3]])
    density = DensityModel(CategoricalModel(s), lr=math.log(3), c=0.1)
    gains, counts = density.observe(s[[0]])
    assert math.isclose(gains[0], math.log(2), rel_tol=1e-12)
    g = 0.1 * math.log(2)  # decayed at step n = 1
    assert math.isclose(counts[0], (1 - 0.25 * math.exp(g)) / math.expm1(g), rel_tol=1e-9)
    assert math.isclose(float(density.model.log_prob(s[[0]]).exp()[0]), 0.5, rel_tol=1e-12)
    assert density.steps == 1
