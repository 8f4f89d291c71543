"""Random Network Distillation (Burda et al. 2019) as an exploration bonus for the generator (Appendix B.2).

A frozen, randomly initialised target MLP embeds a one-hot encoding of each sample; a predictor MLP of the
same shape is trained to match it. The prediction error on a fresh sample is its intrinsic reward (high on
unfamiliar samples), normalised by a running standard deviation. The policy follows REINFORCE on
intrinsic reward - kl_coef * (log p_theta - log p_prior) (KL penalty 0.01 on MNIST). The predictor is trained
once per round on the samples just evaluated: more updates would shrink the error of familiar and novel
samples alike (Section 3.2).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import nn

from banel.baselines.common import PolicyMethod, Stateful, kl_shaped_advantages, optimiser_step, reinforce_loss
from banel.baselines.encoding import one_hot, sequence_shape
from banel.config import Annotated, Ge, Gt, settings_dataclass
from banel.methods.protocol import Context, Oracle, Round
from banel.models.protocol import Embeds, GenerativeModel, Shaped
from banel.sequences import derive_seed


@settings_dataclass
class RNDConfig:
    """Settings of `rnd` (the `rnd` table; defaults: Appendix B.2 on MNIST)."""

    hidden: Annotated[int, Ge(1)] = 1024
    """Width of the target and predictor MLPs."""
    layers: Annotated[int, Ge(1)] = 4
    """Linear layers in each MLP."""
    predictor_lr: Annotated[float, Gt(0)] = 1e-4
    """Adam learning rate of the predictor (Burda et al. 2019)."""
    predictor_epochs: Annotated[int, Ge(1)] = 1
    """Passes of the predictor over each round's samples."""
    lr: Annotated[float, Gt(0)] = 1e-3
    """Adam learning rate of the policy."""
    kl_coef: Annotated[float, Ge(0)] = 0.01
    """KL penalty to the prior (Appendix B.2: 0.01 on MNIST)."""
    intrinsic_coef: Annotated[float, Ge(0)] = 1.0
    """Weight of the normalised intrinsic reward."""
    grad_clip: Annotated[float, Ge(0)] = 1.0
    """Clip the policy's global gradient norm (0 disables)."""
    encoder: Literal["auto", "onehot", "embedding"] = "auto"
    """The networks' input: a one-hot encoding of the tokens (the paper's, for small vocabularies), or the
    model's fixed embedding of a sample (`embed`, e.g. a language model's); auto: one-hot where the model
    gives its sequence shape, else the embedding."""
    max_len: Annotated[int, Ge(0)] = 0
    """Sequence length of the one-hot encoding (0: read from the model)."""
    vocab_size: Annotated[int, Ge(0)] = 0
    """Token vocabulary of the one-hot encoding (0: read from the model)."""


def mlp(d_in: int, hidden: int, layers: int, seed: int) -> nn.Sequential:
    """`layers` Linear layers with ReLU between them, width `hidden`, initialised from `seed`."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        dims = [d_in] + [hidden] * layers
        mods: list[nn.Module] = []
        for k in range(layers):
            mods.append(nn.Linear(dims[k], dims[k + 1]))
            if k < layers - 1:
                mods.append(nn.ReLU())
        return nn.Sequential(*mods)


class RunningStd:
    """Running mean and variance of a stream (parallel Welford), as in Burda et al.'s reward normaliser."""

    def __init__(self) -> None:
        self.mean, self.var, self.count = 0.0, 1.0, 1e-4

    def update(self, x: torch.Tensor) -> None:
        """Fold a batch into the running moments."""
        if not len(x):
            return
        b_mean, b_var, b_count = float(x.mean()), float(x.var(unbiased=False)), len(x)
        delta, total = b_mean - self.mean, self.count + b_count
        m2 = self.var * self.count + b_var * b_count + delta**2 * self.count * b_count / total
        self.mean, self.var, self.count = self.mean + delta * b_count / total, m2 / total, total

    def state_dict(self) -> dict[str, float]:
        """The running moments."""
        return {"mean": self.mean, "var": self.var, "count": self.count}

    def load_state_dict(self, state: dict[str, float]) -> None:
        """Restore the running moments."""
        self.mean, self.var, self.count = state["mean"], state["var"], state["count"]

    @property
    def std(self) -> float:
        """Running standard deviation (floored to avoid division by zero)."""
        return max(self.var, 1e-12) ** 0.5


class RND:
    """Target and predictor networks, and the intrinsic reward they define."""

    def __init__(self, d_in: int, opts: RNDConfig, seed: int) -> None:
        self.target = mlp(d_in, opts.hidden, opts.layers, derive_seed(seed, "rnd", "target")).requires_grad_(False)
        self.predictor = mlp(d_in, opts.hidden, opts.layers, derive_seed(seed, "rnd", "predictor"))
        self.optimiser = torch.optim.Adam(self.predictor.parameters(), lr=opts.predictor_lr)
        self.normaliser = RunningStd()

    def state_dict(self) -> dict[str, Any]:
        """Both networks, the predictor's optimiser and the normaliser."""
        return {
            "target": self.target.state_dict(),
            "predictor": self.predictor.state_dict(),
            "optimiser": self.optimiser.state_dict(),
            "normaliser": self.normaliser.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` saved."""
        self.target.load_state_dict(state["target"])
        self.predictor.load_state_dict(state["predictor"])
        self.optimiser.load_state_dict(state["optimiser"])
        self.normaliser.load_state_dict(state["normaliser"])

    def error(self, e: torch.Tensor) -> torch.Tensor:
        """Mean squared prediction error per sample: (n,)."""
        with torch.no_grad():
            return ((self.predictor(e) - self.target(e)) ** 2).mean(1)

    def bonus(self, e: torch.Tensor) -> torch.Tensor:
        """Intrinsic reward: prediction error over the running std of all errors so far (this batch too)."""
        err = self.error(e).double()
        self.normaliser.update(err)
        return err / self.normaliser.std

    def train(self, e: torch.Tensor, epochs: int) -> float:
        """Full-batch steps of the predictor towards the target; returns the last loss."""
        loss = torch.zeros(())
        for _ in range(epochs):
            loss = ((self.predictor(e) - self.target(e)) ** 2).mean()
            self.optimiser.zero_grad()
            loss.backward()
            self.optimiser.step()
        return float(loss.detach())


class RNDBonus(PolicyMethod):
    """Random Network Distillation bonus + REINFORCE with KL 0.01 to the prior (App. B.2)."""

    Options = RNDConfig

    def __init__(self, prior: GenerativeModel, options: RNDConfig | None = None, context: Context | None = None):
        super().__init__(prior, options or RNDConfig(), context)
        o = self.options
        onehot = o.encoder == "onehot" or (o.encoder == "auto" and (isinstance(prior, Shaped) or o.max_len))
        if not onehot and not isinstance(prior, Embeds):
            raise ValueError(f"rnd.encoder={o.encoder!r}: a {type(prior).__name__} has no embed(x) (Embeds)")
        self.shape = sequence_shape(prior, o.max_len, o.vocab_size) if onehot else None
        d_in = self.shape[0] * (self.shape[1] + 1) if self.shape else int(prior.embed(prior.sample(1, 0)).shape[1])
        self.rnd = RND(d_in, o, self.context.seed)

    def parts(self) -> dict[str, Stateful]:
        """Policy, optimiser, and both RND networks with their normaliser."""
        return {**super().parts(), "rnd": self.rnd}

    def round(self, oracle: Oracle, i: int) -> Round:
        """Intrinsic-reward REINFORCE with a KL penalty, then one predictor update on the round's samples."""
        o = self.options
        x, rewards, batch, r = self.draw(oracle, i)
        stats: dict[str, Any] = {"trained_on": len(batch), "loss": None, "intrinsic_mean": None, "predictor_loss": None}
        if len(batch):
            e = one_hot(batch, *self.shape) if self.shape else self.prior.embed(batch)
            intrinsic = self.rnd.bonus(e)
            log_p = self.policy.log_prob_grad(batch)
            adv = kl_shaped_advantages(
                o.intrinsic_coef * intrinsic + r, log_p.detach(), self.prior.log_prob(batch), o.kl_coef
            )
            loss = reinforce_loss(log_p, adv)
            optimiser_step(self.policy, self.optimiser, loss, o.grad_clip)
            stats["loss"] = float(loss.detach())
            stats["intrinsic_mean"] = float(intrinsic.mean())
            stats["predictor_loss"] = self.rnd.train(e, o.predictor_epochs)
        return Round(x, rewards, stats)
