"""Tokens from latents: the token sampler, the mixture kernel's reverse step and the commit (THEORY section 5, C14).

The mixture kernel ``p(z_s | z_t) = sum_v p_theta(x_i = v | z_t, tau) q(z_s | z_t, e_v)`` is sampled by
"draw a token, then step toward it":

    v ~ p_theta(x_i | z_t, tau)        (temperature, top-p, or argmax at temperature 0; in float64)
    z_s = c_z z_t + c_e e_v + sqrt(sig2) xi,      (c_z, c_e, sig2) of the step posterior q(z_s | z_t, e_v).

At ``s = 0`` the step is the *commit*: ``z_i = e_v`` and ``t_i = 0`` exactly, so that the token is
decided and the frontier cache can hold it. :class:`TokenStep` is that reverse step as a solver (pure
token sampling between commits); :class:`Committing` wraps any solver so that tokens reaching
``t = 0`` commit through the token sampler while the others move by the wrapped solver (an ODE, DDIM
with eta, or :class:`TokenStep`). With ``Staircase(1)`` and one jump per token on an exact oracle this
is ancestral sampling of ``p(x)`` (C7, C14). Derivation: proofs/p07_ar_limit.md.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor

from evoflow.arguments import as_float
from evoflow.field import Field
from evoflow.process import step_coefficients
from evoflow.solvers.base import Solver, State

__all__ = ["Committing", "TokenSampler", "TokenStep"]


class TokenSampler:
    """``v ~ softmax(logits / temperature)`` restricted to the top-p nucleus, or argmax at temperature 0.

    Everything runs in float64 (low-precision Gumbel sampling distorts samples); one uniform per token is
    drawn by inverse transform whatever the temperature, so that two decoders that sample the same
    positions from the same generator consume it identically (C14: same seed, same tokens).
    """

    def __init__(self, temperature: float = 1.0, top_p: float = 1.0):
        self.temperature = as_float(temperature, "temperature", low=0.0)
        self.top_p = as_float(top_p, "top_p", low=0.0, high=1.0, low_open=True)

    def probabilities(self, logits: Tensor) -> Tensor:
        """The sampling distribution (B, L, V) in float64: tempered, nucleus-truncated, renormalised."""
        logits = logits.to(torch.float64)
        if bool(torch.isnan(logits).any()):  # e.g. an oracle conditioned on a prefix of probability 0
            raise FloatingPointError("logits: the denoiser returned NaN; no token can be drawn (for an exact oracle "
                                     "this means the committed tokens have probability 0 under it)")
        if self.temperature == 0.0:
            return torch.nn.functional.one_hot(logits.argmax(-1), logits.shape[-1]).to(torch.float64)
        p = torch.softmax(logits / self.temperature, -1)
        if self.top_p < 1.0:
            sorted_p, order = p.sort(-1, descending=True)
            outside = sorted_p.cumsum(-1) - sorted_p >= self.top_p  # the most likely token is always kept
            p = p.scatter(-1, order, sorted_p.masked_fill(outside, 0.0))
            p = p / p.sum(-1, keepdim=True)
        return p

    def draw(self, logits: Tensor, generator: torch.Generator | None = None, where: Tensor | None = None) -> Tensor:
        """Token ids (B, L) drawn from :meth:`probabilities` by inverse transform of float64 uniforms.

        One uniform is drawn for every position whatever ``where`` says, so the random stream does not
        depend on which tokens are drawn; with ``where`` (B, L) bool only those positions are computed
        (the others read 0), which keeps a decoding call O(tokens drawn x V) instead of O(L V)."""
        u = torch.rand(logits.shape[:-1], generator=generator, dtype=torch.float64, device=logits.device)
        if where is None:
            return self._inverse(self.probabilities(logits), u)
        out = torch.zeros(logits.shape[:-1], dtype=torch.long, device=logits.device)
        out[where] = self._inverse(self.probabilities(logits[where][None]), u[where][None])[0]
        return out

    @staticmethod
    def _inverse(p: Tensor, u: Tensor) -> Tensor:
        cdf = p.cumsum(-1)
        idx = torch.searchsorted(cdf, (u * cdf[..., -1])[..., None].contiguous(), right=True).squeeze(-1)
        return idx.clamp_max(p.shape[-1] - 1)

    def __repr__(self) -> str:
        return f"TokenSampler(temperature={self.temperature:g}, top_p={self.top_p:g})"


def _logits(field: Field, z: Tensor, t: Tensor) -> Tensor:
    out = field(z, t).output
    if out.logits is None:
        raise ValueError("denoiser: decoding with the token sampler needs per-token probabilities (logits)")
    return out.logits


class TokenStep(Solver):
    """The mixture kernel's reverse step (THEORY section 5): ``v ~ p(x_i | z_t)``, ``z_s ~ q(z_s | z_t, e_v)``.

    One network call per step; exact at ``s = 0`` (``z_s = e_v``). At temperature 0 it takes the kernel's
    mode (``v`` the argmax, no noise), so argmax decoding is deterministic. A stochastic solver (``kind = "sde"``)
    that integrates the clean end exactly (``exponential``), for decoding only: it is not registered
    among the ODE solvers of ``solve``.
    """

    name = "token"
    kind = "sde"
    order = 1
    exponential = True

    def __init__(self, sampler: TokenSampler | None = None):
        self.sampler = sampler or TokenSampler()

    def advance(self, field: Field, state: State, t_from: Tensor, t_to: Tensor,
                generator: torch.Generator | None) -> State:
        v = self.sampler.draw(_logits(field, state.z, t_from), generator, where=t_to != t_from)  # (B, L)
        E = field.embeddings.to(state.z.dtype)
        c_z, c_e, sig2 = (c.to(state.z.dtype)[..., None] for c in step_coefficients(t_from, t_to, field.schedule))
        z = c_z * state.z + c_e * E[v]
        if self.sampler.temperature > 0:  # argmax decoding takes the kernel's mode: no noise
            z = z + sig2.sqrt() * torch.randn(state.z.shape, generator=generator, dtype=z.dtype, device=z.device)
        z = torch.where((t_to == 0)[..., None], E[v], z)  # the clean end exactly
        return State(z=z, logdet=state.logdet, memory=state.memory)

    def __repr__(self) -> str:
        return f"TokenStep({self.sampler!r})"


@dataclass
class _Decoding:
    """Memory of :class:`Committing`: the committed token ids (B, L) (-1 where not yet committed) and the
    wrapped solver's own memory."""

    tokens: Tensor
    inner: Any = None


class Committing(Solver):
    """Tokens that reach ``t = 0`` commit through the token sampler; the others move by ``solver`` (C14).

    Per step ``t_from -> t_to``: one evaluation at ``(z, t_from)`` gives the logits; every token with
    ``t_to = 0 < t_from`` is drawn from them and set to ``e_v``; the rest take ``solver``'s step (which
    reuses that evaluation for its first stage). The committed ids live in ``state.memory.tokens``.
    """

    kind = "sde"
    exponential = True

    def __init__(self, solver: Solver, sampler: TokenSampler | None = None):
        self.solver, self.sampler = solver, sampler or TokenSampler()
        self.name = f"committing({solver.name})"
        self.order = solver.order

    def begin(self, tokens: Tensor) -> _Decoding:
        """The memory to start from: ``tokens`` (B, L), the prompt's ids and -1 elsewhere."""
        return _Decoding(tokens=tokens)

    def step(self, field: Field, state: State, t_from: Tensor, t_to: Tensor,
             generator: torch.Generator | None = None) -> State:
        mem: _Decoding = state.memory
        commit = (t_to == 0) & (t_from > 0)  # (B, L)
        moves, commits = torch.stack([(t_to != t_from).any(), commit.any()]).tolist()  # one host read
        if not moves:
            return state
        tokens, z = mem.tokens, state.z
        if commits:
            v = self.sampler.draw(_logits(field, state.z, t_from), generator, where=commit)
            tokens = torch.where(commit, v, tokens)
        inner_to = torch.where(commit, t_from, t_to)  # committing tokens are not the solver's to move
        moved = self.solver.step(field, replace(state, memory=mem.inner), t_from, inner_to, generator)
        z = moved.z
        if commits:
            z = torch.where(commit[..., None], field.embeddings.to(z.dtype)[tokens.clamp_min(0)], z)
        return State(z=z, logdet=moved.logdet, memory=_Decoding(tokens=tokens, inner=moved.memory))

    def advance(self, field, state, t_from, t_to, generator):  # pragma: no cover - step is overridden
        raise NotImplementedError("Committing overrides step")

    def __repr__(self) -> str:
        return f"Committing({self.solver!r}, {self.sampler!r})"
