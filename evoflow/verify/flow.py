"""Checks of the flow and of the identities: C1, C2, C11 (on the denoiser under test), C3, C10, C12.

C1, C2 and C11 compare the model's velocity field with the oracle's exact density ``log p_tau(z)``;
C3 and C10 are identities that involve no denoiser; C12 runs on a tiny Transformer
(:func:`~evoflow.verify.context.tiny_transformer`, which C13 reuses).
"""

from __future__ import annotations

import itertools

import torch

from evoflow.elbo import ce_surrogate, embedding_diameter
from evoflow.field import ExactDivergence, Field
from evoflow.kernels import gaussian_step_kl
from evoflow.likelihood import log_likelihood
from evoflow.process import posterior_mean, q_sample, step_posterior
from evoflow.solvers import get
from evoflow.verify.context import F64, ClaimResult, Context, paths, some, tiny_transformer, verdict

__all__ = ["check_c1", "check_c2_c11", "check_c3", "check_c10", "check_c12"]


def check_c1(ctx: Context) -> ClaimResult:
    """C1: ``d log p_tau / d t_i = -(grad_i log p_tau . u_i + div_i u_i)``, u from the model, p_tau exact."""
    o, L, d = ctx.oracle, ctx.settings.length, ctx.settings.dim
    g = ctx.gen(1)
    z = torch.randn(3, L, d, generator=g, dtype=F64)
    tau = 0.1 + 0.8 * torch.rand(3, L, generator=g, dtype=F64)
    ev = Field(ctx.model, ExactDivergence())(z, tau)
    zz = z.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(o.log_marginal(zz, tau).sum(), zz)
    rhs = -((grad * ev.u).sum(-1) + ev.div)
    err = 0.0
    for i in range(L):
        up, down = tau.clone(), tau.clone()
        up[:, i] += 1e-6
        down[:, i] -= 1e-6
        lhs = (o.log_marginal(z, up) - o.log_marginal(z, down)) / 2e-6
        err = max(err, float(((lhs - rhs[:, i]).abs() / rhs[:, i].abs().clamp_min(1.0)).max()))
    return ClaimResult("C1", "continuity: max rel |d log p/dt_i + grad.u_i + div u_i|", err, "< 1e-5",
                       verdict(err < 1e-5))


def check_c2_c11(ctx: Context) -> list[ClaimResult]:
    """C2 and C11: the flow log-density of the model along three paths, against each other and the closed form."""
    o, L, rtol = ctx.oracle, ctx.settings.length, ctx.settings.flow_rtol
    x = some(ctx, 3)
    tau = torch.full(x.shape, 0.1, dtype=F64)
    z = q_sample(x, tau, o.embeddings, o.schedule, ctx.gen(2))
    exact = o.log_marginal(z, tau)
    dopri = get("torchdiffeq:dopri5", rtol=rtol, atol=rtol)
    tol = max(1e-7, 1e3 * rtol)  # the solver reaches ~50 rtol here; 20x margin
    try:
        runs = [log_likelihood(ctx.model, z, p, k, solver=dopri, t_min=0.1, prior=ctx.prior) for p, k in paths(L)]
        spread = max(float((a - b).abs().max() / exact.abs().max()) for a, b in itertools.combinations(runs, 2))
        err = max(float(((r - exact).abs() / exact.abs().clamp_min(1.0)).max()) for r in runs)
        note = ""
    except FloatingPointError as exc:  # a wrong field can blow up: that is a failure, not a crash
        spread = err = float("inf")
        note = f"the flow did not integrate: {exc}"
    prior = "N(0, sigma(1)^2 I)" if ctx.prior is None else "exact log p_1"
    return [ClaimResult("C2", "path invariance: max rel spread of log p across AR/sync/rolling", spread,
                        f"< {tol:.0e}", verdict(spread < tol), note),
            ClaimResult("C11", f"flow log-likelihood (prior {prior}) vs closed form, max rel error", err,
                        f"< {tol:.0e}", verdict(err < tol), note)]


def check_c3(ctx: Context) -> ClaimResult:
    """C3: the closed-form step KL against the KL of two Gaussian step posteriors (no denoiser involved)."""
    o, sch, g = ctx.oracle, ctx.model.schedule, ctx.gen(3)
    x = some(ctx)
    e = o.embeddings[x]
    ehat = e + 0.3 * torch.randn(e.shape, generator=g, dtype=F64)
    t = 0.2 + 0.8 * torch.rand(x.shape, generator=g, dtype=F64)
    s = t * torch.rand(x.shape, generator=g, dtype=F64).clamp(0.05, 0.95)
    z = q_sample(x, t, o.embeddings, sch, g)
    (m1, var), (m2, _) = step_posterior(z, e, t, s, sch), step_posterior(z, ehat, t, s, sch)
    direct = ((m1 - m2) ** 2).sum(-1) / (2 * var)  # KL of two Gaussians with one covariance
    err = float(((gaussian_step_kl(e, ehat, t, s, sch) - direct).abs() / direct.clamp_min(1e-12)).max())
    return ClaimResult("C3", "Gaussian step KL = 1/2 (SNR_s - SNR_t)|e - ehat|^2, max rel error", err, "< 1e-9",
                       verdict(err < 1e-9))


def check_c10(ctx: Context) -> ClaimResult:
    """C10: ``|e - ehat|^2 <= D^2 (1 - p_x) <= D^2 (-log p_x)`` on random logits and embeddings."""
    g = ctx.gen(10)
    V, d = ctx.settings.vocab, ctx.settings.dim
    E = torch.randn(V, d, generator=g, dtype=F64)
    logits = 3 * torch.randn(256, 4, V, generator=g, dtype=F64)
    x = torch.randint(0, V, (256, 4), generator=g)
    err = ((E[x] - posterior_mean(logits, E)) ** 2).sum(-1)
    p_x = torch.softmax(logits, -1).gather(-1, x[..., None]).squeeze(-1)
    D2 = embedding_diameter(E) ** 2
    slack = float(torch.maximum(err - D2 * (1 - p_x), D2 * (1 - p_x) - ce_surrogate(logits, x, E)).max())
    return ClaimResult("C10", "max violation of |e-ehat|^2 <= D^2(1-p) <= D^2(-log p)", slack, "<= 1e-12",
                       verdict(slack <= 1e-12))


def check_c12(ctx: Context) -> ClaimResult:
    """Frontier attention with a KV cache of the committed prefix equals full recomputation (C12)."""
    from evoflow.nn import CachedDenoiser, Frontier

    g = ctx.gen(12)
    model = tiny_transformer(ctx, g)  # time conditioning live, as after training
    with torch.no_grad():
        z = torch.randn(2, 12, model.config.d_latent, generator=g)
        cached, worst = CachedDenoiser(model), 0.0
        for frontier in range(13):  # tokens commit left to right while the active ones keep moving
            tau = torch.rand(2, 12, generator=g, dtype=F64).clamp_min(0.01)
            tau[:, :frontier] = 0.0
            full = model(z, tau, attention=Frontier()).logits
            worst = max(worst, float((cached(z, tau).logits - full).abs().max()))
            z = torch.where((tau > 0)[..., None], z + 0.1, z)
    return ClaimResult("C12", "frontier KV cache vs full recomputation, max abs logit difference (float32)",
                       worst, "<= 1e-5", verdict(worst <= 1e-5))
