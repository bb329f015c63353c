"""Claim C13: the exact likelihood of AR decoding with the token sampler, for oracles and the Transformer."""

import pytest
import torch
from hypothesis import given

import evoflow as ef
from evoflow.autoregressive import _batched_logits
from tests.strategies import random_markov, random_table, seeds

F64 = torch.float64


@given(seed=seeds)
def test_for_an_exact_oracle_it_is_log_p_x(seed):
    """C7 through C13: Markov (forward-backward) and table (any correlations) oracles."""
    for oracle in (random_markov(4, 5, 2, ef.Cosine(), seed), random_table(3, 4, 2, ef.Linear(), seed)):
        x = oracle.sample(6, generator=torch.Generator().manual_seed(seed))
        assert torch.allclose(ef.ar_log_likelihood(oracle, x), oracle.log_prob(x), atol=1e-10)
        assert torch.allclose(ef.ar_conditionals(oracle, x), oracle.log_conditionals(x), atol=1e-10)


def test_a_prompt_is_conditioned_on_not_scored(markov):
    x = markov.sample(4, length=3, generator=torch.Generator().manual_seed(0))
    got = ef.ar_log_likelihood(markov, x, prompt_length=1)
    assert torch.allclose(got, markov.log_conditionals(x)[:, 1:].sum(-1), atol=1e-12)
    with pytest.raises(ValueError, match="prompt_length"):
        ef.ar_log_likelihood(markov, x, prompt_length=3)
    with pytest.raises(ValueError, match="prompt_length"):
        ef.ar_log_likelihood(markov, x, prompt_length=-1)


def _model(**overrides):
    from evoflow.nn import EvoTransformer, get_config

    torch.manual_seed(0)
    model = EvoTransformer(get_config("tiny", **overrides)).double()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # live time conditioning, as after training
        for name, p in model.named_parameters():
            if name.startswith("time.") or name.endswith(("time_shift", "time_gate")):
                p.add_(0.2 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return model


@pytest.mark.parametrize("overrides", [{}, dict(shift=True)], ids=["own readout", "shifted readout"])
def test_the_transformers_one_call_equals_the_l_states_and_is_a_distribution(overrides):
    model = _model(**overrides)
    x = torch.randint(0, 64, (3, 7), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        fast, slow = model.ar_logits(x), _batched_logits(model, x)
        torch.testing.assert_close(fast, slow, rtol=0, atol=1e-12)
        lp = ef.ar_log_likelihood(model, x)
        assert torch.equal(lp, ef.ar_log_likelihood(model, x))  # deterministic
        # a distribution over sequences: summing p over all V^L sequences of length 2 gives 1
        pairs = torch.cartesian_prod(torch.arange(64), torch.arange(64))
        total = ef.ar_log_likelihood(model, pairs).exp().sum()
    assert abs(float(total) - 1.0) < 1e-10


def test_nelbo_along_the_ar_path_at_t_min_0_is_minus_the_ar_likelihood():
    """The mixture kernel, one jump per token, no softmax decoder at the clean end (z = e_x there)."""
    model = _model()
    x = torch.randint(0, 64, (3, 6), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        r = ef.nelbo(model, x, ef.Staircase(1), 6, kernel=ef.MixtureKernel(), t_min=0.0, samples=4,
                     generator=torch.Generator().manual_seed(0))
        ar = ef.ar_log_likelihood(model, x)
    assert torch.allclose(r.total, -ar, atol=1e-9) and bool((r.stderr < 1e-9).all())
    assert bool((r.recon == 0).all())
