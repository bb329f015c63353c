"""Explicit Runge-Kutta solvers from Butcher tableaux: Euler, Midpoint, Heun, RK4.

One routine steps any tableau ``(A, b, c)`` on the per-token ODE of claim C2 over the step
parameter r in [0, 1] (see :mod:`evoflow.solvers.base`):

    k_j = Dt * u(z + sum_l A_jl k_l, t_from + c_j Dt),      z' = z + sum_j b_j k_j,

with ``Dt = t_to - t_from`` per token, and the same weights on the divergence when the field
carries one (claim C11). Tokens landing on a singular end are handled by
:meth:`evoflow.solvers.Solver.step`. Derivation: proofs/p02_path_invariance.md.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from evoflow.field import Field
from evoflow.solvers.base import Solver, State, register

__all__ = ["RK4", "Euler", "ExplicitRK", "Heun", "Midpoint"]


def _step_from(z: Tensor, dtz: Tensor, weights: Sequence[float], us: list[Tensor]) -> Tensor:
    """``z + Dt sum_l w_l u_l`` over the non-zero weights, one fused multiply-add per term."""
    out = z
    for w, u in zip(weights, us, strict=False):
        if w:
            out = torch.addcmul(out, dtz, u, value=w) if out is z else out.addcmul_(dtz, u, value=w)
    return out


class ExplicitRK(Solver):
    """An explicit Runge-Kutta method given by its Butcher tableau and its declared order (C2)."""

    def __init__(self, name: str, A: Sequence[Sequence[float]], b: Sequence[float], c: Sequence[float], order: int):
        s = len(b)
        if len(c) != s or len(A) != s or any(len(row) != j for j, row in enumerate(A)):
            raise ValueError("tableau must have s stages: c and b of length s, A strictly lower triangular rows")
        if abs(sum(b) - 1.0) > 1e-12:
            raise ValueError(f"tableau weights b must sum to 1, got {sum(b)}")
        self.name, self.A, self.b, self.c, self.order = name, [list(r) for r in A], list(b), list(c), order

    def advance(self, field: Field, state: State, t_from: Tensor, t_to: Tensor,
                generator: torch.Generator | None) -> State:
        dt = t_to - t_from  # (B, L) float64
        dtz = dt.to(state.z.dtype)[..., None]  # (B, L, 1)
        us: list[Tensor] = []  # stage velocities (B, L, d)
        divs: list[Tensor] = []  # stage divergence rates sum_i D_i dt_i, (B,)
        for c_j, row in zip(self.c, self.A, strict=True):
            z_j = _step_from(state.z, dtz, row, us)
            ev = field(z_j, t_from + c_j * dt if c_j else t_from)
            us.append(ev.u)
            if ev.div is not None:
                divs.append((ev.div * dt.to(ev.div.dtype)).sum(-1))
        z = _step_from(state.z, dtz, self.b, us)
        logdet = state.logdet
        if logdet is not None and divs:
            logdet = logdet + sum(b * k for b, k in zip(self.b, divs, strict=True) if b)
        return State(z=z, logdet=logdet, memory=state.memory)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Euler(ExplicitRK):
    """Forward Euler, order 1: ``z' = z + Dt u(z, t_from)`` (C2)."""

    def __init__(self):
        super().__init__("euler", A=[[]], b=[1.0], c=[0.0], order=1)


class Midpoint(ExplicitRK):
    """Explicit midpoint, order 2 (C2)."""

    def __init__(self):
        super().__init__("midpoint", A=[[], [0.5]], b=[0.0, 1.0], c=[0.0, 0.5], order=2)


class Heun(ExplicitRK):
    """Heun's method (explicit trapezoid), order 2 (C2)."""

    def __init__(self):
        super().__init__("heun", A=[[], [1.0]], b=[0.5, 0.5], c=[0.0, 1.0], order=2)


class RK4(ExplicitRK):
    """The classical fourth-order Runge-Kutta method (C2)."""

    def __init__(self):
        super().__init__(
            "rk4", A=[[], [0.5], [0.0, 0.5], [0.0, 0.0, 1.0]], b=[1 / 6, 1 / 3, 1 / 3, 1 / 6], c=[0.0, 0.5, 0.5, 1.0],
            order=4,
        )


for _cls in (Euler, Midpoint, Heun, RK4):
    register(_cls().name, _cls)
