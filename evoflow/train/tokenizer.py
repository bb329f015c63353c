"""Tokenizers of the training data: a byte-level BPE trained offline, or a local tokenizer.json (THEORY section 8).

    tok = train_tokenizer(load_corpus("pydoc"), 2048, cache_dir="runs/cache")   # cached by corpus hash
    tok = load_tokenizer("path/to/tokenizer.json")                              # e.g. a Llama-3 vocabulary

Every tokenizer has an end-of-document id (``<|endoftext|>`` unless the file declares its own), and is
stored as JSON only.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from evoflow.arguments import as_int
from evoflow.train.corpus import Corpus, DataError

__all__ = ["TextTokenizer", "load_tokenizer", "train_tokenizer"]

EOS = "<|endoftext|>"
_SPECIALS = (EOS,)
_DECLARED_EOS = ("<|end_of_text|>", "</s>", "<eos>", "<|eos|>")  # conventional names, tried after tokenizer_config


class TextTokenizer:
    """Text to token ids and back, with an end-of-document id ``eos_id`` (THEORY section 8: the model's vocabulary).

    Wraps a ``tokenizers.Tokenizer``. Without ``eos_id``, the special token ``<|endoftext|>`` is used,
    added to the vocabulary if absent. ``encode`` adds no BOS/EOS; ``decode`` keeps special tokens, so
    ``decode(encode(text)) == text`` for the byte-level BPE of :func:`train_tokenizer`. ``vocab_size``
    is the largest id plus one (the embedding rows a model needs); ``sha256`` is that of :meth:`to_json`.
    """

    def __init__(self, tokenizer: Tokenizer, eos_id: int | None = None):
        if eos_id is None:
            if tokenizer.token_to_id(EOS) is None:
                tokenizer.add_special_tokens([EOS])
            eos_id = tokenizer.token_to_id(EOS)
        self._tokenizer = tokenizer
        self._json = tokenizer.to_str()
        self.sha256 = hashlib.sha256(self._json.encode("utf-8")).hexdigest()
        self.vocab_size = max(tokenizer.get_vocab(with_added_tokens=True).values()) + 1
        self.eos_id = as_int(eos_id, "eos_id", 0, self.vocab_size - 1)

    def encode(self, text: str) -> list[int]:
        return self._tokenizer.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Iterable[str]) -> list[list[int]]:
        return [e.ids for e in self._tokenizer.encode_batch_fast(list(texts), add_special_tokens=False)]

    def decode(self, ids: Iterable[int] | torch.Tensor) -> str:
        ids = ids.tolist() if isinstance(ids, torch.Tensor) else [int(i) for i in ids]
        return self._tokenizer.decode(ids, skip_special_tokens=False)

    def to_json(self) -> str:
        return self._json

    @classmethod
    def from_json(cls, text: str, eos_id: int | None = None) -> TextTokenizer:
        return cls(Tokenizer.from_str(text), eos_id)

    def __repr__(self) -> str:
        return f"TextTokenizer(vocab_size={self.vocab_size}, eos_id={self.eos_id}, sha256={self.sha256[:12]})"


def _train_bpe(documents: Sequence[str], vocab_size: int) -> Tokenizer:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(_SPECIALS), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(documents, trainer, length=len(documents))
    return tokenizer


def _atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    write(partial)
    os.replace(partial, path)


def train_tokenizer(corpus: Corpus, vocab_size: int, cache_dir: str | Path | None = None) -> TextTokenizer:
    """A deterministic byte-level BPE of ``vocab_size`` tokens trained offline on ``corpus`` (THEORY section 8).

    Id 0 is ``<|endoftext|>``, then the 256 byte symbols, then merges (fewer when the corpus runs out of
    pairs). With ``cache_dir`` the JSON is kept as ``tokenizer-<corpus sha256[:16]>-<vocab_size>.json`` and
    reused when it parses and has the EOS token (else it is retrained and rewritten).
    """
    vocab_size = as_int(vocab_size, "vocab_size")
    if vocab_size < 256 + len(_SPECIALS):
        raise ValueError(f"vocab_size must be >= {256 + len(_SPECIALS)} (256 bytes + {len(_SPECIALS)} special "
                         f"tokens), got {vocab_size}")
    name = f"tokenizer-{corpus.identity['sha256'][:16]}-{vocab_size}.json"
    cache = None if cache_dir is None else Path(cache_dir) / name
    if cache is not None and cache.is_file():
        try:
            tokenizer = Tokenizer.from_str(cache.read_text(encoding="utf-8"))
            if tokenizer.token_to_id(EOS) is not None:
                return TextTokenizer(tokenizer)
        except Exception:  # a damaged cache is rebuilt, never trusted
            pass
    result = TextTokenizer(_train_bpe(corpus.documents, vocab_size))
    if cache is not None:
        _atomic_write(cache, lambda p: p.write_text(result.to_json(), encoding="utf-8"))
    return result


def _declared_eos(tokenizer: Tokenizer, config: Path) -> int | None:
    names = list(_DECLARED_EOS)
    try:
        declared = json.loads(config.read_text(encoding="utf-8")).get("eos_token")
        declared = declared.get("content") if isinstance(declared, dict) else declared
        if isinstance(declared, str):
            names.insert(0, declared)
    except (OSError, ValueError, AttributeError):
        pass
    return next((i for name in names if (i := tokenizer.token_to_id(name)) is not None), None)


def load_tokenizer(path: str | Path, max_vocab: int | None = None) -> TextTokenizer:
    """A local ``tokenizer.json`` (or a folder holding one), e.g. a Llama-3 vocabulary (THEORY section 8, C13).

    Its EOS is ``<|endoftext|>``, added if absent unless that would make ``vocab_size`` exceed
    ``max_vocab`` (the embedding rows of a checkpoint to match); else its own declared EOS
    (``eos_token`` of a ``tokenizer_config.json`` beside it, or a conventional name such as
    ``<|end_of_text|>`` or ``</s>``). A missing or unparsable file raises :class:`DataError` naming it.
    """
    file = Path(path).expanduser()
    file = file / "tokenizer.json" if file.is_dir() else file
    try:
        tokenizer = Tokenizer.from_str(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"{file}: cannot read a tokenizer ({type(error).__name__})") from None
    except Exception as error:  # tokenizers raises a bare Exception for malformed JSON
        raise DataError(f"{file}: not a tokenizer.json ({str(error).splitlines()[0][:120]})") from None
    max_vocab = None if max_vocab is None else as_int(max_vocab, "max_vocab", minimum=1)
    eos_id = tokenizer.token_to_id(EOS)
    size = max(tokenizer.get_vocab(with_added_tokens=True).values(), default=-1) + 1
    if eos_id is None and (max_vocab is not None and size >= max_vocab):
        eos_id = _declared_eos(tokenizer, file.parent / "tokenizer_config.json")
        if eos_id is None:
            raise DataError(f"{file}: no {EOS} token, no room to add one (max_vocab={max_vocab}), no declared EOS")
    return TextTokenizer(tokenizer, eos_id)
