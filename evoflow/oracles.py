"""Exact denoisers: data distributions whose posteriors under the forward process are closed-form.

Given data ``p(x)`` and per-token emissions ``N(z_i; alpha(t_i) e_v, sigma(t_i)^2 I)``
(THEORY section 7), an oracle returns the exact posterior marginals ``p(x_i | z, tau)`` (hence
exact ``ehat``, velocity and score through :mod:`evoflow.process`), the exact log-density
``log p_tau(z)``, the exact joint decoder ``log p(x | z, tau)`` and exact ``log p(x)``.

- :class:`MarkovOracle`: ``p(x) = pi(x_1) prod_i A(x_{i-1}, x_i)``, forward-backward in O(L V^2).
- :class:`TableOracle`: any explicit ``p(x)`` on ``V^L`` by enumeration.

Both satisfy the denoiser interface ``(z, tau) -> DenoiserOutput(logits)``; they compute in
float64. Derivation: proofs/p01_continuity.md (posterior mean as the field), THEORY section 7.
"""

from __future__ import annotations

import itertools
import math

import torch
from torch import Tensor

from evoflow.arguments import as_float, as_int
from evoflow.process import DenoiserOutput, check_tokens
from evoflow.schedules import Schedule, check_times

__all__ = ["ExactOracle", "MarkovOracle", "TableOracle"]

_F64 = torch.float64


def _check_distribution(p: Tensor, name: str, atol: float = 1e-6) -> Tensor:
    """Raise ``ValueError`` unless the last axis of ``p`` holds probability distributions."""
    if not bool(torch.isfinite(p).all()) or bool((p < 0).any()):
        raise ValueError(f"{name} must be finite and non-negative")
    sums = p.sum(-1)
    bad = (sums - 1).abs() > atol
    if bool(bad.any()):
        where = tuple(bad.nonzero()[0].tolist())
        raise ValueError(
            f"{name} must sum to 1 along its last axis (a probability distribution); "
            f"entry {where} sums to {float(sums[where]):.6g}"
        )
    return p / sums[..., None]


class ExactOracle:
    """Shared machinery of the exact oracles: emissions, validation, the denoiser call (THEORY section 7).

    Subclasses implement ``_log_joint_terms`` (posterior marginals and log-normaliser from
    per-token emission log-likelihoods), ``log_prob``, ``log_conditionals`` and ``sample``.
    """

    def __init__(self, embeddings: Tensor, schedule: Schedule, vocab: int):
        if not isinstance(schedule, Schedule):
            raise TypeError(f"schedule must be a Schedule object, got {type(schedule).__name__}")
        if not isinstance(embeddings, Tensor) or embeddings.ndim != 2:
            raise ValueError("embeddings must be a tensor of shape (V, d)")
        if embeddings.shape[0] != vocab:
            raise ValueError(f"embeddings has {embeddings.shape[0]} rows but the vocabulary has {vocab} tokens")
        if not bool(torch.isfinite(embeddings).all()):
            raise ValueError("embeddings must be finite")
        self.embeddings = embeddings.to(_F64)
        self.schedule = schedule
        self.vocab = vocab

    @property
    def dim(self) -> int:
        """Embedding dimension d."""
        return self.embeddings.shape[1]

    def _check_inputs(self, z: Tensor, tau: Tensor, length: int | None = None) -> tuple[Tensor, Tensor]:
        if not isinstance(z, Tensor) or z.ndim != 3:
            raise ValueError(f"z must have shape (B, L, d), got {tuple(getattr(z, 'shape', ()))}")
        if z.shape[-1] != self.dim:
            raise ValueError(f"z has last dimension {z.shape[-1]} but the embeddings have d = {self.dim}")
        if length is not None and z.shape[1] != length:
            raise ValueError(f"z has length {z.shape[1]} but this oracle models length {length}")
        check_times(tau, "tau")
        if tau.shape != z.shape[:2]:
            raise ValueError(f"tau must have shape {tuple(z.shape[:2])} (B, L), got {tuple(tau.shape)}")
        return z.to(_F64), tau.to(_F64)

    def _check_x(self, x: object, length: int | None = None) -> Tensor:
        """Token ids ``x`` of shape ``(B, L)`` as int64 (``L = length`` when given), else an error naming x."""
        x = check_tokens(x, self.vocab)
        if x.ndim != 2:
            raise ValueError(f"x must have shape (B, L), a batch of token sequences (use x[None] for a single "
                             f"sequence); got {tuple(x.shape)}")
        if length is not None and x.shape[1] != length:
            raise ValueError(f"x must have length {length} (shape (B, {length})), got {tuple(x.shape)}")
        return x

    def log_emission(self, z: Tensor, tau: Tensor) -> Tensor:
        """``log N(z_i; alpha(t_i) e_v, sigma(t_i)^2 I)`` for every v; (B, L, V).

        Where ``sigma = 0`` the density is degenerate: the returned values are 0 on the nearest
        embeddings and ``-inf`` elsewhere (the limit of the posterior, not a density).
        """
        a = self.schedule.alpha(tau)[..., None, None]  # (B, L, 1, 1)
        sg = self.schedule.sigma(tau)[..., None]  # (B, L, 1)
        d2 = ((z[:, :, None, :] - a * self.embeddings) ** 2).sum(-1)  # (B, L, V)
        safe = torch.where(sg > 0, sg, torch.ones_like(sg))
        dens = -0.5 * d2 / safe**2 - self.dim * torch.log(safe) - 0.5 * self.dim * math.log(2 * math.pi)
        nearest = torch.where(d2 <= d2.min(-1, keepdim=True).values, 0.0, -math.inf)
        return torch.where(sg > 0, dens, nearest)

    def _posterior_and_norm(self, z: Tensor, tau: Tensor) -> tuple[Tensor, Tensor]:
        """Log posterior marginals (B, L, V) and ``log p_tau(z)`` (B,); subclass hook."""
        raise NotImplementedError

    def __call__(self, z: Tensor, tau: Tensor) -> DenoiserOutput:
        """Denoiser interface: logits are the exact log posterior marginals ``log p(x_i | z, tau)``."""
        return DenoiserOutput(logits=self._posterior_and_norm(*self._check_inputs(z, tau))[0])

    def posterior(self, z: Tensor, tau: Tensor) -> Tensor:
        """Exact posterior marginals ``p(x_i = v | z, tau)``; (B, L, V)."""
        return self._posterior_and_norm(*self._check_inputs(z, tau))[0].exp()

    def log_marginal(self, z: Tensor, tau: Tensor) -> Tensor:
        """Exact ``log p_tau(z) = log sum_x p(x) prod_i N(z_i; alpha_i e_{x_i}, sigma_i^2 I)``; (B,).

        Needs ``sigma(t_i) > 0`` for every token (the density is degenerate at sigma = 0).
        """
        z, tau = self._check_inputs(z, tau)
        if bool((self.schedule.sigma(tau) <= 0).any()):
            raise ValueError("tau: log_marginal needs sigma(t) > 0 for every token; use t >= t_min > 0")
        return self._posterior_and_norm(z, tau)[1]

    def log_posterior(self, x: Tensor, z: Tensor, tau: Tensor) -> Tensor:
        """Exact joint decoder ``log p(x | z, tau) = log p(x) + sum_i log N(z_i | x_i) - log p_tau(z)``; (B,)."""
        z, tau = self._check_inputs(z, tau)
        x = self._check_x(x)
        if x.shape != z.shape[:2]:
            raise ValueError(f"x must have shape {tuple(z.shape[:2])} (B, L) to match z, got {tuple(x.shape)}")
        em = self.log_emission(z, tau)
        _, log_norm = self._posterior_and_norm(z, tau)
        return self.log_prob(x) + em.gather(-1, x[..., None]).squeeze(-1).sum(-1) - log_norm

    def log_prob(self, x: Tensor) -> Tensor:
        """Exact ``log p(x)`` for token ids x (B, L) of any integer dtype; (B,).

        A single sequence of shape (L,) is refused (``ValueError`` naming x): pass ``x[None]``.
        """
        raise NotImplementedError

    def log_conditionals(self, x: Tensor) -> Tensor:
        """Exact AR conditionals ``log p(x_i | x_<i)`` for x (B, L); (B, L), summing to ``log_prob(x)``."""
        raise NotImplementedError

    def token_marginals(self, length: int | None = None) -> Tensor:
        """Exact per-position marginals ``p(x_i = v)``; (L, V)."""
        raise NotImplementedError


class MarkovOracle(ExactOracle):
    """Exact oracle for a Markov chain ``p(x) = pi(x_1) prod_i A(x_{i-1}, x_i)`` (THEORY section 7).

    ``init`` (V,), ``transition`` (V, V) with rows summing to 1, ``embeddings`` (V, d), a
    ``schedule``; ``length`` is the default for :meth:`sample` and :meth:`token_marginals`.
    Posteriors and ``log p_tau(z)`` by forward-backward in O(L V^2) per sequence.
    """

    def __init__(self, init: Tensor, transition: Tensor, embeddings: Tensor, schedule: Schedule,
                 length: int | None = None):
        init = torch.as_tensor(init, dtype=_F64)
        transition = torch.as_tensor(transition, dtype=_F64)
        if init.ndim != 1:
            raise ValueError(f"init must have shape (V,), got {tuple(init.shape)}")
        V = init.shape[0]
        if transition.shape != (V, V):
            raise ValueError(f"transition must have shape ({V}, {V}) to match init, got {tuple(transition.shape)}")
        super().__init__(embeddings, schedule, V)
        self.init = _check_distribution(init, "init")
        self.transition = _check_distribution(transition, "transition rows")
        self.length = None if length is None else as_int(length, "length", minimum=1)

    @classmethod
    def random(cls, vocab: int, length: int, dim: int, schedule: Schedule, generator: torch.Generator | None = None,
               sharpness: float = 2.0, scale: float = 1.0) -> MarkovOracle:
        """A random chain for checks and studies (THEORY section 7), drawn in this order from ``generator``:
        ``init = softmax(N(0, 1))``, rows ``softmax(sharpness N(0, 1))``, embeddings ``scale N(0, 1)``."""
        vocab, dim = as_int(vocab, "vocab", minimum=1), as_int(dim, "dim", minimum=1)
        sharpness, scale = as_float(sharpness, "sharpness"), as_float(scale, "scale")
        init = torch.softmax(torch.randn(vocab, generator=generator, dtype=_F64), 0)
        transition = torch.softmax(sharpness * torch.randn(vocab, vocab, generator=generator, dtype=_F64), 1)
        embeddings = scale * torch.randn(vocab, dim, generator=generator, dtype=_F64)
        return cls(init, transition, embeddings, schedule, length=length)

    def _posterior_and_norm(self, z: Tensor, tau: Tensor) -> tuple[Tensor, Tensor]:
        em = self.log_emission(z, tau)  # (B, L, V)
        log_a = self.transition.log()
        L = em.shape[1]
        fwd = [self.init.log() + em[:, 0]]
        for i in range(1, L):
            fwd.append(em[:, i] + torch.logsumexp(fwd[-1][:, :, None] + log_a, dim=1))
        bwd = [torch.zeros_like(fwd[0])]
        for i in range(L - 2, -1, -1):
            bwd.append(torch.logsumexp(log_a + (em[:, i + 1] + bwd[-1])[:, None, :], dim=2))
        bwd.reverse()
        log_norm = torch.logsumexp(fwd[-1], dim=-1)  # (B,)
        post = torch.stack(fwd, 1) + torch.stack(bwd, 1) - log_norm[:, None, None]
        return post, log_norm

    def log_conditionals(self, x: Tensor) -> Tensor:
        x = self._check_x(x)
        first = self.init.log()[x[:, :1]]
        rest = self.transition.log()[x[:, :-1], x[:, 1:]]
        return torch.cat([first, rest], dim=1)

    def log_prob(self, x: Tensor) -> Tensor:
        return self.log_conditionals(x).sum(-1)

    def _length(self, length: int | None) -> int:
        length = self.length if length is None else length
        if length is None:
            raise ValueError("length is needed: pass it here or to MarkovOracle(..., length=L)")
        return as_int(length, "length", minimum=1)

    def token_marginals(self, length: int | None = None) -> Tensor:
        L = self._length(length)
        rows = [self.init]
        for _ in range(L - 1):
            rows.append(rows[-1] @ self.transition)
        return torch.stack(rows)

    def sample(self, n: int, length: int | None = None, generator: torch.Generator | None = None) -> Tensor:
        """Draw ``n`` sequences (n, L) of token ids (int64) by ancestral sampling (THEORY section 7).

        ``n = 0`` gives an empty ``(0, L)`` tensor; a negative or non-integer ``n`` is refused.
        """
        n, L = as_int(n, "n", minimum=0), self._length(length)
        if n == 0:
            return torch.empty(0, L, dtype=torch.int64)
        x = [torch.multinomial(self.init, n, replacement=True, generator=generator)]
        for _ in range(L - 1):
            x.append(torch.multinomial(self.transition[x[-1]], 1, generator=generator).squeeze(1))
        return torch.stack(x, dim=1)


class TableOracle(ExactOracle):
    """Exact oracle for an explicit ``p(x)`` given as a table ``probs`` of shape ``(V,) * L``.

    Any correlations (non-Markov included) by enumeration of the ``V^L`` sequences
    (THEORY section 7); meant for ``V^L`` up to about 10^5.
    """

    def __init__(self, probs: Tensor, embeddings: Tensor, schedule: Schedule):
        probs = torch.as_tensor(probs, dtype=_F64)
        if probs.ndim < 1 or len(set(probs.shape)) != 1:
            raise ValueError(f"probs must have shape (V,) * L, got {tuple(probs.shape)}")
        V, L = probs.shape[0], probs.ndim
        super().__init__(embeddings, schedule, V)
        self.probs = _check_distribution(probs.reshape(-1), "probs").reshape(probs.shape)
        self.length = L
        grids = itertools.product(range(V), repeat=L)
        self._seqs = torch.tensor(list(grids), dtype=torch.int64)  # (V^L, L), row-major like probs
        self._log_p = self.probs.reshape(-1).log()  # (V^L,)

    def _posterior_and_norm(self, z: Tensor, tau: Tensor) -> tuple[Tensor, Tensor]:
        if z.shape[1] != self.length:
            raise ValueError(f"z has length {z.shape[1]} but this oracle models length {self.length}")
        em = self.log_emission(z, tau)  # (B, L, V)
        pos = torch.arange(self.length)
        scores = self._log_p + em[:, pos, self._seqs].sum(-1)  # (B, N)
        log_norm = torch.logsumexp(scores, dim=-1)
        joint = (scores - log_norm[:, None]).reshape(-1, *self.probs.shape)  # (B, V, ..., V), row-major like probs
        dims = range(1, self.length + 1)
        post = [torch.logsumexp(joint, dim=tuple(j for j in dims if j != i)) if self.length > 1 else joint
                for i in dims]  # log space: no underflow to log(0)
        return torch.stack(post, dim=1), log_norm

    def log_prob(self, x: Tensor) -> Tensor:
        x = self._check_x(x, self.length)
        return self.probs[tuple(x.T)].log()

    def log_conditionals(self, x: Tensor) -> Tensor:
        x = self._check_x(x, self.length)
        cum = [torch.zeros(x.shape[0], dtype=_F64)]
        for i in range(1, self.length + 1):
            prefix = self.probs.sum(dim=tuple(range(i, self.length))) if i < self.length else self.probs
            cum.append(prefix[tuple(x[:, :i].T)].log())
        return torch.stack([b - a for a, b in itertools.pairwise(cum)], dim=1)

    def token_marginals(self, length: int | None = None) -> Tensor:
        if length is not None and as_int(length, "length", minimum=1) != self.length:
            raise ValueError(f"length must be None or {self.length} (the table's length), got {length}")
        V = self.vocab
        return torch.stack([self.probs.movedim(i, 0).reshape(V, -1).sum(1) for i in range(self.length)])

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Draw ``n`` sequences (n, L) of token ids (int64) from the table (THEORY section 7).

        ``n = 0`` gives an empty ``(0, L)`` tensor; a negative or non-integer ``n`` is refused.
        """
        n = as_int(n, "n", minimum=0)
        if n == 0:
            return torch.empty(0, self.length, dtype=torch.int64)
        idx = torch.multinomial(self.probs.reshape(-1), n, replacement=True, generator=generator)
        return self._seqs[idx]
