"""Key-value cache of the committed prefix: cached decoding equals full recomputation (THEORY section 8, C12)."""

import pytest
import torch

from evoflow.nn import BlockCausal, CachedDenoiser, Frontier, FrontierCache
from evoflow.nn.cache import leading_committed


def decoding_schedule(B=3, L=12, seed=0):
    """A sequence of (tau) rows: tokens commit left to right, unevenly across rows and several at a time,
    while the active tokens' times keep moving."""
    g = torch.Generator().manual_seed(seed)
    lag = torch.tensor([0, 1, 3])[:B]  # row b commits lag[b] tokens later
    for step, frontier in enumerate([0, 1, 2, 2, 4, 5, 8, 9, 12, 15]):
        tau = torch.rand(B, L, generator=g, dtype=torch.float64).clamp_min(0.01) * (1 - 0.05 * step)
        for b in range(B):
            tau[b, : max(0, frontier - int(lag[b]))] = 0.0
        yield tau


@pytest.mark.parametrize("overrides", [{}, dict(shift=True)], ids=["own readout", "shifted readout"])
def test_cached_decoding_equals_full_recomputation(make_model, overrides):
    """Max |logits(cached) - logits(full)| <= 1e-5 in float32 over a sequence of commits (with the shifted
    readout, the chunk's first position reads the cached last committed state)."""
    model = make_model(layers=3, **overrides)
    cached = CachedDenoiser(model)
    z = torch.randn(3, 12, model.config.d_latent, generator=torch.Generator().manual_seed(1))
    lengths = []
    for tau in decoding_schedule():
        full = model(z, tau, attention=Frontier())
        got = cached(z, tau)
        assert (got.logits - full.logits).abs().max() <= 1e-5
        assert (got.time - full.time).abs().max() <= 1e-5
        lengths.append(cached.cache.length)
        z = z.clone()
        z[tau > 0] += 0.1  # active tokens move between calls; committed ones stay as they are
    assert lengths == sorted(lengths) and lengths[-1] == 12 and 0 < lengths[5] < 12


def test_calls_after_a_commit_compute_only_the_chunk(make_model):
    """Decoding does not recompute the committed prefix: the model sees only positions after the cache."""
    model = make_model()
    seen = []
    model.blocks[0].register_forward_hook(lambda m, args, out: seen.append(args[0].shape[1]))
    cached = CachedDenoiser(model)
    z = torch.randn(1, 8, model.config.d_latent)
    for k in range(8):
        tau = torch.full((1, 8), 0.5, dtype=torch.float64)
        tau[:, :k] = 0.0
        cached(z, tau)
    assert seen == [8, 8, 7, 6, 5, 4, 3, 2]  # the k-th call computes the token committed last time onward


def test_cache_length_is_the_shortest_committed_prefix():
    tau = torch.tensor([[0.0, 0.0, 0.5, 0.0], [0.0, 0.3, 0.0, 0.0]], dtype=torch.float64)
    assert leading_committed(tau) == 1
    assert leading_committed(torch.zeros(2, 3)) == 3 and leading_committed(torch.ones(2, 3)) == 0


def test_prefix_change_rebuilds_the_cache(make_model):
    """A solver that moves a committed token again (or a new sequence) gets a fresh, still exact, cache."""
    model = make_model()
    cached = CachedDenoiser(model)
    z = torch.randn(2, 6, model.config.d_latent)
    tau = torch.tensor([[0.0, 0.0, 0.0, 0.4, 0.6, 1.0]] * 2, dtype=torch.float64)
    cached(z, tau)
    assert cached.cache.length == 3
    z2 = z.clone()
    z2[:, 1] += 1.0  # a committed latent changed
    for zz, tt in [(z2, tau), (z2, tau.flip(1)), (z2[:1], tau[:1])]:
        got, full = cached(zz, tt), model(zz, tt, attention=Frontier())
        assert (got.logits - full.logits).abs().max() <= 1e-5


def test_explicit_cache_api(make_model):
    model = make_model()
    z = torch.randn(2, 6, model.config.d_latent)
    tau = torch.tensor([[0.0, 0.0, 0.2, 0.4, 0.6, 1.0]] * 2, dtype=torch.float64)
    cache = FrontierCache(layers=len(model.blocks), batch=2)
    first = model(z, tau, attention=Frontier(), cache=cache)
    assert cache.length == 2 and all(layer.keys.shape[2] == 2 for layer in cache.layers)
    rest = model(z[:, 2:], tau[:, 2:], attention=Frontier(), cache=cache)
    assert (rest.logits - first.logits[:, 2:]).abs().max() <= 1e-5
    with pytest.raises(ValueError, match="cache needs the Frontier attention pattern"):
        model(z, tau, attention=BlockCausal(2), cache=cache)
    with pytest.raises(ValueError, match="cache was built for batch 2"):
        model(z[:1, 2:], tau[:1, 2:], attention=Frontier(), cache=cache)
    with pytest.raises(ValueError, match="cache has 5 layers"):
        model(z, tau, attention=Frontier(), cache=FrontierCache(layers=5, batch=2))


def test_the_buffers_are_allocated_once_per_generation(make_model):
    """With the sequence length known, every layer keeps one buffer over all commits (no copy per commit),
    and a cache without a capacity grows by doubling: the number of reallocations is logarithmic."""
    model = make_model(layers=2)
    cached = CachedDenoiser(model)
    z = torch.randn(2, 12, model.config.d_latent, generator=torch.Generator().manual_seed(3))
    pointers = set()
    for tau in decoding_schedule(B=2):
        cached(z, tau)
        pointers.add(cached.cache.layers[0]._keys.data_ptr())
    assert len(pointers) == 1 and cached.cache.layers[0]._keys.shape[2] == 12
    from evoflow.nn.cache import LayerCache

    layer, sizes = LayerCache(), set()
    for _ in range(64):
        layer.extend(torch.ones(1, 1, 1, 2), torch.ones(1, 1, 1, 2))
        layer.commit(1)
        sizes.add(layer._keys.shape[2])
    assert layer.keys.shape == (1, 1, 64, 2) and len(sizes) == 7  # 1, 2, 4, ..., 64


def test_a_shifted_model_reads_one_position_ahead(make_model):
    """With ``shift``, the output of a token at t = 1 reads the state before it, so ``ahead=1`` gives it without
    computing the token: equal to the full call's output there (C13), through the cache too."""
    model = make_model(layers=2, shift=True)
    g = torch.Generator().manual_seed(3)
    z = torch.randn(2, 10, model.config.d_latent, generator=g)
    tau = torch.rand(2, 10, generator=g, dtype=torch.float64).clamp_min(0.05)
    tau[:, :4] = 0.0
    tau[:, 7:] = 1.0
    full = model(z, tau, attention=Frontier())
    short = model(z[:, :7], tau[:, :7], attention=Frontier(), ahead=1)
    assert short.logits.shape[1] == 8
    torch.testing.assert_close(short.logits, full.logits[:, :8], rtol=1e-5, atol=1e-5)
    cached = CachedDenoiser(model)
    for m in (7, 7, 4):  # a fresh cache, the same state again, then only the committed prefix
        got = cached(z[:, :m], tau[:, :m], ahead=1)
        torch.testing.assert_close(got.logits, full.logits[:, : m + 1], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="ahead must be 0, or 1 for a model with shift=True"):
        make_model(layers=1)(z, tau, ahead=1)
