"""Attention patterns chosen per call: masks and the dependence structure they imply (THEORY section 8, C12)."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from evoflow.nn import Bidirectional, BlockCausal, Frontier, TwoStream


@st.composite
def times_with_commits(draw, max_len=8):
    """(B, L) times in [0, 1] where an arbitrary subset of tokens is committed (t = 0)."""
    B, L = draw(st.integers(1, 3)), draw(st.integers(1, max_len))
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    tau = torch.rand(B, L, generator=g, dtype=torch.float64).clamp_min(1e-3)
    committed = torch.rand(B, L, generator=g) < draw(st.floats(0.0, 1.0))
    return torch.where(committed, 0.0, tau)


@given(times_with_commits(), st.integers(0, 4))
def test_frontier_mask_is_its_definition(tau, offset):
    """M[q, k] = active(q) or (committed(k) and k <= q), cached keys committed, checked entry by entry."""
    m = Frontier().mask(tau, offset)
    B, L = tau.shape
    assert m.shape == (B, 1, L, offset + L) and m.dtype == torch.bool
    for b in range(B):
        for qi in range(L):
            q = offset + qi
            for k in range(offset + L):
                committed_k = k < offset or tau[b, k - offset] == 0
                expected = bool(tau[b, qi] > 0) or (committed_k and k <= q)
                assert bool(m[b, 0, qi, k]) == expected
    assert m[:, 0].diagonal(offset=offset, dim1=-2, dim2=-1).all()  # every query sees itself


def test_block_causal_masks():
    tau = torch.rand(2, 6, dtype=torch.float64)
    causal = torch.ones(6, 6, dtype=torch.bool).tril()
    assert torch.equal(BlockCausal(block=1).mask(tau)[0, 0], causal)
    assert BlockCausal(block=6).mask(tau).all()
    blocks = torch.tensor([0, 0, 0, 1, 1, 1])
    assert torch.equal(BlockCausal(block=3).mask(tau)[1, 0], blocks[None, :] <= blocks[:, None])
    assert Bidirectional().mask(tau) is None


def test_all_committed_frontier_is_causal():
    tau = torch.zeros(1, 5, dtype=torch.float64)
    assert torch.equal(Frontier().mask(tau), BlockCausal(block=1).mask(tau))


def test_patterns_validate_and_compare():
    with pytest.raises(ValueError, match="block must be a positive integer"):
        BlockCausal(block=0)
    assert BlockCausal(block=2) == BlockCausal(block=2) != BlockCausal(block=3)
    assert Frontier() == Frontier() and Frontier() != Bidirectional()


def model_inputs(model, tau, seed=2):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*tau.shape, model.config.d_latent, generator=g)


@given(times_with_commits(max_len=7), st.integers(0, 6), st.floats(0.05, 1.0))
def test_frontier_committed_outputs_ignore_active_tokens(make_model, tau, which, new_time):
    """Changing an active token's latent and time changes no committed token's output (and does change its own)."""
    model = make_model()
    which = which % tau.shape[1]
    tau[0, which] = 0.5  # make sure the edited token is active
    z = model_inputs(model, tau)
    z2, tau2 = z.clone(), tau.clone()
    z2[0, which] += 1.0
    tau2[0, which] = new_time
    a, b = model(z, tau, attention=Frontier()), model(z2, tau2, attention=Frontier())
    committed = tau == 0
    assert ((a.logits - b.logits).abs()[committed] <= 1e-6).all()
    assert ((a.time - b.time).abs()[committed] <= 1e-6).all()
    assert (a.logits - b.logits)[0, which].abs().max() > 1e-4


def test_bidirectional_spreads_every_change(make_model):
    model = make_model()
    tau = torch.tensor([[0.0, 0.0, 0.4, 0.8]], dtype=torch.float64)
    z = model_inputs(model, tau)
    z2 = z.clone()
    z2[0, 3] += 1.0
    bi = Bidirectional()
    diff = (model(z, tau, attention=bi).logits - model(z2, tau, attention=bi).logits).abs().amax(-1)  # (1, L)
    assert bool((diff > 1e-5).all())


def test_block_causal_earlier_blocks_ignore_later_ones(make_model):
    model = make_model()
    tau = torch.rand(2, 6, dtype=torch.float64)
    z = model_inputs(model, tau)
    z2 = z.clone()
    z2[:, 4] += 1.0  # block 2 of BlockCausal(2)
    a, b = model(z, tau, attention=BlockCausal(2)), model(z2, tau, attention=BlockCausal(2))
    diff = (a.logits - b.logits).abs().amax(-1)  # (B, L)
    assert diff[:, :4].max() <= 1e-6 and bool((diff[:, 4:] > 1e-5).all())


def test_default_pattern_is_an_attribute(make_model):
    model = make_model()
    tau = torch.tensor([[0.0, 0.0, 0.3, 0.9]], dtype=torch.float64)
    z = model_inputs(model, tau)
    frontier = model(z, tau).logits  # the default: the pattern the training objective scores
    torch.testing.assert_close(frontier, model(z, tau, attention=Frontier()).logits, rtol=0, atol=0)
    model.attention = Bidirectional()
    torch.testing.assert_close(model(z, tau).logits, model(z, tau, attention=Bidirectional()).logits, rtol=0, atol=0)
    assert (model(z, tau).logits - frontier).abs().max() > 1e-5


def test_frontier_hides_pure_noise_from_active_tokens(make_model):
    """Under Frontier an active token's output does not depend on how many tokens wait at t = 1 after it
    (they are hidden, C13), so AR conditionals do not depend on the sequence length; Bidirectional lets the
    blank tokens' positions leak in."""
    model = make_model()
    tau = torch.tensor([[0.0, 0.4, 0.7, 1.0, 1.0, 1.0]], dtype=torch.float64)
    z = model_inputs(model, tau)
    with torch.no_grad():
        for pattern, leaks in ((Frontier(), False), (Bidirectional(), True)):
            short = model(z[:, :4], tau[:, :4], attention=pattern).logits[:, :3]
            long = model(z, tau, attention=pattern).logits[:, :3]
            assert (float((short - long).abs().max()) > 1e-5) == leaks, pattern
    m = Frontier().mask(tau)[0, 0]
    assert not bool(m[1, 3]) and not bool(m[2, 4]) and bool(m[3, 3]) and bool(m[1, 2]) and bool(m[2, 0])


@pytest.mark.parametrize("overrides", [{}, dict(shift=True), dict(shift=True, embedding="learned", latent_scale=2.5)],
                         ids=["own readout", "shifted", "shifted, scaled latents"])
def test_two_stream_gives_each_group_its_frontier_state(make_model, overrides):
    """Noised token i in the two-stream call equals the single-stream Frontier call in the state it stands
    for: tokens before its group clean, its group at its times, everything after at t = 1 (with the shifted
    readout of an imported AR model too: token i reads position i - 1 of that state)."""
    model = make_model(**overrides)
    g = torch.Generator().manual_seed(0)
    B, L, V = 2, 6, model.config.vocab
    x = torch.randint(0, V, (B, L), generator=g)
    start = torch.tensor([[0, 0, 2, 2, 2, 5], [0, 1, 2, 3, 4, 5]])
    tau = torch.rand(B, L, generator=g, dtype=torch.float64).clamp(0.05, 0.95)
    z = torch.randn(B, L, model.config.d_latent, generator=g)
    got = model.two_stream(x, z, tau, start)
    E = model.embeddings.detach()
    for b in range(B):
        for i in range(L):
            s = int(start[b, i])
            group = start[b] == s
            state_tau = torch.where(torch.arange(L) < s, 0.0, torch.where(group, tau[b], 1.0))[None]
            state_z = torch.where((torch.arange(L) < s)[:, None], E[x[b]], z[b])[None]
            want = model(state_z, state_tau, attention=Frontier())
            torch.testing.assert_close(got.logits[b, i], want.logits[0, i], rtol=1e-5, atol=1e-5)


def test_reach_bounds_the_look_ahead_of_active_tokens():
    """Frontier(reach=r): an active query sees informative keys at most r positions ahead; reach 0 is causal
    among active tokens; committed tokens are unaffected (their rows are causal anyway)."""
    tau = torch.tensor([[0.0, 0.0, 0.5, 0.3, 0.7, 0.2, 1.0]], dtype=torch.float64)
    full = Frontier().mask(tau)[0, 0]
    for r in (0, 1, 3):
        m = Frontier(reach=r).mask(tau)[0, 0]
        q, k = torch.meshgrid(torch.arange(7), torch.arange(7), indexing="ij")
        assert torch.equal(m, full & (k <= q + r))
    assert not bool(Frontier(reach=0).mask(tau)[0, 0, 2, 3]) and bool(full[2, 3])
    with pytest.raises(ValueError, match="reach must be"):
        Frontier(reach=-1)


def test_two_stream_reach_bounds_the_look_ahead_inside_a_group():
    start = torch.tensor([[0, 0, 0, 3]])
    tau = torch.cat([torch.zeros(1, 4), torch.full((1, 4), 0.5)], 1).double()
    full = TwoStream(start).mask(tau)[0, 0]
    causal = TwoStream(start, reach=0).mask(tau)[0, 0]
    assert bool(full[4, 5]) and not bool(causal[4, 5])  # noised 0 sees noised 1 only without the bound
    assert torch.equal(causal[:, :4], full[:, :4])  # the clean prefix is behind every query anyway
    q = torch.arange(8) % 4
    assert torch.equal(causal, full & (q[None, :] <= q[:, None]))
