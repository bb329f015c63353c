"""Exact oracles against brute-force enumeration written independently here."""

import itertools
import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import evoflow as ef
from tests.strategies import markov_table, random_markov, random_table, schedules, seeds

F64 = torch.float64


def brute_force(log_p_of, V, L, E, sch, z, tau):
    """Posterior marginals (B, L, V) and log p_tau(z) (B,) by summing over all V^L sequences."""
    B, d = z.shape[0], E.shape[1]
    a, s = sch.alpha(tau), sch.sigma(tau)  # (B, L)
    joint = torch.full((B,) + (V,) * L, -math.inf, dtype=F64)
    for x in itertools.product(range(V), repeat=L):
        lp = torch.full((B,), log_p_of(x), dtype=F64)
        for i, v in enumerate(x):
            diff = z[:, i] - a[:, i, None] * E[v]
            lp = lp - 0.5 * (diff**2).sum(-1) / s[:, i] ** 2 - d * torch.log(s[:, i]) - 0.5 * d * math.log(2 * math.pi)
        joint[(slice(None), *x)] = lp
    log_norm = torch.logsumexp(joint.reshape(B, -1), -1)
    post = torch.stack([
        torch.logsumexp(joint.movedim(i + 1, 1).reshape(B, V, -1), -1) for i in range(L)
    ], 1) - log_norm[:, None, None]
    return post.exp(), log_norm


def _inputs(seed, B, L, d):
    g = torch.Generator().manual_seed(seed)
    z = 1.5 * torch.randn(B, L, d, generator=g, dtype=F64)
    tau = 0.05 + 0.95 * torch.rand(B, L, generator=g, dtype=F64)
    return z, tau


@given(sch=schedules, seed=seeds, V=st.integers(2, 3), L=st.integers(1, 4), d=st.integers(1, 3))
def test_markov_oracle_equals_enumeration(sch, seed, V, L, d):
    m = random_markov(V, L, d, sch, seed)
    z, tau = _inputs(seed + 1, 3, L, d)

    def log_p(x):
        return float(m.init[x[0]].log() + sum(m.transition[a, b].log() for a, b in itertools.pairwise(x)))

    post, log_norm = brute_force(log_p, V, L, m.embeddings, sch, z, tau)
    assert torch.allclose(m.posterior(z, tau), post, atol=1e-10)
    assert torch.allclose(m.log_marginal(z, tau), log_norm, rtol=1e-10)
    x = m.sample(5, generator=torch.Generator().manual_seed(seed))
    assert torch.allclose(m.log_prob(x), torch.tensor([log_p(tuple(r.tolist())) for r in x], dtype=F64))


@given(sch=schedules, seed=seeds, V=st.integers(2, 3), L=st.integers(1, 3), d=st.integers(1, 3))
def test_table_oracle_equals_enumeration(sch, seed, V, L, d):
    t = random_table(V, L, d, sch, seed)
    z, tau = _inputs(seed + 1, 3, L, d)
    post, log_norm = brute_force(lambda x: float(t.probs[x].log()), V, L, t.embeddings, sch, z, tau)
    assert torch.allclose(t.posterior(z, tau), post, atol=1e-10)
    assert torch.allclose(t.log_marginal(z, tau), log_norm, rtol=1e-10)


@given(sch=schedules, seed=seeds, L=st.integers(1, 4))
def test_table_and_markov_agree_on_markov_tables(sch, seed, L):
    m = random_markov(3, L, 2, sch, seed)
    t = ef.TableOracle(markov_table(m, L), m.embeddings, sch)
    z, tau = _inputs(seed, 4, L, 2)
    assert torch.allclose(m.posterior(z, tau), t.posterior(z, tau), atol=1e-10)
    assert torch.allclose(m.log_marginal(z, tau), t.log_marginal(z, tau), rtol=1e-10)
    x = t.sample(20, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(m.log_prob(x), t.log_prob(x))
    assert torch.allclose(m.log_conditionals(x), t.log_conditionals(x))
    assert torch.allclose(m.token_marginals(), t.token_marginals())
    assert torch.allclose(m.log_posterior(x, z[:1].expand(20, -1, -1), tau[:1].expand(20, -1)),
                          t.log_posterior(x, z[:1].expand(20, -1, -1), tau[:1].expand(20, -1)))


def test_joint_decoder_normalises_and_conditionals_chain(markov):
    V, L = 3, 3
    xs = torch.tensor(list(itertools.product(range(V), repeat=L)))
    z, tau = _inputs(3, 1, L, 2)
    lp = markov.log_posterior(xs, z.expand(len(xs), -1, -1), tau.expand(len(xs), -1))
    assert float(torch.logsumexp(lp, 0)) == pytest.approx(0.0, abs=1e-12)
    assert float(torch.logsumexp(markov.log_prob(xs), 0)) == pytest.approx(0.0, abs=1e-12)
    assert torch.allclose(markov.log_conditionals(xs).sum(-1), markov.log_prob(xs))


def test_sampling_frequencies_match_probabilities():
    t = random_table(2, 3, 1, ef.Linear(), seed=5)
    x = t.sample(40000, generator=torch.Generator().manual_seed(0))
    idx = x[:, 0] * 4 + x[:, 1] * 2 + x[:, 2]
    freq = torch.bincount(idx, minlength=8).to(F64) / 40000
    p = t.probs.reshape(-1)
    assert ((freq - p).abs() <= 5 * (p * (1 - p) / 40000).sqrt() + 1e-9).all()


def test_posterior_limits_at_the_ends(markov):
    z, _ = _inputs(0, 2, 3, 2)
    lin = random_markov(3, 3, 2, ef.Linear(), 7)
    ones = torch.ones(2, 3, dtype=F64)
    assert torch.allclose(lin.posterior(z, ones), lin.token_marginals()[None].expand(2, -1, -1))
    zeros = torch.zeros(2, 3, dtype=F64)
    near = ((z[:, :, None, :] - lin.embeddings) ** 2).sum(-1).argmin(-1)
    assert torch.equal(lin.posterior(z, zeros).argmax(-1), near)
    assert torch.allclose(lin.posterior(z, zeros).sum(-1), ones)
    with pytest.raises(ValueError, match="sigma"):
        lin.log_marginal(z, zeros)


def test_bad_oracle_arguments_name_themselves():
    E = torch.randn(3, 2, dtype=F64)
    init = torch.full((3,), 1 / 3, dtype=F64)
    A = torch.full((3, 3), 1 / 3, dtype=F64)
    bad_rows = A.clone()
    bad_rows[1] = torch.tensor([0.5, 0.4, 0.3])
    with pytest.raises(ValueError, match="transition rows"):
        ef.MarkovOracle(init, bad_rows, E, ef.Cosine())
    with pytest.raises(ValueError, match="transition"):
        ef.MarkovOracle(init, A[:2], E, ef.Cosine())
    with pytest.raises(ValueError, match="init"):
        ef.MarkovOracle(-init, A, E, ef.Cosine())
    with pytest.raises(ValueError, match="embeddings"):
        ef.MarkovOracle(init, A, torch.randn(4, 2, dtype=F64), ef.Cosine())
    with pytest.raises(TypeError, match="schedule"):
        ef.MarkovOracle(init, A, E, "cosine")
    with pytest.raises(ValueError, match="probs"):
        ef.TableOracle(torch.full((3, 2), 1 / 6), E, ef.Cosine())
    m = ef.MarkovOracle(init, A, E, ef.Cosine(), length=2)
    z, tau = torch.zeros(1, 2, 2, dtype=F64), torch.full((1, 2), 0.5, dtype=F64)
    with pytest.raises(ValueError, match="z has last dimension"):
        m(torch.zeros(1, 2, 5, dtype=F64), tau)
    with pytest.raises(ValueError, match="tau"):
        m(z, torch.full((1, 2), 1.5, dtype=F64))
    with pytest.raises(ValueError, match="tau"):
        m(z, torch.full((1, 2), float("nan"), dtype=F64))
    with pytest.raises(ValueError, match="tau must have shape"):
        m(z, torch.full((1, 3), 0.5, dtype=F64))
    with pytest.raises(ValueError, match="token ids"):
        m.log_prob(torch.tensor([[0, 3]]))
