"""Adapter: any torchdiffeq method as an evoflow solver, run grid step by grid step.

Each grid step ``t_from -> t_to`` is one ``torchdiffeq.odeint`` call over r in [0, 1] of the
per-token system of :mod:`evoflow.solvers.base` (latents and, for the likelihood, the
log-determinant as a second state). Knots of the path are grid points, so an adaptive method
(dopri5 with its tolerances) never steps across a kink of the path. Network calls are counted
by the field, adaptive rejections included. Derivation: proofs/p02_path_invariance.md.
"""

from __future__ import annotations

import torch
from torch import Tensor

from evoflow.field import Field
from evoflow.solvers.base import Solver, State, register

__all__ = ["TorchDiffEq"]

# Declared orders of torchdiffeq's methods (adaptive ones: order of the propagated solution).
_ORDERS = {
    "euler": (1, False), "midpoint": (2, False), "heun2": (2, False), "heun3": (3, False), "rk4": (4, False),
    "explicit_adams": (4, False), "implicit_adams": (4, False),
    "dopri5": (5, True), "dopri8": (8, True), "bosh3": (3, True), "fehlberg2": (2, True),
    "adaptive_heun": (2, True),
}


class TorchDiffEq(Solver):
    """Run ``torchdiffeq.odeint(method=...)`` over each grid step (claim C2 along any path).

    ``rtol``/``atol`` apply to adaptive methods (torchdiffeq's defaults are 1e-7 / 1e-9);
    ``options`` is passed through. ``order`` defaults to the method's known order.
    """

    kind = "ode"

    def __init__(self, method: str = "dopri5", rtol: float = 1e-7, atol: float = 1e-9,
                 options: dict | None = None, order: int | None = None):
        if method not in _ORDERS and order is None:
            raise ValueError(f"unknown torchdiffeq method {method!r}; known: {', '.join(sorted(_ORDERS))} "
                             "(or pass order= for another method)")
        known_order, adaptive = _ORDERS.get(method, (order, False))
        self.method, self.rtol, self.atol = method, float(rtol), float(atol)
        self.options = dict(options or {})
        self.order = int(order if order is not None else known_order)
        self.adaptive = adaptive
        self.name = f"torchdiffeq:{method}"

    def advance(self, field: Field, state: State, t_from: Tensor, t_to: Tensor,
                generator: torch.Generator | None) -> State:
        from torchdiffeq import odeint

        dt = t_to - t_from  # (B, L); r is clamped to [0, 1] for the initial-step probe of adaptive methods
        dtz = dt.to(state.z.dtype)[..., None]
        with_logdet = state.logdet is not None and field.divergence is not None

        def rate(r: Tensor, y: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
            ev = field(y[0], t_from + r.to(dt.dtype).clamp(0.0, 1.0) * dt)
            if not with_logdet:
                return (ev.u * dtz,)
            return ev.u * dtz, (ev.div * dt.to(ev.div.dtype)).sum(-1).to(y[1].dtype)

        y0 = (state.z, state.logdet) if with_logdet else (state.z,)
        r = torch.tensor([0.0, 1.0], dtype=state.z.dtype, device=state.z.device)
        kwargs, options = {}, dict(self.options)
        if self.adaptive:  # land on r = 1 exactly instead of stepping past it and interpolating back
            kwargs = {"rtol": self.rtol, "atol": self.atol}
            options.setdefault("step_t", r[1:])
        out = odeint(rate, y0, r, method=self.method, options=options or None, **kwargs)
        z = out[0][-1]
        logdet = out[1][-1] if with_logdet else state.logdet
        return State(z=z, logdet=logdet, memory=state.memory)

    def __repr__(self) -> str:
        return f"TorchDiffEq({self.method!r}, rtol={self.rtol:g}, atol={self.atol:g})"


for _m in ("dopri5", "bosh3", "rk4"):
    register(f"torchdiffeq:{_m}", lambda _m=_m, **kw: TorchDiffEq(_m, **kw))
