"""Low-noise estimates behind the NELBO checks: Gaussian step-KL sums on common noise and the continuous limit.

On *common noise* every grid and every quadrature node of one draw sees the same
``z(t) = alpha(t) e_x + sigma(t) eps``; each z(t) still has the law ``q(z | x, t)``, so the average
over draws is unbiased for the expected step terms of THEORY section 5, while differences between
grids are paired (their noise cancels). The integral of ``continuous_integrand`` along a path is
taken by Gauss-Legendre quadrature between the path's grid points (knots included), so the K -> oo
limit of C4 is known to quadrature accuracy for each draw.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from evoflow.elbo import continuous_integrand, continuous_nelbo, reconstruction
from evoflow.estimators import Uniform
from evoflow.kernels import gaussian_step_kl
from evoflow.paths import grid_times, to_times
from evoflow.process import check_output, denoised
from evoflow.verify.context import F64, Context

__all__ = ["CommonNoise", "continuous_limit", "fitted_rate"]


class CommonNoise:
    """``draws`` noise vectors per sequence of ``x`` (B, L), shared by every time at which the model is asked
    (THEORY section 5, claims C4-C5); values come back per draw, (draws B,), rows ordered draw-major."""

    def __init__(self, ctx: Context, x: Tensor, draws: int, seed: int):
        self.model, self.schedule, self.E = ctx.model, ctx.model.schedule, ctx.model.embeddings
        self.B, self.L = x.shape
        self.xs = x.repeat(draws, 1)
        self.e = self.E[self.xs]
        self.eps = torch.randn(self.e.shape, generator=ctx.gen(seed), dtype=F64)
        self.draws = draws

    def latents(self, tau: Tensor) -> Tensor:
        """``z = alpha(tau) e + sigma(tau) eps`` for times tau (M, L); (M, N, L, d)."""
        t = tau[:, None, :]
        return self.schedule.alpha(t)[..., None] * self.e + self.schedule.sigma(t)[..., None] * self.eps

    def ehat(self, tau: Tensor) -> Tensor:
        """The model's posterior mean at times tau (M, L) on the common noise; (M, N, L, d)."""
        M, N = tau.shape[0], self.xs.shape[0]
        z = self.latents(tau).reshape(M * N, self.L, -1)
        t = tau[:, None, :].expand(M, N, self.L).reshape(M * N, self.L)
        return denoised(check_output(self.model(z, t), z, self.E.shape[0]), self.E, z).reshape(M, N, self.L, -1)

    def step_kls(self, grid: Tensor, t_min: float) -> Tensor:
        """Sum of the Gaussian step KLs (C3) along a grid (K+1, L), each at the step's noisier end; (N,)."""
        times = grid_times(grid, t_min)
        t, s = (v[:, None].expand(-1, self.xs.shape[0], -1) for v in (times[:-1], times[1:]))
        return gaussian_step_kl(self.e[None], self.ehat(times[:-1]), t, s, self.schedule).sum((0, 2))

    def integral(self, path, t_min: float, intervals: int, nodes: int = 3) -> Tensor:
        """``int_0^1 sum_i continuous_integrand ds`` along ``path`` (C4) by Gauss-Legendre quadrature; (N,)."""
        P = path.clock(self.L)
        c = path.grid_clocks(self.L, intervals) / P
        gl, gw = (torch.tensor(v, dtype=F64) for v in np.polynomial.legendre.leggauss(nodes))
        half = (c[1:] - c[:-1])[:, None] / 2
        s = ((c[1:] + c[:-1])[:, None] / 2 + half * gl).reshape(-1)
        w = (half * gw).reshape(-1)
        tau, dtau = to_times(path.tau(s, self.L), t_min), (1.0 - t_min) * path.dtau(s, self.L)
        N = self.xs.shape[0]
        f = continuous_integrand(self.e[None], self.ehat(tau), tau[:, None].expand(-1, N, -1),
                                 dtau[:, None].expand(-1, N, -1), self.schedule).sum(-1)
        return (w[:, None] * f).sum(0)

    def recon(self, t_min: float) -> Tensor:
        """The decoder term at ``t_min`` on the common noise; (N,)."""
        tau = torch.full((1, self.L), t_min, dtype=F64)
        z = self.latents(tau)[0]
        return reconstruction(self.model, self.xs, z, tau.expand(self.xs.shape[0], -1))

    def mean(self, values: Tensor) -> tuple[Tensor, Tensor]:
        """Mean over the draws and its standard error, each (B,)."""
        v = values.reshape(self.draws, self.B)
        return v.mean(0), v.std(0) / math.sqrt(self.draws)


def continuous_limit(ctx: Context, x: Tensor, path, t_min: float, seed: int, replicas: int = 1024,
                     calls: int = 16) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The library's continuous-time NELBO (C4, C9) of ``x`` (B, L) along ``path`` (or a PathDistribution),
    plain uniform s and the context's prior: mean and standard error of the total and of the integral, each
    (B,), over ``replicas`` independent estimates (prior, integral and decoder terms all resampled)."""
    B = x.shape[0]
    r = continuous_nelbo(ctx.model, x.repeat(replicas, 1), path, Uniform(), samples=calls, t_min=t_min,
                         generator=ctx.gen(seed), prior=ctx.prior)
    total, integral = r.total.reshape(replicas, B), r.integral.reshape(replicas, B)
    root = math.sqrt(replicas)
    return total.mean(0), total.std(0) / root, integral.mean(0), integral.std(0) / root


def fitted_rate(steps: list[int], gaps: list[float]) -> float:
    """Slope of ``-log |gap|`` against ``log K`` (C4); NaN unless every gap is non-zero with one sign."""
    g = np.asarray(gaps)
    if not (np.all(g > 0) or np.all(g < 0)):
        return math.nan
    return float(-np.polyfit(np.log(steps), np.log(np.abs(g)), 1)[0])
