"""Reverse kernels of the discrete-time ELBO and their per-token step terms (THEORY section 5).

For a step ``t -> s`` (s < t) of token i, the NELBO holds
``KL(q(z_s | z_t, x) || p_theta(z_s | z_t))`` (in expectation over the trajectory):

- :class:`GaussianKernel`, x0-parametrised, ``p = q(z_s | z_t, e_x -> ehat)``: the KL is closed-form,
  ``1/2 (SNR(s) - SNR(t)) ||e_x - ehat||^2`` (claim C3).
- :class:`MixtureKernel`, ``p = sum_v p_theta(x_i = v | z) q(z_s | z_t, e_v)``: no closed form; the
  single-trajectory estimate is the log-ratio ``log q(z_s | z_t, x) - log p(z_s | z_t)``, exact in
  expectation, and with one token moving per step and the exact posterior it is the exact reverse
  kernel (claim C7). At ``sigma(s) = 0`` the ratio is ``-log p_theta(x_i | z)`` (the AR commit).

Derivation: proofs/p03_gaussian_step_kl.md, proofs/p07_ar_limit.md, proofs/p08_parallel_step.md.
"""

from __future__ import annotations

import torch
from torch import Tensor

from evoflow.process import DenoiserOutput, denoised, step_coefficients
from evoflow.schedules import Schedule

__all__ = ["GaussianKernel", "Kernel", "MixtureKernel", "gaussian_step_kl", "mixture_log_ratio"]


def gaussian_step_kl(e: Tensor, ehat: Tensor, t: Tensor, s: Tensor, schedule: Schedule) -> Tensor:
    """Claim C3: ``KL = 1/2 (SNR(s) - SNR(t)) ||e - ehat||^2`` per token; e, ehat (B, L, d) -> (B, L).

    Tokens with ``s == t`` contribute 0. Needs ``sigma(s) > 0`` where tokens move (SNR finite).
    Derivation: proofs/p03_gaussian_step_kl.md.
    """
    moving = s < t
    gain = torch.where(moving, schedule.snr(s) - schedule.snr(t), torch.zeros_like(t))
    return 0.5 * gain * ((e - ehat) ** 2).sum(-1).to(gain.dtype)


def mixture_log_ratio(x: Tensor, logits: Tensor, z_t: Tensor, z_s: Tensor, t: Tensor, s: Tensor,
                      schedule: Schedule, embeddings: Tensor) -> Tensor:
    """``log q(z_s | z_t, x) - log sum_v p(v | z) q(z_s | z_t, e_v)`` per token; (B, L).

    Both densities share the covariance ``sig2 I`` and means ``c_z z_t + c_e e``, so with
    ``r = z_s - c_z z_t`` the ratio is ``-logsumexp_v [log p_v - (||r - c_e e_v||^2 - ||r - c_e e_x||^2) / (2 sig2)]``,
    computed through ``r @ E^T`` (memory B L V). Where ``sig2 = 0`` it is ``-log p_x``. Tokens with
    ``s == t`` contribute 0. Derivation: proofs/p07_ar_limit.md.
    """
    c_z, c_e, sig2 = (c.to(z_t.dtype) for c in step_coefficients(t, s, schedule))
    E = embeddings.to(z_t.dtype)
    r = z_s - c_z[..., None] * z_t  # (B, L, d)
    proj = r @ E.T  # (B, L, V)
    sq = (E**2).sum(-1)  # (V,)
    # ||r - c e_v||^2 - ||r - c e_x||^2 = -2c (r.e_v - r.e_x) + c^2 (|e_v|^2 - |e_x|^2)
    proj_x = proj.gather(-1, x[..., None])
    sq_x = sq[x][..., None]
    gap = -2 * c_e[..., None] * (proj - proj_x) + c_e[..., None] ** 2 * (sq - sq_x)  # (B, L, V)
    logp = torch.log_softmax(logits.to(z_t.dtype), dim=-1)
    safe = torch.where(sig2 > 0, sig2, torch.ones_like(sig2))[..., None]
    soft = -torch.logsumexp(logp - gap / (2 * safe), dim=-1)
    hard = -logp.gather(-1, x[..., None]).squeeze(-1)
    ratio = torch.where(sig2 > 0, soft, hard)
    return torch.where(s < t, ratio, torch.zeros_like(ratio))


class Kernel:
    """A reverse kernel: turns a denoiser output at ``(z_t, t)`` into per-token NELBO step terms (THEORY section 5)."""

    name = "kernel"

    def check(self, out: DenoiserOutput) -> None:
        """Raise ``ValueError`` if this kernel cannot be served by the output."""

    def step_terms(self, x: Tensor, out: DenoiserOutput, z_t: Tensor, z_s: Tensor, t: Tensor, s: Tensor,
                   schedule: Schedule, embeddings: Tensor) -> Tensor:
        """Per-token terms (B, L) of the step ``t -> s`` given the trajectory pair ``(z_t, z_s)``."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class GaussianKernel(Kernel):
    """x0-parametrised Gaussian kernel ``q(z_s | z_t, e_x -> ehat)``; closed-form KL (claim C3)."""

    name = "gaussian"

    def step_terms(self, x, out, z_t, z_s, t, s, schedule, embeddings):
        ehat = denoised(out, embeddings, z_t)
        return gaussian_step_kl(embeddings.to(z_t.dtype)[x], ehat, t, s, schedule)


class MixtureKernel(Kernel):
    """Categorical mixture kernel ``sum_v p_theta(x_i = v | z) q(z_s | z_t, e_v)`` (claims C7, C8).

    Sampling from it is "draw a token, then step toward its embedding"; needs probabilities (logits).
    """

    name = "mixture"

    def check(self, out: DenoiserOutput) -> None:
        if out.logits is None:
            raise ValueError("kernel: MixtureKernel needs per-token probabilities (logits); "
                             "this denoiser returns only ehat — use GaussianKernel")

    def step_terms(self, x, out, z_t, z_s, t, s, schedule, embeddings):
        return mixture_log_ratio(x, out.logits, z_t, z_s, t, s, schedule, embeddings)
