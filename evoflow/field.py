"""The shared vector field seen by solvers: a denoiser evaluated and turned into ``u`` once.

A :class:`Field` wraps a denoiser. Each call evaluates it once at ``(z, tau)``, counts the call,
and returns an :class:`Evaluation` with the posterior mean ``ehat`` and the velocity ``u`` of
claim C1 (both from :mod:`evoflow.process`), and, when a divergence estimator is attached (for
the exact likelihood, claim C11), the per-token divergence ``D_i = div_{z_i} u_i``. Without a
divergence, ``ehat`` and ``u`` are computed when first read, and, once :meth:`Field.restrict` has
named the columns a step moves, only there: the O(B L V d) of ``ehat`` is paid for the columns that
use it (none for the token sampler, which reads only the logits).

Derivation: proofs/p01_continuity.md (the field), proofs/p11_exact_likelihood.md (divergence).
"""

from __future__ import annotations

import torch
from torch import Tensor

from evoflow.divergence import Divergence, ExactDivergence, Hutchinson, get_divergence
from evoflow.process import DenoiserOutput, check_denoiser, check_output, denoised, velocity

__all__ = ["Divergence", "Evaluation", "ExactDivergence", "Field", "Hutchinson", "get_divergence"]


class Evaluation:
    """One network call at ``(z, tau)`` (C1, C11): the denoiser's ``output``, the posterior mean ``ehat``
    (B, L, d), the velocity ``u`` (B, L, d) and, with a divergence estimator, ``div`` (B, L).

    Given ``ehat`` and ``u``, they are returned as they are. Made by a :class:`Field` without a divergence,
    they are computed from ``output`` when first read, under the autograd mode of the call, on the columns
    ``[lo, hi)`` of :meth:`Field.columns` at that moment: exact there, 0 elsewhere (columns no step reads);
    a later read over columns not covered computes them again, over both spans.
    """

    def __init__(self, ehat: Tensor | None = None, u: Tensor | None = None, output: DenoiserOutput | None = None,
                 div: Tensor | None = None):
        self.output, self.div = output, div
        self._ehat, self._u = ehat, u
        self._source: tuple | None = None  # (field, z, tau, versions, grad) for the lazy computation
        self._span: tuple[int, int] | None = None  # columns the lazy ehat and u hold

    @classmethod
    def lazy(cls, field: Field, z: Tensor, tau: Tensor, output: DenoiserOutput) -> Evaluation:
        """An evaluation whose ``ehat`` and ``u`` ``field`` computes from ``output`` when they are read."""
        ev = cls(output=output)
        ev._source = (field, z, tau, (z._version, tau._version), torch.is_grad_enabled())
        return ev

    @property
    def ehat(self) -> Tensor:
        """Posterior mean (B, L, d): exact on the field's columns (all unless restricted), 0 elsewhere."""
        self._fill()
        return self._ehat

    @property
    def u(self) -> Tensor:
        """Velocity (B, L, d) of claim C1: exact on the field's columns (all unless restricted), 0 elsewhere."""
        self._fill()
        return self._u

    def _fill(self) -> None:
        if self._source is None:
            return
        field, z, tau, versions, grad = self._source
        lo, hi = field.columns(z.shape[1])
        if self._span is not None:
            if self._span[0] <= lo and hi <= self._span[1]:
                return
            lo, hi = min(lo, self._span[0]), max(hi, self._span[1])  # keep what was computed already
        if (z._version, tau._version) != versions:
            raise RuntimeError("Evaluation: z or tau changed in place after the call; ehat and u are undefined")
        with torch.set_grad_enabled(grad):
            self._ehat, self._u = field.ehat_and_u(z, tau, self.output, (lo, hi))
        self._span = (lo, hi)


class Field:
    """A denoiser seen as the per-token vector field of claim C1, with a call counter.

    ``field(z, tau)`` makes exactly one denoiser call (``nfe`` counts them) and returns an
    :class:`Evaluation`. A one-entry cache returns the last evaluation again when called with
    the very same ``z`` and ``tau`` tensors (a controller and the solver's first stage share it).
    With a divergence estimator, the divergence keeps its autograd graph whenever autograd is
    recording and ``z`` or one of the denoiser's parameters requires a gradient, so that the
    likelihood is differentiable (claim C11); ``divergence.begin(generator)`` starts its solve.
    Without a divergence, an evaluation computes ``ehat`` and ``u`` when first read, on :meth:`columns`
    (all of them until :meth:`restrict` names the columns a step moves).
    """

    def __init__(self, denoiser, divergence: Divergence | None = None, generator: torch.Generator | None = None):
        check_denoiser(denoiser)
        self.denoiser = denoiser
        self.schedule = denoiser.schedule
        self.embeddings = denoiser.embeddings
        self.divergence = divergence
        if divergence is not None:
            divergence.begin(generator)
        parameters = getattr(denoiser, "parameters", None)
        self._trainable = callable(parameters) and any(p.requires_grad for p in parameters())
        self.nfe = 0
        self._last: tuple[Tensor, tuple[int, int], Tensor, Evaluation] | None = None
        self._moving: tuple[Tensor, Tensor] | None = None
        self._span: tuple[int, int] | None = None

    def forget(self) -> None:
        """Drop the one-entry cache (the next call evaluates the denoiser again)."""
        self._last = None

    def restrict(self, t_from: Tensor | None, t_to: Tensor | None = None) -> None:
        """Callers read ``ehat`` and ``u`` only on the columns where some row has ``t_to != t_from`` (both (B, L)):
        the step between them leaves every other token as it is (:meth:`Solver.step`); ``None`` lifts it."""
        self._moving = None if t_from is None else (t_from, t_to)
        self._span = None

    def columns(self, length: int) -> tuple[int, int]:
        """The columns ``[lo, hi)`` of a sequence of ``length`` on which evaluations compute ``ehat`` and ``u``:
        all, or from the first to the last column that moves under :meth:`restrict` ((0, 0) if none does)."""
        if self._moving is None:
            return 0, length
        if self._span is None:
            t_from, t_to = self._moving
            moving = (t_to != t_from).any(0)  # (L,)
            at = torch.arange(moving.shape[0], device=moving.device)
            lo, hi = torch.stack([torch.where(moving, at, moving.shape[0]).min(),
                                  torch.where(moving, at + 1, 0).max()]).tolist()  # one host read
            self._span = (lo, hi) if hi > 0 else (0, 0)
        return self._span

    def ehat_and_u(self, z: Tensor, tau: Tensor, out: DenoiserOutput, span: tuple[int, int]) -> tuple[Tensor, Tensor]:
        """``ehat`` and ``u`` (B, L, d) of ``out`` at ``(z, tau)`` on the columns ``span = (lo, hi)``, 0 elsewhere."""
        lo, hi = span
        if (lo, hi) == (0, z.shape[1]):
            ehat = denoised(out, self.embeddings, z)
            return ehat, velocity(z, ehat, tau, self.schedule)
        part = DenoiserOutput(*(None if v is None else v[:, lo:hi] for v in (out.logits, out.time, out.ehat)))
        ehat, u = z.new_zeros(z.shape), z.new_zeros(z.shape)
        ehat[:, lo:hi] = denoised(part, self.embeddings, z[:, lo:hi])
        u[:, lo:hi] = velocity(z[:, lo:hi], ehat[:, lo:hi], tau[:, lo:hi], self.schedule)
        return ehat, u

    def _u_and_ehat(self, z: Tensor, tau: Tensor) -> tuple[Tensor, Tensor, DenoiserOutput]:
        out = check_output(self.denoiser(z, tau), z, self.embeddings.shape[0])
        ehat, u = self.ehat_and_u(z, tau, out, (0, z.shape[1]))
        return u, ehat, out

    def __call__(self, z: Tensor, tau: Tensor) -> Evaluation:
        last = self._last
        if last is not None and last[0] is z and last[2] is tau and last[1] == (z._version, tau._version):
            return last[3]
        self.nfe += 1
        if self.divergence is None:
            out = check_output(self.denoiser(z, tau), z, self.embeddings.shape[0])
            ev = Evaluation.lazy(self, z, tau, out)
        else:
            kept: list[DenoiserOutput] = []

            def fn(zz: Tensor, tt: Tensor) -> tuple[Tensor, Tensor]:
                u, ehat, out = self._u_and_ehat(zz, tt)
                if not kept:  # the first (unreplicated) evaluation; later chunks are not kept alive
                    kept.append(out)
                return u, ehat

            graph = torch.is_grad_enabled() and (z.requires_grad or self._trainable)
            u, ehat, div = self.divergence(fn, z, tau, create_graph=graph)
            out = kept[0]
            B = z.shape[0]  # the exact estimator evaluates a replicated batch; keep the first copy
            out = DenoiserOutput(*(None if v is None else v[:B].detach() for v in (out.logits, out.time, out.ehat)))
            ev = Evaluation(ehat=ehat, u=u, output=out, div=div)
        self._last = (z, (z._version, tau._version), tau, ev)
        return ev
