"""The clean end: where the field is stiff, and at t = 0 singular, and how every solver gets there.

Near the clean end the velocity of claim C1 has a stiff linear part,

    u_i = (sigma'_i / sigma_i) (z_i - alpha_i ehat_i) + alpha'_i ehat_i,

whose rate ``a(t) = sigma'(t) / sigma(t)`` grows like 1/t (and is infinite at t = 0 where
``sigma = 0``). An explicit method stepping from ``t_from`` to ``t_to`` is accurate on that part
only while its *stiffness number* ``(t_from - t_to) a(t_to)`` stays O(1); beyond that it amplifies
the noise component instead of removing it (rk4 on a uniform 20-step grid to ``t_min = 1e-9``
returns latents of norm 1e6). The exponential step ``z_s = alpha_s ehat + sigma_s epshat`` (DDIM)
integrates the linear part exactly, so it stays exact however stiff the step is, provided ``ehat``
does not change.

So, in the sampling direction, each moving token's step is split at a *regular point*
``t_reg`` in ``[t_to, t_from]``: the solver integrates down to ``t_reg`` and the exponential step,
with ``ehat`` evaluated there (one extra network call per such step), covers ``[t_to, t_reg]``.
``t_reg`` is the smallest time at which

- the stiffness number of the solver's part is at most :data:`STIFFNESS` (fixed-step solvers
  only: error-controlled ones shrink their own inner steps), and
- the logSNR is at most :data:`LOG_SNR_FLOOR` (``sigma / alpha >= 1e-3``, EDM's smallest noise
  level is 2e-3): below it every solver hands over to exponential steps, which is what makes
  the singular end ``t = 0`` reachable.

Effect on the order: steps that end in the regular region are untouched, so a solver keeps its
declared order there (both directions, and sampling to any ``t_min`` above the floor on grids
fine enough that the last step is not stiff). A split step adds the exponential step's local
error, which is first order in the change of ``ehat`` over ``[t_to, t_reg]``: for data on a
discrete set of embeddings that change decays like ``exp(-c SNR(t_reg))``, so on a refined grid
(``t_reg`` of order of the step) it falls faster than any power of the step and the measured
order is the solver's own (tests/solvers/test_clean_end.py). Exponential integrators
(:attr:`Solver.exponential`) are exact on the linear part and are never split.
Derivation: proofs/p02_path_invariance.md (the ODE of C2), THEORY section 3 (the DDIM step).
"""

from __future__ import annotations

import functools
import math

import torch
from torch import Tensor

from evoflow.schedules import Schedule

__all__ = ["regular_point", "stiffness_rate"]

STIFFNESS = 1.0  # largest stiffness number (t_from - t) sigma'(t)/sigma(t) of a fixed step near the clean end
LOG_SNR_FLOOR = 2.0 * math.log(1e3)  # logSNR above which steps are exponential (sigma / alpha < 1e-3)
_BISECTIONS = 50


def stiffness_rate(schedule: Schedule, t: Tensor) -> Tensor:
    """``a(t) = sigma'(t) / sigma(t)``, the rate of the stiff linear part of the field (``inf`` at sigma = 0) (C1)."""
    sg = schedule.sigma(t)
    return torch.where(sg > 0, schedule.dsigma(t) / torch.where(sg > 0, sg, torch.ones_like(sg)), math.inf)


@functools.lru_cache(maxsize=64)
def _floor(schedule: Schedule) -> float:
    """The time at which logSNR reaches the floor (0 when the schedule never gets there)."""
    lam0 = schedule.log_snr(torch.zeros((), dtype=torch.float64))
    if not float(lam0) > LOG_SNR_FLOOR:
        return 0.0
    return float(schedule.t_of_log_snr(torch.tensor(LOG_SNR_FLOOR, dtype=torch.float64)))


def _stable_point(schedule: Schedule, t_from: Tensor, t_to: Tensor) -> Tensor:
    """Smallest t in [t_to, t_from] with ``(t_from - t) a(t) <= STIFFNESS``, by bisection where needed.

    ``f(t) = (t_from - t) a(t)`` decreases in t (both factors do for a log-concave sigma), so the
    condition holds on ``[t_reg, t_from]``; where it already holds at ``t_to``, ``t_reg = t_to``.
    When every stiff token takes the same step (a synchronous batch), the bisection runs once.
    """
    stiff = (t_from - t_to) * stiffness_rate(schedule, t_to) > STIFFNESS
    if not bool(stiff.any()):
        return t_to
    start, lo = t_from[stiff], t_to[stiff]
    shared = bool((start == start[0]).all() and (lo == lo[0]).all())
    if shared:  # one step for every stiff token (a synchronous batch): bisect once
        start, lo = start[:1], lo[:1]
    hi = start  # f(lo) > STIFFNESS >= f(hi) = 0
    for _ in range(_BISECTIONS):
        mid = 0.5 * (lo + hi)
        bad = (start - mid) * stiffness_rate(schedule, mid) > STIFFNESS
        lo, hi = torch.where(bad, mid, lo), torch.where(bad, hi, mid)
    out = t_to.clone()
    out[stiff] = hi.expand(int(stiff.sum())) if shared else hi
    return out


def regular_point(schedule: Schedule, t_from: Tensor, t_to: Tensor, adaptive: bool) -> Tensor:
    """Per-token time ``t_reg`` (B, L) down to which a solver integrates a step ``t_from -> t_to``.

    ``t_reg = t_to`` except for tokens moving toward the clean end whose step ends below the
    logSNR floor or (for a fixed-step solver, ``adaptive=False``) whose stiffness number at
    ``t_to`` exceeds :data:`STIFFNESS`; those finish with the exponential step from ``t_reg``.
    See the module docstring for what this does to the order (C1, C2; THEORY section 3).
    """
    down = t_to < t_from
    if not bool(down.any()):
        return t_to
    floor = _floor(schedule)
    t_reg = torch.where(down & (t_to < floor), t_from.clamp(max=floor), t_to)
    if not adaptive:
        t_reg = torch.maximum(t_reg, torch.where(down, _stable_point(schedule, t_from, t_to), t_to))
    return t_reg
