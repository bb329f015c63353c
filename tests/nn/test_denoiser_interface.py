"""The Transformer is one more denoiser: solvers, paths, ELBO and likelihood take it unchanged (THEORY section 8, C12).

Every registered solver is enrolled automatically (the test iterates over the registry).
"""

import pytest
import torch

import evoflow as ef
from evoflow.nn import CachedDenoiser, Frontier
from evoflow.process import Denoiser, check_denoiser

B, L, V, D = 2, 4, 8, 4


@pytest.fixture
def tiny(make_model):
    """A tiny Transformer with live time conditioning, V = 8 tokens in a d = 4 latent space."""
    return make_model(vocab=V, d_latent=D, seed=3)


def latents(seed=0):
    return torch.randn(B, L, D, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def solver_for(name):
    solver = ef.solvers.get(name)
    if getattr(solver, "adaptive", False):  # an untrained field at rtol 1e-7 costs thousands of calls
        solver = ef.solvers.get(name, rtol=1e-4, atol=1e-5)
    return solver


def test_satisfies_the_denoiser_protocol(tiny):
    check_denoiser(tiny)
    assert isinstance(tiny, Denoiser)
    assert isinstance(tiny.schedule, ef.Schedule)


@pytest.mark.parametrize("name", ef.solvers.names())
def test_every_registered_solver_runs_on_the_transformer(tiny, name):
    solver = solver_for(name)
    result = ef.solve(tiny, latents(), ef.Synchronous(), steps=4, solver=solver, t_min=0.05,
                      generator=torch.Generator().manual_seed(0))
    assert result.z.shape == (B, L, D) and bool(torch.isfinite(result.z).all())
    assert result.nfe >= 4


@pytest.mark.parametrize("path", [ef.Synchronous(), ef.Staircase(block=1), ef.Staircase(block=2), ef.Rolling(window=2)])
def test_every_path_runs_to_the_clean_end(tiny, path):
    result = ef.solve(tiny, latents(), path, steps=8, solver=ef.solvers.get("euler"), t_min=0.0)
    assert bool(torch.isfinite(result.z).all())


def test_cached_frontier_decoding_matches_the_uncached_solve(tiny):
    """C12 through the solvers: the cached denoiser changes the cost, not the answer, along the AR staircase."""
    tiny.attention = Frontier()
    z0 = latents(seed=1)
    full = ef.solve(tiny, z0, ef.Staircase(block=1), steps=8, solver=ef.solvers.get("ddim"))
    denoiser = CachedDenoiser(tiny)
    cached = ef.solve(denoiser, z0, ef.Staircase(block=1), steps=8, solver=ef.solvers.get("ddim"))
    assert (cached.z - full.z).abs().max() <= 1e-5
    assert cached.nfe == full.nfe and denoiser.cache.length >= L - 1  # the prefix was reused


@pytest.mark.parametrize("divergence", ["exact", "hutchinson"])
def test_log_likelihood_is_finite(tiny, divergence):
    ll = ef.log_likelihood(tiny, latents(), ef.Synchronous(), steps=3, solver=ef.solvers.get("euler"),
                           divergence=divergence, t_min=0.05, generator=torch.Generator().manual_seed(0))
    assert ll.shape == (B,) and bool(torch.isfinite(ll).all())


@pytest.mark.parametrize("kernel", [ef.GaussianKernel(), ef.MixtureKernel()], ids=repr)
def test_nelbo_is_finite_and_reaches_every_parameter(tiny, kernel):
    x = torch.randint(V, (B, L), generator=torch.Generator().manual_seed(2))
    result = ef.nelbo(tiny, x, ef.Synchronous(), steps=4, kernel=kernel, t_min=0.05,
                      generator=torch.Generator().manual_seed(0))
    assert result.total.shape == (B,) and bool(torch.isfinite(result.total).all())
    result.total.sum().backward()
    for name, p in tiny.named_parameters():
        if name.startswith("time_head."):  # the time estimate is not part of the ELBO (THEORY section 8)
            continue
        assert p.grad is not None and bool(torch.isfinite(p.grad).all()), name
        assert p.grad.abs().max() > 0, name


@pytest.mark.parametrize("divergence", ["exact", "hutchinson"])
def test_the_likelihood_is_differentiable_in_the_parameters(make_model, divergence):
    """Autograd through the flow log-likelihood (C11) against central finite differences along a random
    direction in parameter space, on a float64 tiny Transformer with live time conditioning."""
    model = make_model(vocab=V, d_latent=D, seed=5, layers=1).double()
    z = latents(1)[:1, :3]
    params = [p for p in model.parameters() if p.requires_grad]
    v = [torch.randn(p.shape, generator=torch.Generator().manual_seed(i), dtype=p.dtype)
         for i, p in enumerate(params)]

    def f():
        return ef.log_likelihood(model, z, ef.Synchronous(), 4, solver="rk4", t_min=0.2, divergence=divergence,
                                 generator=torch.Generator().manual_seed(3)).sum()

    grads = torch.autograd.grad(f(), params, allow_unused=True)
    along = sum(float((g * d).sum()) for g, d in zip(grads, v, strict=True) if g is not None)
    eps = 1e-6
    with torch.no_grad():
        for p, d in zip(params, v, strict=True):
            p.add_(eps * d)
        up = float(f())
        for p, d in zip(params, v, strict=True):
            p.sub_(2 * eps * d)
        down = float(f())
    assert abs(along) > 1.0  # a derivative worth checking
    assert abs(along - (up - down) / (2 * eps)) < 1e-6 * abs(along)
