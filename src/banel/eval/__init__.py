"""Success-rate estimation: exact where the task can enumerate successes, else Monte Carlo with an interval."""

from banel.eval.success import SuccessRate, clopper_pearson, prior_estimate, reestimate, success_rate

__all__ = ["SuccessRate", "clopper_pearson", "prior_estimate", "reestimate", "success_rate"]
