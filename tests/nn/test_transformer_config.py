"""The size table (evoflow.nn.config) and parameter counts on the meta device (THEORY section 8, C12)."""

import re

import pytest
import torch

import evoflow.nn.config as config_module
from evoflow.nn import EvoTransformer, TransformerConfig, config_names, get_config

# Published Llama-3-8B shape (Meta's model card / params.json), written out independently of the table.
LLAMA3_8B = dict(layers=32, width=4096, heads=32, kv_heads=8, ffn=14336, vocab=128256, rope_theta=500000.0)


def llama_parameter_count(layers, width, heads, kv_heads, ffn, vocab):
    """Closed form of a Llama-3 model's parameters: untied embedding and head, GQA, SwiGLU, RMSNorm."""
    head_dim = width // heads
    attention = 2 * width * heads * head_dim + 2 * width * kv_heads * head_dim  # wq, wo, wk, wv
    mlp = 3 * width * ffn
    norms = 2 * width
    return 2 * vocab * width + layers * (attention + mlp + norms) + width  # + final norm


def meta_model(name, **overrides):
    with torch.device("meta"):
        return EvoTransformer(get_config(name, **overrides))


def test_names_are_the_table():
    assert config_names() == ["tiny", "demo", "small", "150m", "1b", "8b"]


def test_8b_row_is_the_llama3_8b_shape():
    cfg = get_config("8b")
    for field, value in LLAMA3_8B.items():
        assert getattr(cfg, field) == value, field
    assert cfg.d_latent == cfg.width and cfg.time_conditioning


def test_8b_llama_part_is_8e9_and_matches_the_closed_form():
    counts = meta_model("8b").parameter_counts()
    expected = llama_parameter_count(**{k: v for k, v in LLAMA3_8B.items() if k != "rope_theta"})
    assert counts["transformer"] == expected
    assert abs(counts["transformer"] - 8.0e9) <= 0.01 * 8.0e9
    assert counts["latent"] == 0  # d_latent = width: the latent space is the token-embedding space


def test_time_conditioning_extras_match_their_closed_form():
    cfg = get_config("8b")
    counts = meta_model("8b").parameter_counts()
    mlp = cfg.time_freqs * cfg.time_width + cfg.time_width + cfg.time_width * 6 * cfg.width + 6 * cfg.width
    assert counts["time"] == mlp + cfg.layers * 4 * cfg.width  # shift and gate offsets (scale offsets: the norms)
    extra = meta_model("8b", time_input=True).parameter_counts()["time"] - counts["time"]
    assert extra == cfg.time_freqs * cfg.width + cfg.width  # the additive time input W_t sinusoid(t)
    assert counts["time_head"] == cfg.width + 1
    off = meta_model("8b", time_conditioning=False).parameter_counts()
    assert off["time"] == 0 and off["transformer"] == counts["transformer"]


def test_docstring_table_matches_the_models():
    """The exact totals written in config.py's docstring are the counts of the models built from the table."""
    rows = re.findall(r"^\s+(\S+)\s+([\d,]+)\s+([\d,]+)\s+([\d,]+)\s+([\d,]+)\s+([\d,]+)$",
                      config_module.__doc__, flags=re.M)
    assert [r[0] for r in rows] == config_names()
    for name, *numbers in rows:
        total, transformer, time, latent, head = (int(n.replace(",", "")) for n in numbers)
        counts = meta_model(name).parameter_counts()
        assert (transformer, time, latent, head) == (counts["transformer"], counts["time"], counts["latent"],
                                                     counts["time_head"]), name
        assert total == sum(counts.values()), name


def test_sizes_are_as_named():
    total = {name: sum(meta_model(name).parameter_counts().values()) for name in config_names()}
    assert total["tiny"] < 1_000_000
    assert 17e6 <= total["small"] <= 23e6
    assert 130e6 <= total["150m"] <= 170e6
    assert 0.9e9 <= total["1b"] <= 1.3e9


def test_overrides_by_name():
    cfg = get_config("small", vocab=27, time_conditioning=False, schedule="cosine")
    assert (cfg.vocab, cfg.time_conditioning, cfg.schedule, cfg.name) == (27, False, "cosine", "small")
    assert cfg.width == get_config("small").width
    assert get_config("tiny", d_latent=None).d_latent == get_config("tiny").width


def test_unknown_name_lists_the_available_ones():
    with pytest.raises(ValueError, match=r"unknown config name 'huge'.*tiny, demo, small, 150m, 1b, 8b"):
        get_config("huge")


def test_unknown_field_is_named():
    with pytest.raises(TypeError, match="n_layers"):
        get_config("tiny", n_layers=3)


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (dict(heads=5), r"heads \(5\) must divide width \(64\)"),
        (dict(kv_heads=3), r"kv_heads \(3\) must divide heads \(4\)"),
        (dict(width=60, heads=4, kv_heads=2), "must be even for rotary"),
        (dict(layers=0), "layers must be a positive integer"),
        (dict(vocab=2.5), "vocab must be a positive integer"),
        (dict(d_latent=-1), "d_latent must be a positive integer"),
        (dict(time_freqs=33), "time_freqs must be even"),
        (dict(rope_theta=0.0), "rope_theta, norm_eps and latent_scale must be positive"),
        (dict(latent_scale=-1.0), "rope_theta, norm_eps and latent_scale must be positive"),
        (dict(head_dim=7), "head_dim = 7 must be even"),
        (dict(sliding_window=0), "sliding_window must be None or a positive integer"),
        (dict(tie_head=True), "tie_head needs d_latent = width"),
        (dict(rope_scaling=dict(kind="yarn")), "rope_scaling kind must be llama3 or linear"),
        (dict(rope_scaling=dict(low_freq_factor=4.0, high_freq_factor=1.0)), "0 < low_freq_factor < high_freq"),
        (dict(schedule="quadratic"), "unknown schedule name 'quadratic'"),
    ],
)
def test_impossible_combinations_are_rejected(overrides, match):
    with pytest.raises(ValueError, match=match):
        get_config("tiny", **overrides)


def test_model_needs_a_config():
    with pytest.raises(TypeError, match="config must be a TransformerConfig"):
        EvoTransformer("tiny")
    assert isinstance(get_config("tiny"), TransformerConfig)
