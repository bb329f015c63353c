"""Exact flow maps for the solver tests, computed independently of evoflow's solvers.

scipy's DOP853 (rtol = atol = 1e-12) integrates the plain field of claim C1,
``dz/ds = sum_i u_i(z, tau(s)) dt_i/ds`` with ``u`` from :func:`evoflow.process.velocity`, along a
path, piece by piece between its knots. Toward the clean end it stops at a time ``t_ref`` where the
oracle's posterior has collapsed onto one token (checked: 1 - max p < 1e-13). From there on ``ehat``
is constant, so the ODE is linear and its solution is closed-form,
``z(t) = alpha(t) e + sigma(t) eps`` with ``eps = (z(t_ref) - alpha(t_ref) e) / sigma(t_ref)``: the
flow map all the way to any ``t_min``, 0 included, without integrating the stiff end.
"""

from __future__ import annotations

import itertools

import numpy as np
import torch
from scipy.integrate import solve_ivp

import evoflow as ef
from evoflow.process import denoised, velocity

F64 = torch.float64


def separated_oracle(schedule: ef.Schedule, length: int = 3, seed: int = 0, side: float = 3.0) -> ef.MarkovOracle:
    """A 3-token Markov oracle whose embeddings are ``side`` apart (a triangle in d = 2), so that the
    posterior collapses early and the closed-form tail starts at a non-stiff time."""
    g = torch.Generator().manual_seed(seed)
    angles = torch.tensor([0.0, 2.0, 4.0], dtype=F64) * torch.pi / 3
    E = side / 3**0.5 * torch.stack([angles.cos(), angles.sin()], 1)
    init = torch.softmax(torch.randn(3, generator=g, dtype=F64), 0)
    A = torch.softmax(1.5 * torch.randn(3, 3, generator=g, dtype=F64), 1)
    return ef.MarkovOracle(init, A, E, schedule, length=length)


def _segments(path: ef.Path, L: int) -> list[tuple[float, float]]:
    end = path.clock_end(L) / path.clock(L)
    cuts = [0.0, *[k for k in path.knots(L).tolist() if k < end], end]
    return list(itertools.pairwise(cuts))


def _times(path: ef.Path, s: float, L: int, lo: float, t_min: float, done: torch.Tensor
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """Times at s (tokens ``done`` before this piece at t_min, the others on [lo, 1]) and d t / ds."""
    s_t = torch.tensor([s], dtype=F64)
    tau = path.tau(s_t, L)[0]
    t = torch.where(tau == 1.0, torch.ones_like(tau), lo + (1 - lo) * tau)
    return torch.where(done, torch.full_like(tau, t_min), t), (1 - lo) * path.dtau(s_t, L)[0]


def flow_map(oracle, z: torch.Tensor, path: ef.Path, t_min: float, t_ref: float = 0.05,
             rtol: float = 1e-10) -> torch.Tensor:
    """The exact flow map of ``z`` (B, L, d) from the noise end of ``path`` to ``t_min`` (sampling direction).

    Valid for paths whose moving tokens share one time (Synchronous, Staircase) or for ``t_min >= t_ref``.
    """
    B, L, d = z.shape
    sch = oracle.schedule
    lo = max(t_min, t_ref)
    y = z.clone()
    for a, b in _segments(path, L):
        done = path.tau(torch.tensor([a], dtype=F64), L)[0] == 0

        def rhs(s, flat, done=done):
            zz = torch.from_numpy(flat).reshape(B, L, d)
            t, dt = (v.expand(B, L) for v in _times(path, s, L, lo, t_min, done))
            u = velocity(zz, denoised(oracle(zz, t), oracle.embeddings, zz), t, sch)
            return (u * dt[..., None]).reshape(-1).numpy()

        sol = solve_ivp(rhs, (a, b), y.reshape(-1).numpy(), method="DOP853", rtol=rtol, atol=rtol / 100)
        assert sol.success, sol.message
        y = torch.from_numpy(sol.y[:, -1]).reshape(B, L, d)
        landing = (path.tau(torch.tensor([b], dtype=F64), L)[0] == 0) & ~done
        if t_min < t_ref and bool(landing.any()):  # tokens that reached t_ref go on in closed form to t_min
            t_end = _times(path, b, L, lo, t_min, done)[0].expand(B, L)
            y = torch.where(landing[..., None], _tail(oracle, y, t_end, t_min, landing.expand(B, L)), y)
    return y


def _tail(oracle, z: torch.Tensor, t: torch.Tensor, t_min: float, landing: torch.Tensor) -> torch.Tensor:
    """``alpha(t_min) e + sigma(t_min) eps`` for the ``landing`` tokens (B, L) of ``z`` at times ``t`` (B, L)."""
    post = oracle.posterior(z, t)
    doubt = (1 - post.max(-1).values)[landing]
    assert float(doubt.max()) < 1e-13, "posterior not collapsed at t_ref: lower t_ref"
    e = oracle.embeddings[post.argmax(-1)]
    sch = oracle.schedule
    tm = torch.full_like(t, t_min)
    eps = (z - sch.alpha(t)[..., None] * e) / sch.sigma(t)[..., None]
    return sch.alpha(tm)[..., None] * e + sch.sigma(tm)[..., None] * eps


def slope(steps, errors) -> float:
    """Fitted order: minus the slope of log(error) against log(steps)."""
    return float(-np.polyfit(np.log(steps), np.log(errors), 1)[0])
