import math

import pytest
import torch

from _tiny import TinyTask, support
from banel.baselines.temperature import tempered
from banel.models.categorical import CategoricalModel
from banel.models.transformer import TransformerConfig, TransformerModel
from banel.sequences import Sequences


def test_tempered_transformer_is_normalised_and_identity_at_t1():
    prior = TinyTask("transformer").prior()
    s = support()
    hot = tempered(prior, 1.5)
    assert math.isclose(float(torch.logsumexp(hot.log_prob(s), 0).exp()), 1.0, rel_tol=1e-5)
    assert torch.allclose(tempered(prior, 1.0).log_prob(s), prior.log_prob(s))
    assert hot.log_prob(s).std() < prior.log_prob(s).std()  # flatter


def test_one_token_tempered_transformer_is_p_to_the_one_over_t():
    model = TransformerModel(TransformerConfig(5, 1, end_token=False, d_model=16, n_layer=1, n_head=2), seed=3)
    with torch.no_grad():
        model.net.head.weight.mul_(40.0)  # a peaked distribution, so tempering visibly changes it
    s = Sequences.from_lists([[k] for k in range(5)])
    lp, t = model.log_prob(s), 2.0
    assert torch.allclose(tempered(model, t).log_prob(s), torch.log_softmax(lp / t, 0), atol=1e-5)
    assert torch.allclose(model.log_prob(s), lp)  # the original is untouched


def test_tempered_categorical_and_unsupported_models():
    s = Sequences.from_lists([[0], [1]])
    cat = CategoricalModel(s, torch.tensor([0.0, math.log(9.0)]))
    hot = tempered(cat, 2.0)  # p ∝ (1, 3)
    assert torch.allclose(hot.log_prob(s).exp(), torch.tensor([0.25, 0.75], dtype=torch.float64))
    with pytest.raises(ValueError, match="cannot be tempered exactly"):
        tempered(object(), 1.2)
