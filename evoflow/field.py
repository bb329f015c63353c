"""The shared vector field seen by solvers: a denoiser evaluated and turned into ``u`` once.

A :class:`Field` wraps a denoiser. Each call evaluates it once at ``(z, tau)``, counts the call,
and returns an :class:`Evaluation` with the posterior mean ``ehat`` and the velocity ``u`` of
claim C1 (both from :mod:`evoflow.process`), and, when a divergence estimator is attached (for
the exact likelihood, claim C11), the per-token divergence ``D_i = div_{z_i} u_i``.

Derivation: proofs/p01_continuity.md (the field), proofs/p11_exact_likelihood.md (divergence).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from evoflow.divergence import Divergence, ExactDivergence, Hutchinson, get_divergence
from evoflow.process import DenoiserOutput, check_denoiser, check_output, denoised, velocity

__all__ = ["Divergence", "Evaluation", "ExactDivergence", "Field", "Hutchinson", "get_divergence"]


@dataclass
class Evaluation:
    """One network call: ``ehat`` (B, L, d), velocity ``u`` (B, L, d), optional ``div`` (B, L) (C1, C11)."""

    ehat: Tensor
    u: Tensor
    output: DenoiserOutput
    div: Tensor | None = None


class Field:
    """A denoiser seen as the per-token vector field of claim C1, with a call counter.

    ``field(z, tau)`` makes exactly one denoiser call (``nfe`` counts them) and returns an
    :class:`Evaluation`. A one-entry cache returns the last evaluation again when called with
    the very same ``z`` and ``tau`` tensors (a controller and the solver's first stage share it).
    With a divergence estimator, the divergence keeps its autograd graph whenever autograd is
    recording and ``z`` or one of the denoiser's parameters requires a gradient, so that the
    likelihood is differentiable (claim C11); ``divergence.begin(generator)`` starts its solve.
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

    def forget(self) -> None:
        """Drop the one-entry cache (the next call evaluates the denoiser again)."""
        self._last = None

    def _u_and_ehat(self, z: Tensor, tau: Tensor) -> tuple[Tensor, Tensor, DenoiserOutput]:
        out = check_output(self.denoiser(z, tau), z, self.embeddings.shape[0])
        ehat = denoised(out, self.embeddings, z)
        return velocity(z, ehat, tau, self.schedule), ehat, out

    def __call__(self, z: Tensor, tau: Tensor) -> Evaluation:
        last = self._last
        if last is not None and last[0] is z and last[2] is tau and last[1] == (z._version, tau._version):
            return last[3]
        self.nfe += 1
        if self.divergence is None:
            u, ehat, out = self._u_and_ehat(z, tau)
            ev = Evaluation(ehat=ehat, u=u, output=out)
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
