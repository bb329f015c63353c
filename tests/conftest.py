"""Shared fixtures for the core tests (math in float64: every tensor is built with dtype=float64)."""

import pytest

import evoflow as ef
from tests.strategies import random_markov


@pytest.fixture
def markov():
    """A small Markov oracle (V=3, L=3, d=2, cosine schedule)."""
    return random_markov(3, 3, 2, ef.get_schedule("cosine"), seed=7)
