"""Sizes of the time-conditioned Transformer: one table, one dataclass, one lookup.

Every size is a row of ``_SIZES``; :func:`get_config` copies a row into a
:class:`TransformerConfig` and applies the caller's overrides by field name. Nothing else in
the package hard-codes a size. THEORY section 8 (claim C12).

Parameter counts (exact, time conditioning on; computed on the meta device with
``EvoTransformer.parameter_counts`` and checked by tests/nn/test_transformer_config.py):

    name             total     transformer          time   latent   time head
    tiny           134,465         103,744        29,632    1,024          65
    demo         1,175,617       1,115,264        56,128    4,096         129
    small       19,760,769      19,406,720       329,088   24,576         385
    150m       151,140,609     149,840,640     1,299,200        0         769
    1b       1,110,786,561   1,104,218,112     6,566,400        0       2,049
    8b       8,056,243,201   8,030,261,248    25,977,856        0       4,097

"transformer" is the Llama-style body (latent embedding table, blocks, final norm, head);
"time" the time MLP (and the additive time input when ``time_input``), the per-layer shift
and gate offsets (the scale offsets are the norm weights, counted in the body); "latent" the
input projection (absent when ``d_latent = width``); "time head" the ``that`` head.

The ``8b`` row is the Llama-3-8B shape (32 layers, width 4096, 32 query and 8 key-value heads,
SwiGLU 14336, vocabulary 128256, RoPE theta 500000, untied embedding and head); with
``d_latent = width`` its latent space is the token-embedding space, so its transformer part is
exactly Llama-3-8B's 8,030,261,248 parameters, and time conditioning adds 0.32%.
The ``1b`` row is the Llama-3.2-1B body with a 32k vocabulary; ``150m`` and ``small`` are
narrower bodies of the same design; ``demo`` is the size ``evoflow demo`` trains on two CPU cores in
minutes (a 2048-token BPE vocabulary).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from torch import Tensor

from evoflow.schedules import get_schedule

__all__ = ["EMBEDDINGS", "RopeScaling", "TransformerConfig", "config_names", "get_config"]

# How the latent embedding table is kept (THEORY section 2: the forward process noises these rows):
# "normalized": learned directions, every row rescaled to norm sqrt(d_latent) on each use (Plaid-style);
# "frozen": fixed random rows of norm sqrt(d_latent); "learned": unconstrained (free to grow, which
# lets continuous text diffusion inflate its own SNR).
EMBEDDINGS = ("normalized", "frozen", "learned")


@dataclass(frozen=True)
class RopeScaling:
    """Rescaled rotary frequencies for contexts longer than pre-training's (Llama 3.1's ``llama3`` rule, or ``linear``;
    THEORY section 8: an option of the Transformer so that imported checkpoints are represented exactly).

    ``linear``: every frequency ``w_k`` becomes ``w_k / factor`` (position interpolation).
    ``llama3``: with wavelength ``lambda_k = 2 pi / w_k`` and ``n = original_max_positions``,

        w_k' = w_k                                if lambda_k < n / high_freq_factor   (high frequencies kept)
        w_k' = w_k / factor                       if lambda_k > n / low_freq_factor    (low frequencies interpolated)
        w_k' = (1 - s) w_k / factor + s w_k       otherwise, s = (n / lambda_k - low) / (high - low),

    a smooth blend between the two regimes (no attention temperature change).
    """

    kind: str = "llama3"
    factor: float = 8.0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_positions: int = 8192

    def __post_init__(self):
        if self.kind not in ("llama3", "linear"):
            raise ValueError(f"rope_scaling kind must be llama3 or linear, got {self.kind!r}")
        if not (self.factor >= 1 and self.original_max_positions >= 1):
            raise ValueError(f"rope_scaling needs factor >= 1 and original_max_positions >= 1, got {self}")
        if self.kind == "llama3" and not 0 < self.low_freq_factor < self.high_freq_factor:
            raise ValueError(f"rope_scaling needs 0 < low_freq_factor < high_freq_factor, got {self}")

    def apply(self, freqs: Tensor) -> Tensor:
        """The rescaled frequencies (same shape and dtype as ``freqs``, radians per position)."""
        if self.kind == "linear":
            return freqs / self.factor
        n, low, high = self.original_max_positions, self.low_freq_factor, self.high_freq_factor
        wavelength = 2 * math.pi / freqs
        s = ((n / wavelength - low) / (high - low)).clamp(0.0, 1.0)  # 0 beyond n / low, 1 below n / high
        return (1 - s) * freqs / self.factor + s * freqs


@dataclass(frozen=True)
class TransformerConfig:
    """Shape and options of an :class:`evoflow.nn.EvoTransformer` (THEORY section 8, C12).

    ``width`` is the residual-stream size, ``heads`` / ``kv_heads`` the query and key-value
    heads of grouped-query attention (head size ``width / heads``), ``ffn`` the SwiGLU hidden
    size, ``d_latent`` the dimension of the noised latents ``z`` (``None``: the width, i.e. the
    token-embedding space itself). Time conditioning maps ``t_i`` through ``time_freqs``
    sinusoidal features and an MLP of hidden size ``time_width``; ``time_conditioning=False``
    gives the time-agnostic model. ``time_input`` adds a linear map of the same features to the
    input of every token (initialised at unit scale, so that time is visible from the first step; the
    modulation itself starts at zero). It is off by default: a latent at t = 1 is read as zeros, which
    already sets pure noise apart from a clean token, and at 300 training steps the input made no
    difference (bench/RESULTS.md, issue 8). ``embedding`` is how the latent
    table is kept (:data:`EMBEDDINGS`). ``schedule`` names the noise schedule the model carries.

    Options that let a pre-trained AR checkpoint be represented exactly (:func:`evoflow.nn.from_hf`):
    ``head_dim`` (None: ``width / heads``), ``qkv_bias`` / ``out_bias`` (biases of the q, k, v and output
    projections: Qwen2 has the first), ``qk_norm`` (per-head RMSNorm of queries and keys before RoPE, Qwen3),
    ``rope_scaling`` (:class:`RopeScaling`, or its fields as a dict), ``tie_head`` (the head reuses the
    embedding table), ``sliding_window`` (None, or the attention window: sequences longer than it are
    refused, since the window is not implemented and within it attention is exact), ``latent_scale``
    (the latent table the forward process noises is ``latent_scale`` times the embedding table, and the body
    reads ``z / latent_scale``: clean tokens enter the body as the stored rows, while the latents have the
    norm of the noise) and ``shift`` (THEORY C13 with an AR model's readout: the logits of token i come from
    the hidden state at position i - 1, as a causal LM's, so position 0 reads its own state and is meant to
    hold a BOS or a prompt token).
    """

    name: str = "custom"
    vocab: int = 64
    width: int = 64
    layers: int = 2
    heads: int = 4
    kv_heads: int = 2
    ffn: int = 192
    d_latent: int | None = None
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    time_conditioning: bool = True
    time_freqs: int = 64
    time_width: int = 64
    time_input: bool = False
    embedding: str = "normalized"
    schedule: str = "linear"
    head_dim: int | None = None
    qkv_bias: bool = False
    out_bias: bool = False
    qk_norm: bool = False
    rope_scaling: RopeScaling | None = None
    tie_head: bool = False
    sliding_window: int | None = None
    latent_scale: float = 1.0
    shift: bool = False

    def __post_init__(self):
        if self.d_latent is None:
            object.__setattr__(self, "d_latent", self.width)
        if self.head_dim is None:
            if self.width % self.heads:
                raise ValueError(f"heads ({self.heads}) must divide width ({self.width}) unless head_dim is given")
            object.__setattr__(self, "head_dim", self.width // self.heads)
        if isinstance(self.rope_scaling, dict):
            object.__setattr__(self, "rope_scaling", RopeScaling(**self.rope_scaling))
        for field in ("vocab", "width", "layers", "heads", "kv_heads", "ffn", "d_latent", "time_freqs", "time_width",
                      "head_dim"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{field} must be a positive integer, got {value!r}")
        if self.heads % self.kv_heads:
            raise ValueError(f"kv_heads ({self.kv_heads}) must divide heads ({self.heads}) for grouped-query attention")
        if self.head_dim % 2:
            raise ValueError(f"head_dim = {self.head_dim} must be even for rotary embeddings")
        if self.time_freqs % 2:
            raise ValueError(f"time_freqs must be even (cosine and sine pairs), got {self.time_freqs}")
        if not (self.rope_theta > 0 and self.norm_eps > 0 and self.latent_scale > 0):
            raise ValueError(f"rope_theta, norm_eps and latent_scale must be positive, got {self.rope_theta}, "
                             f"{self.norm_eps}, {self.latent_scale}")
        for flag in ("time_conditioning", "time_input", "qkv_bias", "out_bias", "qk_norm", "tie_head", "shift"):
            if not isinstance(getattr(self, flag), bool):
                raise TypeError(f"{flag} must be a bool, got {getattr(self, flag)!r}")
        if self.rope_scaling is not None and not isinstance(self.rope_scaling, RopeScaling):
            raise TypeError(f"rope_scaling must be a RopeScaling, a dict of its fields or None, "
                            f"got {type(self.rope_scaling).__name__}")
        if self.sliding_window is not None and (isinstance(self.sliding_window, bool) or
                                                not isinstance(self.sliding_window, int) or self.sliding_window < 1):
            raise ValueError(f"sliding_window must be None or a positive integer, got {self.sliding_window!r}")
        if self.tie_head and self.d_latent != self.width:
            raise ValueError(f"tie_head needs d_latent = width (the head reuses the embedding table), got "
                             f"d_latent={self.d_latent}, width={self.width}")
        if self.embedding not in EMBEDDINGS:
            raise ValueError(f"embedding must be one of {', '.join(EMBEDDINGS)}, got {self.embedding!r}")
        get_schedule(self.schedule)  # raises ValueError naming the schedules available


# One row per size; every other field takes the dataclass default.
_SIZES: dict[str, dict] = {
    "tiny": dict(vocab=64, width=64, layers=2, heads=4, kv_heads=2, ffn=192, d_latent=16,
                 time_freqs=64, time_width=64),
    "demo": dict(vocab=2048, width=128, layers=4, heads=4, kv_heads=2, ffn=384, d_latent=32,
                 time_freqs=64, time_width=64),
    "small": dict(vocab=8192, width=384, layers=10, heads=6, kv_heads=2, ffn=1024, d_latent=64,
                  time_freqs=128, time_width=128),
    "150m": dict(vocab=32000, width=768, layers=16, heads=12, kv_heads=4, ffn=2048,
                 time_freqs=256, time_width=256),
    "1b": dict(vocab=32000, width=2048, layers=16, heads=32, kv_heads=8, ffn=8192, rope_theta=500000.0,
               time_freqs=256, time_width=512),
    "8b": dict(vocab=128256, width=4096, layers=32, heads=32, kv_heads=8, ffn=14336, rope_theta=500000.0,
               time_freqs=256, time_width=1024),
}


def config_names() -> list[str]:
    """Names accepted by :func:`get_config`, smallest first (the size table of THEORY section 8's model)."""
    return list(_SIZES)


def get_config(name: str, **overrides) -> TransformerConfig:
    """The configuration called ``name`` with fields replaced by ``overrides`` (THEORY section 8, C12).

    ``get_config("8b", time_conditioning=False)`` is the time-agnostic 8B model. Unknown names
    raise ``ValueError`` listing the sizes; unknown fields raise ``TypeError`` listing the fields;
    impossible combinations (heads not dividing width, ...) raise ``ValueError``.
    """
    if name not in _SIZES:
        raise ValueError(f"unknown config name {name!r}; available: {', '.join(config_names())}")
    fields = {f.name for f in dataclasses.fields(TransformerConfig)} - {"name"}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise TypeError(f"unknown config field(s) {', '.join(unknown)}; fields: {', '.join(sorted(fields))}")
    return TransformerConfig(name=name, **{**_SIZES[name], **overrides})
