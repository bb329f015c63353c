"""The Solver contract, the solver state, and the registry (with the ``evoflow.solvers`` entry points).

A solver advances the per-token state over one grid step ``t_from -> t_to`` (both (B, L)) of
the probability-flow ODE of claim C2: inside the step the times move linearly,
``tau(r) = t_from + r (t_to - t_from)`` for r in [0, 1], so

    dz_i / dr = u_i(z, tau(r)) (t_to,i - t_from,i),      d logdet / dr = sum_i D_i (t_to,i - t_from,i),

the second equation carried only when the field has a divergence estimator (claim C11).
:meth:`Solver.step` wraps every solver's :meth:`Solver.advance`, third-party ones included, with
three rules: tokens with ``t_to == t_from`` are returned bit-for-bit unchanged; a step in which no
token of the batch moves costs no network call; and a step toward the clean end is integrated by
the solver only down to its regular point and finished by the exponential step
``alpha_s ehat + sigma_s epshat`` (:mod:`evoflow.solvers.landing`, which states what this does to
the order), so that every solver reaches ``t = 0`` and any ``t_min`` without blowing up.
Derivation: proofs/p02_path_invariance.md.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from importlib.metadata import entry_points
from typing import Any

import torch
from torch import Tensor

from evoflow.field import Field
from evoflow.process import ddim_mean
from evoflow.solvers.landing import regular_point

__all__ = ["Solver", "State", "get", "names", "register"]

ENTRY_POINT_GROUP = "evoflow.solvers"


@dataclass
class State:
    """Solver state: latents ``z`` (B, L, d), accumulated ``logdet`` (B,) or None, solver ``memory`` (C2, C11)."""

    z: Tensor
    logdet: Tensor | None = None
    memory: Any = None


class Solver:
    """A one-step method on per-token times with a declared order (THEORY sections 3-4).

    Attributes: ``name``; ``kind`` ("ode" deterministic, "sde" stochastic); ``order``, the
    declared convergence order (strong for "ode", weak for "sde"), checked by the tests
    against a fitted log-log error slope; ``adaptive`` (error-controlled inner steps); ``exponential``
    (the step integrates the stiff linear part of the field exactly, as DDIM does, so steps into the
    clean end need no regular point); ``whole_path`` (the solver integrates a grid known in advance at
    once through :meth:`integrate_grid`, as the torchdiffeq adapter runs one ``odeint`` over it).
    Subclasses implement :meth:`advance`; callers use :meth:`step`.
    """

    name: str = "solver"
    kind: str = "ode"
    order: int = 1
    adaptive: bool = False
    exponential: bool = False
    whole_path: bool = False

    def advance(self, field: Field, state: State, t_from: Tensor, t_to: Tensor,
                generator: torch.Generator | None) -> State:
        """Advance every token from ``t_from`` to ``t_to`` (B, L); frozen tokens may be left as computed."""
        raise NotImplementedError

    def step(self, field: Field, state: State, t_from: Tensor, t_to: Tensor,
             generator: torch.Generator | None = None) -> State:
        """One grid step (C2): frozen tokens keep their latents bit-for-bit, idle steps cost nothing, and
        steps into the stiff clean end finish with the exponential step (:mod:`evoflow.solvers.landing`)."""
        moving = t_to != t_from  # (B, L)
        if not bool(moving.any()):
            return state
        t_reg = t_to if self.exponential else regular_point(field.schedule, t_from, t_to, self.adaptive)
        new = self.advance(field, state, t_from, t_reg, generator) if bool((t_reg != t_from).any()) else state
        new = self.land(field, new, t_reg, t_to)
        if bool(moving.all()):
            return new
        return replace(new, z=torch.where(moving[..., None], new.z, state.z))

    def integrate_grid(self, field: Field, state: State, times: Tensor, generator: torch.Generator | None = None,
                       record: bool = False) -> tuple[State, list[Tensor]]:
        """For ``whole_path`` solvers: carry ``state`` along the grid ``times`` (K+1, B, L) at once, under
        the rules of :meth:`step` (C2); return the final state and, if ``record``, the latents at every row."""
        raise NotImplementedError(f"{self!r} integrates step by step (whole_path is False)")

    def land(self, field: Field, state: State, t_reg: Tensor, t_to: Tensor) -> State:
        """Finish tokens with ``t_reg != t_to`` by the exponential step from ``t_reg`` (THEORY section 3).

        ``state`` holds the latents at times ``t_reg`` (B, L); one network call there gives ``ehat``,
        and ``z_s = alpha_s ehat + sigma_s epshat`` is exact when ``ehat`` does not change over
        ``[t_to, t_reg]``. The log-determinant, when carried, takes the left-point rule.
        """
        split = t_reg != t_to
        if not bool(split.any()):
            return state
        ev = field(state.z, t_reg)
        z = torch.where(split[..., None], ddim_mean(state.z, ev.ehat, t_reg, t_to, field.schedule), state.z)
        logdet = state.logdet
        if logdet is not None and ev.div is not None:
            logdet = logdet + (ev.div * (t_to - t_reg).to(ev.div.dtype)).sum(-1)
        return State(z=z, logdet=logdet, memory=state.memory)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


_BUILTINS: dict[str, Callable[[], Solver]] = {}


def register(name: str, factory: Callable[[], Solver]) -> None:
    """Register a solver factory under ``name`` (what plugins do through the entry-point group) (C2)."""
    if not isinstance(name, str) or not name:
        raise ValueError("name must be a non-empty string")
    _BUILTINS[name] = factory


def _plugins() -> dict[str, Any]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def names() -> list[str]:
    """All registered solver names: built-in ones and those of the ``evoflow.solvers`` entry points (C2)."""
    return sorted(set(_BUILTINS) | set(_plugins()))


def get(name: str | Solver, **kwargs) -> Solver:
    """The solver registered as ``name`` (a Solver object is returned as is) (C2).

    ``torchdiffeq:<method>`` resolves any torchdiffeq method through the adapter. Unknown names
    raise ``ValueError`` listing the available ones.
    """
    if isinstance(name, Solver):
        return name
    if not isinstance(name, str):
        raise TypeError(f"solver must be a Solver object or a registered name, got {type(name).__name__}")
    if name in _BUILTINS:
        return _BUILTINS[name](**kwargs)
    plugins = _plugins()
    if name in plugins:
        made = plugins[name].load()
        solver = made(**kwargs) if callable(made) and not isinstance(made, Solver) else made
        if not isinstance(solver, Solver):
            raise TypeError(f"entry point {name!r} of group {ENTRY_POINT_GROUP!r} did not give a Solver")
        return solver
    if name.startswith("torchdiffeq:"):
        from evoflow.solvers.external import TorchDiffEq

        return TorchDiffEq(name.split(":", 1)[1], **kwargs)
    raise ValueError(f"unknown solver {name!r}; available: {', '.join(names())}")
