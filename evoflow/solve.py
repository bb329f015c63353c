"""``solve``: the one loop that carries latents along a path of per-token times.

A *controller* proposes the next time vector from the current one (a fixed grid is the
trivial controller; the adaptive Evo controller of THEORY section 4 is another); a
:class:`~evoflow.solvers.Solver` takes the step. Sequences of one batch may follow different
paths: every token has its own time, so this costs nothing extra. Derivation:
proofs/p02_path_invariance.md (claim C2).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from evoflow.arguments import as_float
from evoflow.field import Field
from evoflow.paths import Path, as_grid, grid_times
from evoflow.process import check_denoiser
from evoflow.solvers import Solver, State, get

__all__ = ["Controller", "GridController", "SolveResult", "integrate", "solve"]


class Controller:
    """Chooses the next per-token time vector; ``None`` ends the solve (THEORY section 4)."""

    def start(self) -> Tensor:
        """The initial times (B, L)."""
        raise NotImplementedError

    def next(self, t: Tensor, state: State, field: Field) -> Tensor | None:
        """Times (B, L) after the step from ``t`` (given the state and the field), or None to stop."""
        raise NotImplementedError

    def plan(self) -> Tensor | None:
        """Every time vector (K+1, B, L) when they are fixed in advance, else None (adaptive controllers)."""
        return None


class GridController(Controller):
    """Walk the rows of a fixed time grid ``(K+1, B, L)`` in order (THEORY section 4, C2)."""

    def __init__(self, times: Tensor):
        self.times = times
        self._k = 0

    def start(self) -> Tensor:
        self._k = 0
        return self.times[0]

    def next(self, t: Tensor, state: State, field: Field) -> Tensor | None:
        self._k += 1
        return self.times[self._k] if self._k < self.times.shape[0] else None

    def plan(self) -> Tensor:
        return self.times


@dataclass
class SolveResult:
    """Outcome of :func:`solve` (claim C2): final latents ``z`` (B, L, d), final times ``tau`` (B, L),
    the exact number of denoiser calls ``nfe``, and, when asked for, the visited ``times``
    (K+1, B, L) and ``trajectory`` (K+1, B, L, d); ``logdet`` (B,) when a divergence was integrated."""

    z: Tensor
    tau: Tensor
    nfe: int
    times: Tensor | None = None
    trajectory: Tensor | None = None
    logdet: Tensor | None = None
    memory: object = None


def integrate(field: Field, solver: Solver, state: State, controller: Controller,
              generator: torch.Generator | None = None, record: bool = False,
              record_times: bool | None = None, restrict: bool = False) -> SolveResult:
    """Run ``solver`` from ``controller.start()`` until the controller stops; the one solve loop (C2).

    A solver with ``whole_path`` integrates a grid fixed in advance at once (one ``odeint`` for the
    torchdiffeq adapter); otherwise, and under adaptive controllers, the loop takes one step per row.
    ``record`` keeps the visited times and latents, ``record_times`` (default: ``record``) the times only.
    ``restrict``: each step's evaluations compute ``ehat`` and ``u`` only from the first to the last column
    that the step moves (:meth:`Field.restrict`); exact for a solver whose tokens outside the step's moving
    set are left as they are and whose per-token update reads only its own token's field (every solver here).
    The result's ``memory`` is the solver's final memory (a decoder's committed tokens).
    """
    keep_times = record if record_times is None else record_times
    grid = controller.plan()
    if solver.whole_path and grid is not None:
        state, traj = solver.integrate_grid(field, state, grid, generator, record=record)
        times, t = list(grid), grid[-1]
    else:
        state, t, times, traj = _loop(field, solver, state, controller, generator, record, keep_times, restrict)
    return SolveResult(z=state.z, tau=t, nfe=field.nfe, logdet=state.logdet,
                       times=torch.stack(times) if keep_times else None,
                       trajectory=torch.stack(traj) if record else None, memory=state.memory)


def _loop(field: Field, solver: Solver, state: State, controller: Controller, generator: torch.Generator | None,
          record: bool, keep_times: bool, restrict: bool) -> tuple[State, Tensor, list[Tensor], list[Tensor]]:
    """The step-by-step loop of :func:`integrate`: the final state and times, the visited times and latents."""
    t = controller.start()
    times, traj = [t], [state.z]
    try:
        while (t_to := controller.next(t, state, field)) is not None:
            if restrict:
                field.restrict(t, t_to)
            state = solver.step(field, state, t, t_to, generator)
            t = t_to
            if keep_times:
                times.append(t)
            if record:  # the latents of every row are kept only when asked for
                traj.append(state.z)
    finally:
        field.restrict(None)
    return state, t, times, traj


def check_latents(z: Tensor, denoiser) -> None:
    """Raise ``TypeError``/``ValueError`` naming ``z`` unless it is finite, (B, L, d), d the denoiser's."""
    if not isinstance(z, Tensor) or not z.is_floating_point():
        raise TypeError("z must be a floating-point tensor of shape (B, L, d)")
    if z.ndim != 3:
        raise ValueError(f"z must have shape (B, L, d), got {tuple(z.shape)}")
    d = denoiser.embeddings.shape[1]
    if z.shape[-1] != d:
        raise ValueError(f"z has last dimension {z.shape[-1]} but the denoiser's embeddings have d = {d}")
    if not bool(torch.isfinite(z).all()):
        raise ValueError("z must be finite")


def check_t_min(t_min: float) -> float:
    """``t_min`` as a float in [0, 1), the clean end of the time map (THEORY section 5).

    Any real number is accepted (int, float, NumPy number, 0-d tensor); ``TypeError`` for other
    kinds (bool included), ``ValueError`` outside [0, 1) or for NaN, both naming ``t_min``.
    """
    return as_float(t_min, "t_min", low=0.0, high=1.0, high_open=True)


def solve(denoiser, z: Tensor, path: Path | Sequence[Path] | Tensor, steps: int | None = None,
          solver: Solver | str = "euler", t_min: float = 0.0, generator: torch.Generator | None = None,
          trajectory: bool = False, grad: bool = False) -> SolveResult:
    """Carry ``z`` (B, L, d) from the noise end to the clean end of ``path`` (THEORY claim C2).

    ``path``: a :class:`Path` shared by the batch, one Path per sequence, or an explicit grid
    ``(K+1, L)`` / ``(K+1, B, L)``; ``steps`` grid intervals. Path time t is mapped to
    ``t_min + (1 - t_min) t``; every solver reaches the clean end ``t_min = 0`` (steps into it finish
    with the exponential step, :mod:`evoflow.solvers.landing`). Prompt columns of a grid (0
    throughout) stay at 0 and are never moved. The schedule is the denoiser's ``.schedule``.
    ``nfe`` in the result is the exact number of denoiser calls. Like a sampling pipeline, ``solve``
    records no autograd graph (the result does not require grad); ``grad=True`` keeps it, so that
    gradients flow through the whole solve to ``z`` and to the denoiser's parameters.
    """
    if not isinstance(grad, bool):
        raise TypeError(f"grad must be True or False, got {grad!r}")
    check_denoiser(denoiser)
    check_latents(z, denoiser)
    t_min = check_t_min(t_min)
    solver = get(solver)
    B, L, _ = z.shape
    grid = as_grid(path, L, steps, B)
    times = grid_times(grid, t_min).to(device=z.device)
    field = Field(denoiser)
    with torch.set_grad_enabled(grad and torch.is_grad_enabled()):
        result = integrate(field, solver, State(z=z), GridController(times), generator, record=trajectory)
    if not bool(torch.isfinite(result.z).all()):
        raise FloatingPointError(
            "solve produced non-finite latents: the denoiser returned NaN/inf logits or inf latents "
            f"(solver {solver!r})")
    return result
