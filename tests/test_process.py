"""Forward process, step posterior, and the conversions ehat -> epsilon, velocity, score."""

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import evoflow as ef
from evoflow.process import epsilon, posterior_mean, q_sample, score, step_posterior, velocity
from tests.strategies import random_markov, schedules, seeds

F64 = torch.float64


def test_q_sample_moments():
    sch = ef.Cosine()
    E = torch.tensor([[1.0, -2.0], [0.5, 0.0]], dtype=F64)
    x = torch.zeros(20000, 1, dtype=torch.int64)
    tau = torch.full((20000, 1), 0.4, dtype=F64)
    z = q_sample(x, tau, E, sch, torch.Generator().manual_seed(0))
    a, s = sch.alpha(tau[0, 0]), sch.sigma(tau[0, 0])
    se = s / 20000**0.5
    assert (z[:, 0].mean(0) - a * E[0]).abs().max() < 5 * se
    assert (z[:, 0].var(0) / s**2 - 1).abs().max() < 0.05


@given(sch=schedules, seed=seeds, t=st.floats(0.05, 1.0), frac=st.just(0.0) | st.floats(1e-4, 0.95))
def test_step_posterior_is_bayes_rule(sch, seed, t, frac):
    g = torch.Generator().manual_seed(seed)
    s = t * frac
    z_t, e = torch.randn(2, 1, 1, 3, generator=g, dtype=F64)
    tt, ss = torch.tensor([[t]], dtype=F64), torch.tensor([[s]], dtype=F64)
    mu, var = step_posterior(z_t, e, tt, ss, sch)
    # independent route: prior q(z_s | x) times likelihood q(z_t | z_s), completed square
    a_s, s_s, a_t, s_t = sch.alpha(ss), sch.sigma(ss), sch.alpha(tt), sch.sigma(tt)
    a_ts = a_t / a_s
    v_ts = s_t**2 - a_ts**2 * s_s**2
    if float(s_s) == 0:  # landing on a clean end: the step posterior is a point mass
        assert torch.allclose(mu, a_s[..., None] * e) and float(var) == 0.0
        return
    prec = 1 / s_s**2 + a_ts**2 / v_ts
    mean = (a_s[..., None] * e / s_s[..., None] ** 2 + a_ts[..., None] * z_t / v_ts[..., None]) / prec[..., None]
    assert torch.allclose(var, 1 / prec, rtol=1e-8, atol=1e-12)
    assert torch.allclose(mu, mean, rtol=1e-7, atol=1e-9)


def test_step_posterior_leaves_frozen_tokens_unchanged():
    z_t, e = torch.randn(2, 2, 3, 4, dtype=F64)
    t = torch.tensor([[0.5, 0.0, 1.0], [0.3, 0.3, 0.0]], dtype=F64)
    mu, var = step_posterior(z_t, e, t, t, ef.Linear())
    assert torch.equal(mu, z_t) and (var == 0).all()


@given(sch=schedules, seed=seeds, t=st.floats(0.01, 1.0))
def test_velocity_is_the_conditional_path_derivative(sch, seed, t):
    """With ehat = e_x known, u(z_t) = alpha'(t) e + sigma'(t) eps: d/dt of z_t = alpha e + sigma eps."""
    g = torch.Generator().manual_seed(seed)
    e, eps = torch.randn(2, 1, 2, 3, generator=g, dtype=F64)
    tau = torch.full((1, 2), t, dtype=F64)
    z = sch.alpha(tau)[..., None] * e + sch.sigma(tau)[..., None] * eps
    u = velocity(z, e, tau, sch)
    assert torch.allclose(u, sch.dalpha(tau)[..., None] * e + sch.dsigma(tau)[..., None] * eps, atol=1e-9)
    assert torch.allclose(epsilon(z, e, tau, sch), eps, atol=1e-9)


def test_linear_velocity_form():
    z, ehat = torch.randn(2, 3, 4, 2, dtype=F64)
    tau = torch.rand(3, 4, dtype=F64) * 0.9 + 0.05
    assert torch.allclose(velocity(z, ehat, tau, ef.Linear()), (z - ehat) / tau[..., None])


@given(sch=schedules, seed=seeds)
def test_score_is_the_gradient_of_the_exact_log_density(sch, seed):
    """Tweedie: (alpha ehat - z) / sigma^2 with the oracle's ehat equals grad_z log p_tau(z)."""
    oracle = random_markov(3, 3, 2, sch, seed)
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(2, 3, 2, generator=g, dtype=F64).requires_grad_(True)
    tau = torch.rand(2, 3, generator=g, dtype=F64) * 0.9 + 0.05
    (grad,) = torch.autograd.grad(oracle.log_marginal(z, tau).sum(), z)
    ehat = posterior_mean(oracle(z, tau).logits, oracle.embeddings)
    assert torch.allclose(score(z.detach(), ehat.detach(), tau, sch), grad, rtol=1e-8, atol=1e-8)


def test_endpoints_give_no_nan():
    z, ehat = torch.randn(2, 1, 2, 3, dtype=F64)
    tau = torch.tensor([[0.0, 1.0]], dtype=F64)
    for sch in (ef.Linear(), ef.Cosine(), ef.LogLinear()):
        for fn in (epsilon, velocity, score):
            assert torch.isfinite(fn(z, ehat, tau, sch)).all()
    assert (epsilon(z, ehat, tau, ef.Linear())[:, 0] == 0).all()  # a committed token has no noise


def test_posterior_mean_is_the_probability_weighted_embedding():
    E = torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=F64)
    logits = torch.log(torch.tensor([[[0.25, 0.75]]], dtype=F64))
    assert torch.allclose(posterior_mean(logits, E), torch.tensor([[[0.25, 1.5]]], dtype=F64))


def test_check_denoiser_names_what_is_missing():
    from evoflow.process import check_denoiser

    with pytest.raises(TypeError, match="schedule"):
        check_denoiser(lambda z, t: None)


INT_DTYPES = [torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64] + [
    getattr(torch, name) for name in ("uint16", "uint32", "uint64") if hasattr(torch, name)]


@pytest.mark.parametrize("dtype", INT_DTYPES, ids=str)
def test_check_tokens_accepts_every_integer_dtype_as_int64(dtype):
    from evoflow.process import check_tokens

    x = torch.tensor([[0, 4, 2], [1, 1, 3]]).to(dtype)
    ids = check_tokens(x, 5, (2, 3))
    assert ids.dtype == torch.int64 and ids.tolist() == [[0, 4, 2], [1, 1, 3]]
    with pytest.raises(ValueError, match=r"^x holds token ids outside \[0, 4\)"):
        check_tokens(x, 4)


@pytest.mark.parametrize(("bad", "what"), [
    (torch.tensor([[True, False]]), "dtype torch.bool"), (torch.tensor([[0.0, 1.0]]), "dtype torch.float32"),
    (torch.tensor([[1j]]), "dtype torch.complex64"), ([[0, 1]], "list"), (np.array([[0, 1]]), "ndarray"),
], ids=lambda v: v if isinstance(v, str) else "")
def test_check_tokens_refuses_non_integer_ids_naming_x(bad, what):
    from evoflow.process import check_tokens

    with pytest.raises(TypeError, match=rf"^x must be an integer tensor of token ids, got {what}$"):
        check_tokens(bad, 3)


def test_check_tokens_shape_and_huge_unsigned_ids():
    from evoflow.process import check_tokens

    with pytest.raises(ValueError, match=r"^x must have shape \(1, 3\), got \(3,\)$"):
        check_tokens(torch.tensor([0, 1, 2]), 3, (1, 3))
    if hasattr(torch, "uint64"):  # 2**63 + 1 must not wrap into a valid id
        with pytest.raises(ValueError, match="outside"):
            check_tokens(torch.tensor([[2**63 + 1]], dtype=torch.uint64), 3)
    assert check_tokens(torch.empty(0, 4, dtype=torch.uint8), 3).shape == (0, 4)
