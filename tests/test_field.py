"""The Field: one call per evaluation, cache, divergence estimators against the full Jacobian."""

import pytest
import torch

import evoflow as ef
from evoflow.field import ExactDivergence, Field, Hutchinson, get_divergence
from evoflow.process import DenoiserOutput

F64 = torch.float64


def _jacobian_diag_blocks(field, z, tau):
    def u_of(flat):
        return field(flat.reshape(z.shape), tau).u.reshape(-1)

    J = torch.autograd.functional.jacobian(u_of, z.reshape(-1))  # (BLd, BLd)
    B, L, d = z.shape
    return J.diagonal().reshape(B, L, d).sum(-1)


def test_exact_divergence_equals_jacobian_trace(markov):
    g = torch.Generator().manual_seed(0)
    z = torch.randn(2, 3, 2, generator=g, dtype=F64)
    tau = torch.tensor([[0.3, 0.6, 0.9], [1.0, 0.2, 0.5]], dtype=F64)
    ev = Field(markov, ExactDivergence())(z, tau)
    assert torch.allclose(ev.div, _jacobian_diag_blocks(Field(markov), z, tau), atol=1e-10)
    plain = Field(markov)(z, tau)
    assert torch.allclose(ev.u, plain.u) and torch.allclose(ev.output.logits, plain.output.logits)


def test_hutchinson_is_unbiased(markov):
    g = torch.Generator().manual_seed(1)
    z = torch.randn(1, 3, 2, generator=g, dtype=F64)
    tau = torch.tensor([[0.3, 0.6, 0.9]], dtype=F64)
    exact = Field(markov, ExactDivergence())(z, tau).div
    draws = torch.stack([Field(markov, Hutchinson(torch.Generator().manual_seed(k)))(z, tau).div
                         for k in range(400)])
    se = draws.std(0) / 20
    assert ((draws.mean(0) - exact).abs() <= 4 * se + 1e-12).all()


def test_field_counts_calls_and_caches_identical_inputs(markov):
    f = Field(markov)
    z = torch.randn(1, 3, 2, dtype=F64)
    tau = torch.full((1, 3), 0.5, dtype=F64)
    a = f(z, tau)
    assert f(z, tau) is a and f.nfe == 1
    f(z.clone(), tau)
    assert f.nfe == 2
    z.add_(1.0)  # in-place change invalidates the cache
    f(z, tau)
    assert f.nfe == 3


def test_field_rejects_bad_denoisers(markov):
    class Wrong:
        schedule = ef.Cosine()
        embeddings = markov.embeddings

        def __call__(self, z, tau):
            return DenoiserOutput(logits=torch.zeros(*z.shape[:2], 5, dtype=F64))

    z, tau = torch.zeros(1, 3, 2, dtype=F64), torch.full((1, 3), 0.5, dtype=F64)
    with pytest.raises(ValueError, match="logits"):
        Field(Wrong())(z, tau)
    with pytest.raises(ValueError, match="divergence"):
        get_divergence("trace")


def test_ehat_and_u_are_computed_when_read_and_equal_the_process_formulas(markov):
    from evoflow.process import denoised, velocity

    z = torch.randn(2, 3, 2, generator=torch.Generator().manual_seed(2), dtype=F64)
    tau = torch.tensor([[0.3, 0.6, 0.9], [1.0, 0.2, 0.0]], dtype=F64)
    ev = Field(markov)(z, tau)
    assert ev._ehat is None and ev._u is None  # nothing computed before a read
    ehat = denoised(ev.output, markov.embeddings, z)
    assert torch.equal(ev.ehat, ehat) and torch.equal(ev.u, velocity(z, ehat, tau, markov.schedule))
    unread = Field(markov)(z, tau)
    z.add_(1.0)  # the inputs changed in place after the call: an unread evaluation refuses to compute from them
    with pytest.raises(RuntimeError, match="in place"):
        _ = unread.u


def test_restricted_evaluations_are_exact_on_the_moving_columns_and_zero_elsewhere():
    from tests.strategies import random_markov

    oracle = random_markov(4, 6, 3, ef.Cosine(), seed=5)
    z = torch.randn(2, 6, 3, generator=torch.Generator().manual_seed(3), dtype=F64)
    t_from = torch.tensor([[0.0, 0.4, 0.7, 1.0, 1.0, 1.0], [0.0, 0.0, 0.5, 0.8, 1.0, 1.0]], dtype=F64)
    t_to = t_from.clone()
    t_to[0, 1], t_to[1, 3] = 0.2, 0.6  # columns 1 and 3 move: the span is [1, 4)
    full = Field(oracle)(z, t_from)
    f = Field(oracle)
    f.restrict(t_from, t_to)
    assert f.columns(6) == (1, 4)
    ev = f(z, t_from)
    torch.testing.assert_close(ev.ehat[:, 1:4], full.ehat[:, 1:4], rtol=0, atol=1e-14)
    torch.testing.assert_close(ev.u[:, 1:4], full.u[:, 1:4], rtol=0, atol=1e-14)
    assert bool((ev.ehat[:, [0, 4, 5]] == 0).all()) and bool((ev.u[:, [0, 4, 5]] == 0).all())
    t_to[0, 1], t_to[1, 3], t_to[0, 4] = t_from[0, 1], t_from[1, 3], 0.5  # now only column 4 moves
    f.restrict(t_from, t_to)
    assert f.columns(6) == (4, 5)
    torch.testing.assert_close(ev.u[:, 1:5], full.u[:, 1:5], rtol=0, atol=1e-14)  # both spans: [1, 5)
    assert bool((ev.u[:, [0, 5]] == 0).all())
    f.restrict(None)  # lifted: the same evaluation computes the columns it lacked
    assert f.columns(6) == (0, 6)
    torch.testing.assert_close(ev.ehat, full.ehat, rtol=0, atol=1e-14)
    f.restrict(t_from, t_from)  # nothing moves
    assert f.columns(6) == (0, 0)
