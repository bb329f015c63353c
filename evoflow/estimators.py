"""Sampling the path parameter s for the continuous-time NELBO estimator (claim C9).

The continuous-time NELBO along a path is an integral over s in [0, 1]. An estimator draws a
*group* of n values of s for each sequence, each with an importance weight ``1 / r(s)``, and
averages ``integrand(s) / r(s)`` over the group: unbiased for every sampler here.

- :class:`Uniform`: i.i.d. ``s ~ U[0, 1]``.
- :class:`Antithetic`: pairs ``(u, 1 - u)``.
- :class:`Stratified`: one jittered point per stratum ``[j/n, (j+1)/n)`` (low discrepancy).
- :class:`LogSNRImportance`: any of the above pushed through the inverse CDF of a density
  ``r(s) = (1 - floor) g(s) / G + floor`` with ``g = sum_i d/ds clip(logSNR(t_i(s)))``: uniform in
  logSNR on every token's stretch of the path, mixed with a uniform floor so that no region of s
  is left out.

Derivation: proofs/p09_path_mixtures.md.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from evoflow.arguments import as_float, as_int
from evoflow.paths import Path, to_times
from evoflow.schedules import Schedule

__all__ = ["Antithetic", "LogSNRImportance", "PathDistribution", "SSampler", "Stratified", "Uniform"]


def _check_group(groups: int, n: int) -> tuple[int, int]:
    """``groups`` and ``n`` (draws per group) as ints >= 1, else an error naming the argument."""
    return as_int(groups, "groups", minimum=1), as_int(n, "n", minimum=1)


def _check_frame(length: int, t_min: float) -> tuple[int, float]:
    """``length`` as an int >= 1 and ``t_min`` as a float in [0, 1), else an error naming the argument."""
    return as_int(length, "length", minimum=1), as_float(t_min, "t_min", low=0.0, high=1.0, high_open=True)


class SSampler:
    """Draws groups of path parameters: ``sample(groups, n) -> (s, weight)``, both (groups, n) (C9)."""

    def unit(self, groups: int, n: int, generator: torch.Generator | None) -> Tensor:
        """Points in [0, 1), shape (groups, n), each marginally uniform."""
        raise NotImplementedError

    def sample(self, groups: int, n: int, path: Path, length: int, schedule: Schedule, t_min: float,
               generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """``s`` (groups, n) and importance weights ``1 / r(s)`` (groups, n).

        ``groups``, ``n`` and ``length`` are integers >= 1 and ``t_min`` a real in [0, 1), of any
        numeric kind (Python, NumPy, 0-d tensor); anything else is refused naming the argument.
        """
        groups, n = _check_group(groups, n)
        _check_frame(length, t_min)
        u = self.unit(groups, n, generator)
        return u, torch.ones_like(u)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Uniform(SSampler):
    """Plain Monte Carlo: i.i.d. ``s ~ U[0, 1]`` (C9)."""

    def unit(self, groups, n, generator):
        groups, n = _check_group(groups, n)
        return torch.rand(groups, n, generator=generator, dtype=torch.float64)


class Antithetic(SSampler):
    """Antithetic pairs ``(u, 1 - u)``; ``n`` must be even (C9)."""

    def unit(self, groups, n, generator):
        groups, n = _check_group(groups, n)
        if n % 2:
            raise ValueError(f"n (the samples per group) must be even for antithetic sampling, got {n}")
        u = torch.rand(groups, n // 2, generator=generator, dtype=torch.float64)
        return torch.cat([u, 1.0 - u], dim=1)


class Stratified(SSampler):
    """Jittered stratification: point j uniform in ``[j/n, (j+1)/n)``, in random order (C9)."""

    def unit(self, groups, n, generator):
        groups, n = _check_group(groups, n)
        jitter = torch.rand(groups, n, generator=generator, dtype=torch.float64)
        u = (torch.arange(n, dtype=torch.float64) + jitter) / n
        perm = torch.argsort(torch.rand(groups, n, generator=generator), dim=1)
        return u.gather(1, perm)


class LogSNRImportance(SSampler):
    """Importance sampling of s through a density over logSNR, mixed with a uniform ``floor`` (C9).

    Every token's logSNR, clipped to ``[edges[0], edges[-1]]``, is sent through the cumulative
    ``h`` of a piecewise-constant ``profile`` on the bins ``edges``; the proposal's CDF in s is
    ``(1 - floor) G(s) + floor s`` with ``G(s) = sum_i h(lam_i(s)) / sum_i h(lam_i(1))`` (up to the
    start), so a flat profile is uniform in logSNR along every token's stretch of the path, and
    :func:`evoflow.elbo.fit_log_snr_profile` fits the variance-optimal profile ``sqrt(E f^2)``.
    ``inner`` draws the unit points (``LogSNRImportance(Stratified())`` stratifies in the CDF).
    Without ``edges``, one flat bin spans ``[log_snr_min, logSNR(t_min)]``.
    """

    def __init__(self, inner: SSampler | None = None, floor: float = 0.1, log_snr_min: float = -12.0,
                 edges: Tensor | None = None, profile: Tensor | None = None):
        floor = as_float(floor, "floor", low=0.0, high=1.0, low_open=True)
        log_snr_min = as_float(log_snr_min, "log_snr_min")
        if (edges is None) != (profile is None):
            raise ValueError("edges and profile go together: give both or neither")
        if profile is not None and (profile.shape != (len(edges) - 1,) or bool((profile < 0).any())
                                    or bool((edges.diff() <= 0).any()) or not float(profile.sum()) > 0):
            raise ValueError("profile must hold one non-negative weight per bin of increasing edges")
        self.inner = inner or Uniform()
        self.floor = floor
        self.log_snr_min = log_snr_min
        self.edges, self.profile = edges, profile

    def unit(self, groups, n, generator):
        return self.inner.unit(groups, n, generator)

    def _bins(self, schedule: Schedule, t_min: float) -> tuple[Tensor, Tensor]:
        if self.edges is not None:
            return self.edges.to(torch.float64), self.profile.to(torch.float64)
        hi = float(schedule.log_snr(torch.tensor(t_min, dtype=torch.float64)))
        return torch.tensor([self.log_snr_min, hi], dtype=torch.float64), torch.ones(1, dtype=torch.float64)

    @staticmethod
    def _warp(lam: Tensor, edges: Tensor, dens: Tensor) -> tuple[Tensor, Tensor]:
        """Cumulative profile ``h(lam)`` and its slope ``h'(lam)`` (0 outside the edges)."""
        cum = torch.cat([torch.zeros(1, dtype=torch.float64), (dens * edges.diff()).cumsum(0)])
        idx = torch.bucketize(lam.clamp(edges[0], edges[-1]), edges, right=True).clamp(1, len(dens)) - 1
        h = cum[idx] + dens[idx] * (lam.clamp(edges[0], edges[-1]) - edges[idx])
        inside = (lam > edges[0]) & (lam < edges[-1])
        return h, torch.where(inside, dens[idx], torch.zeros_like(lam))

    def _frame(self, path: Path, length: int, schedule: Schedule, t_min: float) -> tuple[Tensor, ...]:
        """Bins, densities, ``h`` at the path's start (L,) and the total ``sum_i h_i(1) - h_i(0)``."""
        edges, dens = self._bins(schedule, t_min)
        ends = to_times(path.tau(torch.tensor([0.0, 1.0], dtype=torch.float64), length), t_min)
        h_ends, _ = self._warp(schedule.log_snr(ends), edges, dens)
        return edges, dens, h_ends[0], (h_ends[1] - h_ends[0]).sum()

    def _cdf(self, s: Tensor, path: Path, length: int, schedule: Schedule, t_min: float, frame) -> Tensor:
        """The proposal's CDF ``(1 - floor) G(s) + floor s``, G non-decreasing from 0 to 1."""
        edges, dens, h_start, total = frame
        h, _ = self._warp(schedule.log_snr(to_times(path.tau(s.reshape(-1), length), t_min)), edges, dens)
        G = ((h - h_start).sum(-1) / total).reshape(s.shape)
        return (1.0 - self.floor) * G + self.floor * s

    def density(self, s: Tensor, path: Path, length: int, schedule: Schedule, t_min: float) -> Tensor:
        """``r(s) = (1 - floor) G'(s) + floor`` (integrates to 1 over [0, 1])."""
        length, t_min = _check_frame(length, t_min)
        edges, dens, _, total = self._frame(path, length, schedule, t_min)
        flat = s.reshape(-1)
        tau = to_times(path.tau(flat, length), t_min)  # (N, L)
        _, slope = self._warp(schedule.log_snr(tau), edges, dens)
        rate = schedule.dlog_snr(tau) * (1.0 - t_min) * path.dtau(flat, length)
        g = torch.where(slope > 0, slope * rate, torch.zeros_like(rate)).sum(-1) / total
        return (1.0 - self.floor) * g.reshape(s.shape) + self.floor

    def sample(self, groups, n, path, length, schedule, t_min, generator=None):
        groups, n = _check_group(groups, n)
        length, t_min = _check_frame(length, t_min)
        u = self.unit(groups, n, generator)
        frame = self._frame(path, length, schedule, t_min)
        lo, hi = torch.zeros_like(u), torch.ones_like(u)
        for _ in range(60):  # bisection on the monotone CDF
            mid = 0.5 * (lo + hi)
            below = self._cdf(mid, path, length, schedule, t_min, frame) < u
            lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
        s = 0.5 * (lo + hi)
        return s, 1.0 / self.density(s, path, length, schedule, t_min)

    def __repr__(self) -> str:
        kind = "flat" if self.profile is None else f"fitted, {len(self.profile)} bins"
        return f"LogSNRImportance({self.inner!r}, floor={self.floor:g}, {kind})"


class PathDistribution:
    """A distribution over decoding paths (claim C9): ``paths`` with ``weights`` (uniform by default)."""

    def __init__(self, paths: Sequence[Path], weights: Sequence[float] | None = None):
        if not paths or not all(isinstance(p, Path) for p in paths):
            raise TypeError("paths must be a non-empty sequence of Path objects")
        w = torch.ones(len(paths), dtype=torch.float64) if weights is None else torch.as_tensor(
            weights, dtype=torch.float64)
        if w.shape != (len(paths),) or bool((w < 0).any()) or not float(w.sum()) > 0:
            raise ValueError("weights must be non-negative, one per path, with a positive sum")
        self.paths = list(paths)
        self.weights = w / w.sum()

    def pick(self, count: int, generator: torch.Generator | None = None) -> Tensor:
        """Indices (count,) of paths drawn with the weights; ``count`` an integer >= 1."""
        count = as_int(count, "count", minimum=1)
        return torch.multinomial(self.weights, count, replacement=True, generator=generator)

    def __repr__(self) -> str:
        return f"PathDistribution({self.paths!r}, weights={self.weights.tolist()})"
