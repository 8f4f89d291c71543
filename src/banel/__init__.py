"""banel: post-train likelihood-based generative models from failures alone (BaNEL, arXiv 2510.09596)."""

from banel.algorithm import Banel, BanelConfig, select
from banel.cache import pretrained
from banel.config import EvalConfig, OracleConfig, RunConfig, SettingError
from banel.filters import Filter, FilteredModel, ratio_scores
from banel.methods import Context, Method, Round, resolve_method
from banel.models import CategoricalModel, FitConfig, GenerativeModel, TransformerConfig, TransformerModel
from banel.oracle import BudgetedOracle, BudgetExceeded, Ledger, LedgerMismatch, LedgerOracle, OracleFailing
from banel.runner import Run, load_generator, parse_config, resume_run, run
from banel.sequences import Sequences, derive_seed
from banel.tasks import TaskFactory, make_task, resolve_task, task_factory
from banel.tasks.protocol import Task

__all__ = [
    "Banel",
    "BanelConfig",
    "BudgetExceeded",
    "BudgetedOracle",
    "CategoricalModel",
    "Context",
    "EvalConfig",
    "Filter",
    "FilteredModel",
    "FitConfig",
    "GenerativeModel",
    "Ledger",
    "LedgerMismatch",
    "LedgerOracle",
    "Method",
    "OracleConfig",
    "OracleFailing",
    "Round",
    "Run",
    "RunConfig",
    "Sequences",
    "SettingError",
    "Task",
    "TaskFactory",
    "TransformerConfig",
    "TransformerModel",
    "derive_seed",
    "load_generator",
    "make_task",
    "parse_config",
    "pretrained",
    "ratio_scores",
    "resolve_method",
    "resolve_task",
    "resume_run",
    "run",
    "select",
    "task_factory",
]
__version__ = "0.2.0"
