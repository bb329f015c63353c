"""Tiny checkpoints for the lm-evaluation-harness adapter, written in the test session (nothing is downloaded).

- ``hf_dir``: a random Llama (2 layers, width 32) saved by ``save_pretrained``, with a byte-level BPE built by the
  ``tokenizers`` library (BOS ``<s>`` added to every encoding, EOS ``</s>``) wrapped in ``PreTrainedTokenizerFast``.
- ``run_dir``: an ``evoflow train`` run directory (the ``tiny`` model, a 300-token BPE, 4 steps on a small text).
- ``TASKS``: the local lm-eval tasks (tests/data/lm_eval), for ``TaskManager(include_path=TASKS)``.
"""

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

TASKS = Path(__file__).resolve().parents[1] / "data" / "lm_eval"
WORDS = ["the", "cat", "sat", "on", "a", "mat", "dog", "ran", "to", "big", "red", "blue", "house", "tree", "sun",
         "moon", "and", "is", "was", "hot", "cold", "bright", "sky", "tall"]


def corpus(n: int = 300, seed: int = 0) -> list[str]:
    """``n`` sentences of 12 words drawn from ``WORDS`` (the vocabulary of the local tasks), seeded."""
    g = torch.Generator().manual_seed(seed)
    picks = torch.randint(len(WORDS), (n, 12), generator=g).tolist()
    return [" ".join(WORDS[i] for i in row).capitalize() + "." for row in picks]


def _tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=["<s>", "</s>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus(), trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                       special_tokens=[("<s>", tok.token_to_id("<s>"))])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>")


@pytest.fixture(scope="session")
def hf_dir(tmp_path_factory) -> Path:
    """A tiny random Llama and its tokenizer, as ``save_pretrained`` writes them (float32 safetensors)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    out = tmp_path_factory.mktemp("tiny-llama")
    tok = _tokenizer()
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, initializer_range=0.2)
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory) -> Path:
    """A run directory of ``evoflow train``: the tiny model trained 4 steps on ``corpus()`` (sequences of 32)."""
    from evoflow.train.config import TrainConfig
    from evoflow.train.loop import train

    root = tmp_path_factory.mktemp("runs")
    text = root / "corpus.txt"
    text.write_text("\n".join(corpus()), encoding="utf-8")
    cfg = TrainConfig(size="tiny", data=str(text), vocab=300, seq=32, batch=4, steps=4, warmup=0, eval_every=4,
                      checkpoint_every=4, eval_rows=2)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(cfg, root / "run", progress=False, log=lambda *a, **k: None)
    finally:
        torch.set_num_threads(threads)
    return root / "run"
