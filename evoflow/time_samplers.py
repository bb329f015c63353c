"""Training-time samplers of time vectors ``tau`` (B, L): independent times, points on a path, clean prefixes,
mixtures (THEORY section 4; the objective they weight is a path bound only on paths, claim C9).

They draw times for training and for estimator studies; decoding uses :mod:`evoflow.paths` itself.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from evoflow.paths import Path

__all__ = ["IndependentTimes", "MixtureTimes", "PathTimes", "PrefixTimes", "TimeSampler"]


class TimeSampler:
    """Training-time distribution over time vectors ``tau`` of shape ``(B, L)`` (THEORY section 4)."""

    def sample(self, batch: int, length: int, generator: torch.Generator | None = None) -> Tensor:
        """Draw ``(batch, length)`` times in [0, 1] (float64)."""
        raise NotImplementedError


class IndependentTimes(TimeSampler):
    """Every token's time drawn independently, ``t_i ~ U[0, 1]`` (diffusion forcing).

    Its minimiser is the posterior mean, but its weighted loss is not a path bound (claim C9).
    """

    def sample(self, batch: int, length: int, generator: torch.Generator | None = None) -> Tensor:
        return torch.rand(batch, length, generator=generator, dtype=torch.float64)


class PathTimes(TimeSampler):
    """``s ~ U[0, 1]`` per sequence, then ``tau = path.tau(s)``: times on a decoding path (C9)."""

    def __init__(self, path: Path):
        if not isinstance(path, Path):
            raise TypeError(f"path must be a Path, got {type(path).__name__}")
        self.path = path

    def sample(self, batch: int, length: int, generator: torch.Generator | None = None) -> Tensor:
        s = torch.rand(batch, generator=generator, dtype=torch.float64)
        return self.path.tau(s, length)


class PrefixTimes(TimeSampler):
    """A clean prefix of uniform length in 0..L-1 at t = 0; the suffix at one shared ``t ~ U[0, 1]``
    (THEORY section 4, C9)
    (or independent times per token when ``independent=True``)."""

    def __init__(self, independent: bool = False):
        self.independent = bool(independent)

    def sample(self, batch: int, length: int, generator: torch.Generator | None = None) -> Tensor:
        cut = torch.randint(0, length, (batch, 1), generator=generator)
        shape = (batch, length) if self.independent else (batch, 1)
        t = torch.rand(shape, generator=generator, dtype=torch.float64).expand(batch, length)
        return torch.where(torch.arange(length)[None, :] < cut, 0.0, t)


class MixtureTimes(TimeSampler):
    """Per sequence, pick sampler j with probability ``weights[j]`` and draw from it (THEORY section 4, C9)."""

    def __init__(self, samplers: Sequence[TimeSampler], weights: Sequence[float] | None = None):
        if not samplers or not all(isinstance(s, TimeSampler) for s in samplers):
            raise TypeError("samplers must be a non-empty sequence of TimeSampler objects")
        w = torch.ones(len(samplers)) if weights is None else torch.as_tensor(weights, dtype=torch.float64)
        if w.shape != (len(samplers),) or not bool((w >= 0).all()) or not float(w.sum()) > 0:
            raise ValueError("weights must be non-negative, one per sampler, with a positive sum")
        self.samplers = list(samplers)
        self.weights = w / w.sum()

    def sample(self, batch: int, length: int, generator: torch.Generator | None = None) -> Tensor:
        pick = torch.multinomial(self.weights, batch, replacement=True, generator=generator)
        draws = torch.stack([s.sample(batch, length, generator) for s in self.samplers])  # (J, B, L)
        return draws[pick, torch.arange(batch)]
