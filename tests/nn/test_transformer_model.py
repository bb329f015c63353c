"""The Transformer as a model: time conditioning, attention arithmetic, inputs, gradients (THEORY section 8, C12)."""

import math

import pytest
import torch
import torch.nn.functional as F

from evoflow.nn import EvoTransformer, Frontier, get_config
from evoflow.nn.transformer import apply_rope, rope_tables, sinusoid
from evoflow.process import posterior_mean, q_sample


def inputs(model, B=2, L=6, seed=1, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(B, L, model.config.d_latent, generator=g, dtype=dtype)
    tau = torch.rand(B, L, generator=g, dtype=torch.float64)
    return z, tau


def test_outputs_have_the_denoiser_shapes(make_model):
    model = make_model()
    z, tau = inputs(model)
    out = model(z, tau)
    assert out.logits.shape == (2, 6, model.config.vocab) and out.logits.dtype == torch.float32
    assert out.time.shape == (2, 6) and bool(((out.time > 0) & (out.time < 1)).all())
    assert tuple(model.embeddings.shape) == (model.config.vocab, model.config.d_latent)
    assert model.schedule.name == "linear"


def test_time_off_is_independent_of_tau(make_model):
    model = make_model(time_conditioning=False)
    assert model.time is None and all(b.time_gate is None for b in model.blocks)
    z, tau = inputs(model)
    a, b = model(z, tau), model(z, torch.rand_like(tau))
    assert torch.equal(a.logits, b.logits) and torch.equal(a.time, b.time)


def test_untrained_modulation_ignores_tau():
    """Zero-initialised modulation: without the additive time input the model at initialisation does not
    depend on tau (times kept below 1, where the latent is read as it is)."""
    torch.manual_seed(0)
    model = EvoTransformer(get_config("tiny"))
    z, tau = inputs(model)
    a, b = model(z, tau), model(z, (1 - tau).clamp(0.01, 0.99))
    assert torch.equal(a.logits, b.logits) and torch.equal(a.time, b.time)


def test_the_time_input_makes_time_visible_from_the_first_step():
    """With ``time_input`` the model sees each token's time at initialisation: a clean token and a noisy one with
    the same latent give different outputs."""
    torch.manual_seed(0)
    model = EvoTransformer(get_config("tiny", time_input=True))
    z, _ = inputs(model)
    clean, noisy = (model(z, torch.full(z.shape[:2], t)).logits for t in (0.0, 0.9))
    assert (clean - noisy).abs().max() > 1e-2


def test_a_latent_at_t_1_is_not_read():
    """alpha(1) = 0: the output for any token does not depend on the noise drawn for tokens at t = 1."""
    torch.manual_seed(0)
    model = EvoTransformer(get_config("tiny"))
    z, tau = inputs(model)
    tau[:, 3:] = 1.0
    other = z.clone()
    other[:, 3:] = torch.randn_like(other[:, 3:])
    assert torch.equal(model(z, tau).logits, model(other, tau).logits)


def test_untrained_model_is_the_time_agnostic_model():
    """At initialisation, time conditioning on is the plain Transformer with the same weights."""
    torch.manual_seed(0)
    on = EvoTransformer(get_config("tiny"))
    off = EvoTransformer(get_config("tiny", time_conditioning=False))
    missing, unexpected = off.load_state_dict(on.state_dict(), strict=False)
    assert not missing and all(k.startswith("time.") or k.endswith(("time_shift", "time_gate")) for k in unexpected)
    z, tau = inputs(on)
    torch.testing.assert_close(on(z, tau).logits, off(z, tau).logits, rtol=0, atol=1e-6)


def test_live_time_conditioning_depends_on_tau(make_model):
    """The counterpart of the two tests above: once the time path is non-zero, tau matters."""
    model = make_model()
    z, tau = inputs(model)
    a, b = model(z, tau).logits, model(z, 1 - tau).logits
    assert (a - b).abs().max() > 0.01 * a.abs().max()


def test_time_embedding_separates_times():
    t = torch.tensor([[0.0, 0.25, 0.5, 1.0]], dtype=torch.float64)
    f = sinusoid(t, 64)  # (1, 4, 64)
    assert f.shape == (1, 4, 64)
    assert torch.allclose(f[0, 0, :32], torch.ones(32)) and torch.allclose(f[0, 0, 32:], torch.zeros(32))
    assert torch.cdist(f[0], f[0]).add(100 * torch.eye(4)).min() > 1.0  # distinct times, distinct features


def test_rope_scores_depend_only_on_relative_position():
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(1, 1, 1, 16, generator=g), torch.randn(1, 1, 1, 16, generator=g)

    def score(i, j):
        qi = apply_rope(q, rope_tables(torch.tensor([i]), 16, 10000.0))
        kj = apply_rope(k, rope_tables(torch.tensor([j]), 16, 10000.0))
        return (qi * kj).sum()

    assert torch.allclose(score(3, 1), score(10, 8), atol=1e-5)
    assert torch.allclose(score(5, 5), (q * k).sum(), atol=1e-5)
    assert not torch.allclose(score(3, 1), score(1, 3), atol=1e-3)
    rotated = apply_rope(q, rope_tables(torch.tensor([7]), 16, 10000.0))
    assert torch.allclose(rotated.norm(), q.norm(), atol=1e-5)  # a rotation


def test_attention_equals_grouped_query_attention_written_out(make_model):
    """SDPA with enable_gqa equals softmax(q k^T / sqrt(hd) masked) v with each key-value head shared by its group."""
    model = make_model()
    attn, cfg = model.blocks[0].attn, model.config
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 5, cfg.width, generator=g)
    tau = torch.tensor([[0.0, 0.0, 0.3, 0.7, 1.0], [0.0, 0.5, 0.0, 0.2, 0.9]], dtype=torch.float64)
    mask = Frontier().mask(tau)
    rope = rope_tables(torch.arange(5), cfg.head_dim, cfg.rope_theta)
    got = attn(x, rope, mask, None)
    q = apply_rope(attn.wq(x).view(2, 5, cfg.heads, -1).transpose(1, 2), rope)
    k = apply_rope(attn.wk(x).view(2, 5, cfg.kv_heads, -1).transpose(1, 2), rope)
    v = attn.wv(x).view(2, 5, cfg.kv_heads, -1).transpose(1, 2)
    group = cfg.heads // cfg.kv_heads
    k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
    scores = (q @ k.transpose(-1, -2)) / math.sqrt(cfg.head_dim)
    y = scores.masked_fill(~mask, float("-inf")).softmax(-1) @ v
    torch.testing.assert_close(got, attn.wo(y.transpose(1, 2).reshape(2, 5, -1)), rtol=1e-5, atol=1e-6)


def test_latent_space_is_the_token_embedding_space_when_d_latent_is_the_width(make_model):
    model = make_model(d_latent=None, embedding="learned")
    assert model.proj_in is None and model.embeddings is model.embed.weight
    normalized = make_model(d_latent=None)
    assert torch.allclose(normalized.embeddings.norm(dim=1), torch.full((normalized.config.vocab,), 64**0.5))
    assert tuple(model.embeddings.shape) == (model.config.vocab, model.config.width)
    z, tau = inputs(model)
    assert torch.isfinite(model(z, tau).logits).all()


def test_differentiable_in_z_in_float64(make_model):
    model = make_model()
    z, tau = inputs(model)
    z.requires_grad_(True)
    model(z, tau).logits.sum().backward()
    assert z.grad.dtype == torch.float64 and torch.isfinite(z.grad).all() and z.grad.abs().max() > 0


def denoising_loss(model, x, tau, generator):
    """A training-style loss through evoflow.process: CE + embedding regression + time regression."""
    z = q_sample(x, tau, model.embeddings, model.schedule, generator=generator)
    out = model(z, tau)
    ce = F.cross_entropy(out.logits.flatten(0, 1), x.flatten())
    mse = (posterior_mean(out.logits, model.embeddings) - model.embeddings[x]).pow(2).mean()
    return ce + mse + F.mse_loss(out.time, tau.float())


@pytest.mark.parametrize("time_conditioning", [True, False])
def test_gradients_reach_every_parameter(make_model, time_conditioning):
    model = make_model(time_conditioning=time_conditioning, d_latent=8)
    g = torch.Generator().manual_seed(5)
    x = torch.randint(model.config.vocab, (3, 7), generator=g)
    tau = torch.rand(3, 7, generator=g).clamp(0.05, 1.0)
    denoising_loss(model, x, tau, g).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().max() > 0, name


@pytest.mark.parametrize(
    ("z_shape", "tau_shape", "tau_fill", "match"),
    [
        ((2, 6), (2, 6), 0.5, r"z must be a float tensor of shape \(B, L, d_latent=16\)"),
        ((2, 6, 8), (2, 6), 0.5, r"d_latent=16\), got \(2, 6, 8\)"),
        ((2, 6, 16), (2, 5), 0.5, r"tau must have shape \(B, L\) = \(2, 6\)"),
        ((2, 6, 16), (2, 6), 1.5, r"tau must lie in \[0, 1\]"),
        ((2, 6, 16), (2, 6), float("nan"), r"tau must lie in \[0, 1\]"),
    ],
)
def test_bad_inputs_are_named(make_model, z_shape, tau_shape, tau_fill, match):
    model = make_model()
    with pytest.raises(ValueError, match=match):
        model(torch.zeros(z_shape), torch.full(tau_shape, tau_fill))


def test_bad_attention_and_cache_arguments(make_model):
    model = make_model()
    z, tau = inputs(model)
    with pytest.raises(TypeError, match="attention must be an AttentionPattern"):
        model(z, tau, attention="frontier")
    with pytest.raises(TypeError, match="tau must be a floating-point tensor"):
        model(z, torch.zeros(2, 6, dtype=torch.long))


def test_meta_build_then_materialise_and_init():
    with torch.device("meta"):
        model = EvoTransformer(get_config("tiny"))
    assert all(p.is_meta for p in model.parameters())
    model.to_empty(device="cpu")
    torch.manual_seed(0)
    model.init_weights()
    reference = EvoTransformer(get_config("tiny"))
    torch.manual_seed(0)
    reference.init_weights()
    for (name, p), q in zip(model.named_parameters(), reference.parameters(), strict=True):
        assert torch.equal(p, q), name
