"""The time-conditioned Transformer denoiser (THEORY section 8, claim C12).

Reads latents ``z`` (B, L, d_latent) and per-token times ``tau`` (B, L) and returns per-token
logits over the vocabulary (so ``p_theta(x_i | z)``, ``ehat``, velocity and score come from
:mod:`evoflow.process`, exactly as for the oracles) and a time estimate ``that_i`` in (0, 1).

    h^0     = W_in z_i [t_i < 1] + W_t sinusoid(t_i)   (z itself when d_latent = width; W_t: time_input)
    m_i     = MLP(sinusoid(t_i))              6 x (B, L, width): one time MLP for all layers
    (b1, b2, s1, s2, g1, g2) = m_i + o_l      o_l: learned per-layer offsets ("adaLN-single")
    a       = h + g1 * Attn(rms(h) * s1 + b1)                 rms(h) = h / sqrt(mean(h^2) + eps)
    h'      = a + g2 * SwiGLU(rms(a) * s2 + b2)
    logits  = W_out RMSNorm(h^n),  that = sigmoid(w_t . RMSNorm(h^n) + c)

A latent at t = 1 carries no information when alpha(1) = 0, so the model reads zeros there (its
output cannot depend on the noise draw; with the Frontier pattern no other token reads it either,
THEORY C13). The embedding table that the forward process noises is kept by ``config.embedding``:
rows of norm sqrt(d_latent) (learned directions, or frozen random ones) or unconstrained.
Positions are explicit when a call passes ``positions`` (two streams of one sequence share them).

The scale offsets of a layer are its two RMSNorm weights (without time, RMSNorm(h) = rms(h) *
weight), so the Transformer's own parameters are exactly those of the time-agnostic model.
Attention is grouped-query with rotary position embeddings, through
``scaled_dot_product_attention``, under a per-call :mod:`~evoflow.nn.attention` pattern. The
time MLP's output layer is zero-initialised and the offsets start at shift 0, scale 1, gate 1:
the time part of every shift, scale and gate starts at zero, so the untrained model is the
plain pre-norm Transformer and ignores ``tau``. With ``time_conditioning=False`` the
modulation is absent altogether (a time-agnostic model, as LLaDA). This file knows nothing of
distribution: sharding, checkpointing, compilation and precision live in :mod:`evoflow.nn.parallel`.
"""

from __future__ import annotations

import math
from collections.abc import Collection

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from evoflow.nn.attention import AttentionPattern, Frontier, TwoStream
from evoflow.nn.cache import FrontierCache, LayerCache, leading_committed
from evoflow.nn.config import RopeScaling, TransformerConfig
from evoflow.process import DenoiserOutput
from evoflow.schedules import check_times, get_schedule

__all__ = ["EvoTransformer"]

Rope = tuple[Tensor, Tensor]  # cos, sin: (L, head_dim / 2) each
Modulation = tuple[Tensor, ...]  # b1, b2, s1, s2, g1, g2: (B, L, width) each


def rope_tables(positions: Tensor, head_dim: int, theta: float, dtype: torch.dtype = torch.float32,
                scaling: RopeScaling | None = None) -> Rope:
    """Rotary angles ``p * w_k``, ``w_k = theta^(-2k / head_dim)`` for k < head_dim / 2 (rescaled by ``scaling``),
    as cos and sin (L, head_dim / 2), in ``dtype`` (float32, or float64 for a float64 model)."""
    freqs = theta ** (-torch.arange(0, head_dim, 2, device=positions.device, dtype=dtype) / head_dim)
    if scaling is not None:
        freqs = scaling.apply(freqs)
    angles = positions.to(dtype)[:, None] * freqs[None, :]
    return angles.cos(), angles.sin()


def apply_rope(x: Tensor, rope: Rope) -> Tensor:
    """Rotate pairs ``(x_k, x_{k + hd/2})`` by the position's angles, in the tables' precision; x (B, H, L, hd)."""
    cos, sin = rope
    x1, x2 = x.to(cos.dtype).chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).to(x.dtype)


def sinusoid(t: Tensor, n: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """Sinusoidal features of times: ``[cos(1000 t w_k), sin(1000 t w_k)]``, ``w_k = 10^(-4k / (n/2))``; (B, L, n),
    computed in ``dtype`` (float32, or float64 for a float64 model)."""
    half = n // 2
    w = torch.exp(-math.log(1e4) * torch.arange(half, device=t.device, dtype=dtype) / half)
    angles = 1000.0 * t.to(dtype)[..., None] * w
    return torch.cat([angles.cos(), angles.sin()], dim=-1)


def _at_least_float32(dtype: torch.dtype) -> torch.dtype:
    return torch.promote_types(dtype, torch.float32)


class Attention(nn.Module):
    """Grouped-query self-attention: ``softmax(Q K^T / sqrt(hd) + log M) V`` with RoPE on Q and K (after a per-head
    RMSNorm of each when ``qk_norm``)."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = cfg.heads, cfg.kv_heads, cfg.head_dim
        self.wq = nn.Linear(cfg.width, cfg.heads * cfg.head_dim, bias=cfg.qkv_bias)
        self.wk = nn.Linear(cfg.width, cfg.kv_heads * cfg.head_dim, bias=cfg.qkv_bias)
        self.wv = nn.Linear(cfg.width, cfg.kv_heads * cfg.head_dim, bias=cfg.qkv_bias)
        self.wo = nn.Linear(cfg.heads * cfg.head_dim, cfg.width, bias=cfg.out_bias)
        self.q_norm = nn.RMSNorm(cfg.head_dim, eps=cfg.norm_eps) if cfg.qk_norm else None  # per head, before RoPE
        self.k_norm = nn.RMSNorm(cfg.head_dim, eps=cfg.norm_eps) if cfg.qk_norm else None

    def forward(self, x: Tensor, rope: Rope, mask: Tensor | None, cache: LayerCache | None) -> Tensor:
        B, L, _ = x.shape
        q = self.wq(x).view(B, L, self.heads, self.head_dim).transpose(1, 2)  # (B, H, L, hd)
        k = self.wk(x).view(B, L, self.kv_heads, self.head_dim).transpose(1, 2)  # (B, KV, L, hd)
        v = self.wv(x).view(B, L, self.kv_heads, self.head_dim).transpose(1, 2)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = apply_rope(q, rope), apply_rope(k, rope)
        if cache is not None:
            k, v = cache.extend(k, v)  # (B, KV, P + L, hd): the committed prefix, then this chunk
        gqa = mask is None or x.device.type != "cuda"
        if not gqa:  # CUDA's fused GQA kernel takes no mask: share each K/V head with its group
            k, v = (t.repeat_interleave(self.heads // self.kv_heads, dim=1) for t in (k, v))
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=gqa)  # (B, H, L, hd)
        return self.wo(y.transpose(1, 2).reshape(B, L, self.heads * self.head_dim))  # explicit: B may be 0


class FeedForward(nn.Module):
    """SwiGLU: ``W_2 (silu(W_1 x) * W_3 x)``."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.w1 = nn.Linear(cfg.width, cfg.ffn, bias=False)
        self.w3 = nn.Linear(cfg.width, cfg.ffn, bias=False)
        self.w2 = nn.Linear(cfg.ffn, cfg.width, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class Block(nn.Module):
    """Pre-norm block; with time conditioning, norms and residual branches are modulated per token."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.attn_norm = nn.RMSNorm(cfg.width, eps=cfg.norm_eps)
        self.attn = Attention(cfg)
        self.ffn_norm = nn.RMSNorm(cfg.width, eps=cfg.norm_eps)
        self.ffn = FeedForward(cfg)
        self.eps = cfg.norm_eps
        self.time_shift = self.time_gate = None
        if cfg.time_conditioning:  # this layer's offsets of the shared modulation (scales: the norm weights)
            self.time_shift = nn.Parameter(torch.zeros(2, cfg.width))  # b1, b2
            self.time_gate = nn.Parameter(torch.ones(2, cfg.width))  # g1, g2

    def forward(
        self, x: Tensor, rope: Rope, mask: Tensor | None, mod: Modulation | None, cache: LayerCache | None = None
    ) -> Tensor:
        if mod is None:
            x = x + self.attn(self.attn_norm(x), rope, mask, cache)
            return x + self.ffn(self.ffn_norm(x))
        b1, b2 = (m + o for m, o in zip(mod[:2], self.time_shift, strict=True))  # (B, L, width) each
        s1, s2 = mod[2] + self.attn_norm.weight, mod[3] + self.ffn_norm.weight
        g1, g2 = (m + o for m, o in zip(mod[4:], self.time_gate, strict=True))
        x = torch.addcmul(x, g1, self.attn(torch.addcmul(b1, self._rms(x), s1), rope, mask, cache))
        return torch.addcmul(x, g2, self.ffn(torch.addcmul(b2, self._rms(x), s2)))

    def _rms(self, x: Tensor) -> Tensor:
        return F.rms_norm(x, x.shape[-1:], eps=self.eps)


class TimeEmbedding(nn.Module):
    """``t_i -> MLP(sinusoid(t_i))``, the modulation shared by all layers; output layer zero-initialised."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.freqs, self.width = cfg.time_freqs, cfg.width
        self.fc1 = nn.Linear(cfg.time_freqs, cfg.time_width)
        self.fc2 = nn.Linear(cfg.time_width, 6 * cfg.width)
        self.fc_in = nn.Linear(cfg.time_freqs, cfg.width) if cfg.time_input else None

    def forward(self, tau: Tensor) -> tuple[Modulation, Tensor | None]:
        """The six modulations (B, L, width) each, and the additive input term (B, L, width) or None."""
        wt = self.fc1.weight.dtype
        features = sinusoid(tau, self.freqs, _at_least_float32(wt)).to(wt)  # (B, L, time_freqs)
        mod = self.fc2(F.silu(self.fc1(features))).split(self.width, dim=-1)  # 6 x (B, L, width)
        return mod, None if self.fc_in is None else self.fc_in(features)


class EvoTransformer(nn.Module):
    """Time-conditioned Transformer with the denoiser interface ``model(z, tau) -> DenoiserOutput``.

    Carries ``.schedule`` and ``.embeddings`` (V, d_latent) like the oracles, so every solver,
    path, ELBO and likelihood routine takes it unchanged (THEORY section 8, claim C12). The
    attention pattern is chosen per call (default ``self.attention``, :class:`Frontier`, the semantics the
    training objective scores); a
    :class:`~evoflow.nn.cache.FrontierCache` reuses the committed prefix under ``Frontier()``.
    Build on ``torch.device("meta")`` and call :meth:`init_weights` after materialising.
    """

    def __init__(self, config: TransformerConfig):
        super().__init__()
        if not isinstance(config, TransformerConfig):
            raise TypeError(f"config must be a TransformerConfig (evoflow.nn.get_config), got {type(config).__name__}")
        self.config = config
        self.schedule = get_schedule(config.schedule)
        self.attention: AttentionPattern = Frontier()  # the pattern training uses (TwoStream is its vectorised form)
        self.embed = nn.Embedding(config.vocab, config.d_latent)
        self.embed.weight.requires_grad_(config.embedding != "frozen")
        self._blank_noise = float(self.schedule.alpha(torch.ones((), dtype=torch.float64, device="cpu"))) == 0.0
        self.proj_in = nn.Linear(config.d_latent, config.width, bias=False) if config.d_latent != config.width else None
        self.time = TimeEmbedding(config) if config.time_conditioning else None
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.layers))
        self.norm = nn.RMSNorm(config.width, eps=config.norm_eps)
        self.head = None if config.tie_head else nn.Linear(config.width, config.vocab, bias=False)
        self.time_head = nn.Linear(config.width, 1)
        self.init_weights()

    @property
    def hides_noise(self) -> bool:
        """Whether the default pattern hides keys at t = 1 from every other query (``Frontier``): then outputs do
        not depend on a suffix of pure-noise tokens, which a decoder may leave out of the call (C13)."""
        return self.attention.hides_noise

    @property
    def reads_ahead(self) -> bool:
        """Whether a call may ask for one output past its end (``ahead=1``): a shifted model (``config.shift``),
        whose pure-noise token reads the state before it (C13)."""
        return self.config.shift

    @property
    def embeddings(self) -> Tensor:
        """The latent embedding table E (V, d_latent) that the forward process noises (THEORY section 2):
        rows rescaled to norm sqrt(d_latent) unless ``config.embedding == "learned"``, times ``latent_scale``."""
        w, c = self.embed.weight, self.config.latent_scale
        if self.config.embedding == "learned":
            return w if c == 1 else c * w
        return w * (c * w.shape[1] ** 0.5 / w.norm(dim=1, keepdim=True).clamp_min(1e-12))

    @torch.no_grad()
    def init_weights(self, generator: torch.Generator | None = None, names: Collection[str] | None = None) -> None:
        """Initialise every parameter (after materialising a model built on the meta device), or only ``names``
        (e.g. the time parts a checkpoint import does not fill).

        Embeddings N(0, 1); latent projection N(0, 1 / d_latent); other weights N(0, 0.02^2), residual
        outputs (wo, w2) N(0, 0.02^2 / (2 layers)); biases 0; norms 1; the time MLP's output layer 0
        and the offsets shift 0, scale and gate 1, so that the modulation ignores time at first; the additive
        time input (``time_input``) N(0, 2 / time_freqs), a unit-scale term that makes time visible at once.
        """
        wanted = None if names is None else set(names)
        for name, p in self.named_parameters():
            if wanted is None or name in wanted:
                self._init_parameter(name, p, generator)

    def _init_parameter(self, name: str, p: Tensor, generator: torch.Generator | None) -> None:
        """The initial value of one parameter (see :meth:`init_weights`)."""
        if name == "embed.weight":
            nn.init.normal_(p, std=1.0, generator=generator)
        elif name == "proj_in.weight":
            nn.init.normal_(p, std=self.config.d_latent**-0.5, generator=generator)
        elif name.endswith("norm.weight") or name.endswith("time_gate"):
            nn.init.ones_(p)
        elif name.endswith(".bias") or name.endswith("time_shift") or name == "time.fc2.weight":
            nn.init.zeros_(p)
        elif name == "time.fc_in.weight":  # unit-scale input term: sinusoid features have mean square 1/2
            nn.init.normal_(p, std=(2.0 / self.config.time_freqs) ** 0.5, generator=generator)
        else:  # every other linear weight
            residual = name.endswith(("wo.weight", "w2.weight"))
            std = 0.02 / math.sqrt(2 * self.config.layers) if residual else 0.02
            nn.init.normal_(p, std=std, generator=generator)

    def forward(
        self, z: Tensor, tau: Tensor, attention: AttentionPattern | None = None, cache: FrontierCache | None = None,
        positions: Tensor | None = None, ahead: int = 0,
    ) -> DenoiserOutput:
        """Logits (B, L, V) in float32 (float64 for a float64 model) and time estimates (B, L) for latents
        z (B, L, d_latent) at times tau (B, L).

        With a ``cache`` holding the committed prefix, ``z`` and ``tau`` cover positions
        ``cache.length ..`` only; the leading committed tokens of this chunk join the cache.
        ``positions`` (L,) gives the rotary positions explicitly (default ``offset .. offset + L - 1``).
        With ``config.shift`` the outputs of position i are read from the hidden state at i - 1 (the cache keeps
        the last committed token's state for the chunk's first position; position 0 reads its own).
        ``ahead=1`` (shifted models only) also returns the outputs of one more position, L, at t = 1 and left out
        of the call: they read the state at L - 1, which no pure-noise token can change (C13), so a decoder
        need not compute the token it is about to draw (outputs (B, L + 1, ...)).
        """
        if ahead not in (0, 1) or (ahead and not self.config.shift):
            raise ValueError(f"ahead must be 0, or 1 for a model with shift=True, got {ahead!r}")
        if ahead and z.shape[1] == 0 and cache is not None and cache.tail is not None:
            return self._readout(cache.tail)  # only the position after the cached prefix
        h = self._hidden(z, tau, attention, cache, positions)  # (B, L, width)
        rows = h
        if self.config.shift:
            first = h[:, :1] if cache is None or cache.tail is None else cache.tail  # (B, 1, width)
            rows = torch.cat([first, h if ahead else h[:, :-1]], dim=1)
        if cache is not None:
            n = leading_committed(tau)
            if n:
                cache.tail = h[:, n - 1 : n].detach()
            cache.commit(n)
        return self._readout(rows)

    def _hidden(self, z: Tensor, tau: Tensor, attention: AttentionPattern | None, cache: FrontierCache | None,
                positions: Tensor | None) -> Tensor:
        """The final residual stream (B, L, width), before the norm and heads (see :meth:`forward`)."""
        pattern = self.attention if attention is None else attention
        self._check_inputs(z, tau, pattern, cache)
        offset = 0 if cache is None else cache.length
        if positions is None:
            positions = torch.arange(offset, offset + z.shape[1], device=z.device)
        elif cache is not None or positions.shape != z.shape[1:2] or positions.dtype.is_floating_point:
            raise ValueError(f"positions must be an integer tensor of shape ({z.shape[1]},) and no cache is allowed "
                             f"with it, got {_shape(positions)}")
        window = self.config.sliding_window
        if window is not None and positions.numel() and int(positions.max()) >= window:
            raise ValueError(f"sequence of {int(positions.max()) + 1} positions exceeds the model's sliding_window "
                             f"({window}): windowed attention is not implemented, and within the window it is exact")
        exact = _at_least_float32(self.norm.weight.dtype)  # positions, angles and logits: float32 or better
        rope = rope_tables(positions, self.config.head_dim, self.config.rope_theta, exact, self.config.rope_scaling)
        mask = pattern.mask(tau, offset)  # (B, 1, L, offset + L) or None
        h, mod = self._inputs(z, tau)
        for i, block in enumerate(self.blocks):
            h = block(h, rope, mask, mod, None if cache is None else cache.layers[i])
        return h

    def _readout(self, h: Tensor) -> DenoiserOutput:
        """Logits (B, L, V) and time estimates (B, L) from hidden states h (B, L, width): RMSNorm, then the heads
        (the head is the embedding table itself when ``tie_head``)."""
        exact = _at_least_float32(self.norm.weight.dtype)
        h = self.norm(h)
        that = torch.sigmoid(self.time_head(h).squeeze(-1).to(exact))  # (B, L)
        logits = F.linear(h, self.embed.weight) if self.head is None else self.head(h)
        return DenoiserOutput(logits=logits.to(exact), time=that)

    def _inputs(self, z: Tensor, tau: Tensor) -> tuple[Tensor, Modulation | None]:
        """The residual stream's input (B, L, width) and the time modulation (6 x (B, L, width) or None)."""
        h = z.to(self.norm.weight.dtype)  # (B, L, d_latent)
        if self.config.latent_scale != 1:  # the latent table is latent_scale x the stored rows
            h = h / self.config.latent_scale
        if self._blank_noise:  # alpha(1) = 0: a latent at t = 1 is pure noise; read zeros instead
            h = torch.where((tau == 1)[..., None], 0.0, h)
        if self.proj_in is not None:
            h = self.proj_in(h)  # (B, L, width)
        mod, shift = (None, None) if self.time is None else self.time(tau)  # 6 x (B, L, width), (B, L, width)
        return (h if shift is None else h + shift), mod

    def two_stream(self, x: Tensor, z: Tensor, tau: Tensor, start: Tensor) -> DenoiserOutput:
        """Outputs (B, L, ...) for the noised tokens ``z`` (B, L, d_latent) at times ``tau`` (B, L), each in the
        state "tokens before ``start[b, i]`` clean (the ids ``x``), its group at ``tau``, the rest at t = 1",
        all in one call of 2L tokens (:class:`~evoflow.nn.attention.TwoStream`; THEORY C9, C13).

        With ``config.shift`` noised token i reads the state of position i - 1 in that state: the noised copy's
        when i - 1 is in its group, else the clean copy's (the AR path's causal state at i - 1). The look-ahead
        ``reach`` of the model's pattern (``Frontier(reach)``) applies inside the groups too."""
        L = x.shape[1]
        clean = self.embeddings[x].to(z.dtype)  # (B, L, d_latent)
        pos = torch.arange(L, device=z.device)
        h = self._hidden(torch.cat([clean, z], 1), torch.cat([torch.zeros_like(tau), tau], 1),
                         TwoStream(start, getattr(self.attention, "reach", None)), None,
                         torch.cat([pos, pos]))  # (B, 2L, width)
        if not self.config.shift:
            return self._readout(h[:, L:])
        prev = pos - 1  # (L,)
        rows = torch.where(prev[None] >= start, L + prev[None], prev[None])  # (B, L): noised or clean copy of i - 1
        rows[:, 0] = L  # position 0 reads its own state
        return self._readout(h.gather(1, rows[..., None].expand(-1, -1, h.shape[-1])))

    def ar_logits(self, x: Tensor) -> Tensor:
        """Logits (B, L, V) of every token of ``x`` (B, L) with the tokens before it clean and itself and the
        rest at t = 1: the conditionals of AR decoding with the token sampler, in one call (THEORY C13)."""
        B, L = x.shape
        z = torch.zeros(B, L, self.config.d_latent, device=x.device, dtype=self.embeddings.dtype)
        tau = torch.ones(B, L, device=x.device, dtype=torch.float64)
        start = torch.arange(L, device=x.device).expand(B, L)
        return self.two_stream(x, z, tau, start).logits

    def _check_inputs(self, z: Tensor, tau: Tensor, pattern: object, cache: FrontierCache | None) -> None:
        d = self.config.d_latent
        if not isinstance(z, Tensor) or z.ndim != 3 or z.shape[-1] != d or not z.is_floating_point():
            raise ValueError(f"z must be a float tensor of shape (B, L, d_latent={d}), got {_shape(z)}")
        check_times(tau, "tau")
        if tau.shape != z.shape[:2]:
            raise ValueError(f"tau must have shape (B, L) = {tuple(z.shape[:2])} to match z, got {tuple(tau.shape)}")
        if not isinstance(pattern, AttentionPattern):
            raise TypeError(f"attention must be an AttentionPattern (e.g. Frontier()), got {type(pattern).__name__}")
        if cache is not None:
            if not pattern.cacheable:
                raise ValueError(f"cache needs the Frontier attention pattern, got {pattern!r}")
            cache.check(batch=z.shape[0], layers=len(self.blocks))

    def parameter_counts(self) -> dict[str, int]:
        """Parameters by part: ``transformer`` (the Llama-style body: embedding, blocks, norm, head),
        ``time`` (time MLP and per-layer offsets), ``latent`` (input projection), ``time_head``."""
        counts = {"transformer": 0, "time": 0, "latent": 0, "time_head": 0}
        for name, p in self.named_parameters():
            part = "time" if name.startswith("time.") or name.endswith(("time_shift", "time_gate")) else "transformer"
            part = {"proj_in": "latent", "time_head": "time_head"}.get(name.split(".")[0], part)
            counts[part] += p.numel()
        return counts


def _shape(x: object) -> object:
    return tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
