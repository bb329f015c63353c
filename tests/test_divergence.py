"""Divergence estimators (claim C11): exact in memory-bounded chunks with an up-front guard, Hutchinson with
a fresh probe per solve."""

import time

import pytest
import torch

import evoflow as ef
from evoflow.divergence import ExactDivergence, Hutchinson
from evoflow.field import Field
from evoflow.process import q_sample
from tests.strategies import random_markov

F64 = torch.float64


def _jacobian_trace_per_token(oracle, z, tau):
    def u_of(flat):
        return Field(oracle)(flat.reshape(z.shape), tau).u.reshape(-1)

    J = torch.autograd.functional.jacobian(u_of, z.reshape(-1))  # (BLd, BLd)
    return J.diagonal().reshape(z.shape).sum(-1)


@pytest.mark.parametrize("copies_per_chunk", [1, 3, 7, None])
def test_chunked_exact_divergence_is_the_jacobian_trace(markov, copies_per_chunk):
    g = torch.Generator().manual_seed(0)
    z = torch.randn(2, 3, 2, generator=g, dtype=F64)
    tau = torch.tensor([[0.3, 0.6, 0.9], [1.0, 0.2, 0.5]], dtype=F64)
    probe = ExactDivergence()
    Field(markov, probe)(z, tau)
    per_copy = next(iter(probe._cost.values()))
    budget = None if copies_per_chunk is None else per_copy * copies_per_chunk
    div = ExactDivergence(max_bytes=budget)
    ev = Field(markov, div)(z, tau)
    assert torch.allclose(ev.div, _jacobian_trace_per_token(markov, z, tau), atol=1e-10)
    n = 3 * 2
    expected_chunks = 2 if copies_per_chunk is None else 1 + -(-(n - 1) // copies_per_chunk)
    assert div.chunks == expected_chunks  # the first copy alone (the measurement), then the rest


def test_exact_divergence_refuses_up_front_when_one_copy_does_not_fit():
    """The issue's L = 512, d = 32 case with a budget smaller than one copy: refused after one small
    forward and backward (not after 16384 of them, and not in the allocator)."""
    oracle = random_markov(4, 512, 32, ef.Cosine(), seed=0)
    z = torch.randn(2, 512, 32, dtype=F64)
    start = time.perf_counter()
    with pytest.raises(ValueError, match=r"divergence='exact' needs .*use divergence='hutchinson'"):
        ef.log_likelihood(oracle, z, ef.Synchronous(), 1, solver="euler", t_min=0.1,
                          divergence=ExactDivergence(max_bytes=2**20))
    assert time.perf_counter() - start < 5.0


def test_keeping_the_graph_needs_every_copy_at_once(markov):
    """For a gradient the chunks' graphs all live until backward: the guard counts all L d copies."""
    z = torch.randn(1, 3, 2, dtype=F64, requires_grad=True)
    tau = torch.full((1, 3), 0.5, dtype=F64)
    probe = ExactDivergence()
    Field(markov, probe)(z.detach(), tau)
    per_copy = next(iter(probe._cost.values()))
    Field(markov, ExactDivergence(max_bytes=2 * per_copy))(z.detach(), tau)  # values only: fits
    with pytest.raises(ValueError, match="all kept for the gradient"):
        Field(markov, ExactDivergence(max_bytes=2 * per_copy))(z, tau)


def test_hutchinson_draws_a_fresh_probe_per_solve_reproducibly(markov):
    g = torch.Generator().manual_seed(0)
    tau = torch.full((1, 3), 0.2, dtype=F64)
    z = q_sample(markov.sample(1, generator=g), tau, markov.embeddings, markov.schedule, g)

    def run(divergence, generator=None):
        return float(ef.log_likelihood(markov, z, ef.Synchronous(), 8, solver="rk4", t_min=0.2,
                                       divergence=divergence, generator=generator))

    same = Hutchinson()
    draws = [run(same) for _ in range(6)]
    assert len(set(draws)) > 1  # one object, new probe each solve (it used to return one value forever)
    seeded = [run("hutchinson", torch.Generator().manual_seed(5)) for _ in range(2)]
    assert seeded[0] == seeded[1]  # reproducible from a generator


def test_hutchinson_log_likelihoods_average_to_the_exact_divergence_value(markov):
    g = torch.Generator().manual_seed(1)
    tau = torch.full((1, 3), 0.2, dtype=F64)
    z = q_sample(markov.sample(1, generator=g), tau, markov.embeddings, markov.schedule, g)
    common = dict(path=ef.Synchronous(), steps=8, solver="rk4", t_min=0.2)
    exact = float(ef.log_likelihood(markov, z, divergence="exact", **common))
    draws = torch.tensor([float(ef.log_likelihood(markov, z, divergence="hutchinson", generator=gen, **common))
                          for gen in [torch.Generator().manual_seed(100 + k) for k in range(200)]])
    se = float(draws.std()) / 200**0.5
    assert float(draws.std()) > 1e-3  # it is an estimator: the draws differ
    assert abs(float(draws.mean()) - exact) < 4 * se
