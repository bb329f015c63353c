"""Attention patterns of the Transformer, chosen per call (THEORY section 8, claim C12).

A pattern turns the per-token times into a boolean mask ``M[b, q, k]`` (True: query q may
attend to key k) for ``scaled_dot_product_attention``. Queries sit at positions
``offset .. offset + L - 1``, keys at ``0 .. offset + L - 1``; the first ``offset`` keys are a
cached committed prefix (see :mod:`evoflow.nn.cache`).

- :class:`Bidirectional`: every token sees every token (no mask; the default).
- :class:`Frontier`: a token is *committed* when ``t_i = 0``. Committed tokens attend causally
  among committed tokens; active tokens (``t_i > 0``) attend to every token that carries
  information, i.e. every key not at ``t = 1`` (pure noise when ``alpha(1) = 0``), and to themselves:

      M[q, k] = (active(q) and (t_k < 1 or k = q))  or  (committed(k) and k <= q).

  Hiding the pure-noise suffix changes nothing for an exact posterior and makes a model's output
  independent of the noise draw there (claim C13).

  A committed token sees only committed tokens at or before it; once every token before it is
  committed too (the leading committed run), nothing later can change its hidden states, so
  their keys and values may be cached (C12). Derivation: proofs/p12_frontier_cache.md.
- :class:`BlockCausal`: blocks of ``block`` tokens; block j sees blocks 0..j
  (``M[q, k] = k // block <= q // block``), the semi-autoregressive pattern.
- :class:`TwoStream`: the training layout of paths with a clean prefix (BD3-LM's, generalised): a
  clean copy of the sequence followed by a noised copy, sharing positions, in which every noised
  token sees exactly what it would see under :class:`Frontier` at its own point of the path.

Every query sees at least itself, so no row of a mask is empty.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["AttentionPattern", "Bidirectional", "BlockCausal", "Frontier", "TwoStream"]


class AttentionPattern:
    """Base class (THEORY section 8): ``mask(tau, offset)`` -> (B, 1, L, offset + L) bool, or None for all-to-all."""

    cacheable: bool = False
    hides_noise: bool = False  # no query but its own sees a key at t = 1: a suffix of pure noise can be dropped

    def mask(self, tau: Tensor, offset: int = 0) -> Tensor | None:
        """Mask for queries at times ``tau`` (B, L) after ``offset`` cached committed keys."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and repr(self) == repr(other)

    def __hash__(self) -> int:
        return hash(repr(self))


def _positions(tau: Tensor, offset: int) -> tuple[Tensor, Tensor]:
    """Query positions (L,) and key positions (offset + L,)."""
    keys = torch.arange(offset + tau.shape[1], device=tau.device)
    return keys[offset:], keys


class Bidirectional(AttentionPattern):
    """Every token attends to every token: ``M = 1`` (returned as None, the fast path); THEORY section 8."""

    def mask(self, tau: Tensor, offset: int = 0) -> Tensor | None:
        return None


class Frontier(AttentionPattern):
    """Committed tokens (t = 0) attend causally among themselves; active tokens attend to every key
    that is not pure noise (t < 1) and to themselves (THEORY section 8, C12, C13).

        M[q, k] = (t_q > 0 and (t_k < 1 or k = q))  or  (t_k = 0 and k <= q);   cached keys are committed.

    ``reach`` (None: unbounded) limits how far ahead an active token looks: ``k <= q + reach`` in addition
    (``reach=0``: causal). Adapting an AR checkpoint anneals it from 0 up (``evoflow train --anneal``), as
    DiffuLLaMA anneals its mask. Derivation: proofs/p12_frontier_cache.md.
    """

    cacheable = True
    hides_noise = True

    def __init__(self, reach: int | None = None):
        if reach is not None and (isinstance(reach, bool) or not isinstance(reach, int) or reach < 0):
            raise ValueError(f"reach must be None or a non-negative integer, got {reach!r}")
        self.reach = reach

    def __repr__(self) -> str:
        return "Frontier()" if self.reach is None else f"Frontier(reach={self.reach})"

    def mask(self, tau: Tensor, offset: int = 0) -> Tensor:
        q_pos, k_pos = _positions(tau, offset)
        committed = tau == 0  # (B, L)
        cached = torch.ones(tau.shape[0], offset, dtype=torch.bool, device=tau.device)
        k_committed = torch.cat([cached, committed], dim=1)  # (B, offset + L)
        k_informative = torch.cat([cached, tau < 1], dim=1)
        causal = k_pos[None, :] <= q_pos[:, None]  # (L, offset + L)
        itself = k_pos[None, :] == q_pos[:, None]
        sees = k_informative[:, None, :] | itself[None]  # what an active query sees
        if self.reach is not None:
            sees = sees & (k_pos[None, :] <= q_pos[:, None] + self.reach)[None]
        m = (~committed[:, :, None] & sees) | (k_committed[:, None, :] & causal[None])  # (B, L, offset + L)
        return m[:, None]


class BlockCausal(AttentionPattern):
    """Blocks of ``block`` tokens, each attending to itself and the blocks before it (THEORY section 8).

        M[q, k] = (k // block) <= (q // block),

    the semi-autoregressive pattern that matches ``Staircase(block)`` paths (THEORY section 4).
    """

    def __init__(self, block: int = 1):
        if isinstance(block, bool) or not isinstance(block, int) or block < 1:
            raise ValueError(f"block must be a positive integer, got {block!r}")
        self.block = block

    def mask(self, tau: Tensor, offset: int = 0) -> Tensor:
        q_pos, k_pos = _positions(tau, offset)
        m = (k_pos[None, :] // self.block) <= (q_pos[:, None] // self.block)  # (L, offset + L)
        return m.expand(tau.shape[0], 1, *m.shape)

    def __repr__(self) -> str:
        return f"BlockCausal(block={self.block})"


class TwoStream(AttentionPattern):
    """Two copies of a sequence of L tokens in one call of 2L: clean (t = 0, positions 0..L-1), then noised
    (the same positions), where noised token i belongs to the group of tokens that starts at ``start[b, i]``
    (THEORY sections 4 and 8; C9's vectorised path estimator, C13):

        clean q, clean k:    k <= q                       (committed tokens attend causally, as Frontier)
        noised q = i, clean k = j:   j < start_i          (the group's clean prefix)
        noised q = i, noised k = j:  start_j = start_i and (t_j < 1 or j = i)   (its own group, no pure noise)
        clean q, noised k:   never.

    So noised token i sees what :class:`Frontier` shows it in the state "tokens before ``start_i`` clean, its
    group at the noised times, everything after at t = 1": one call scores every group of a staircase,
    of a rolling window's systematic sample, or of the AR path (groups of one token at t = 1).
    ``start`` is (B, L) int with ``start_i <= i`` and groups contiguous; the call's ``tau`` is (B, 2L).
    ``reach`` bounds the look-ahead inside a group as in :class:`Frontier` (``j <= i + reach``).
    """

    def __init__(self, start: Tensor, reach: int | None = None):
        self.reach = Frontier(reach).reach  # the same check
        if not isinstance(start, Tensor) or start.ndim != 2 or start.dtype.is_floating_point:
            raise ValueError(f"start must be an integer tensor of shape (B, L), got {getattr(start, 'shape', start)}")
        L = start.shape[1]
        if bool((start < 0).any()) or bool((start > torch.arange(L, device=start.device)).any()):
            raise ValueError("start must satisfy 0 <= start[b, i] <= i (a group starts at or before its tokens)")
        self.start = start

    def mask(self, tau: Tensor, offset: int = 0) -> Tensor:
        B, L = self.start.shape
        if offset or tau.shape != (B, 2 * L):
            raise ValueError(f"TwoStream needs tau of shape (B, 2L) = {(B, 2 * L)} and no cache, "
                             f"got {tuple(tau.shape)}")
        pos = torch.arange(L, device=tau.device)
        causal = (pos[None, :] <= pos[:, None]).expand(B, L, L)  # clean -> clean
        prefix = pos[None, None, :] < self.start[:, :, None]  # noised -> clean (B, L, L)
        same = self.start[:, :, None] == self.start[:, None, :]
        noisy = tau[:, L:] < 1
        group = same & (noisy[:, None, :] | (pos[None, :] == pos[:, None])[None])  # noised -> noised
        if self.reach is not None:
            group = group & (pos[None, :] <= pos[:, None] + self.reach)[None]
        top = torch.cat([causal, torch.zeros_like(causal)], dim=2)
        bottom = torch.cat([prefix, group], dim=2)
        return torch.cat([top, bottom], dim=1)[:, None]  # (B, 1, 2L, 2L)

    def __repr__(self) -> str:
        return f"TwoStream(start of shape {tuple(self.start.shape)})"

    def __eq__(self, other: object) -> bool:
        return self is other

    def __hash__(self) -> int:
        return id(self)
