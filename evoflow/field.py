"""The shared vector field seen by solvers: a denoiser evaluated and turned into ``u`` once.

A :class:`Field` wraps a denoiser. Each call evaluates it once at ``(z, tau)``, counts the call,
and returns an :class:`Evaluation` with the posterior mean ``ehat`` and the velocity ``u`` of
claim C1 (both from :mod:`evoflow.process`), and, when a divergence estimator is attached (for
the exact likelihood, claim C11), the per-token divergence ``D_i = div_{z_i} u_i``.

Derivation: proofs/p01_continuity.md (the field), proofs/p11_exact_likelihood.md (divergence).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from evoflow.process import DenoiserOutput, check_denoiser, check_output, denoised, velocity

__all__ = ["Divergence", "Evaluation", "ExactDivergence", "Field", "Hutchinson", "get_divergence"]

VelocityFn = Callable[[Tensor, Tensor], Tensor]  # (z (N, L, d), tau (N, L)) -> u (N, L, d)


@dataclass
class Evaluation:
    """One network call: ``ehat`` (B, L, d), velocity ``u`` (B, L, d), optional ``div`` (B, L) (C1, C11)."""

    ehat: Tensor
    u: Tensor
    output: DenoiserOutput
    div: Tensor | None = None


class Divergence:
    """Estimator of the per-token divergence ``D_i = sum_k d u_{ik} / d z_{ik}`` (claim C11)."""

    def __call__(self, fn: VelocityFn, z: Tensor, tau: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Return ``(u, ehat, D)`` with ``D`` of shape (B, L); ``fn`` returns ``(u, ehat)``."""
        raise NotImplementedError


class ExactDivergence(Divergence):
    """Exact divergence by autograd: one call on an ``(L d)``-fold replicated batch, one backward (C11).

    Copy ``n`` of the batch is probed with basis vector ``e_n``; since copies do not interact,
    ``grad(sum_n <u^(n), e_n>, z^(n))`` holds row n of the Jacobian, whose n-th entry is the
    diagonal element. Cost grows with ``L d``: meant for small problems (oracles, tests).
    """

    def __call__(self, fn, z, tau):
        B, L, d = z.shape
        n = L * d
        basis = torch.eye(n, dtype=z.dtype, device=z.device).reshape(n, 1, L, d)
        zr = z.detach()[None].expand(n, B, L, d).reshape(n * B, L, d).clone().requires_grad_(True)
        taur = tau[None].expand(n, B, L).reshape(n * B, L)
        with torch.enable_grad():
            ur, ehat = fn(zr, taur)
            probe = basis.expand(n, B, L, d).reshape(n * B, L, d)
            (g,) = torch.autograd.grad((ur * probe).sum(), zr)
        diag = (g * probe).reshape(n, B, L, d).sum(0)  # (B, L, d): J_{ik,ik}
        first = slice(0, B)
        return ur[first].detach(), ehat[first].detach(), diag.sum(-1)


class Hutchinson(Divergence):
    """Hutchinson's estimator ``D_i ~ sum_k v_ik (v^T J)_ik`` with a fixed Rademacher probe ``v`` (C11).

    Unbiased per token; the probe is drawn once (per solve) so the ODE stays deterministic.
    """

    def __init__(self, generator: torch.Generator | None = None):
        self.generator = generator
        self._probe: Tensor | None = None

    def __call__(self, fn, z, tau):
        if self._probe is None or self._probe.shape != z.shape:
            bits = torch.randint(0, 2, z.shape, generator=self.generator)
            self._probe = (2.0 * bits - 1.0).to(dtype=z.dtype, device=z.device)
        v = self._probe
        zz = z.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            u, ehat = fn(zz, tau)
            (g,) = torch.autograd.grad((u * v).sum(), zz)
        return u.detach(), ehat.detach(), (g * v).sum(-1)


def get_divergence(divergence: str | Divergence, generator: torch.Generator | None = None) -> Divergence:
    """Resolve ``"exact"``, ``"hutchinson"`` or a :class:`Divergence` object (C11)."""
    if isinstance(divergence, Divergence):
        return divergence
    table = {"exact": ExactDivergence, "hutchinson": lambda: Hutchinson(generator)}
    if divergence not in table:
        raise ValueError(f"divergence must be one of {sorted(table)} or a Divergence object, got {divergence!r}")
    return table[divergence]()


class Field:
    """A denoiser seen as the per-token vector field of claim C1, with a call counter.

    ``field(z, tau)`` makes exactly one denoiser call (``nfe`` counts them) and returns an
    :class:`Evaluation`. A one-entry cache returns the last evaluation again when called with
    the very same ``z`` and ``tau`` tensors (a controller and the solver's first stage share it).
    """

    def __init__(self, denoiser, divergence: Divergence | None = None):
        check_denoiser(denoiser)
        self.denoiser = denoiser
        self.schedule = denoiser.schedule
        self.embeddings = denoiser.embeddings
        self.divergence = divergence
        self.nfe = 0
        self._last: tuple[Tensor, tuple[int, int], Tensor, Evaluation] | None = None

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
                kept.append(out)
                return u, ehat

            u, ehat, div = self.divergence(fn, z, tau)
            out = kept[0]
            B = z.shape[0]  # the exact estimator evaluates a replicated batch; keep the first copy
            out = DenoiserOutput(*(None if v is None else v[:B].detach() for v in (out.logits, out.time, out.ehat)))
            ev = Evaluation(ehat=ehat, u=u, output=out, div=div)
        self._last = (z, (z._version, tau._version), tau, ev)
        return ev
