"""The learned denoiser: a time-conditioned Transformer with the oracles' interface (THEORY section 8, C12).

    from evoflow.nn import EvoTransformer, get_config
    model = EvoTransformer(get_config("tiny"))
    out = model(z, tau)                     # DenoiserOutput(logits (B, L, V), time (B, L))

Sizes come from one table (:func:`get_config`: tiny, small, 150m, 1b, 8b); attention patterns
are objects chosen per call (:class:`Bidirectional`, :class:`Frontier`, :class:`BlockCausal`);
:class:`FrontierCache` / :class:`CachedDenoiser` reuse the committed prefix; distribution
(FSDP2, activation checkpointing, compile, mixed precision) is :func:`parallelize`, kept apart
from the model. :func:`from_hf` imports a Hugging Face Llama/Mistral/Qwen2/Qwen3 checkpoint directory as
an Evo initialisation. The core package never imports this one.
"""

from evoflow.nn.attention import AttentionPattern, Bidirectional, BlockCausal, Frontier, TwoStream
from evoflow.nn.cache import CachedDenoiser, FrontierCache
from evoflow.nn.config import RopeScaling, TransformerConfig, config_names, get_config
from evoflow.nn.hf import HFImportError, ImportReport, from_hf, hf_config, import_hf
from evoflow.nn.parallel import init_distributed, materialize, parallelize
from evoflow.nn.transformer import EvoTransformer

__all__ = [
    "AttentionPattern",
    "Bidirectional",
    "BlockCausal",
    "CachedDenoiser",
    "EvoTransformer",
    "Frontier",
    "FrontierCache",
    "HFImportError",
    "ImportReport",
    "RopeScaling",
    "TransformerConfig",
    "TwoStream",
    "config_names",
    "from_hf",
    "get_config",
    "hf_config",
    "import_hf",
    "init_distributed",
    "materialize",
    "parallelize",
]
