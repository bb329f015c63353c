"""evoflow.train.evaluate: path specs, the closed-form decoder of the bounds, labels (C8, C13)."""

import math

import pytest
import torch

from evoflow.paths import Rolling, Staircase, Synchronous
from evoflow.schedules import get_schedule
from evoflow.train.evaluate import GaussianDecoded, parse_path

F64 = torch.float64


class _Stub:
    schedule = get_schedule("cosine")

    def __init__(self, E):
        self.embeddings = E


def test_the_decoder_is_bayes_rule_with_a_uniform_prior_and_gaussian_likelihoods():
    """log p(x | z) summed over tokens, against the normal densities written out, per token and v."""
    g = torch.Generator().manual_seed(0)
    V, d, B, L = 7, 3, 2, 4
    E = torch.randn(V, d, generator=g, dtype=F64)
    x = torch.randint(0, V, (B, L), generator=g)
    tau = torch.tensor([[0.3, 0.5, 0.0, 0.9], [0.1, 0.2, 0.7, 0.4]], dtype=F64)
    sched = _Stub.schedule
    a, s = sched.alpha(tau), sched.sigma(tau)
    z = a[..., None] * E[x] + s[..., None] * torch.randn(B, L, d, generator=g, dtype=F64)
    got = GaussianDecoded(_Stub(E)).log_posterior(x, z, tau)
    expected = torch.zeros(B, dtype=F64)
    for b in range(B):
        for i in range(L):
            if float(s[b, i]) == 0.0:  # z = e_x identifies the token: no term
                continue
            dens = [math.exp(-float(((z[b, i] - a[b, i] * E[v]) ** 2).sum()) / (2 * float(s[b, i]) ** 2))
                    for v in range(V)]
            expected[b] += math.log(dens[int(x[b, i])] / sum(dens))
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)


def test_path_specs_parse_to_their_paths_and_steps():
    assert parse_path("ar", 8) == ("ar", None, 8)
    label, path, K = parse_path("sync:5", 8)
    assert (label, K) == ("sync:5", 5) and isinstance(path, Synchronous)
    label, path, K = parse_path("block:4", 8, 16)  # 2 blocks, 16 steps: 8 per block
    assert (label, K) == ("block:4:16", 16) and isinstance(path, Staircase) and path.block == 4
    label, path, K = parse_path("rolling:2", 8)  # L - 1 + W = 9 pieces, one step each
    assert (label, K) == ("rolling:2:9", 9) and isinstance(path, Rolling)
    for bad in ("sync:x", "block", "block:0", "ar:3", "diagonal"):
        with pytest.raises(ValueError, match="path"):
            parse_path(bad, 8)
