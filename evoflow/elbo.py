"""The unified ELBO: discrete-time NELBO along any path, and its continuous-time estimator.

Along a grid ``T`` (K+1, L) mapped to ``t_min + (1 - t_min) T`` (THEORY section 5):

    NELBO_K(x) = KL(q(z^0 | x) || N(0, sigma(1)^2 I)) + sum_k sum_i KL_{k,i} + E[-log p(x | z^K)],

estimated on trajectories ``z^{0:K} ~ q(. | x)`` drawn from the clean end toward the noise end;
the step terms come from a :class:`~evoflow.kernels.Kernel`; the decoder is the denoiser's joint
``log_posterior`` when it has one (the oracles do), the factorised softmax otherwise. The
continuous-time NELBO (claims C4, C9) replaces the sum by

    int_0^1 sum_i 1/2 (-SNR'(t_i(s))) (-dt_i/ds) E||e_{x_i} - ehat_i||^2 ds,

estimated by sampling s (and the path) with the samplers of :mod:`evoflow.estimators`.
Everything is in nats per sequence; :func:`bits_per_token` converts (per scored token: prompt
columns are not counted). ``prior`` replaces the Gaussian prior ``N(0, sigma(1)^2 I)`` by an exact
log-density (e.g. an oracle's ``log p_1``) where ``alpha(1) > 0`` makes the Gaussian one approximate;
the prior term is then estimated on the trajectory's own noise-end latents. Every figure here is a bound
only because it is a path estimator (claim C9); per-token independent times are not.
Derivation: proofs/p03_gaussian_step_kl.md ... proofs/p10_ce_surrogate.md.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from evoflow.arguments import as_int
from evoflow.estimators import LogSNRImportance, PathDistribution, SSampler, Uniform
from evoflow.kernels import GaussianKernel, Kernel, gaussian_step_kl
from evoflow.paths import Path, as_grid, grid_times, to_times
from evoflow.process import DenoiserOutput, check_denoiser, check_output, check_tokens, denoised, q_forward, q_sample
from evoflow.schedules import Schedule
from evoflow.solve import check_t_min

Prior = Callable[[Tensor, Tensor], Tensor]  # (z (B, L, d), tau (B, L)) -> log density (B,)

__all__ = [
    "ContinuousNELBO",
    "NELBOResult",
    "bits_per_token",
    "ce_surrogate",
    "continuous_integrand",
    "continuous_nelbo",
    "embedding_diameter",
    "estimator_variance",
    "fit_log_snr_profile",
    "gaussian_step_kl",
    "nelbo",
    "prior_kl",
    "reconstruction",
]


def bits_per_token(nats: Tensor, length: int | Tensor) -> Tensor:
    """Convert per-sequence nats to bits per token: ``nats / (length ln 2)`` (THEORY section 5).

    ``length`` is the number of scored tokens: an int, or a tensor broadcasting against ``nats`` (one
    count per sequence); a sequence with no scored token gives NaN (no token, no rate).
    """
    if isinstance(length, Tensor):
        count = length.to(torch.float64)
        return torch.where(count > 0, nats / (count.clamp_min(1.0) * math.log(2.0)), math.nan)
    return nats / (length * math.log(2.0))


def prior_kl(x: Tensor, embeddings: Tensor, schedule: Schedule, noisy: Tensor | None = None) -> Tensor:
    """Prior term of THEORY section 5, ``KL(q(z^0 | x) || N(0, sigma(1)^2 I))``; (B,).

        = sum_i alpha(1)^2 ||e_{x_i}||^2 / (2 sigma(1)^2)   over the tokens that start at t = 1
    (``noisy`` (B, L), all by default; prompt tokens are not). Zero when ``alpha(1) = 0``
    (linear, cosine): the prior is exact.
    """
    one = torch.tensor(1.0, dtype=torch.float64)
    ratio = float(schedule.snr(one))
    per_token = 0.5 * ratio * (embeddings.to(torch.float64)[x] ** 2).sum(-1)  # (B, L)
    return (per_token if noisy is None else per_token * noisy).sum(-1)


def reconstruction(denoiser, x: Tensor, z: Tensor, tau: Tensor, out: DenoiserOutput | None = None,
                   scored: Tensor | None = None) -> Tensor:
    """Decoder term of THEORY section 5 (claim C6), ``-log p(x | z)`` at the clean end; (B,).

    The joint decoder ``denoiser.log_posterior`` when the denoiser has one (exact for oracles; clean
    prompt tokens are then certain), else the factorised ``-sum_i log softmax(logits_i)[x_i]`` over
    the ``scored`` tokens (B, L) (all by default; nelbo leaves prompts out), from ``out`` (the
    output at ``(z, tau)``, evaluated here if not given). A token at ``sigma(t) = 0`` whose latent is its
    own embedding, distinct from every other row, is identified by it: its decoder term is 0, not a
    softmax (claim C13; THEORY section 5).
    """
    if callable(getattr(denoiser, "log_posterior", None)):
        return -denoiser.log_posterior(x, z, tau).to(torch.float64)
    scored = torch.ones(x.shape, dtype=torch.bool, device=x.device) if scored is None else scored.bool()
    scored = scored & ~_identified(x, z, tau, denoiser)
    if not bool(scored.any()):
        return torch.zeros(x.shape[0], dtype=torch.float64, device=x.device)
    if out is None:
        out = check_output(denoiser(z, tau), z, denoiser.embeddings.shape[0])
    if out.logits is None:
        raise ValueError("denoiser: the reconstruction term needs logits (a factorised decoder)")
    logp = torch.log_softmax(out.logits.to(torch.float64), -1).gather(-1, x[..., None]).squeeze(-1)
    return -(logp * scored).sum(-1)


def _identified(x: Tensor, z: Tensor, tau: Tensor, denoiser) -> Tensor:
    """Tokens (B, L) at sigma = 0 whose latent equals their embedding, when no two embeddings coincide."""
    clean = denoiser.schedule.sigma(tau) == 0
    if not bool(clean.any()):
        return clean
    E = denoiser.embeddings.detach()
    distinct = torch.unique(E, dim=0).shape[0] == E.shape[0]
    return clean & distinct & (z == E.to(z.dtype)[x]).all(-1)


def continuous_integrand(e: Tensor, ehat: Tensor, tau: Tensor, dtau_ds: Tensor, schedule: Schedule) -> Tensor:
    """Claims C4/C9: ``1/2 (-SNR'(t_i)) (-dt_i/ds) ||e_i - ehat_i||^2`` per token; (B, L).

    Tokens that do not move (``dt/ds = 0``) contribute 0. Derivation: proofs/p04_continuous_limit.md.
    """
    rate = torch.where(dtau_ds != 0, schedule.dsnr(tau) * dtau_ds, torch.zeros_like(tau))
    return 0.5 * rate * ((e - ehat) ** 2).sum(-1).to(rate.dtype)


def embedding_diameter(embeddings: Tensor) -> float:
    """``D = max_{v, w} ||e_v - e_w||``, the largest distance between two embeddings (claim C10)."""
    return float(torch.cdist(embeddings.to(torch.float64), embeddings.to(torch.float64)).max())


def ce_surrogate(logits: Tensor, x: Tensor, embeddings: Tensor) -> Tensor:
    """Claim C10: ``D^2 (-log p_x) >= D^2 (1 - p_x) >= ||e_x - ehat||^2`` per token; (B, L).

    A weighted cross-entropy is therefore a looser but valid bound. Derivation: proofs/p10_ce_surrogate.md.
    """
    logp = torch.log_softmax(logits.to(torch.float64), -1).gather(-1, x[..., None]).squeeze(-1)
    return embedding_diameter(embeddings) ** 2 * (-logp)


@dataclass
class NELBOResult:
    """Per-sequence NELBO in nats (B,) with its parts: ``prior`` (B,), per-step per-token terms
    (THEORY section 5, C3-C8)
    ``step_terms`` (K, B, L), ``recon`` (B,); ``stderr`` (B,) over the ``samples`` trajectories
    (NaN for one sample); ``nfe`` network calls; ``tokens`` (B,) the scored tokens per sequence (those
    that move; prompt columns do not), None for all L."""

    total: Tensor
    prior: Tensor
    step_terms: Tensor
    recon: Tensor
    stderr: Tensor
    samples: int
    nfe: int
    tokens: Tensor | None = None

    @property
    def steps(self) -> Tensor:
        """Per-step terms summed over tokens, (K, B)."""
        return self.step_terms.sum(-1)

    def bits_per_token(self) -> Tensor:
        """``total`` in bits per scored token, (B,): prompt columns are conditioned on, not scored."""
        return bits_per_token(self.total, self.step_terms.shape[-1] if self.tokens is None else self.tokens)


def _check_common(denoiser, x, samples, t_min, name: str = "samples") -> tuple[Tensor, int, float]:
    """Validate the denoiser, the token ids, the count (called ``name`` in messages) and ``t_min``."""
    check_denoiser(denoiser)
    x = check_tokens(x, denoiser.embeddings.shape[0])
    if x.ndim != 2:
        raise ValueError(f"x must have shape (B, L), got {tuple(x.shape)}")
    samples = as_int(samples, name, minimum=1)
    return x, samples, check_t_min(t_min)


def _check_prior(prior) -> None:
    if prior is not None and not callable(prior):
        raise TypeError(f"prior must be None or a callable (z, tau) -> log density (B,), got {prior!r}")


def _sampled_prior(x: Tensor, z: Tensor, tau: Tensor, embeddings: Tensor, schedule: Schedule,
                   prior: Prior) -> Tensor:
    """``log q(z | x, tau) - log prior(z, tau)`` over the tokens at t = 1, one value per row (B,).

    The single-sample estimate of ``KL(q(z^0 | x) || prior)`` on the trajectory's own ``z^0``; with the
    exact marginal ``p_1`` as prior the NELBO of an exact model stays exact per trajectory (C7).
    """
    noisy = tau == 1
    a, sg = schedule.alpha(tau)[..., None], schedule.sigma(tau)
    safe = torch.where(noisy, sg, torch.ones_like(sg)).to(torch.float64)
    d = z.shape[-1]
    sq = ((z.to(torch.float64) - a * embeddings.to(torch.float64)[x]) ** 2).sum(-1)
    log_q = -0.5 * sq / safe**2 - d * torch.log(safe) - 0.5 * d * math.log(2 * math.pi)
    value = prior(z, tau)
    if not isinstance(value, Tensor) or value.shape != z.shape[:1]:
        raise ValueError(f"prior must return a log density of shape ({z.shape[0]},), got "
                         f"{tuple(getattr(value, 'shape', ()))}")
    return (log_q * noisy).sum(-1) - value.to(torch.float64)


def _finite(value: Tensor, what: str) -> Tensor:
    if not bool(torch.isfinite(value).all()):
        raise FloatingPointError(f"{what} is not finite: the denoiser returned NaN/inf outputs, or t_min is "
                                 "too small for the kernel (SNR(t_min) = inf needs t_min > 0)")
    return value


def _mean_and_stderr(values: Tensor, samples: int, batch: int) -> tuple[Tensor, Tensor]:
    v = values.reshape(samples, batch)
    se = v.std(0) / math.sqrt(samples) if samples > 1 else torch.full_like(v[0], math.nan)
    return v.mean(0), se


def nelbo(denoiser, x: Tensor, path: Path | Sequence[Path] | Tensor, steps: int | None = None,
          kernel: Kernel | None = None, t_min: float = 0.01, samples: int = 1,
          generator: torch.Generator | None = None, prior: Prior | None = None) -> NELBOResult:
    """Discrete-time NELBO (nats, per sequence) of token ids ``x`` (B, L) along ``path`` (THEORY section 5).

    ``kernel``: :class:`~evoflow.kernels.GaussianKernel` (default; closed-form step KL, C3) or
    :class:`~evoflow.kernels.MixtureKernel` (log-ratio estimator; exact along ``Staircase(1)`` with
    an exact posterior, C7). Path time t maps to ``t_min + (1 - t_min) t``; prompt columns of a grid
    (0 throughout) stay clean at 0, which makes the result the conditional NELBO of the other tokens
    given the prompt. The schedule is the denoiser's. ``samples`` independent trajectories per
    sequence give the mean and its standard error. ``prior`` (default: ``N(0, sigma(1)^2 I)``, closed-form
    KL) is a callable ``(z, tau) -> log density (B,)`` of the tokens at t = 1; the prior term is then
    ``log q(z^0 | x) - log prior(z^0)`` on the trajectory's own ``z^0`` (exact prior for ``alpha(1) > 0``).
    """
    x, samples, t_min = _check_common(denoiser, x, samples, t_min)
    _check_prior(prior)
    kernel = GaussianKernel() if kernel is None else kernel
    if not isinstance(kernel, Kernel):
        raise TypeError(f"kernel must be a Kernel object (GaussianKernel(), MixtureKernel()), got {kernel!r}")
    sch, E = denoiser.schedule, denoiser.embeddings
    B, L = x.shape
    grid = as_grid(path, L, steps, B)
    if isinstance(kernel, GaussianKernel):
        _check_finite_snr(sch, t_min, "GaussianKernel")
    times = grid_times(grid, t_min).repeat(1, samples, 1).to(E.device)  # (K+1, S B, L), prompts at 0
    xs = x.repeat(samples, 1)
    K = times.shape[0] - 1
    z = q_sample(xs, times[K], E, sch, generator).to(E.dtype)  # the clean end of the trajectory
    out = check_output(denoiser(z, times[K]), z, E.shape[0])
    kernel.check(out)
    recon = reconstruction(denoiser, xs, z, times[K], out, scored=times[0] > 0)
    terms = torch.zeros(K, xs.shape[0], L, dtype=torch.float64, device=E.device)
    nfe = 1
    for k in range(K - 1, -1, -1):  # draw the trajectory toward the noise end, scoring each step
        z_t = q_forward(z, times[k + 1], times[k], sch, generator)
        if bool((times[k + 1] < times[k]).any()):
            out = check_output(denoiser(z_t, times[k]), z_t, E.shape[0])
            kernel.check(out)
            nfe += 1
            terms[k] = kernel.step_terms(xs, out, z_t, z, times[k], times[k + 1], sch, E).to(torch.float64)
        z = z_t
    if prior is None:
        prior_term = prior_kl(xs, E, sch, noisy=times[0] == 1)
    else:
        prior_term = _sampled_prior(xs, z, times[0], E, sch, prior)
    total = _finite(prior_term + terms.sum((0, 2)) + recon, "nelbo")
    mean, se = _mean_and_stderr(total, samples, B)
    split = terms.reshape(K, samples, B, L).mean(1)
    return NELBOResult(total=mean, prior=prior_term.reshape(samples, B).mean(0), step_terms=split,
                       recon=recon.reshape(samples, B).mean(0), stderr=se, samples=samples, nfe=nfe,
                       tokens=(times[0, :B] > 0).sum(-1))


@dataclass
class ContinuousNELBO:
    """Continuous-time NELBO estimate (claims C4, C9), nats (B,): ``total = prior + integral + recon``;
    ``per_call`` (B, n) holds ``integrand(s) / r(s)`` for each network call; ``stderr`` (B,) of the integral
    treats the n calls as independent (exact for :class:`~evoflow.estimators.Uniform`; use
    :func:`estimator_variance` for antithetic or stratified groups)."""

    total: Tensor
    integral: Tensor
    prior: Tensor
    recon: Tensor
    stderr: Tensor
    per_call: Tensor
    nfe: int


def _as_distribution(path) -> PathDistribution:
    if isinstance(path, PathDistribution):
        return path
    if isinstance(path, Path):
        return PathDistribution([path])
    if isinstance(path, Sequence):
        return PathDistribution(list(path))
    raise TypeError(f"path must be a Path, a sequence of Paths or a PathDistribution, got {type(path).__name__}")


def _sample_times(dist: PathDistribution, sampler: SSampler, B: int, n: int, L: int, sch: Schedule,
                  t_min: float, generator) -> tuple[Tensor, Tensor, Tensor]:
    """Per sequence one path, then a group of n values of s: tau, dtau/ds (B, n, L), weights (B, n)."""
    pick = dist.pick(B, generator)
    tau = torch.empty(B, n, L, dtype=torch.float64)
    dtau, weight = torch.empty_like(tau), torch.empty(B, n, dtype=torch.float64)
    for j in pick.unique().tolist():
        rows = (pick == j).nonzero().flatten()
        p = dist.paths[j]
        s, w = sampler.sample(len(rows), n, p, L, sch, t_min, generator)
        tau[rows] = to_times(p.tau(s.reshape(-1), L), t_min).reshape(len(rows), n, L)
        dtau[rows] = ((1.0 - t_min) * p.dtau(s.reshape(-1), L)).reshape(len(rows), n, L)
        weight[rows] = w
    return tau, dtau, weight


def _evaluate_on_paths(denoiser, x: Tensor, path, sampler: SSampler, n: int, t_min: float, generator
                       ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """One network call on ``z ~ q(z | x, tau(s))`` for n draws of (path, s) per sequence.

    Returns ``xs`` (B n, L), ``tau`` and ``dtau/ds`` (B n, L), weights ``1 / r(s)`` (B, n) and ``ehat`` (B n, L, d).
    """
    sch, E = denoiser.schedule, denoiser.embeddings
    B, L = x.shape
    tau, dtau, weight = (v.to(E.device) for v in _sample_times(_as_distribution(path), sampler, B, n, L, sch,
                                                                t_min, generator))
    xs = x[:, None, :].expand(B, n, L).reshape(B * n, L)
    tau, dtau = tau.reshape(B * n, L), dtau.reshape(B * n, L)
    z = q_sample(xs, tau, E, sch, generator).to(E.dtype)
    return xs, tau, dtau, weight, denoised(check_output(denoiser(z, tau), z, E.shape[0]), E, z)


def _check_finite_snr(schedule: Schedule, t_min: float, what: str) -> None:
    if float(schedule.snr(torch.tensor(t_min, dtype=torch.float64))) == math.inf:
        raise ValueError(f"t_min must be > 0 for {what} with {schedule!r}: SNR(t_min) = inf")


def continuous_nelbo(denoiser, x: Tensor, path: Path | Sequence[Path] | PathDistribution,
                     sampler: SSampler | None = None, samples: int = 8, t_min: float = 0.01,
                     generator: torch.Generator | None = None, prior: Prior | None = None) -> ContinuousNELBO:
    """Continuous-time NELBO of ``x`` (B, L) over a distribution of paths (claims C4, C9).

    Per sequence: draw a path, then ``samples`` values of s with ``sampler`` (uniform by default;
    antithetic, stratified, logSNR-importance), evaluate the denoiser once per value on
    ``z ~ q(z | x, tau(s))``, and average ``continuous_integrand / r(s)``. Unbiased for the
    path-averaged continuous NELBO, which is itself a bound (C9). ``prior`` as in :func:`nelbo` (its term
    then estimated on one draw of ``z^0 ~ q(z | x, 1)``). Derivation: proofs/p09_path_mixtures.md.
    """
    x, samples, t_min = _check_common(denoiser, x, samples, t_min)
    _check_prior(prior)
    sampler = Uniform() if sampler is None else sampler
    if not isinstance(sampler, SSampler):
        raise TypeError(f"sampler must be an SSampler object (Uniform(), Antithetic(), ...), got {sampler!r}")
    sch, E = denoiser.schedule, denoiser.embeddings
    _check_finite_snr(sch, t_min, "the continuous-time NELBO")
    B, L = x.shape
    xs, tau, dtau, weight, ehat = _evaluate_on_paths(denoiser, x, path, sampler, samples, t_min, generator)
    f = continuous_integrand(E.to(ehat.dtype)[xs], ehat, tau, dtau, sch).sum(-1).reshape(B, samples) * weight
    f = _finite(f, "continuous_nelbo")
    t_end = torch.full((B, L), t_min, dtype=torch.float64, device=E.device)
    recon = reconstruction(denoiser, x, q_sample(x, t_end, E, sch, generator).to(E.dtype), t_end)
    if prior is None:
        prior_term = prior_kl(x, E, sch)
    else:
        ones = torch.ones((B, L), dtype=torch.float64, device=E.device)
        prior_term = _sampled_prior(x, q_sample(x, ones, E, sch, generator).to(E.dtype), ones, E, sch, prior)
    integral = f.mean(1)
    se = f.std(1) / math.sqrt(samples) if samples > 1 else torch.full_like(f[:, 0], math.nan)
    return ContinuousNELBO(total=prior_term + integral + recon, integral=integral, prior=prior_term, recon=recon,
                           stderr=se, per_call=f, nfe=1 + (0 if hasattr(denoiser, "log_posterior") else 1))


def fit_log_snr_profile(denoiser, x: Tensor, path, t_min: float = 0.01, calls: int = 256, bins: int = 24,
                        log_snr_min: float = -12.0, floor: float = 0.1, inner: SSampler | None = None,
                        generator: torch.Generator | None = None) -> LogSNRImportance:
    """A :class:`~evoflow.estimators.LogSNRImportance` whose profile is fitted from a pilot run.

    A pilot draws ``calls`` uniform values of s per sequence. For one call the integrand is
    ``f = sum_i R_i phi_i`` with ``R_i = dlogSNR_i/ds`` and ``phi_i = 1/2 SNR(t_i) ||e_{x_i} - ehat_i||^2``
    (the integrand per unit logSNR), and the proposal is ``r ~ sum_i R_i profile(logSNR_i)``; so the
    value ``f / sum_i R_i`` is credited to the bins of the moving tokens (weights ``R_i``) and the
    profile on ``bins`` equal logSNR bins is ``sqrt(mean value^2)``: the variance-optimal density
    ``r ~ sqrt(E f^2)`` (improved-DDPM style) for synchronous and one-token-at-a-time paths alike.
    The pilot is independent of later estimates, so they stay unbiased. Derivation: proofs/p09_path_mixtures.md.
    """
    x, calls, t_min = _check_common(denoiser, x, calls, t_min, name="calls")
    sch, E = denoiser.schedule, denoiser.embeddings
    L = x.shape[1]
    xs, tau, dtau, _, ehat = _evaluate_on_paths(denoiser, x, path, Uniform(), calls, t_min, generator)
    phi = (0.5 * sch.snr(tau) * ((E.to(ehat.dtype)[xs] - ehat) ** 2).sum(-1).to(torch.float64)).cpu()  # (N, L)
    tau, dtau = tau.cpu(), dtau.cpu()
    rate = torch.where(dtau != 0, sch.dlog_snr(tau) * dtau, torch.zeros_like(tau))  # R_i >= 0
    value = (rate * phi).sum(-1) / rate.sum(-1).clamp_min(1e-300)  # (N,)
    hi = float(sch.log_snr(torch.tensor(t_min, dtype=torch.float64)))
    edges = torch.linspace(log_snr_min, hi, bins + 1, dtype=torch.float64)
    which = torch.bucketize(sch.log_snr(tau), edges, right=True).clamp(1, bins) - 1  # (N, L)
    w = rate.reshape(-1)
    sums = torch.zeros(bins, dtype=torch.float64).index_add_(0, which.reshape(-1), w * (value**2)[:, None]
                                                             .expand(-1, L).reshape(-1))
    counts = torch.zeros(bins, dtype=torch.float64).index_add_(0, which.reshape(-1), w)
    profile = (sums / counts.clamp_min(1e-300)).sqrt()
    profile = torch.where(counts > 0, profile, profile.max() * 1e-3) + 1e-12
    return LogSNRImportance(inner, floor=floor, log_snr_min=log_snr_min, edges=edges, profile=profile)


def estimator_variance(denoiser, x: Tensor, path, samplers: dict[str, SSampler], calls: int = 8,
                       replications: int = 64, t_min: float = 0.01,
                       generator: torch.Generator | None = None) -> dict[str, tuple[Tensor, Tensor]]:
    """For each sampler: the mean (B,) of the integral estimate and its variance per network call (B,),
    ``calls * Var(estimate with calls evaluations)`` over ``replications`` independent groups.

    The ratio of a sampler's variance per call to :class:`Uniform`'s is its variance reduction at
    equal cost. Derivation: proofs/p09_path_mixtures.md.
    """
    B = x.shape[0]
    xr = x.repeat(replications, 1)
    out = {}
    for name, sampler in samplers.items():
        res = continuous_nelbo(denoiser, xr, path, sampler, calls, t_min, generator)
        est = res.integral.reshape(replications, B)
        out[name] = (est.mean(0), calls * est.var(0))
    return out
