"""Key-value cache of the committed prefix under the frontier pattern (THEORY section 8, claim C12).

Under :class:`~evoflow.nn.attention.Frontier`, a committed token (``t_i = 0``) attends only to
committed tokens at or before it. For the leading run of committed tokens, by induction over
layers, hidden states, keys and values depend only on that run, so once computed they never
change while the rest of the window is refined: they can be stored and reused. (A committed
token behind an active one is not cacheable yet: its attention set grows when the earlier
token commits.) A model call then covers only
the positions after the cache,

    K_l = [K_l(prefix) ; K_l(chunk)],   V_l = [V_l(prefix) ; V_l(chunk)]   per layer l,

and afterwards the chunk's leading committed tokens join the prefix. The outputs equal those
of full recomputation with ``Frontier()``. Derivation: proofs/p12_frontier_cache.md.

- :class:`FrontierCache` holds the per-layer keys and values (the data structure).
- :class:`CachedDenoiser` wraps a model as a denoiser of full sequences, so that solvers and
  decoders use the cache without knowing it. For inference: nothing cached carries gradients.
"""

from __future__ import annotations

import torch
from torch import Tensor

from evoflow.nn.attention import Frontier
from evoflow.process import DenoiserOutput

__all__ = ["CachedDenoiser", "FrontierCache", "LayerCache", "leading_committed"]


def leading_committed(tau: Tensor) -> int:
    """Length of the run of committed tokens (t = 0) that starts every row of tau (B, L); the minimum over rows."""
    if tau.shape[1] == 0:
        return 0
    return int((tau == 0).long().cumprod(dim=1).sum(dim=1).min())


class LayerCache:
    """Keys and values (B, KV, P, hd) of one layer's committed prefix, in a buffer allocated once.

    The buffer holds ``capacity`` positions (the sequence length, when known; otherwise it doubles when
    full, so a generation copies O(L) entries in all, not O(L^2) as concatenating on every commit
    would). A chunk is written after the prefix; committing n of its tokens only moves the prefix end.
    """

    def __init__(self, capacity: int | None = None):
        self.capacity = capacity
        self.length = 0  # committed positions
        self._keys: Tensor | None = None
        self._values: Tensor | None = None
        self._chunk = 0  # positions of the last chunk, written after the prefix

    @property
    def keys(self) -> Tensor | None:
        """The committed prefix's keys (B, KV, P, hd) (a view of the buffer), or None when empty."""
        return None if self._keys is None or self.length == 0 else self._keys[:, :, : self.length]

    @property
    def values(self) -> Tensor | None:
        """The committed prefix's values (B, KV, P, hd) (a view of the buffer), or None when empty."""
        return None if self._values is None or self.length == 0 else self._values[:, :, : self.length]

    def _reserve(self, k: Tensor, need: int) -> None:
        size = 0 if self._keys is None else self._keys.shape[2]
        if need <= size:
            return
        cap = max(need, self.capacity or 0, 2 * size)
        shape = (k.shape[0], k.shape[1], cap, k.shape[3])
        keys, values = k.new_empty(shape), k.new_empty(shape)
        if self.length:
            keys[:, :, : self.length] = self._keys[:, :, : self.length]
            values[:, :, : self.length] = self._values[:, :, : self.length]
        self._keys, self._values = keys, values

    def extend(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Write this chunk's k, v (B, KV, L, hd) after the prefix; return both together (B, KV, P + L, hd)."""
        end = self.length + k.shape[2]
        self._reserve(k, end)
        self._keys[:, :, self.length : end] = k.detach()
        self._values[:, :, self.length : end] = v.detach()
        self._chunk = k.shape[2]
        return self._keys[:, :, :end], self._values[:, :, :end]

    def commit(self, n: int) -> None:
        """The first n tokens of the last chunk join the prefix (no copy: they are in place already)."""
        if n > self._chunk:
            raise RuntimeError("commit() of more tokens than the last chunk computed")
        self.length += n
        self._chunk = 0


class FrontierCache:
    """Per-layer keys and values of the first ``length`` tokens, all committed (t = 0).

    Pass it to ``model(z_chunk, tau_chunk, attention=Frontier(), cache=cache)`` with the
    chunk starting at position ``cache.length``; the model extends it. ``capacity``: the sequence
    length, so that every layer allocates its buffer once. Derivation: proofs/p12_frontier_cache.md.
    """

    def __init__(self, layers: int, batch: int, capacity: int | None = None):
        self.layers = [LayerCache(capacity) for _ in range(layers)]
        self.batch = batch
        self.length = 0
        self.tail: Tensor | None = None  # (B, 1, width): the last cached token's final state (a shifted readout's)

    def check(self, batch: int, layers: int) -> None:
        """Raise ``ValueError`` unless this cache fits a model with ``layers`` blocks and inputs of ``batch`` rows."""
        if layers != len(self.layers):
            raise ValueError(f"cache has {len(self.layers)} layers but the model has {layers}")
        if batch != self.batch:
            raise ValueError(f"cache was built for batch {self.batch}, got z with batch {batch}")

    def commit(self, n: int) -> None:
        """The first n tokens of the chunk just computed are committed: append them in every layer."""
        for layer in self.layers:
            layer.commit(n)
        self.length += n


class CachedDenoiser:
    """A frontier-pattern denoiser of full sequences that reuses the committed prefix.

    ``cached(z, tau)`` returns what ``model(z, tau, attention=Frontier())`` returns, computing
    only positions after the cached prefix. The prefix is kept while it stays committed and
    unchanged (``tau = 0`` and the same ``z`` there), and rebuilt otherwise, so any solver can
    call it. The outputs of committed tokens are stored too: they depend only on the prefix
    (claim C12). Derivation: proofs/p12_frontier_cache.md.
    """

    def __init__(self, model):
        self.model = model
        self.hits = 0  # token positions served from the cache, summed over calls and rows
        self.reset()

    hides_noise = True  # Frontier: positions after the last non-noise token can be left out (C13)

    @property
    def schedule(self):
        """The wrapped model's noise schedule."""
        return self.model.schedule

    @property
    def embeddings(self) -> Tensor:
        """The wrapped model's latent embedding table (V, d_latent)."""
        return self.model.embeddings

    def reset(self) -> None:
        """Forget the cached prefix."""
        self.cache: FrontierCache | None = None
        self._z = self._logits = self._time = None
        self._assembled = True  # _logits and _time hold the prefix's outputs (until chunk() is used)

    def _valid_for(self, z: Tensor, tau: Tensor) -> bool:
        if self.cache is None or self.cache.batch != z.shape[0] or self.cache.length > z.shape[1]:
            return False
        P = self.cache.length
        return bool((tau[:, :P] == 0).all()) and torch.equal(z[:, :P].to(self._z.dtype), self._z)

    @property
    def reads_ahead(self) -> bool:
        """Whether a call may ask for one output past its end (``ahead=1``: a shifted model, C13)."""
        return bool(getattr(self.model.config, "shift", False))

    def chunk(self, z: Tensor, tau: Tensor, ahead: int = 0) -> tuple[int, DenoiserOutput]:
        """``(P, outputs of positions P ..)``: what ``model(z, tau, attention=Frontier())`` returns from the first
        position after the cached prefix on (one more with ``ahead=1``), computing only those, and without
        assembling the prefix's outputs (a decoder never reads them: its tokens are committed; C12)."""
        P, out = self._chunk(z, tau, ahead)
        self._assembled = False  # the prefix's outputs were not kept: a later __call__ starts afresh
        return P, out

    def _chunk(self, z: Tensor, tau: Tensor, ahead: int) -> tuple[int, DenoiserOutput]:
        if not isinstance(z, Tensor) or z.ndim != 3 or not isinstance(tau, Tensor) or tau.ndim != 2:
            raise ValueError("z must have shape (B, L, d) and tau (B, L)")
        if not self._valid_for(z, tau):
            self.reset()
            self.cache = FrontierCache(len(self.model.blocks), z.shape[0], capacity=z.shape[1] + ahead)
            self._z = z[:, :0].detach()
        P = self.cache.length
        self.hits += P * z.shape[0]
        if z.shape[1] == P and not ahead:
            B, V = z.shape[0], self.model.config.vocab
            return P, DenoiserOutput(logits=z.new_zeros((B, 0, V)), time=z.new_zeros((B, 0)))
        out = self.model(z[:, P:], tau[:, P:], attention=Frontier(), cache=self.cache, ahead=ahead)
        self._z = torch.cat([self._z, z[:, P : self.cache.length].detach()], dim=1)
        return P, out

    def __call__(self, z: Tensor, tau: Tensor, ahead: int = 0) -> DenoiserOutput:
        if not self._assembled:
            self.reset()
        P, out = self._chunk(z, tau, ahead)
        n = self.cache.length - P
        logits = out.logits if self._logits is None else torch.cat([self._logits, out.logits], dim=1)
        time = out.time if self._time is None else torch.cat([self._time, out.time], dim=1)
        self._logits, self._time = logits[:, : P + n].detach(), time[:, : P + n].detach()
        return DenoiserOutput(logits=logits, time=time)
