"""Exact oracles against brute-force enumeration written independently here."""

import itertools
import math

import numpy as np
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


INT_DTYPES = [torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64]


@pytest.mark.parametrize("dtype", INT_DTYPES, ids=str)
def test_every_integer_dtype_of_x_gives_the_int64_answer(markov, dtype):
    """uint8 ids index like int64, not like a boolean mask."""
    table = ef.TableOracle(markov_table(markov, 3), markov.embeddings, markov.schedule)
    x = torch.tensor(list(itertools.product(range(3), repeat=3)))
    z, tau = _inputs(0, 1, 3, 2)
    z, tau = z.expand(len(x), -1, -1), tau.expand(len(x), -1)
    for oracle in (markov, table):
        assert torch.equal(oracle.log_prob(x.to(dtype)), oracle.log_prob(x))
        assert torch.equal(oracle.log_conditionals(x.to(dtype)), oracle.log_conditionals(x))
        assert torch.equal(oracle.log_posterior(x.to(dtype), z, tau), oracle.log_posterior(x, z, tau))


def test_a_single_sequence_is_refused_naming_x_and_the_shape(markov):
    """x is a batch (B, L) like everywhere else (THEORY section 1); one sequence is x[None]."""
    table = ef.TableOracle(markov_table(markov, 3), markov.embeddings, markov.schedule)
    x = torch.tensor([[0, 2, 1]])
    z, tau = _inputs(0, 1, 3, 2)
    for oracle in (markov, table):
        for call in (oracle.log_prob, oracle.log_conditionals, lambda x, o=oracle: o.log_posterior(x, z, tau)):
            with pytest.raises(ValueError, match=r"^x must have shape \(B, L\).*x\[None\].*got \(3,\)$"):
                call(x[0])
            assert call(x).shape[0] == 1  # the batched form works
    with pytest.raises(ValueError, match=r"^x must have length 3 \(shape \(B, 3\)\), got \(1, 2\)$"):
        table.log_conditionals(x[:, :2])
    with pytest.raises(ValueError, match=r"^x must have shape \(1, 3\) \(B, L\) to match z, got \(2, 3\)$"):
        markov.log_posterior(x.expand(2, -1), z, tau)
    with pytest.raises(TypeError, match=r"^x must be an integer tensor of token ids, got dtype torch.float32$"):
        markov.log_prob(x.float())


def test_sample_counts_accept_numpy_and_allow_zero(markov):
    table = ef.TableOracle(markov_table(markov, 3), markov.embeddings, markov.schedule)
    for oracle in (markov, table):
        empty = oracle.sample(0)
        assert empty.shape == (0, 3) and empty.dtype == torch.int64
        assert oracle.log_prob(empty).shape == (0,)  # the empty batch composes
        plain = oracle.sample(7, generator=torch.Generator().manual_seed(2))
        for n in (np.int64(7), torch.tensor(7), np.uint8(7)):
            assert torch.equal(oracle.sample(n, generator=torch.Generator().manual_seed(2)), plain)
        with pytest.raises(ValueError, match=r"^n must be an integer >= 0, got -1$"):
            oracle.sample(-1)
        with pytest.raises(TypeError, match=r"^n must be an integer"):
            oracle.sample(7.0)
    g = torch.Generator().manual_seed(3)
    assert torch.equal(markov.sample(4, np.int64(5), g), markov.sample(4, 5, torch.Generator().manual_seed(3)))
    assert markov.sample(0, 5).shape == (0, 5)
    assert torch.equal(markov.token_marginals(np.int64(4)), markov.token_marginals(4))


def test_oracle_lengths_are_checked(markov):
    table = ef.TableOracle(markov_table(markov, 3), markov.embeddings, markov.schedule)
    with pytest.raises(ValueError, match=r"^length must be an integer >= 1, got 0$"):
        ef.MarkovOracle(markov.init, markov.transition, markov.embeddings, markov.schedule, length=0)
    with pytest.raises(TypeError, match=r"^length must be an integer"):
        ef.MarkovOracle(markov.init, markov.transition, markov.embeddings, markov.schedule, length=3.0)
    with pytest.raises(ValueError, match=r"^length must be an integer >= 1, got 0$"):
        markov.sample(2, 0)
    with pytest.raises(ValueError, match=r"^length must be None or 3 \(the table's length\), got 4$"):
        table.token_marginals(4)
    assert torch.equal(table.token_marginals(np.int64(3)), table.token_marginals())
    with pytest.raises(ValueError, match=r"^vocab must be an integer >= 1"):
        ef.MarkovOracle.random(0, 3, 2, ef.Cosine())
