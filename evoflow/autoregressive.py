"""The exact likelihood of AR decoding with the token sampler, for any denoiser (claim C13).

AR decoding moves one token at a time along ``Staircase(1)`` with one jump per token: token i
starts at t = 1 with the tokens before it committed (their latents are their embeddings, t = 0),
is drawn from ``p_theta(x_i | z, tau)`` and committed. Its law is therefore

    log p_theta^AR(x) = sum_{i >= P} log softmax(logits_i(z^(i), tau^(i)))[x_i],
    z^(i) = (e_{x_0}, ..., e_{x_{i-1}}, *, ..., *),   tau^(i) = (0, ..., 0, 1, ..., 1),

exact and deterministic when the output for token i does not depend on the pure-noise latents ``*``
at t = 1 (true for an exact posterior since alpha(1) = 0, so zeros are used; the Transformer reads
zeros there and its Frontier pattern hides them). For an exact oracle it is ``log p(x)`` (C7). A
denoiser may compute all L conditionals in one call through an ``ar_logits(x) -> (B, L, V)`` method
(the Transformer's two-stream forward); any other denoiser is evaluated on the L states as one
batch. Prompt tokens (the first ``prompt_length``) are conditioned on, not scored.
"""

from __future__ import annotations

import torch
from torch import Tensor

from evoflow.arguments import as_int
from evoflow.process import check_denoiser, check_output, check_tokens

__all__ = ["ar_conditionals", "ar_log_likelihood"]


def _batched_logits(denoiser, x: Tensor) -> Tensor:
    """Logits (B, L, V) of token i in state i, for every i, by one call on the L states stacked (B L, L, d)."""
    B, L = x.shape
    E = denoiser.embeddings
    clean = torch.arange(L, device=x.device)[None, :] < torch.arange(L, device=x.device)[:, None]  # (L states, L)
    z = torch.where(clean[None, :, :, None], E[x][:, None], torch.zeros((), dtype=E.dtype, device=E.device))
    tau = torch.where(clean, 0.0, 1.0).to(torch.float64)[None].expand(B, L, L)
    z, tau = z.reshape(B * L, L, -1), tau.reshape(B * L, L)
    out = check_output(denoiser(z, tau), z, E.shape[0])
    if out.logits is None:
        raise ValueError("denoiser: the AR-path likelihood needs per-token probabilities (logits)")
    logits = out.logits.reshape(B, L, L, -1)  # (B, state, position, V)
    return logits[:, torch.arange(L), torch.arange(L)]  # state i, position i


def ar_conditionals(denoiser, x: Tensor) -> Tensor:
    """``log p_theta(x_i | x_<i)`` along the AR path (B, L), in float64 (claim C13)."""
    check_denoiser(denoiser)
    x = check_tokens(x, denoiser.embeddings.shape[0])
    if x.ndim != 2 or x.shape[1] < 1:
        raise ValueError(f"x must have shape (B, L) with L >= 1, got {tuple(x.shape)}")
    fast = getattr(denoiser, "ar_logits", None)
    logits = fast(x) if callable(fast) else _batched_logits(denoiser, x)
    return torch.log_softmax(logits.to(torch.float64), -1).gather(-1, x[..., None]).squeeze(-1)


def ar_log_likelihood(denoiser, x: Tensor, prompt_length: int = 0) -> Tensor:
    """Exact log-probability (B,) of token ids ``x`` (B, L) under AR decoding with the token sampler,
    the first ``prompt_length`` tokens given (claim C13): ``log p(x)`` for an exact oracle (C7)."""
    L = x.shape[-1] if isinstance(x, Tensor) and x.ndim == 2 else 1
    P = as_int(prompt_length, "prompt_length", minimum=0, maximum=max(L - 1, 0))
    return ar_conditionals(denoiser, x)[:, P:].sum(-1)
