"""Hugging Face causal-LM checkpoints as Evo initialisations (THEORY section 8, claims C12 and C13).

    model = from_hf("path/to/Llama-3.2-1B")            # a local directory: config.json + safetensors
    model, report = import_hf("path/to/Qwen2.5-0.5B")  # the same, with what was read, skipped and derived

A Llama-family body (Llama 2/3/3.1/3.2, Mistral, Qwen2/2.5, Qwen3) is the time-agnostic part of
:class:`~evoflow.nn.EvoTransformer` with its tensors renamed one to one (no permutation: both apply RoPE
to the halves ``(x_k, x_{k + hd/2})``). The import sets

- ``shift=True``: token i's logits come from the hidden state at i - 1, as in the causal LM, so under the
  Frontier pattern with the tokens before i committed (t = 0) and token i at t = 1 the model computes
  exactly the checkpoint's ``p(x_i | x_<i)`` (C13); position 0 is meant to hold the BOS;
- time conditioning on, with its output layer at zero (shift 0, scale and gate 1), so the imported model
  *is* the checkpoint until adaptation trains the time MLP (``time_conditioning=False`` leaves it out);
- the embedding scale: AR embedding rows are small (RMS row norm ~ 0.01 sqrt(d) to sqrt(d) / 10), while
  evoflow noises latents ``z_t = alpha(t) e_x + sigma(t) eps`` with unit-variance noise. The import keeps
  the rows as stored (``embedding="learned"``) and sets ``latent_scale = sqrt(d) / rms_row_norm``: the
  forward process noises ``latent_scale * rows`` (RMS row norm sqrt(d), the norm of evoflow's own rows and
  of the noise), and the body reads ``z / latent_scale``, so that a clean token enters it exactly as in the
  checkpoint. With ``latent_scale=1.0`` (an option) the rows would be noised as stored and drowned by the
  noise at every t > ~0.01.

The model is built on the meta device, materialised once, and filled tensor by tensor from the safetensors
shards (memory: one copy of the model plus one tensor; nothing is unpickled). Keys that the checkpoint
lacks raise; keys that the model does not use are reported (and warned about, except the tied head's copy).
"""

from __future__ import annotations

import json
import math
import pathlib
import re
import warnings
from dataclasses import dataclass, field

import torch
from safetensors import SafetensorError, safe_open

from evoflow.nn.config import RopeScaling, TransformerConfig
from evoflow.nn.transformer import EvoTransformer

__all__ = ["HFImportError", "ImportReport", "from_hf", "hf_config", "import_hf"]

SUPPORTED = {"LlamaForCausalLM": "llama", "MistralForCausalLM": "mistral", "Qwen2ForCausalLM": "qwen2",
             "Qwen3ForCausalLM": "qwen3"}
_LAYER = {  # per-layer tensors: checkpoint suffix -> EvoTransformer suffix
    "self_attn.q_proj": "attn.wq", "self_attn.k_proj": "attn.wk", "self_attn.v_proj": "attn.wv",
    "self_attn.o_proj": "attn.wo", "self_attn.q_norm": "attn.q_norm", "self_attn.k_norm": "attn.k_norm",
    "mlp.gate_proj": "ffn.w1", "mlp.up_proj": "ffn.w3", "mlp.down_proj": "ffn.w2",
    "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
}
_TOP = {"model.embed_tokens.weight": "embed.weight", "model.norm.weight": "norm.weight",
        "lm_head.weight": "head.weight"}
_LAYER_KEY = re.compile(r"model\.layers\.(\d+)\.(.+)\.(weight|bias)")


class HFImportError(ValueError):
    """A checkpoint directory that cannot be imported: the message names the file and what is missing (THEORY
    section 8)."""


@dataclass
class ImportReport:
    """What :func:`import_hf` read (THEORY section 8, C13): the source, its architecture, the BOS and EOS ids from
    config.json (None if absent), the derived ``latent_scale``, the checkpoint keys not used (``unexpected``) and
    the model's parameters left at their initial value because the checkpoint does not have them
    (``initialised``: the time parts)."""

    source: str
    architecture: str
    bos_id: int | None
    eos_id: int | None
    latent_scale: float
    unexpected: list[str] = field(default_factory=list)
    initialised: list[str] = field(default_factory=list)


def _read_config(root: pathlib.Path) -> dict:
    if not root.is_dir():
        raise HFImportError(f"{root}: not a directory (from_hf needs a local checkpoint folder)")
    file = root / "config.json"
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise HFImportError(f"{root}: no config.json (not a Hugging Face checkpoint directory)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise HFImportError(f"{file}: cannot read it as JSON ({type(error).__name__})") from None


def _architecture(cfg: dict, root: pathlib.Path) -> str:
    names = cfg.get("architectures") or []
    arch = names[0] if names else next((a for a, t in SUPPORTED.items() if t == cfg.get("model_type")), None)
    if arch not in SUPPORTED:
        raise HFImportError(f"{root}: architecture {arch or cfg.get('model_type')!r} is not supported "
                            f"(supported: {', '.join(SUPPORTED)}; an import needs a Llama-style body: RMSNorm, "
                            f"rotary positions, SwiGLU, grouped-query attention)")
    unsupported = {
        "hidden_act": cfg.get("hidden_act", "silu") != "silu",
        "mlp_bias": bool(cfg.get("mlp_bias", False)),
        "use_sliding_window (per-layer windows)": bool(cfg.get("use_sliding_window", False)),
        "pretraining_tp > 1": int(cfg.get("pretraining_tp", 1)) > 1,
    }
    missing = [name for name, bad in unsupported.items() if bad]
    if missing:
        raise HFImportError(f"{root}: {arch} with {', '.join(missing)} cannot be represented (evoflow's body has "
                            f"SiLU-gated FFNs without biases and full attention)")
    return arch


def _rope(cfg: dict, root: pathlib.Path) -> tuple[float, RopeScaling | None]:
    """(theta, scaling) from ``rope_parameters`` (transformers >= 5) or ``rope_theta`` / ``rope_scaling``."""
    params = dict(cfg.get("rope_parameters") or {})
    scaling = dict(cfg.get("rope_scaling") or {})
    theta = float(params.get("rope_theta", cfg.get("rope_theta", 10000.0)))
    spec = {**scaling, **params}
    kind = spec.get("rope_type", spec.get("type", "default"))
    if kind == "default":
        return theta, None
    if kind == "linear":
        return theta, RopeScaling(kind="linear", factor=float(spec["factor"]))
    if kind == "llama3":
        return theta, RopeScaling(kind="llama3", factor=float(spec["factor"]),
                                  low_freq_factor=float(spec["low_freq_factor"]),
                                  high_freq_factor=float(spec["high_freq_factor"]),
                                  original_max_positions=int(spec["original_max_position_embeddings"]))
    raise HFImportError(f"{root}: rope scaling of type {kind!r} is not supported (supported: default, linear, llama3)")


def hf_config(path: str | pathlib.Path, latent_scale: float | None = None, time_conditioning: bool = True,
              shift: bool = True, **options) -> TransformerConfig:
    """The :class:`TransformerConfig` of the checkpoint at ``path`` (THEORY section 8): its body's shape and
    options, ``embedding="learned"``, ``d_latent = width``, ``latent_scale`` derived from the embedding when
    None (module docstring); ``options`` override other fields (``schedule``, ``time_freqs``, ``time_width``...)."""
    root = pathlib.Path(path).expanduser()
    return _config(root, _read_config(root), latent_scale, time_conditioning, shift, options)


def _config(root: pathlib.Path, cfg: dict, latent_scale: float | None, time_conditioning: bool, shift: bool,
            options: dict) -> TransformerConfig:
    """:func:`hf_config` from the parsed config.json ``cfg``; a missing field is an :class:`HFImportError`."""
    try:
        return _fields(root, cfg, latent_scale, time_conditioning, shift, options)
    except KeyError as error:
        raise HFImportError(f"{root / 'config.json'}: no {error.args[0]!r} field") from None


def _fields(root: pathlib.Path, cfg: dict, latent_scale: float | None, time_conditioning: bool, shift: bool,
            options: dict) -> TransformerConfig:
    arch = _architecture(cfg, root)
    theta, scaling = _rope(cfg, root)
    width = int(cfg["hidden_size"])
    if latent_scale is None:
        latent_scale = _embedding_scale(_shards(root), width)
    heads = int(cfg["num_attention_heads"])
    attention_bias = bool(cfg.get("attention_bias", False))
    window = cfg.get("sliding_window") if SUPPORTED[arch] == "mistral" else None
    values = dict(
        name=f"hf:{root.name}", vocab=int(cfg["vocab_size"]), width=width, layers=int(cfg["num_hidden_layers"]),
        heads=heads, kv_heads=int(cfg.get("num_key_value_heads") or heads), ffn=int(cfg["intermediate_size"]),
        head_dim=int(cfg.get("head_dim") or width // heads), d_latent=width, rope_theta=theta,
        norm_eps=float(cfg.get("rms_norm_eps", 1e-6)), rope_scaling=scaling,
        qkv_bias=attention_bias or SUPPORTED[arch] == "qwen2", out_bias=attention_bias,
        qk_norm=SUPPORTED[arch] == "qwen3", tie_head=bool(cfg.get("tie_word_embeddings", False)),
        sliding_window=None if window is None else int(window), embedding="learned", latent_scale=latent_scale,
        shift=shift, time_conditioning=time_conditioning, time_freqs=256, time_width=max(64, width // 4),
    )
    return TransformerConfig(**{**values, **options})


def _shards(root: pathlib.Path) -> list[pathlib.Path]:
    index = root / "model.safetensors.index.json"
    if index.is_file():
        try:
            files = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        except (OSError, ValueError, KeyError, AttributeError) as error:
            raise HFImportError(f"{index}: not a safetensors index ({type(error).__name__})") from None
        shards = [root / f for f in files]
    else:
        shards = [root / "model.safetensors"]
    absent = [s.name for s in shards if not s.is_file()]
    if absent:
        bins = sorted(p.name for p in root.glob("*.bin"))
        hint = f" (found {', '.join(bins)}: pickled weights are never loaded; convert them to safetensors)" if bins \
            else ""
        raise HFImportError(f"{root}: missing weight file(s) {', '.join(absent)}{hint}")
    return shards


def _target(key: str) -> str | None:
    """The EvoTransformer parameter a checkpoint key fills, or None."""
    if key in _TOP:
        return _TOP[key]
    m = _LAYER_KEY.fullmatch(key)
    if m and m.group(2) in _LAYER:
        return f"blocks.{m.group(1)}.{_LAYER[m.group(2)]}.{m.group(3)}"
    return None


def _embedding_scale(shards: list[pathlib.Path], width: int) -> float:
    """``sqrt(d) / sqrt(mean_v ||row_v||^2)`` of the checkpoint's input embedding (read once, summed in float64)."""
    for shard in shards:
        with _open(shard) as f:
            if "model.embed_tokens.weight" in f.keys():  # noqa: SIM118 (safe_open has no __contains__)
                rows = _get(f, "model.embed_tokens.weight", shard)
                squares = sum(float(c.to(torch.float64).pow(2).sum()) for c in rows.split(4096))  # no float64 copy
                rms = math.sqrt(squares / rows.shape[0])
                if not math.isfinite(rms) or rms <= 0:
                    raise HFImportError(f"{shard}: the input embedding has RMS row norm {rms}")
                return math.sqrt(width) / rms
    raise HFImportError(f"{shards[0].parent}: no model.embed_tokens.weight in the weight files")


def _open(shard: pathlib.Path):
    try:
        return safe_open(str(shard), framework="pt", device="cpu")
    except (SafetensorError, OSError, ValueError) as error:
        raise HFImportError(f"{shard}: not a readable safetensors file ({str(error)[:120]})") from None


def _get(f, key: str, shard: pathlib.Path) -> torch.Tensor:
    try:
        return f.get_tensor(key)
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise HFImportError(f"{shard}: tensor {key} cannot be read, the file may be truncated "
                            f"({str(error)[:120]})") from None


@torch.no_grad()
def _fill(model: EvoTransformer, shards: list[pathlib.Path]) -> tuple[set[str], list[str]]:
    """Copy every tensor of ``shards`` into its parameter; returns (filled names, unexpected keys)."""
    params = dict(model.named_parameters())
    filled, unexpected = set(), []
    for shard in shards:
        with _open(shard) as f:
            for key in f.keys():  # noqa: SIM118 (safe_open is not iterable)
                name = _target(key)
                if name == "head.weight" and model.config.tie_head:
                    continue  # a tied checkpoint may store the head's copy of the embedding
                if name not in params:
                    unexpected.append(key)
                    continue
                tensor = _get(f, key, shard)
                if tuple(tensor.shape) != tuple(params[name].shape):
                    raise HFImportError(f"{shard}: {key} has shape {tuple(tensor.shape)} but config.json implies "
                                        f"{tuple(params[name].shape)}")
                params[name].copy_(tensor)
                filled.add(name)
    return filled, unexpected


def _is_time_part(name: str) -> bool:
    return name.startswith(("time.", "time_head.")) or name.endswith(("time_shift", "time_gate"))


def import_hf(path: str | pathlib.Path, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu",
              latent_scale: float | None = None, time_conditioning: bool = True, shift: bool = True,
              **options) -> tuple[EvoTransformer, ImportReport]:
    """An :class:`EvoTransformer` holding the checkpoint at ``path``, and the :class:`ImportReport` (C12, C13).

    ``latent_scale`` None derives it from the embedding (module docstring); ``options`` are config fields
    (``schedule``, ``time_width``...). Raises :class:`HFImportError` (a ``ValueError``) naming the file for a
    directory without config.json, an unsupported architecture, a missing or truncated weight file, a tensor
    whose shape contradicts config.json, or a model parameter the checkpoint lacks.
    """
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating torch.dtype, got {dtype!r}")
    root = pathlib.Path(path).expanduser()
    cfg_json = _read_config(root)
    config = _config(root, cfg_json, latent_scale, time_conditioning, shift, options)
    shards = _shards(root)
    with torch.device("meta"):
        model = EvoTransformer(config).to(dtype)  # the dtype first, so that materialising allocates one copy
    model = model.to_empty(device=device)
    filled, unexpected = _fill(model, shards)
    names = [n for n, _ in model.named_parameters()]
    missing = [n for n in names if n not in filled and not _is_time_part(n)]
    if missing:
        raise HFImportError(f"{root}: the weight files lack {len(missing)} tensor(s) the model needs: "
                            f"{', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''}")
    initialised = [n for n in names if n not in filled]
    model.init_weights(torch.Generator(device="cpu").manual_seed(0) if str(device) == "cpu" else None,
                       names=initialised)
    if unexpected:
        warnings.warn(f"{root}: {len(unexpected)} checkpoint tensor(s) not used: {', '.join(unexpected[:8])}",
                      stacklevel=2)
    report = ImportReport(source=str(root), architecture=_architecture(cfg_json, root),
                          bos_id=_token_id(cfg_json, "bos_token_id"), eos_id=_token_id(cfg_json, "eos_token_id"),
                          latent_scale=config.latent_scale, unexpected=unexpected, initialised=initialised)
    return model.eval(), report


def _token_id(cfg: dict, key: str) -> int | None:
    value = cfg.get(key)
    value = value[0] if isinstance(value, list) and value else value
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def from_hf(path: str | pathlib.Path, **options) -> EvoTransformer:
    """``import_hf(path, **options)[0]``: the checkpoint at ``path`` as an :class:`EvoTransformer` (C12, C13)."""
    return import_hf(path, **options)[0]
