"""banel: post-train likelihood-based generative models from failures alone (BaNEL, arXiv 2510.09596)."""

from banel.algorithm import Banel, Filter, FilteredModel, ratio_scores, select
from banel.config import BanelConfig, EvalConfig, RunConfig
from banel.models import CategoricalModel, FitConfig, GenerativeModel, TransformerConfig, TransformerModel
from banel.oracle import BudgetedOracle, BudgetExceeded
from banel.sequences import Sequences, derive_seed

__all__ = [
    "Banel",
    "BanelConfig",
    "BudgetExceeded",
    "BudgetedOracle",
    "CategoricalModel",
    "EvalConfig",
    "Filter",
    "FilteredModel",
    "FitConfig",
    "GenerativeModel",
    "RunConfig",
    "Sequences",
    "TransformerConfig",
    "TransformerModel",
    "derive_seed",
    "ratio_scores",
    "select",
]
__version__ = "0.1.0"
