"""Toy tasks of the paper: a 1D line with reward-one regions near -2 and 2 (blog figure) and two circles (Fig. 1).

A point in a box is discretised on a grid and written as tokens: each coordinate's bin index in base
`base` with `digits` digits, most significant first, coordinates one after the other. The prior is our
transformer pre-trained on samples of a broad distribution; the success set is a finite set of grid cells,
so success rates are exact.
"""

from __future__ import annotations

import math
from dataclasses import asdict, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from banel.cache import pretrained
from banel.config import Annotated, Ge, check, model_validator, settings_dataclass
from banel.models.protocol import FitConfig, GenerativeModel
from banel.models.transformer import TransformerConfig, TransformerModel
from banel.sequences import Sequences
from banel.tasks import task_factory


@settings_dataclass
class PriorTraining:
    """How a toy prior is pre-trained."""

    samples: Annotated[int, Ge(1)] = 20_000
    """Training points drawn from the pre-training distribution."""
    epochs: Annotated[int, Ge(1)] = 8
    """Passes over them."""
    seed: int = 0
    """Seed of the data and the initial weights (the prior is shared by every run seed)."""
    d_model: Annotated[int, Ge(1)] = 64
    """Transformer width."""
    n_layer: Annotated[int, Ge(1)] = 2
    """Transformer depth."""
    n_head: Annotated[int, Ge(1)] = 4
    """Attention heads."""
    fit: FitConfig = field(default_factory=lambda: FitConfig(lr=3e-3, batch_size=256))
    """Optimiser settings."""

    @model_validator(mode="after")
    def _heads(self) -> PriorTraining:
        check(
            self.d_model % self.n_head == 0, "d_model", f"({self.d_model}) must be divisible by n_head ({self.n_head})"
        )
        return self


@settings_dataclass
class ToyOptions:
    """task_options of `toy1d` and `toy2d`."""

    prior_training: PriorTraining = field(default_factory=PriorTraining)
    """How the prior is pre-trained."""
    shipped: bool = True
    """Use the reference prior shipped with banel when prior_training is exactly its settings (the defaults),
    so results match the documented ones on any machine; false: train the prior on this machine (once, then
    cached)."""


class GridTask:
    """A continuous toy problem discretised on a grid; subclasses give the data, the box and the reward."""

    name = "grid"
    dims = 1
    low, high = -4.0, 4.0
    base, digits = 32, 2

    def __init__(
        self, prior_training: PriorTraining | None = None, cache: str | Path | None = None, shipped: bool = True
    ) -> None:
        self.training = prior_training or PriorTraining()
        self._cache = cache
        self.shipped = shipped
        self.bins = self.base**self.digits
        self.width = (self.high - self.low) / self.bins
        self._prior: dict[str, GenerativeModel] = {}
        self._prior_grid: np.ndarray | None = None
        self.grid = self._all_cells()
        self.centres = self.cell_centres(self.grid)
        mask = self.reward_at(self.centres)
        self.success_cells = self.grid[mask]
        if not mask.any():
            raise ValueError(f"{self.name}: no grid cell lies in the reward region")

    # -- subclasses --------------------------------------------------------------------------------
    def sample_data(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """n points (n, dims) of the pre-training distribution."""
        raise NotImplementedError

    def reward_at(self, points: np.ndarray) -> np.ndarray:
        """Boolean success of points (n, dims) (evaluated at cell centres)."""
        raise NotImplementedError

    # -- encoding ----------------------------------------------------------------------------------
    def _all_cells(self) -> np.ndarray:
        axes = [np.arange(self.bins)] * self.dims
        return np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, self.dims)

    def cell_centres(self, cells: np.ndarray) -> np.ndarray:
        """Coordinates of the centres of cells (n, dims)."""
        return self.low + (cells + 0.5) * self.width

    def encode(self, cells: np.ndarray) -> Sequences:
        """Token sequences of cells (n, dims): each index in base `base`, most significant digit first."""
        powers = self.base ** np.arange(self.digits - 1, -1, -1)
        digits = (cells[:, :, None] // powers) % self.base
        tokens = torch.as_tensor(digits.reshape(len(cells), -1), dtype=torch.long)
        return Sequences(tokens, torch.full((len(cells),), tokens.shape[1], dtype=torch.long))

    def decode_cells(self, x: Sequences) -> np.ndarray:
        """Cells (n, dims) of well-formed sequences; -1 rows for sequences of the wrong length."""
        length = self.dims * self.digits
        out = np.full((len(x), self.dims), -1, dtype=np.int64)
        ok = (x.lengths == length).cpu().numpy()
        if ok.any() and x.tokens.shape[1] >= length:
            toks = x.tokens[:, :length].cpu().numpy()[ok].reshape(-1, self.dims, self.digits)
            powers = self.base ** np.arange(self.digits - 1, -1, -1)
            out[ok] = (toks * powers).sum(-1)
        return out

    def discretise(self, points: np.ndarray) -> np.ndarray:
        """Grid cells of points, clipped into the box."""
        return np.clip(np.floor((points - self.low) / self.width), 0, self.bins - 1).astype(np.int64)

    # -- Task protocol ------------------------------------------------------------------------------
    def model_config(self) -> TransformerConfig:
        """The prior's architecture."""
        t = self.training
        return TransformerConfig(
            vocab_size=self.base,
            max_len=self.dims * self.digits,
            end_token=False,
            d_model=t.d_model,
            n_layer=t.n_layer,
            n_head=t.n_head,
        )

    def describe(self) -> dict[str, Any]:
        """Task settings for config.json."""
        return {
            "name": self.name,
            "box": [self.low, self.high],
            "bins_per_dim": self.bins,
            "tokens": f"{self.dims} x {self.digits} digits in base {self.base}",
            "prior_training": asdict(self.training),
            "success_cells": int(len(self.success_cells)),
            **self.params(),
        }

    def params(self) -> dict[str, Any]:
        """The data and reward parameters of the subclass (part of the prior's cache key)."""
        return {}

    def prior_key(self) -> tuple[str, dict[str, Any]]:
        """The prior's name and the settings its cache file (and shipped file) is keyed by."""
        # version 2: trained on one thread on CPU (version 1 depended on the thread count)
        return self.name, {"task": self.name, "version": 2, **self.describe()}

    def prior(self, device: str = "cpu") -> GenerativeModel:
        """The pre-trained prior: shipped with banel, loaded from the cache, or trained (a few seconds) and cached."""
        if device not in self._prior:
            model = TransformerModel(self.model_config(), seed=self.training.seed, device=device)

            def train(model: TransformerModel) -> list[float]:
                rng = np.random.default_rng(self.training.seed)
                data = self.encode(self.discretise(self.sample_data(self.training.samples, rng)))
                return model.fit(data, self.training.epochs, self.training.seed, self.training.fit)

            name, settings = self.prior_key()
            self._prior[device] = pretrained(model, train, settings, name, self._cache, device, self.shipped)
        return self._prior[device]

    def reward(self, x: Sequences) -> torch.Tensor:
        """1 where the sample is a well-formed cell inside the reward region."""
        cells = self.decode_cells(x)
        ok = (cells >= 0).all(1)
        r = np.zeros(len(x))
        if ok.any():
            r[ok] = self.reward_at(self.cell_centres(cells[ok]))
        return torch.as_tensor(r, dtype=torch.float64)

    def free_reward(self, x: Sequences) -> torch.Tensor:
        """The reward at no cost (GroundTruth): a region test on the grid."""
        return self.reward(x)

    def exact_success_rate(self, model: GenerativeModel) -> float:
        """Sum of the model's probabilities over the success cells."""
        return float(torch.logsumexp(model.log_prob(self.encode(self.success_cells)), 0).exp())

    def decode(self, x: Sequences) -> list[str]:
        """Cell centres as text ('invalid' for malformed sequences)."""
        cells = self.decode_cells(x)
        return [
            "invalid" if (c < 0).any() else ",".join(f"{v:.4f}" for v in self.cell_centres(c[None])[0]) for c in cells
        ]

    def snapshot(self, models: dict[str, GenerativeModel]) -> dict[str, np.ndarray]:
        """Exact log-probabilities of every grid cell under each model, and the reward of each cell (for plots)."""
        x = self.encode(self.grid)
        shape = (self.bins,) * self.dims
        arrays = {name: self._grid_log_prob(model, x).reshape(shape) for name, model in models.items()}
        # The reward region straight from its definition: plotting never goes through the (patchable) oracle.
        arrays["reward"] = self.reward_at(self.centres).astype(np.float64).reshape(shape)
        return arrays

    def _grid_log_prob(self, model: GenerativeModel, grid: Sequences) -> np.ndarray:
        """log p of every cell; the task's own prior never changes, so its values are computed once."""
        if not any(model is prior for prior in self._prior.values()):
            return model.log_prob(grid).cpu().numpy()
        if self._prior_grid is None:
            self._prior_grid = model.log_prob(grid).cpu().numpy()
        return self._prior_grid

    def support(self) -> Sequences:
        """Every well-formed sequence (the whole grid)."""
        return self.encode(self.grid)


class Toy1D(GridTask):
    """1D: prior pre-trained on N(0, 0.4^2) over [-4, 4) in 1024 cells; reward one within 0.05 of -2 or 2.

    The reward regions sit five standard deviations out, where the pre-trained transformer still puts a
    little mass (base success rate about 3e-5): rare, but reachable by moving mass outward from the mode.
    """

    name = "toy1d"
    dims = 1
    low, high = -4.0, 4.0
    base, digits = 32, 2
    centres_1d = (-2.0, 2.0)
    half_width = 0.05
    data_std = 0.4

    def params(self) -> dict[str, Any]:
        """Pre-training distribution and reward regions."""
        return {"data_std": self.data_std, "reward_centres": list(self.centres_1d), "half_width": self.half_width}

    def sample_data(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """N(0, data_std) points."""
        return rng.normal(0.0, self.data_std, size=(n, 1))

    def reward_at(self, points: np.ndarray) -> np.ndarray:
        """Within half_width of one of the centres."""
        return np.any([np.abs(points[:, 0] - c) < self.half_width for c in self.centres_1d], axis=0)


class Toy2D(GridTask):
    """2D two circles (Fig. 1): 64x64 cells on [-1.5, 1.5)^2; reward one on a quarter of the inner circle.

    The prior is pre-trained on points of two noisy circles (radii 1 and 0.5) with 99.8% of them on the outer
    one, so the rewarded quarter arc of the inner circle is rare (base success rate about 3e-4).
    """

    name = "toy2d"
    dims = 2
    low, high = -1.5, 1.5
    base, digits = 64, 1
    radii = (1.0, 0.5)
    weights = (0.998, 0.002)
    noise = 0.04
    arc_centre = math.pi / 4  # radians
    arc_half_width = math.pi / 4
    ring_half_width = 0.06

    def params(self) -> dict[str, Any]:
        """Circles, mixture weights and the rewarded arc."""
        return {
            "radii": list(self.radii),
            "weights": list(self.weights),
            "noise": self.noise,
            "arc_centre": self.arc_centre,
            "arc_half_width": self.arc_half_width,
            "ring_half_width": self.ring_half_width,
        }

    def sample_data(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """Points on the two circles with Gaussian radial noise."""
        which = rng.choice(len(self.radii), size=n, p=self.weights)
        radius = np.asarray(self.radii)[which] + rng.normal(0, self.noise, size=n)
        angle = rng.uniform(0, 2 * math.pi, size=n)
        return np.stack([radius * np.cos(angle), radius * np.sin(angle)], 1)

    def reward_at(self, points: np.ndarray) -> np.ndarray:
        """On the inner ring, within arc_half_width of arc_centre."""
        r = np.hypot(points[:, 0], points[:, 1])
        a = np.arctan2(points[:, 1], points[:, 0])
        d = np.abs((a - self.arc_centre + math.pi) % (2 * math.pi) - math.pi)
        return (np.abs(r - self.radii[1]) < self.ring_half_width) & (d < self.arc_half_width)


# The toy tasks need a sharper negative model than the paper's image settings: docs/LOG.md (2026-11-25).
TOY_DEFAULTS = {"banel": {"kappa": 4.0, "negative_epochs": 20}}


@task_factory(
    "1D line, prior pre-trained on N(0, 0.4^2); reward one within 0.05 of -2 and 2 (blog figure). Exact.",
    TOY_DEFAULTS,
    ToyOptions,
)
def toy1d(options: ToyOptions, cache: Path) -> Toy1D:
    """The blog's 1D toy."""
    return Toy1D(options.prior_training, cache, options.shipped)


@task_factory(
    "Two circles (Fig. 1), 99.8% of the prior on the outer; reward one on a quarter of the inner one. Exact.",
    TOY_DEFAULTS,
    ToyOptions,
)
def toy2d(options: ToyOptions, cache: Path) -> Toy2D:
    """The paper's two circles."""
    return Toy2D(options.prior_training, cache, options.shipped)
