"""Attention patterns of the Transformer, chosen per call (THEORY section 8, claim C12).

A pattern turns the per-token times into a boolean mask ``M[b, q, k]`` (True: query q may
attend to key k) for ``scaled_dot_product_attention``. Queries sit at positions
``offset .. offset + L - 1``, keys at ``0 .. offset + L - 1``; the first ``offset`` keys are a
cached committed prefix (see :mod:`evoflow.nn.cache`).

- :class:`Bidirectional`: every token sees every token (no mask; the default).
- :class:`Frontier`: a token is *committed* when ``t_i = 0``. Committed tokens attend causally
  among committed tokens; active tokens (``t_i > 0``) attend to everything:

      M[q, k] = active(q)  or  (committed(k) and k <= q).

  A committed token sees only committed tokens at or before it; once every token before it is
  committed too (the leading committed run), nothing later can change its hidden states, so
  their keys and values may be cached (C12). Derivation: proofs/p12_frontier_cache.md.
- :class:`BlockCausal`: blocks of ``block`` tokens; block j sees blocks 0..j
  (``M[q, k] = k // block <= q // block``), the semi-autoregressive pattern.

Every query sees at least itself, so no row of a mask is empty.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["AttentionPattern", "Bidirectional", "BlockCausal", "Frontier"]


class AttentionPattern:
    """Base class (THEORY section 8): ``mask(tau, offset)`` -> (B, 1, L, offset + L) bool, or None for all-to-all."""

    cacheable: bool = False

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
    """Committed tokens (t = 0) attend causally among themselves; active tokens attend to all.

        M[q, k] = (t_q > 0)  or  (t_k = 0 and k <= q);   cached keys count as committed.

    Derivation: proofs/p12_frontier_cache.md.
    """

    cacheable = True

    def mask(self, tau: Tensor, offset: int = 0) -> Tensor:
        q_pos, k_pos = _positions(tau, offset)
        committed = tau == 0  # (B, L)
        cached = torch.ones(tau.shape[0], offset, dtype=torch.bool, device=tau.device)
        k_committed = torch.cat([cached, committed], dim=1)  # (B, offset + L)
        causal = k_pos[None, :] <= q_pos[:, None]  # (L, offset + L)
        m = ~committed[:, :, None] | (k_committed[:, None, :] & causal[None])  # (B, L, offset + L)
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
