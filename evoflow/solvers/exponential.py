"""Exponential integrators in the data-prediction form: DDIM (with eta) and DPM-Solver++(2M).

Writing ``z_t = alpha_t ehat + sigma_t epshat`` and freezing ``ehat`` over a step gives the exact
solution of the ODE of claim C2 over that step (THEORY section 3, stochastic family):

    z_s = alpha_s ehat + sqrt(sigma_s^2 - c^2) epshat + c xi,   c = eta sqrt(sig2),

where ``sig2`` is the step-posterior variance (:func:`evoflow.process.step_posterior`). ``eta = 0``
is DDIM, the first-order exponential integrator; ``eta = 1`` is ancestral sampling from the
Gaussian reverse kernel. DPM-Solver++(2M) adds a second-order multistep correction in logSNR,
per token. Derivation: proofs/p02_path_invariance.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from evoflow.field import Field
from evoflow.process import ddim_mean, epsilon, step_posterior
from evoflow.solvers.base import Solver, State, register

__all__ = ["DDIM", "DPMSolverPP2M", "ddim_mean"]


def _c(x: Tensor, like: Tensor) -> Tensor:
    return x.to(like.dtype)[..., None]


def _logdet_left(state: State, div: Tensor | None, dt: Tensor) -> Tensor | None:
    """First-order (left-point) quadrature of ``sum_i D_i dt_i`` added to the log-determinant."""
    if state.logdet is None or div is None:
        return state.logdet
    return state.logdet + (div * dt.to(div.dtype)).sum(-1)


class DDIM(Solver):
    """DDIM with stochasticity ``eta`` in [0, 1]: eta = 0 is the ODE solver (order 1), eta = 1 ancestral.
    (THEORY section 3, C2)

    Stochastic steps (eta > 0) run only toward the clean end (``t_to <= t_from``). The step integrates
    the stiff linear part of the field exactly, so it lands on the clean end as it is
    (``exponential = True``: no regular point, :mod:`evoflow.solvers.landing`).
    """

    exponential = True

    def __init__(self, eta: float = 0.0):
        if not 0.0 <= float(eta) <= 1.0:
            raise ValueError(f"eta must lie in [0, 1], got {eta}")
        self.eta = float(eta)
        self.kind = "ode" if self.eta == 0 else "sde"
        self.name = "ddim" if self.eta == 0 else ("ddim-ancestral" if self.eta == 1 else f"ddim(eta={self.eta:g})")
        self.order = 1

    def advance(self, field: Field, state: State, t_from: Tensor, t_to: Tensor,
                generator: torch.Generator | None) -> State:
        ev = field(state.z, t_from)
        sch = field.schedule
        if self.eta == 0:
            z = ddim_mean(state.z, ev.ehat, t_from, t_to, sch)
        else:
            if bool((t_to > t_from).any()):
                raise ValueError("t_to: a stochastic DDIM step (eta > 0) only moves toward the clean end")
            _, sig2 = step_posterior(state.z, ev.ehat, t_from, t_to, sch)
            c2 = self.eta**2 * sig2
            keep = (sch.sigma(t_to) ** 2 - c2).clamp_min(0.0).sqrt()
            noise = torch.randn(state.z.shape, generator=generator, dtype=state.z.dtype, device=state.z.device)
            eps = epsilon(state.z, ev.ehat, t_from, sch)
            z = _c(sch.alpha(t_to), ev.ehat) * ev.ehat + _c(keep, eps) * eps + _c(c2.sqrt(), noise) * noise
        return State(z=z, logdet=_logdet_left(state, ev.div, t_to - t_from), memory=state.memory)

    def __repr__(self) -> str:
        return f"DDIM(eta={self.eta:g})"


@dataclass
class _Memory:
    ehat: Tensor  # (B, L, d) data prediction at the previous step's start
    lam: Tensor  # (B, L) logSNR there
    t: Tensor  # (B, L) time there
    div: Tensor | None  # (B, L) divergence there, when integrating a log-determinant


class DPMSolverPP2M(Solver):
    """DPM-Solver++(2M), the second-order multistep exponential integrator in logSNR (order 2) (C2).

    Per token, with ``h = lam(t_to) - lam(t_from)``, ``h_prev`` the previous step's and
    ``D = ehat``: ``z' = ddim_mean(z) + c_D h / (2 h_prev) (D - D_prev)`` where ``c_D`` is the
    coefficient of ``ehat`` in the DDIM step. A token that did not move in the previous step, or
    whose step touches an infinite logSNR (the ends of linear and cosine), takes the first-order
    step. The log-determinant uses the matching second-order (Adams-Bashforth) rule in t.
    """

    name = "dpm++2m"
    order = 2

    def advance(self, field: Field, state: State, t_from: Tensor, t_to: Tensor,
                generator: torch.Generator | None) -> State:
        sch = field.schedule
        ev = field(state.z, t_from)
        lam_a, lam_b = sch.log_snr(t_from), sch.log_snr(t_to)
        z = ddim_mean(state.z, ev.ehat, t_from, t_to, sch)
        logdet = _logdet_left(state, ev.div, t_to - t_from)
        mem: _Memory | None = state.memory if isinstance(state.memory, _Memory) else None
        if mem is not None:
            h, h_prev = lam_b - lam_a, lam_a - mem.lam
            ok = torch.isfinite(h) & torch.isfinite(h_prev) & (h_prev != 0) & (h != 0)
            ratio = torch.where(ok, h / torch.where(ok, 2.0 * h_prev, 1.0), 0.0)
            sg_a = sch.sigma(t_from)
            c_d = sch.alpha(t_to) - sch.alpha(t_from) * sch.sigma(t_to) / torch.where(sg_a > 0, sg_a, 1.0)
            z = z + _c(c_d * ratio, z) * (ev.ehat - mem.ehat)
            if logdet is not None and ev.div is not None and mem.div is not None:
                dt, dt_prev = t_to - t_from, t_from - mem.t
                slope = torch.where(dt_prev != 0, (ev.div - mem.div) / torch.where(dt_prev != 0, dt_prev, 1.0), 0.0)
                logdet = logdet + (0.5 * dt**2 * slope).sum(-1)
        memory = _Memory(ehat=ev.ehat, lam=lam_a, t=t_from, div=ev.div)
        return State(z=z, logdet=logdet, memory=memory)


register("ddim", lambda **kw: DDIM(eta=0.0, **kw))
register("ddim-ancestral", lambda **kw: DDIM(eta=1.0, **kw))
register("dpm++2m", DPMSolverPP2M)
