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
