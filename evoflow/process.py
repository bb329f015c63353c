"""The forward process and the one place where a denoiser's output becomes a vector field.

Forward process per token (THEORY section 2): ``q(z_i | x_i, t_i) = N(alpha(t_i) e_{x_i}, sigma(t_i)^2 I)``.
A denoiser maps ``(z, tau)`` to per-token logits; ``ehat = softmax(logits) @ E`` is the
posterior-mean embedding, and from it (THEORY section 3, claim C1)

    epshat_i = (z_i - alpha_i ehat_i) / sigma_i
    u_i      = sigma'_i epshat_i + alpha'_i ehat_i
             = (sigma'_i / sigma_i) z_i + (alpha'_i - alpha_i sigma'_i / sigma_i) ehat_i
    score_i  = (alpha_i ehat_i - z_i) / sigma_i^2 = -epshat_i / sigma_i

Solvers, the ELBO and the likelihood call these functions; none re-derives them.
At ``sigma = 0`` (the clean end, where the density is degenerate) ``epshat`` and ``score`` are
defined as 0: a committed token carries no noise estimate. Derivation: proofs/p01_continuity.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

from evoflow.schedules import Schedule

__all__ = [
    "Denoiser",
    "DenoiserOutput",
    "check_denoiser",
    "check_output",
    "check_tokens",
    "ddim_mean",
    "denoised",
    "epsilon",
    "posterior_mean",
    "posterior_probs",
    "q_forward",
    "q_sample",
    "score",
    "step_coefficients",
    "step_posterior",
    "velocity",
]


@dataclass
class DenoiserOutput:
    """What a denoiser returns for ``(z, tau)``.

    ``logits`` (B, L, V): unnormalised ``log p(x_i = v | z, tau)``. ``time`` (B, L) or None: the
    model's own estimate of each token's progression time (THEORY section 8; not in the ELBO).
    ``ehat`` (B, L, d) or None: a denoiser that predicts the posterior-mean embedding directly
    (no probabilities) may return it with ``logits=None``; it then serves the ODE solvers and the
    Gaussian kernel but not the mixture kernel.
    """

    logits: Tensor | None
    time: Tensor | None = None
    ehat: Tensor | None = None


@runtime_checkable
class Denoiser(Protocol):
    """The interface shared by the exact oracles and the Transformer (THEORY sections 7-8).

    ``denoiser(z, tau) -> DenoiserOutput`` with ``z`` (B, L, d) and ``tau`` (B, L); the object
    carries its ``schedule`` and its ``embeddings`` (V, d).
    """

    schedule: Schedule
    embeddings: Tensor

    def __call__(self, z: Tensor, tau: Tensor) -> DenoiserOutput: ...


def check_denoiser(denoiser: object, name: str = "denoiser") -> None:
    """Raise ``TypeError`` naming ``name`` unless it is callable with a Schedule and embeddings.
    (THEORY sections 7-8)"""
    if not callable(denoiser):
        raise TypeError(f"{name} must be callable as {name}(z, tau) -> DenoiserOutput")
    if not isinstance(getattr(denoiser, "schedule", None), Schedule):
        raise TypeError(f"{name} must carry a Schedule as .schedule")
    emb = getattr(denoiser, "embeddings", None)
    if not isinstance(emb, Tensor) or emb.ndim != 2:
        raise TypeError(f"{name} must carry its embedding table (V, d) as .embeddings")


def check_tokens(x: object, vocab: int, shape: tuple[int, ...] | None = None) -> Tensor:
    """Raise ``TypeError``/``ValueError`` naming ``x`` unless it holds token ids in ``[0, vocab)`` (THEORY section 1).

    ``x`` is a tensor of any integer dtype (``uint8`` ... ``int64``; not bool, not floating
    point). ``shape``, when given, is the shape ``x`` must have. Returns ``x`` as int64: use the
    returned tensor, since indexing with ``uint8`` would be read as a boolean mask.
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be an integer tensor of token ids, got {type(x).__name__}")
    if x.dtype == torch.bool or x.dtype.is_floating_point or x.dtype.is_complex or x.is_quantized:
        raise TypeError(f"x must be an integer tensor of token ids, got dtype {x.dtype}")
    if shape is not None and tuple(x.shape) != tuple(shape):
        raise ValueError(f"x must have shape {tuple(shape)}, got {tuple(x.shape)}")
    ids = x.to(torch.int64)  # uint64 ids >= 2**63 wrap to negative values and are refused below
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= vocab):
        raise ValueError(f"x holds token ids outside [0, {vocab}) (the vocabulary)")
    return ids


def check_output(out: object, z: Tensor, vocab: int) -> DenoiserOutput:
    """Raise ``TypeError``/``ValueError`` naming the denoiser unless ``out`` fits ``z`` (B, L, d) and V.
    (THEORY sections 7-8)"""
    if not isinstance(out, DenoiserOutput):
        raise TypeError(f"the denoiser must return a DenoiserOutput, got {type(out).__name__}")
    if out.logits is None and out.ehat is None:
        raise ValueError("the denoiser's output holds neither logits nor ehat")
    if out.logits is not None and (out.logits.shape[:2] != z.shape[:2] or out.logits.shape[-1] != vocab):
        raise ValueError(f"denoiser logits have shape {tuple(out.logits.shape)}; expected "
                         f"{(*z.shape[:2], vocab)} (B, L, V) for its embeddings")
    if out.logits is None and out.ehat.shape != z.shape:
        raise ValueError(f"denoiser ehat has shape {tuple(out.ehat.shape)}; expected {tuple(z.shape)} (B, L, d)")
    return out


def denoised(out: DenoiserOutput, embeddings: Tensor, like: Tensor) -> Tensor:
    """The posterior-mean embedding ``ehat`` (B, L, d) of an output, in the dtype of ``like`` (C1)."""
    if out.logits is None:
        return out.ehat.to(like.dtype)
    return posterior_mean(out.logits, embeddings.to(like.dtype)).to(like.dtype)


def _coef(values: Tensor, like: Tensor) -> Tensor:
    """Per-token coefficient (B, L) -> (B, L, 1) in the dtype of ``like``."""
    return values.to(device=like.device, dtype=like.dtype)[..., None]


def q_sample(
    x: Tensor, tau: Tensor, embeddings: Tensor, schedule: Schedule, generator: torch.Generator | None = None
) -> Tensor:
    """Draw ``z ~ q(z | x, tau) = N(alpha(tau) e_x, sigma(tau)^2 I)``; x (B, L) ids -> z (B, L, d).
    (THEORY section 2)"""
    e = embeddings[x]  # (B, L, d)
    noise = torch.randn(e.shape, generator=generator, dtype=e.dtype, device=e.device)
    return _coef(schedule.alpha(tau), e) * e + _coef(schedule.sigma(tau), e) * noise


def _transition(t: Tensor, s: Tensor, schedule: Schedule) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """``moving = s < t`` and, where tokens move, ``alpha_s``, ``alpha_{t|s}``, ``sigma_{t|s}^2``, ``sigma_s^2``.

    Frozen tokens get ``alpha_s = 1`` so that nothing divides by ``alpha(1) = 0``; (B, L) each.
    """
    moving = s < t
    a_s = torch.where(moving, schedule.alpha(s), torch.ones_like(t))
    a_ts = schedule.alpha(t) / a_s
    sg_s2 = schedule.sigma(s) ** 2
    sg_ts2 = (schedule.sigma(t) ** 2 - a_ts**2 * sg_s2).clamp_min(0.0)
    return moving, a_s, a_ts, sg_ts2, sg_s2


def step_coefficients(t: Tensor, s: Tensor, schedule: Schedule) -> tuple[Tensor, Tensor, Tensor]:
    """Per-token ``(c_z, c_e, sig2)`` of the step posterior ``N(c_z z_t + c_e e, sig2 I)``; (B, L) each.
    (THEORY section 2, C3)

    Tokens with ``s == t`` get ``(1, 0, 0)``: they stay where they are. See :func:`step_posterior`.
    """
    moving, a_s, a_ts, sg_ts2, sg_s2 = _transition(t, s, schedule)
    one = torch.ones_like(t)
    sg_t2 = torch.where(moving, schedule.sigma(t) ** 2, one)  # > 0 where tokens move
    c_z = torch.where(moving, a_ts * sg_s2 / sg_t2, one)
    c_e = torch.where(moving, a_s * sg_ts2 / sg_t2, 0.0 * one)
    sig2 = torch.where(moving, sg_ts2 * sg_s2 / sg_t2, 0.0 * one)
    return c_z, c_e, sig2


def step_posterior(
    z_t: Tensor, e: Tensor, t: Tensor, s: Tensor, schedule: Schedule
) -> tuple[Tensor, Tensor]:
    """Gaussian step posterior ``q(z_s | z_t, x) = N(mu, sig2 I)`` per token (THEORY section 2).

        alpha_{t|s} = alpha_t / alpha_s,   sigma_{t|s}^2 = sigma_t^2 - alpha_{t|s}^2 sigma_s^2,
        mu   = (alpha_{t|s} sigma_s^2 / sigma_t^2) z_t + (alpha_s sigma_{t|s}^2 / sigma_t^2) e,
        sig2 = sigma_{t|s}^2 sigma_s^2 / sigma_t^2.

    z_t, e (B, L, d); t, s (B, L) with s <= t. Tokens with ``s == t`` get ``mu = z_t``, ``sig2 = 0``.
    Returns ``mu`` (B, L, d) and ``sig2`` (B, L). Derivation: proofs/p03_gaussian_step_kl.md.
    """
    c_z, c_e, sig2 = step_coefficients(t, s, schedule)
    return _coef(c_z, z_t) * z_t + _coef(c_e, e) * e, sig2


def q_forward(z_s: Tensor, s: Tensor, t: Tensor, schedule: Schedule,
              generator: torch.Generator | None = None) -> Tensor:
    """Noise further, ``z_t ~ q(z_t | z_s) = N(alpha_{t|s} z_s, sigma_{t|s}^2 I)`` per token (s <= t).
    (THEORY section 2)

    The forward process is Markov from clean to noisy; tokens with ``s == t`` are returned unchanged.
    """
    moving, _, a_ts, var, _ = _transition(s=s, t=t, schedule=schedule)
    noise = torch.randn(z_s.shape, generator=generator, dtype=z_s.dtype, device=z_s.device)
    z_t = (_coef(a_ts, z_s) * z_s).addcmul_(_coef(var.sqrt(), z_s), noise)
    return torch.where(moving[..., None], z_t, z_s)


def ddim_mean(z: Tensor, ehat: Tensor, t: Tensor, s: Tensor, schedule: Schedule) -> Tensor:
    """Deterministic exponential step ``z_s = alpha_s ehat + sigma_s epshat(z, t)``; (B, L, d).

    Evaluated as ``c_z z + c_e ehat`` with ``c_z = sigma_s / sigma_t`` and ``c_e = alpha_s - alpha_t c_z``
    (``c_z = 0`` where ``sigma_t = 0``, the ``epshat = 0`` convention of :mod:`evoflow.process`).
    Exact for the ODE of claim C2 when ``ehat`` is constant over the step; runs in either direction.
    """
    sg_t = schedule.sigma(t)
    c_z = torch.where(sg_t > 0, schedule.sigma(s) / torch.where(sg_t > 0, sg_t, torch.ones_like(sg_t)), 0.0 * sg_t)
    c_e = schedule.alpha(s) - schedule.alpha(t) * c_z
    return (_coef(c_e, ehat) * ehat).addcmul_(_coef(c_z, z), z)


def posterior_probs(logits: Tensor) -> Tensor:
    """``p(x_i = v | z, tau) = softmax(logits)`` over the vocabulary; (B, L, V) (THEORY section 3)."""
    return torch.softmax(logits, dim=-1)


def posterior_mean(logits: Tensor, embeddings: Tensor) -> Tensor:
    """Posterior-mean embedding ``ehat_i = sum_v p(x_i = v | z, tau) e_v`` (THEORY section 3).

    logits (B, L, V), embeddings (V, d) -> (B, L, d).
    """
    probs = posterior_probs(logits)
    return probs.to(embeddings.dtype) @ embeddings


def _eps_coefficients(tau: Tensor, schedule: Schedule) -> tuple[Tensor, Tensor]:
    """Per-token ``(1 / sigma, alpha / sigma)`` with both set to 0 where sigma = 0; (B, L) each."""
    sg = schedule.sigma(tau)
    pos = sg > 0
    inv = torch.where(pos, 1.0 / torch.where(pos, sg, torch.ones_like(sg)), torch.zeros_like(sg))
    return inv, schedule.alpha(tau) * inv


def epsilon(z: Tensor, ehat: Tensor, tau: Tensor, schedule: Schedule) -> Tensor:
    """Noise estimate ``epshat = (z - alpha ehat) / sigma`` (0 where sigma = 0); (B, L, d) (C1)."""
    inv, a_inv = _eps_coefficients(tau, schedule)
    return (-_coef(a_inv, z) * ehat).addcmul_(_coef(inv, z), z)


def velocity(z: Tensor, ehat: Tensor, tau: Tensor, schedule: Schedule) -> Tensor:
    """Per-token velocity of claim C1: ``u_i = sigma'_i epshat_i + alpha'_i ehat_i``; (B, L, d).

    Evaluated as ``c_z z + c_e ehat`` with per-token ``c_z = sigma' / sigma`` and
    ``c_e = alpha' - alpha sigma' / sigma`` (``c_z = 0``, ``c_e = alpha'`` where sigma = 0), so the
    (B, L, d) work is two fused operations. For the linear schedule this is ``(z - ehat) / t``.
    Derivation: proofs/p01_continuity.md.
    """
    inv, a_inv = _eps_coefficients(tau, schedule)
    ds = schedule.dsigma(tau)
    c_z, c_e = ds * inv, schedule.dalpha(tau) - ds * a_inv
    return (_coef(c_e, z) * ehat).addcmul_(_coef(c_z, z), z)


def score(z: Tensor, ehat: Tensor, tau: Tensor, schedule: Schedule) -> Tensor:
    """Score ``grad_z log p_tau(z)_i = (alpha_i ehat_i - z_i) / sigma_i^2`` (0 where sigma = 0); (B, L, d).

    Tweedie's formula read backwards. Derivation: proofs/p01_continuity.md.
    """
    inv, _ = _eps_coefficients(tau, schedule)
    return -_coef(inv, z) * epsilon(z, ehat, tau, schedule)
