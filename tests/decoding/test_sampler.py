"""The token sampler, the mixture kernel's reverse step and the Evo controller's uncertainties (C14)."""

import math

import pytest
import torch

import evoflow as ef
from evoflow.decoding import TokenSampler, TokenStep
from evoflow.decoding.controllers import uncertainty_of
from evoflow.field import Field
from evoflow.solvers.base import State
from tests.strategies import random_markov

F64 = torch.float64


def test_probabilities_temper_truncate_and_renormalise_in_float64():
    logits = torch.log(torch.tensor([[[0.5, 0.3, 0.15, 0.05]]], dtype=torch.float32))
    p = TokenSampler(top_p=0.7).probabilities(logits)
    assert p.dtype == F64
    torch.testing.assert_close(p[0, 0], torch.tensor([0.625, 0.375, 0.0, 0.0], dtype=F64))  # 0.5 + 0.3 >= 0.7
    hot = TokenSampler(temperature=2.0).probabilities(logits)[0, 0]
    w = torch.tensor([0.5, 0.3, 0.15, 0.05], dtype=F64).sqrt()
    torch.testing.assert_close(hot, w / w.sum())
    assert torch.equal(TokenSampler(temperature=0).probabilities(logits)[0, 0], torch.tensor([1.0, 0, 0, 0], dtype=F64))


def test_draws_follow_the_probabilities():
    p = torch.tensor([0.1, 0.0, 0.6, 0.3], dtype=F64)
    logits = p.log().expand(200, 100, 4)
    v = TokenSampler().draw(logits, torch.Generator().manual_seed(0))
    freq = torch.bincount(v.flatten(), minlength=4).to(F64) / v.numel()
    se = (p * (1 - p) / v.numel()).sqrt()
    assert int(freq[1]) == 0 and bool(((freq - p).abs() <= 5 * se + 1e-12).all())


def test_the_reverse_step_is_draw_then_step_posterior_and_lands_exactly():
    oracle = random_markov(3, 4, 2, ef.get_schedule("cosine"), seed=0)
    field = Field(oracle)
    z = torch.randn(2000, 4, 2, dtype=F64, generator=torch.Generator().manual_seed(1))
    t = torch.full((2000, 4), 0.6, dtype=F64)
    s = torch.tensor([0.3, 0.0, 0.6, 0.3], dtype=F64).expand(2000, 4)
    out = TokenStep().advance(field, State(z=z), t, s, torch.Generator().manual_seed(2))
    E = oracle.embeddings
    assert bool(((out.z[:, 1, None, :] - E[None]).abs().sum(-1).min(-1).values == 0).all())  # e_v exactly at s = 0
    # the mean of z_s is c_z z + c_e ehat: draw then step, averaged over the draws of v and of the noise
    from evoflow.process import step_coefficients

    c_z, c_e, _ = step_coefficients(t, s, oracle.schedule)
    mean = c_z[..., None] * z + c_e[..., None] * field(z, t).ehat
    resid = (out.z - mean)[:, 0]  # token 0 moved 0.6 -> 0.3
    assert bool((resid.mean(0).abs() < 4 * resid.std(0) / math.sqrt(2000)).all())


def test_uncertainties_lie_in_the_unit_interval_and_order_as_stated():
    logits = torch.log(torch.tensor([[[1.0, 0, 0, 0], [0.25, 0.25, 0.25, 0.25], [0.7, 0.1, 0.1, 0.1]]],
                                    dtype=F64).clamp_min(1e-300))
    ent, top = uncertainty_of("entropy", logits, None)
    torch.testing.assert_close(ent[0], torch.tensor([0.0, 1.0, ent[0, 2].item()], dtype=F64), atol=1e-12, rtol=0)
    assert 0 < float(ent[0, 2]) < 1
    mp, _ = uncertainty_of("maxprob", logits, None)
    torch.testing.assert_close(mp[0], 1 - top[0])
    th, _ = uncertainty_of("time_head", logits, torch.tensor([[-0.2, 0.4, 1.3]]))
    assert th[0].tolist() == [0.0, pytest.approx(0.4), 1.0]
    with pytest.raises(ValueError, match="time_head"):
        uncertainty_of("time_head", logits, None)


def test_the_time_head_controller_runs_on_a_transformer():
    from evoflow.nn import EvoTransformer, get_config

    torch.manual_seed(0)
    model = EvoTransformer(get_config("tiny")).eval()
    r = ef.generate(model, 10, ef.EvoController(window=4, uncertainty="time_head"), batch=2,
                    generator=torch.Generator().manual_seed(0))
    assert r.tokens.shape == (2, 10) and bool((r.tokens >= 0).all()) and r.nfe <= 10
