"""Likelihood-based generative models: the protocol, our transformer, and an exact categorical model."""

from banel.models.categorical import CategoricalModel
from banel.models.protocol import FitConfig, GenerativeModel
from banel.models.transformer import TransformerConfig, TransformerModel

__all__ = ["CategoricalModel", "FitConfig", "GenerativeModel", "TransformerConfig", "TransformerModel"]
