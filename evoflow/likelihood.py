"""Exact log-density through the probability-flow ODE (claim C11).

Integrate the ODE of claim C2 from the clean end (every token at ``t_min``) to the noise end
along a path, accumulating the instantaneous change of variables:

    log p_{t_min}(z) = log p_1(z(1)) + int sum_i D_i(z(s), tau(s)) dt_i,     D_i = div_{z_i} u_i,

the integral taken in the direction of integration (clean to noise). By C2 the answer does
not depend on the path; for an exact oracle it equals ``oracle.log_marginal(z, t_min)``.
Prompt columns (time 0 throughout the path) stay clean at t = 0: the result is then the density
of the other tokens given the prompt. Derivation: proofs/p11_exact_likelihood.md.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from evoflow.field import Divergence, Field, get_divergence
from evoflow.paths import Path, as_grid, grid_times
from evoflow.process import check_denoiser
from evoflow.solve import GridController, check_latents, check_t_min, integrate
from evoflow.solvers import Solver, State, get

__all__ = ["LikelihoodResult", "flow_log_likelihood", "gaussian_prior", "log_likelihood"]

Prior = Callable[[Tensor, Tensor], Tensor]  # (z_noise (B, L, d), tau_noise (B, L)) -> (B,)


def gaussian_prior(schedule) -> Prior:
    """The prior ``N(0, sigma(t)^2 I)`` on tokens at the noise end (exact when alpha(1) = 0) (THEORY section 5, C11).

    Tokens that did not reach t = 1 (prompt columns) are not counted: their density cancels.
    """

    def log_prior(z: Tensor, tau: Tensor) -> Tensor:
        noisy = (tau == 1.0).to(z.dtype)  # (B, L)
        var = (schedule.sigma(tau) ** 2).to(z.dtype)
        safe = torch.where(noisy > 0, var, torch.ones_like(var))
        d = z.shape[-1]
        per_token = -0.5 * (z**2).sum(-1) / safe - 0.5 * d * torch.log(2 * math.pi * safe)
        return (per_token * noisy).sum(-1)

    return log_prior


@dataclass
class LikelihoodResult:
    """``log_prob`` (B,) = ``log_prior`` (B,) + ``logdet`` (B,); ``z_noise`` (B, L, d); ``nfe`` calls (C11)."""

    log_prob: Tensor
    log_prior: Tensor
    logdet: Tensor
    z_noise: Tensor
    nfe: int


def flow_log_likelihood(denoiser, z: Tensor, path: Path | Sequence[Path] | Tensor, steps: int | None = None,
                        solver: Solver | str = "rk4", divergence: str | Divergence = "exact", t_min: float = 0.01,
                        prior: Prior | None = None, generator: torch.Generator | None = None) -> LikelihoodResult:
    """:func:`log_likelihood` with its parts (prior term, log-determinant, end point, call count) (C11)."""
    check_denoiser(denoiser)
    check_latents(z, denoiser)
    t_min = check_t_min(t_min)
    solver = get(solver)
    if solver.kind != "ode":
        raise ValueError(f"solver must be deterministic (kind 'ode') for the likelihood, got {solver!r}")
    sch = denoiser.schedule
    if float(sch.sigma(torch.tensor(t_min, dtype=torch.float64))) <= 0:
        raise ValueError(f"t_min must be > 0 for {sch!r}: sigma(t_min) = 0 makes the density degenerate")
    B, L, _ = z.shape
    grid = as_grid(path, L, steps, B)
    times = grid_times(grid, t_min).flip(0).to(device=z.device)  # clean -> noise
    field = Field(denoiser, divergence=get_divergence(divergence, generator), generator=generator)
    state = State(z=z, logdet=torch.zeros(B, dtype=z.dtype, device=z.device))
    out = integrate(field, solver, state, GridController(times), generator)
    log_prior = (prior or gaussian_prior(sch))(out.z, out.tau)
    total = log_prior + out.logdet
    if not bool(torch.isfinite(total).all()):
        raise FloatingPointError("log_likelihood produced non-finite values (denoiser output or step size)")
    return LikelihoodResult(log_prob=total, log_prior=log_prior, logdet=out.logdet, z_noise=out.z, nfe=out.nfe)


def log_likelihood(denoiser, z: Tensor, path: Path | Sequence[Path] | Tensor, steps: int | None = None,
                   solver: Solver | str = "rk4", divergence: str | Divergence = "exact", t_min: float = 0.01,
                   prior: Prior | None = None, generator: torch.Generator | None = None) -> Tensor:
    """Log-density (B,) of ``z`` (B, L, d) with every token at time ``t_min`` (claim C11).

    Integrates the probability-flow ODE from ``t_min`` to 1 along ``path`` with ``solver`` and
    the ``divergence`` estimator (``"exact"`` by autograd, in memory-bounded chunks; ``"hutchinson"``,
    with a fresh probe per call drawn from ``generator``; or a Divergence object). The result is
    differentiable with respect to ``z`` and to the denoiser's parameters whenever autograd is
    recording (the divergence then keeps its graph: run under ``torch.no_grad()`` for values only).
    ``prior`` defaults to ``N(0, sigma(1)^2 I)``, exact when ``alpha(1) = 0``. For an exact oracle
    the result equals ``oracle.log_marginal(z, full((B, L), t_min))`` as steps grow, whatever the
    path. Derivation: proofs/p11_exact_likelihood.md.
    """
    return flow_log_likelihood(denoiser, z, path, steps, solver, divergence, t_min, prior, generator).log_prob
