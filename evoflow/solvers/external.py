"""Adapter: any torchdiffeq method as an evoflow solver, one ``odeint`` over each smooth piece of the path.

Along a known grid ``T`` (K+1, B, L) the path is piecewise linear in the row index ``s`` in
[0, K]: ``tau(s) = T_k + (s - k)(T_{k+1} - T_k)`` on ``[k, k+1]``, so (claim C2)

    dz/ds = sum_i u_i(z, tau(s)) (T_{k+1,i} - T_{k,i}),     d logdet/ds = sum_i D_i (T_{k+1,i} - T_{k,i}),

and one ``torchdiffeq.odeint`` call integrates it with the rows as output times: multistep
methods (the Adams family) keep their history from row to row and adaptive methods (dopri5,
bosh3) pick their first step once, as in torchdiffeq itself. A run is cut only where it must be:
at a kink of the path (a row where some token's speed changes, e.g. a staircase's block ends),
because a multistep history or an adaptive step across a kink loses the method's order
(torchdiffeq's ``jump_t`` misses a jump that a step lands on exactly); before steps in which
nothing moves (no network call); and after a step into the clean end, which finishes with the
exponential step from its regular point (:mod:`evoflow.solvers.landing`), a step run on its own. So a
synchronous path is one call (two when its last step lands through a stiff end), a staircase one or
two per block. Adaptive methods land on the end of each run
(``step_t``) instead of stepping past it and interpolating back. Under an adaptive controller,
whose rows are not known in advance, each step is one call (:meth:`TorchDiffEq.advance`). Network
calls are counted by the field, rejected steps included. Derivation: proofs/p02_path_invariance.md.
"""

from __future__ import annotations

import torch
from torch import Tensor

from evoflow.field import Field
from evoflow.solvers.base import Solver, State, register
from evoflow.solvers.landing import regular_point

__all__ = ["TorchDiffEq"]

# Declared orders of torchdiffeq's methods (adaptive ones: order of the propagated solution).
_ORDERS = {
    "euler": (1, False), "midpoint": (2, False), "heun2": (2, False), "heun3": (3, False), "rk4": (4, False),
    "explicit_adams": (4, False), "implicit_adams": (4, False),
    "dopri5": (5, True), "dopri8": (8, True), "bosh3": (3, True), "fehlberg2": (2, True),
    "adaptive_heun": (2, True),
}


def _kink(times: Tensor, j: int) -> bool:
    """Whether the piecewise-linear path through the rows ``times`` (K+1, B, L) bends at row ``j``."""
    before, after = times[j] - times[j - 1], times[j + 1] - times[j]
    return not bool(torch.isclose(after, before, rtol=1e-9, atol=1e-12).all())


class TorchDiffEq(Solver):
    """Run ``torchdiffeq.odeint(method=...)`` along the path: one call over a known grid (claim C2).

    ``rtol``/``atol`` apply to adaptive methods (torchdiffeq's defaults are 1e-7 / 1e-9);
    ``options`` is passed through. ``order`` defaults to the method's known order.
    """

    kind = "ode"
    whole_path = True

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

    def _odeint(self, field: Field, state: State, rows: Tensor) -> tuple[State, Tensor]:
        """Integrate along ``rows`` (m+1, B, L) in one call; the latents at every row (m+1, B, L, d)."""
        from torchdiffeq import odeint

        m = rows.shape[0] - 1
        with_logdet = state.logdet is not None and field.divergence is not None

        def rate(s: Tensor, y: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
            s = s.to(torch.float64).clamp(0.0, float(m))
            k = min(int(s.floor()), m - 1)
            dtau = rows[k + 1] - rows[k]  # (B, L)
            ev = field(y[0], rows[k] + (s - k) * dtau)
            if not with_logdet:
                return (ev.u * dtau.to(ev.u.dtype)[..., None],)
            return ev.u * dtau.to(ev.u.dtype)[..., None], (ev.div * dtau.to(ev.div.dtype)).sum(-1).to(y[1].dtype)

        y0 = (state.z, state.logdet) if with_logdet else (state.z,)
        s = torch.arange(m + 1, dtype=state.z.dtype, device=state.z.device)
        kwargs, options = {}, dict(self.options)
        if self.adaptive:  # land on the end exactly: no evaluation past it, no interpolation back
            kwargs = {"rtol": self.rtol, "atol": self.atol}
            options.setdefault("step_t", s[-1:])
        out = odeint(rate, y0, s, method=self.method, options=options or None, **kwargs)
        logdet = out[1][-1] if with_logdet else state.logdet
        return State(z=out[0][-1], logdet=logdet, memory=state.memory), out[0]

    def advance(self, field: Field, state: State, t_from: Tensor, t_to: Tensor,
                generator: torch.Generator | None) -> State:
        """One step as one ``odeint`` call (used under adaptive controllers)."""
        return self._odeint(field, state, torch.stack([t_from, t_to]))[0]

    def integrate_grid(self, field: Field, state: State, times: Tensor, generator: torch.Generator | None = None,
                       record: bool = False) -> tuple[State, list[Tensor]]:
        """Carry ``state`` along the grid ``times`` (K+1, B, L); the latents at every row if ``record`` (C2).

        Each smooth run of steps in which something moves is one ``odeint``; a run also ends after a
        step into the clean end, which lands by :meth:`Solver.land`. Frozen tokens are restored
        bit-for-bit at every row.
        """
        K = times.shape[0] - 1
        zs, k = [state.z], 0
        while k < K:
            if not bool((times[k + 1] != times[k]).any()):  # an idle step: no call
                if record:
                    zs.append(state.z)
                k += 1
                continue
            j, t_reg = k, None
            while j < K and bool((times[j + 1] != times[j]).any()):
                reg = regular_point(field.schedule, times[j], times[j + 1], self.adaptive)
                if bool((reg != times[j + 1]).any()):  # a landing step: a run of its own (it bends the path)
                    if j == k:
                        t_reg, j = reg, j + 1
                    break
                j += 1
                if j < K and _kink(times, j):
                    break
            rows = times[k:j + 1].clone()
            if t_reg is not None:
                rows[-1] = t_reg
            new, run = self._odeint(field, state, rows)
            if t_reg is not None:
                new = self.land(field, new, t_reg, times[j])
                run = torch.cat([run[:-1], new.z[None]])
            z = zs[-1]
            for i in range(1, run.shape[0]):  # tokens that did not move keep their latents exactly
                z = torch.where((times[k + i] == times[k + i - 1])[..., None], z, run[i])
                zs.append(z)
            if not record:
                del zs[:-1]
            state = State(z=z, logdet=new.logdet, memory=new.memory)
            k = j
        return state, zs

    def __repr__(self) -> str:
        return f"TorchDiffEq({self.method!r}, rtol={self.rtol:g}, atol={self.atol:g})"


for _m in ("dopri5", "bosh3", "rk4"):
    register(f"torchdiffeq:{_m}", lambda _m=_m, **kw: TorchDiffEq(_m, **kw))
