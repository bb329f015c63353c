"""Training data for the learned model: corpora, byte-level BPE, packed splits, a resumable loader (THEORY section 8).

    corpus = load_corpus("pydoc")                        # or "stdlib", "docstrings", a file, a folder, a .jsonl
    tok = train_tokenizer(corpus, 2048, cache_dir="runs/cache")
    data = prepare(corpus, tok, seq_len=128, cache_dir="runs/cache")   # data.train (N, 128) int64
    for x in Loader(data.train, batch=32, seed=0):      # infinite, exactly resumable (state_dict)
        ...

Everything is offline and deterministic: a corpus, its tokenizer, its split and its batch order are
functions of the inputs and seeds alone, and each carries an ``identity`` dict naming them. Caches
hold JSON (tokenizers) and safetensors (token streams) only, never pickles.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from evoflow.arguments import as_float, as_int
from evoflow.train.corpus import Corpus, DataError, load_corpus
from evoflow.train.tokenizer import TextTokenizer, _atomic_write, load_tokenizer, train_tokenizer

__all__ = ["Corpus", "DataError", "Loader", "TextTokenizer", "TokenData", "load_corpus", "load_tokenizer", "prepare",
           "train_tokenizer"]

_ENCODE_CHUNK = 64  # documents per encode_batch call: bounds the memory of the Encoding objects


@dataclass
class TokenData:
    """Packed ``train`` / ``valid`` rows (N, seq_len) int64 for training the learned model (THEORY section 8, C13).

    ``identity``: the corpus identity plus ``tokenizer_sha256``, ``vocab_size``, ``eos_id``, ``seq_len``,
    ``valid_fraction``, ``split_seed``, ``{train,valid}_documents`` and ``{train,valid}_tokens`` (the token
    streams before cutting into rows).
    """

    train: torch.Tensor
    valid: torch.Tensor
    tokenizer: TextTokenizer
    identity: dict


def _stream(tokenizer: TextTokenizer, documents: Sequence[str]) -> torch.Tensor:
    pieces = [torch.zeros(0, dtype=torch.int64)]
    for start in range(0, len(documents), _ENCODE_CHUNK):
        for ids in tokenizer.encode_batch(documents[start:start + _ENCODE_CHUNK]):
            pieces.append(torch.tensor([*ids, tokenizer.eos_id], dtype=torch.int64))
    return torch.cat(pieces)


def _split(corpus: Corpus, tokenizer: TextTokenizer, valid_fraction: float, seed: int):
    """(train stream, valid stream, train documents, valid documents): by document, or by tokens for one document."""
    documents = corpus.documents
    if len(documents) == 1:
        stream = _stream(tokenizer, documents)
        cut = len(stream) - round(valid_fraction * len(stream))
        return stream[:cut], stream[cut:], 1, 1
    order = torch.randperm(len(documents), generator=torch.Generator().manual_seed(seed)).tolist()
    n_valid = max(1, round(valid_fraction * len(documents)))
    sides = [sorted(order[n_valid:]), sorted(order[:n_valid])]  # each side in corpus order
    train, valid = (_stream(tokenizer, [documents[i] for i in side]) for side in sides)
    return train, valid, len(sides[0]), len(sides[1])


def _cached_split(corpus, tokenizer, valid_fraction, seed, cache_dir):
    if cache_dir is None:
        return _split(corpus, tokenizer, valid_fraction, seed)
    key = {"corpus_sha256": corpus.identity["sha256"], "tokenizer_sha256": tokenizer.sha256, "seed": str(seed),
           "valid_fraction": repr(valid_fraction)}
    path = Path(cache_dir) / (f"tokens-{key['corpus_sha256'][:16]}-{tokenizer.sha256[:16]}-seed{seed}"
                              f"-valid{valid_fraction!r}.safetensors")
    try:
        with safe_open(str(path), framework="pt") as cached:
            meta = cached.metadata()
            if {k: meta.get(k) for k in key} == key:
                return (cached.get_tensor("train").long(), cached.get_tensor("valid").long(),
                        int(meta["train_documents"]), int(meta["valid_documents"]))
    except Exception:  # absent or damaged: rebuilt below
        pass
    train, valid, n_train, n_valid = _split(corpus, tokenizer, valid_fraction, seed)
    small = torch.int32 if tokenizer.vocab_size < 2**31 else torch.int64
    meta = key | {"train_documents": str(n_train), "valid_documents": str(n_valid)}
    _atomic_write(path, lambda p: save_file({"train": train.to(small), "valid": valid.to(small)}, str(p), meta))
    return train, valid, n_train, n_valid


def prepare(corpus: Corpus, tokenizer: TextTokenizer, seq_len: int, valid_fraction: float = 0.05, seed: int = 0,
            cache_dir: str | Path | None = None) -> TokenData:
    """Split ``corpus`` by document, tokenize and pack it into rows of ``seq_len`` tokens (THEORY section 8, C13).

    A seeded permutation of the documents (``torch.Generator().manual_seed(seed)``) sends its first
    ``max(1, round(valid_fraction * n))`` documents to ``valid`` (one document: the last ``valid_fraction``
    of its tokens). Each side's documents, in corpus order, each followed by ``eos_id``, are concatenated
    and cut into non-overlapping rows (the remainder dropped). With ``cache_dir`` the token streams are
    kept as safetensors keyed by corpus, tokenizer, seed and valid_fraction. A side shorter than one row
    raises :class:`DataError`.
    """
    seq_len = as_int(seq_len, "seq_len", minimum=1)
    valid_fraction = as_float(valid_fraction, "valid_fraction", 0.0, 1.0, low_open=True, high_open=True)
    seed = as_int(seed, "seed")
    train, valid, n_train, n_valid = _cached_split(corpus, tokenizer, valid_fraction, seed, cache_dir)
    for side, stream in (("train", train), ("valid", valid)):
        if len(stream) < seq_len:
            raise DataError(f"{corpus.identity.get('path', corpus.name)}: the {side} split has {len(stream)} tokens, "
                            f"fewer than the {seq_len} of one sequence (seq_len={seq_len}, valid_fraction="
                            f"{valid_fraction}, {len(corpus.documents)} documents)")
    identity = corpus.identity | {
        "tokenizer_sha256": tokenizer.sha256, "vocab_size": tokenizer.vocab_size, "eos_id": tokenizer.eos_id,
        "seq_len": seq_len, "valid_fraction": valid_fraction, "split_seed": seed, "train_documents": n_train,
        "valid_documents": n_valid, "train_tokens": len(train), "valid_tokens": len(valid)}
    rows = [s[: len(s) // seq_len * seq_len].reshape(-1, seq_len).clone() for s in (train, valid)]
    return TokenData(rows[0], rows[1], tokenizer, identity)


class Loader:
    """An infinite, seeded, shardable and exactly resumable iterator over batches of rows (THEORY section 8, C13).

    Epoch ``e`` visits the rows in the order ``torch.randperm(N, generator=Generator().manual_seed(seed *
    1_000_003 + e))``, ``batch`` rows per global step; rank ``r`` of ``world`` gets rows ``r::world`` of each
    global batch, so the ranks' shards of a step make up the single-process batch. ``drop_last=False`` also
    yields each epoch's last partial batch. :meth:`state_dict` is the same on every rank and may be loaded
    under another ``world`` (the global order does not depend on it).
    """

    def __init__(self, sequences: torch.Tensor, batch: int, seed: int = 0, rank: int = 0, world: int = 1,
                 drop_last: bool = True):
        if not isinstance(sequences, torch.Tensor) or sequences.dim() != 2:
            raise ValueError(f"sequences must be a 2-D tensor (rows, seq_len), got {getattr(sequences, 'shape', None)}")
        self.batch, self.seed = as_int(batch, "batch", minimum=1), as_int(seed, "seed")
        self.world = as_int(world, "world", minimum=1)
        self.rank = as_int(rank, "rank", 0, self.world - 1)
        if self.batch % self.world:
            raise ValueError(f"batch must be a multiple of world, got batch={self.batch}, world={self.world}")
        if len(sequences) < self.batch:
            raise ValueError(f"sequences has {len(sequences)} rows, fewer than one global batch (batch={self.batch})")
        self.sequences, self.drop_last = sequences, bool(drop_last)
        self.epoch, self.position, self._order = 0, 0, (None, None)

    def __iter__(self) -> Loader:
        return self

    def _permutation(self) -> torch.Tensor:
        if self._order[0] != self.epoch:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            self._order = (self.epoch, torch.randperm(len(self.sequences), generator=generator))
        return self._order[1]

    def __next__(self) -> torch.Tensor:
        rows, end = len(self.sequences), self.position + self.batch
        if end > rows and (self.drop_last or self.position >= rows):
            self.epoch, self.position, end = self.epoch + 1, 0, self.batch
        step = self._permutation()[self.position:min(end, rows)]
        self.position = min(end, rows)
        return self.sequences[step[self.rank::self.world].to(self.sequences.device)].to(torch.int64)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed, "batch": self.batch,
                "world": self.world, "rows": len(self.sequences)}

    def load_state_dict(self, state: dict) -> None:
        for key in ("seed", "batch", "rows"):
            mine = self.state_dict()[key]
            if state.get(key, mine) != mine:
                raise ValueError(f"state {key}={state[key]} does not match this loader's {key}={mine}")
        self.epoch = as_int(state["epoch"], "epoch", minimum=0)
        self.position = as_int(state["position"], "position", 0, len(self.sequences))
