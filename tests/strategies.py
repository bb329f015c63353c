"""Hypothesis strategies and builders shared by the tests: schedules, oracles, monotone grids."""

from __future__ import annotations

import itertools

import torch
from hypothesis import strategies as st

import evoflow as ef

F64 = torch.float64


def random_markov(V: int, L: int, d: int, schedule: ef.Schedule, seed: int, sharp: float = 2.0,
                  scale: float = 1.0) -> ef.MarkovOracle:
    """A Markov oracle with random init, transition (temperature ``sharp``) and embeddings."""
    return ef.MarkovOracle.random(V, L, d, schedule, torch.Generator().manual_seed(seed), sharp, scale)


def markov_table(oracle: ef.MarkovOracle, L: int) -> torch.Tensor:
    """The explicit joint table (V,)*L of a Markov oracle, by brute force."""
    V = oracle.vocab
    probs = torch.zeros((V,) * L, dtype=F64)
    for x in itertools.product(range(V), repeat=L):
        p = oracle.init[x[0]]
        for a, b in itertools.pairwise(x):
            p = p * oracle.transition[a, b]
        probs[x] = p
    return probs


def random_table(V: int, L: int, d: int, schedule: ef.Schedule, seed: int) -> ef.TableOracle:
    """A table oracle with arbitrary (non-Markov) correlations."""
    g = torch.Generator().manual_seed(seed)
    probs = torch.softmax(2.0 * torch.randn(V**L, generator=g, dtype=F64), 0).reshape((V,) * L)
    return ef.TableOracle(probs, torch.randn(V, d, generator=g, dtype=F64), schedule)


schedules = st.sampled_from(["linear", "cosine", "loglinear"]).map(ef.get_schedule)
seeds = st.integers(0, 2**31 - 1)


@st.composite
def monotone_grids(draw, length: int, steps: int, batch: int | None = None, freeze_prob: float = 0.3):
    """A random monotone path through the time cube as a grid (K+1, L) or (K+1, B, L).

    Every token goes 1 -> 0 with random non-negative increments; with probability
    ``freeze_prob`` a token does not move in a given step (t_to == t_from).
    """
    shape = (steps, length) if batch is None else (steps, batch, length)
    g = torch.Generator().manual_seed(draw(seeds))
    inc = torch.rand(shape, generator=g, dtype=F64) + 0.05
    inc = inc * (torch.rand(shape, generator=g, dtype=F64) >= freeze_prob)
    inc[-1] = torch.where(inc.sum(0) == 0, 1.0, inc[-1])  # every token moves at least once
    t = 1.0 - inc.cumsum(0) / inc.sum(0)
    grid = torch.cat([torch.ones_like(t[:1]), t])
    grid[-1] = 0.0
    return grid
