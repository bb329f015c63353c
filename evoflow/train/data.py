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

import ast
import hashlib
import json
import os
import platform
import sysconfig
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from evoflow.arguments import as_float, as_int

__all__ = ["Corpus", "DataError", "Loader", "TextTokenizer", "TokenData", "load_corpus", "load_tokenizer", "prepare",
           "train_tokenizer"]

EOS = "<|endoftext|>"
_SPECIALS = (EOS,)
_DECLARED_EOS = ("<|end_of_text|>", "</s>", "<eos>", "<|eos|>")  # conventional names, tried after tokenizer_config
_STDLIB_SKIP = frozenset({"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__"})
_DOC_NODES = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
_ENCODE_CHUNK = 64  # documents per encode_batch call: bounds the memory of the Encoding objects


class DataError(ValueError):
    """Unusable training data; the one-line message names the path (and line) (THEORY section 8, the learned model)."""


@dataclass
class Corpus:
    """Documents for training the learned model, with an ``identity`` that names them (THEORY section 8).

    ``identity``: ``name``, ``sha256`` (each document's UTF-8 bytes preceded by their 8-byte length, in
    order), ``documents``, ``characters``, and where the text came from (``python_version`` and ``stdlib``,
    or the resolved ``path``).
    """

    name: str
    documents: list[str]
    identity: dict


def _identity(name: str, documents: Sequence[str], **extra) -> dict:
    digest = hashlib.sha256()
    for document in documents:
        data = document.encode("utf-8")
        digest.update(len(data).to_bytes(8, "little"))  # a length prefix: an unambiguous separator
        digest.update(data)
    return {"name": name, "sha256": digest.hexdigest(), "documents": len(documents),
            "characters": sum(map(len, documents)), **extra}


def _read_text(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError as error:
        raise DataError(f"{path}: cannot read ({error.strerror or error})") from None
    if b"\0" in data:
        raise DataError(f"{path}: a binary file (contains NUL bytes), not text")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise DataError(f"{path}: not valid UTF-8 text (byte {error.start})") from None


def _walk(root: Path, keep_dir: Callable[[str], bool]) -> list[Path]:
    """Every file under ``root`` (symlinked folders not followed), sorted by relative path, hidden names skipped."""
    found = []
    for folder, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".") and keep_dir(d)]
        found += [Path(folder, f) for f in filenames if not f.startswith(".")]
    return sorted((p for p in found if p.is_file()), key=lambda p: p.relative_to(root).parts)


def _folder_documents(root: Path) -> tuple[list[str], dict]:
    files = _walk(root, lambda _: True)
    if not files:
        raise DataError(f"{root}: an empty folder (no files)")
    documents = []
    for path in files:
        try:
            text = _read_text(path)
        except DataError:  # binary or undecodable: not a text file of this corpus
            continue
        if text:
            documents.append(text)
    if not documents:
        raise DataError(f"{root}: no readable text file in the folder ({len(files)} empty, binary or non-UTF-8 files)")
    return documents, {"skipped_files": len(files) - len(documents)}


def _jsonl_documents(path: Path, field: str) -> list[str]:
    documents = []
    for number, line in enumerate(_read_text(path).split("\n"), 1):  # not splitlines: U+2028 is legal inside JSON
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise DataError(f"{path}:{number}: not JSON ({error.msg})") from None
        value = record.get(field) if isinstance(record, dict) else None
        if not isinstance(value, str):
            raise DataError(f"{path}:{number}: the record has no string field {field!r}")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise DataError(f"{path}:{number}: field {field!r} is not valid Unicode (a lone surrogate)") from None
        documents.append(value)
    return documents


def _stdlib_sources() -> tuple[list[str], dict]:
    root = Path(sysconfig.get_paths()["stdlib"])
    sources = []
    for path in _walk(root, lambda d: d not in _STDLIB_SKIP):
        if path.suffix == ".py":
            try:
                sources.append(path.read_bytes().decode("utf-8"))
            except (OSError, UnicodeDecodeError):
                continue
    return sources, {"python_version": platform.python_version(), "stdlib": str(root)}


def _docstrings(source: str) -> str:
    """The module, class and function docstrings of one source file in source order, ``""`` if it does not parse."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # invalid escape sequences in old code
            tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return ""
    nodes = sorted((n for n in ast.walk(tree) if isinstance(n, _DOC_NODES)), key=lambda n: getattr(n, "lineno", 0))
    return "\n\n".join(doc for node in nodes if (doc := ast.get_docstring(node)))


def _builtin(source: str) -> tuple[list[str], dict]:
    if source == "pydoc":
        from pydoc_data.topics import topics

        return [topics[key] for key in sorted(topics)], {"python_version": platform.python_version(),
                                                          "stdlib": sysconfig.get_paths()["stdlib"]}
    sources, extra = _stdlib_sources()
    if source == "docstrings":
        sources = [text for text in map(_docstrings, sources) if text]
    return sources, extra


def load_corpus(source: str, field: str = "text") -> Corpus:
    """Load the built-in ``"pydoc"``, ``"stdlib"`` or ``"docstrings"`` corpus, or a local path (THEORY section 8).

    A path is a text file (one document), a ``.jsonl`` file (each record's ``field`` one document), or a
    folder (each non-hidden, non-empty UTF-8 file under it one document, by sorted relative path; binary
    files are skipped and counted in ``identity["skipped_files"]``). A built-in name wins over a local
    path of the same name. Unusable input raises :class:`DataError` naming the path (and line).
    """
    if source in ("pydoc", "stdlib", "docstrings"):
        documents, extra = _builtin(source)
        return Corpus(source, documents, _identity(source, documents, **extra))
    path = Path(source).expanduser()
    if not path.exists():
        raise DataError(f"{source}: no such file or folder (and not a built-in corpus: pydoc, stdlib, docstrings)")
    path = path.resolve()
    extra = {"path": str(path)}
    if path.is_dir():
        documents, skipped = _folder_documents(path)
        extra |= skipped
    elif path.suffix == ".jsonl":
        documents, extra["field"] = _jsonl_documents(path, field), field
    else:
        documents = [_read_text(path)]
    if not any(documents):
        raise DataError(f"{path}: empty (no characters)")
    return Corpus(path.name, documents, _identity(path.name, documents, **extra))


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
