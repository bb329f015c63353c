"""evoflow.nn.from_hf against transformers on tiny random checkpoints written in the test (C12, C13).

The reference is transformers' own forward: ``log_softmax(logits[:, i - 1])[x_i]`` of the causal LM, summed over
the tokens after the BOS, against evoflow's exact AR-path likelihood of the imported model with the BOS as a
one-token prompt. Weights are perturbed off their initial values first (norm weights of 1 and zero biases would
hide a wrong mapping of those tensors).
"""

import json
import math

import pytest
import torch
from safetensors.torch import load_file, save_file

import evoflow as ef
from evoflow.nn import CachedDenoiser, HFImportError, from_hf, hf_config, import_hf

transformers = pytest.importorskip("transformers")

VOCAB = 96
BODY = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=256, bos_token_id=1, eos_token_id=2)
LLAMA3_ROPE = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 16}
FAMILIES = {
    "llama": ("LlamaConfig", "LlamaForCausalLM", {}),
    "llama3-rope": ("LlamaConfig", "LlamaForCausalLM", dict(rope_scaling=LLAMA3_ROPE, rope_theta=500000.0)),
    "llama-tied": ("LlamaConfig", "LlamaForCausalLM", dict(tie_word_embeddings=True)),
    "llama-bias": ("LlamaConfig", "LlamaForCausalLM", dict(attention_bias=True)),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", {}),
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", dict(head_dim=16)),
    "mistral": ("MistralConfig", "MistralForCausalLM", dict(sliding_window=128)),
}


def _reference(name: str):
    config_cls, model_cls, extra = FAMILIES[name]
    torch.manual_seed(sorted(FAMILIES).index(name))
    model = getattr(transformers, model_cls)(getattr(transformers, config_cls)(**BODY, **extra)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """name -> (directory, the transformers model saved there)."""
    out = {}
    for name in FAMILIES:
        folder = tmp_path_factory.mktemp(name)
        model = _reference(name)
        model.save_pretrained(folder)
        out[name] = (folder, model)
    return out


def _tokens(batch=3, length=40, seed=0):
    x = torch.randint(3, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))
    x[:, 0] = 1  # the BOS
    return x


def _hf_log_likelihood(model, x):
    with torch.no_grad():
        logp = torch.log_softmax(model(x).logits.double(), -1)
    return logp[:, :-1].gather(-1, x[:, 1:, None]).squeeze(-1).sum(-1)


@pytest.mark.parametrize("name", list(FAMILIES))
def test_ar_log_likelihood_equals_transformers(checkpoints, name):
    folder, reference = checkpoints[name]
    model = from_hf(folder)
    x = _tokens()
    ours = ef.ar_log_likelihood(model, x, prompt_length=1)
    theirs = _hf_log_likelihood(reference, x)
    assert torch.allclose(ours, theirs, rtol=1e-4, atol=0), (ours, theirs)
    with torch.no_grad():  # token by token too (a sum could hide errors that cancel)
        per_token = torch.log_softmax(reference(x).logits.double(), -1)[:, :-1].gather(-1, x[:, 1:, None])[..., 0]
    assert torch.allclose(ef.ar_conditionals(model, x)[:, 1:], per_token, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(("name", "override"), [
    ("llama3-rope", dict(rope_scaling=None)),  # the llama3 rule matters at these lengths
    ("llama", dict(shift=False)),  # without the shift position i reads its own (t = 1) state
    ("qwen2", dict(qkv_bias=False)),  # the q, k, v biases are used
])
def test_each_option_is_needed(checkpoints, name, override):
    """The parity above is not an accident: dropping any one mapped option breaks it."""
    folder, reference = checkpoints[name]
    model = from_hf(folder)
    cfg = hf_config(folder, latent_scale=model.config.latent_scale, **override)
    wrong = ef.nn.EvoTransformer(cfg)
    missing, _ = wrong.load_state_dict(model.state_dict(), strict=False)
    assert all(k.endswith("bias") for k in missing) or not missing
    x = _tokens(seed=2)
    gap = (ef.ar_log_likelihood(wrong.eval(), x, prompt_length=1) - _hf_log_likelihood(reference, x)).abs().max()
    assert gap > 1e-3


def test_greedy_generation_equals_transformers_generate(checkpoints):
    folder, reference = checkpoints["llama3-rope"]
    model = from_hf(folder)
    prompt = torch.tensor([[1, 5, 7, 9], [1, 3, 3, 4]])
    with torch.no_grad():
        theirs = reference.generate(prompt, do_sample=False, max_new_tokens=36, min_new_tokens=36, pad_token_id=0)
    for denoiser in (model, CachedDenoiser(model)):
        ours = ef.generate(denoiser, 40, ef.Staircase(1), batch=2, prompt=prompt, temperature=0)
        assert torch.equal(ours.tokens, theirs)


def test_import_report_and_latent_scale(checkpoints):
    folder, reference = checkpoints["llama-tied"]
    model, report = import_hf(folder)
    rows = reference.model.embed_tokens.weight.detach().double()
    expected = math.sqrt(rows.shape[1]) / float(rows.pow(2).sum(1).mean().sqrt())
    assert report.latent_scale == pytest.approx(expected, rel=1e-6)
    E = model.embeddings.double()  # the table the forward process noises: RMS row norm sqrt(d)
    assert float(E.pow(2).sum(1).mean().sqrt()) == pytest.approx(math.sqrt(rows.shape[1]), rel=1e-5)
    assert model.head is None and report.bos_id == 1 and report.eos_id == 2 and report.unexpected == []
    assert report.initialised and all(n.startswith("time") or "time_" in n for n in report.initialised)
    assert model.config.shift and model.config.embedding == "learned"


def test_the_time_modulation_starts_at_zero(checkpoints):
    """Time conditioning is on but starts at zero: a committed prefix's logits do not depend on the other times."""
    folder, _ = checkpoints["llama"]
    model = from_hf(folder)
    x = _tokens(batch=1, length=12)
    z = model.embeddings[x].detach()
    tau = torch.zeros(1, 12, dtype=torch.float64)
    tau2 = tau.clone()
    tau2[:, 8:] = 0.3
    a, b = model(z, tau).logits[:, :8], model(z, tau2).logits[:, :8]
    assert torch.allclose(a, b, atol=1e-6)
    assert model.time.fc2.weight.abs().max() == 0


def test_sharded_checkpoint(tmp_path):
    reference = _reference("llama")
    reference.save_pretrained(tmp_path, max_shard_size="20KB")
    assert (tmp_path / "model.safetensors.index.json").is_file()
    x = _tokens(seed=3)
    ours = ef.ar_log_likelihood(from_hf(tmp_path), x, prompt_length=1)
    assert torch.allclose(ours, _hf_log_likelihood(reference, x), rtol=1e-4, atol=0)


def test_sliding_window_is_refused_beyond_its_length(checkpoints, tmp_path):
    folder, _ = checkpoints["mistral"]
    model = from_hf(folder)
    assert model.config.sliding_window == 128
    with pytest.raises(ValueError, match="sliding_window"):
        ef.ar_log_likelihood(model, torch.ones(1, 129, dtype=torch.long))


def test_tokenizer_loads_through_the_data_module(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers

    from evoflow.train.data import load_tokenizer

    vocab = {"<|endoftext|>": 0, "<s>": 1, "hello": 2, "world": 3, "[UNK]": 4}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="<|endoftext|>")
    fast.save_pretrained(tmp_path)
    loaded = load_tokenizer(tmp_path)
    assert loaded.encode("hello world hello") == [2, 3, 2] == fast.encode("hello world hello",
                                                                         add_special_tokens=False)
    assert loaded.eos_id == 0


# ---- bad input: one clear error each ------------------------------------------------------------------------


def _copy(checkpoints, name, tmp_path):
    folder, _ = checkpoints[name]
    for f in folder.iterdir():
        (tmp_path / f.name).write_bytes(f.read_bytes())
    return tmp_path


def test_a_directory_without_config_json(tmp_path):
    with pytest.raises(HFImportError, match=r"no config\.json"):
        from_hf(tmp_path)
    with pytest.raises(HFImportError, match="not a directory"):
        from_hf(tmp_path / "absent")


@pytest.mark.parametrize(("edit", "match"), [
    (dict(architectures=["GPT2LMHeadModel"], model_type="gpt2"), "'GPT2LMHeadModel' is not supported"),
    (dict(hidden_act="gelu"), "hidden_act"),
    (dict(rope_parameters={"rope_type": "yarn", "factor": 4.0, "rope_theta": 1e4}), "'yarn' is not supported"),
    (dict(hidden_size=None), r"config\.json: no 'hidden_size' field"),
    (dict(intermediate_size=48), r"mlp\.\w+_proj\.weight has shape \(\d+, \d+\) but config.json implies"),
])
def test_unsupported_or_inconsistent_configs(checkpoints, tmp_path, edit, match):
    folder = _copy(checkpoints, "llama", tmp_path)
    cfg = json.loads((folder / "config.json").read_text())
    edited = {k: v for k, v in {**cfg, **edit}.items() if v is not None}  # None: the field is removed
    (folder / "config.json").write_text(json.dumps(edited))
    with pytest.raises(HFImportError, match=match):
        from_hf(folder)


def test_a_truncated_safetensors_file(checkpoints, tmp_path):
    folder = _copy(checkpoints, "llama", tmp_path)
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(HFImportError, match=r"model\.safetensors"):
        from_hf(folder)


def test_missing_and_unexpected_tensors(checkpoints, tmp_path):
    folder = _copy(checkpoints, "llama", tmp_path)
    tensors = load_file(folder / "model.safetensors")
    extra = {**tensors, "model.layers.0.mlp.extra.weight": torch.zeros(2)}
    save_file(extra, folder / "model.safetensors")
    with pytest.warns(UserWarning, match="model.layers.0.mlp.extra.weight"):
        _, report = import_hf(folder)
    assert report.unexpected == ["model.layers.0.mlp.extra.weight"]
    del tensors["model.layers.1.self_attn.k_proj.weight"]
    save_file(tensors, folder / "model.safetensors")
    with pytest.raises(HFImportError, match=r"lack 1 tensor\(s\).*blocks.1.attn.wk.weight"):
        from_hf(folder)


def test_pickled_weights_are_not_loaded(checkpoints, tmp_path):
    folder = _copy(checkpoints, "llama", tmp_path)
    (folder / "model.safetensors").rename(folder / "pytorch_model.bin")
    with pytest.raises(HFImportError, match="pickled weights are never loaded"):
        from_hf(folder)
