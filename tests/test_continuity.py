"""Claim C1 numerically: d p_tau / d t_i = -div_{z_i}(p_tau u_i) on exact oracles (THEORY section 3).

Divided by p_tau: d log p / d t_i = -(grad_{z_i} log p . u_i + div_{z_i} u_i). The left side by
central finite differences of the closed-form log p_tau(z), the right side from the oracle's
exact posterior mean through process.velocity and an autograd divergence.
"""

import torch
from hypothesis import given
from hypothesis import strategies as st

from evoflow.field import ExactDivergence, Field
from tests.strategies import random_markov, random_table, schedules, seeds

F64 = torch.float64


def _check_continuity(oracle, z, tau, h=1e-6):
    ev = Field(oracle, ExactDivergence())(z, tau)
    zz = z.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(oracle.log_marginal(zz, tau).sum(), zz)
    rhs = -((grad * ev.u).sum(-1) + ev.div)  # (B, L)
    for i in range(z.shape[1]):
        up, down = tau.clone(), tau.clone()
        up[:, i] += h
        down[:, i] -= h
        lhs = (oracle.log_marginal(z, up) - oracle.log_marginal(z, down)) / (2 * h)
        assert torch.allclose(lhs, rhs[:, i], rtol=1e-5, atol=1e-6), (i, lhs, rhs[:, i])


@given(sch=schedules, seed=seeds, L=st.integers(1, 4), d=st.integers(1, 3))
def test_multi_time_continuity_markov(sch, seed, L, d):
    oracle = random_markov(3, L, d, sch, seed)
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(2, L, d, generator=g, dtype=F64)
    tau = 0.1 + 0.8 * torch.rand(2, L, generator=g, dtype=F64)  # every token at its own time
    _check_continuity(oracle, z, tau)


@given(sch=schedules, seed=seeds)
def test_multi_time_continuity_table(sch, seed):
    oracle = random_table(3, 3, 2, sch, seed)
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(2, 3, 2, generator=g, dtype=F64)
    tau = 0.1 + 0.8 * torch.rand(2, 3, generator=g, dtype=F64)
    _check_continuity(oracle, z, tau)
