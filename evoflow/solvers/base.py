"""The Solver contract, the solver state, and the registry (with the ``evoflow.solvers`` entry points).

A solver advances the per-token state over one grid step ``t_from -> t_to`` (both (B, L)) of
the probability-flow ODE of claim C2: inside the step the times move linearly,
``tau(r) = t_from + r (t_to - t_from)`` for r in [0, 1], so

    dz_i / dr = u_i(z, tau(r)) (t_to,i - t_from,i),      d logdet / dr = sum_i D_i (t_to,i - t_from,i),

the second equation carried only when the field has a divergence estimator (claim C11).
Tokens with ``t_to == t_from`` are returned bit-for-bit unchanged, and a step in which no
token of the batch moves costs no network call; :meth:`Solver.step` enforces both for every
solver, third-party ones included. It also owns the landing on a singular clean end
(``sigma(t_to) = 0``, where ``u`` is undefined): such tokens take the exponential-integrator
step ``alpha_s ehat + sigma_s epshat`` from the step's start (the DDIM step; Karras et al. use
Euler there), exact for a frozen ``ehat``, which lands on ``ehat``.
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
    against a fitted log-log error slope; ``adaptive`` (error-controlled inner steps).
    Subclasses implement :meth:`advance`; callers use :meth:`step`.
    """

    name: str = "solver"
    kind: str = "ode"
    order: int = 1
    adaptive: bool = False

    def advance(self, field: Field, state: State, t_from: Tensor, t_to: Tensor,
                generator: torch.Generator | None) -> State:
        """Advance every token from ``t_from`` to ``t_to`` (B, L); frozen tokens may be left as computed."""
        raise NotImplementedError

    def step(self, field: Field, state: State, t_from: Tensor, t_to: Tensor,
             generator: torch.Generator | None = None) -> State:
        """One grid step; tokens whose time does not change keep their latents bit-for-bit."""
        moving = t_to != t_from  # (B, L)
        if not bool(moving.any()):
            return state
        new = self.advance(field, state, t_from, t_to, generator)
        land = moving & (t_to < t_from) & (field.schedule.sigma(t_to) == 0)
        if bool(land.any()):  # the field is singular there: take the exponential step from the start
            ehat = field(state.z, t_from).ehat  # the first stage of most solvers: a cache hit, no new call
            landed = ddim_mean(state.z, ehat, t_from, t_to, field.schedule)
            new = replace(new, z=torch.where(land[..., None], landed, new.z))
        if bool(moving.all()):
            return new
        return replace(new, z=torch.where(moving[..., None], new.z, state.z))

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
