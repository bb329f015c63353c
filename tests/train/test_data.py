"""The training data pipeline: corpora, tokenizers, packed splits and the resumable loader (evoflow.train.data)."""

import hashlib
import inspect
import json
import platform
import sysconfig
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer, models, pre_tokenizers

import evoflow.train.corpus as corpus_module
import evoflow.train.data as data
import evoflow.train.tokenizer as tokenizer_module
from evoflow.train import DataError, Loader, TextTokenizer, load_corpus, load_tokenizer, prepare, train_tokenizer

EOS = "<|endoftext|>"
STDLIB = Path(sysconfig.get_paths()["stdlib"])
SKIPPED = {"test", "tests", "idle_test", "site-packages", "__pycache__"}


def documented_sha256(documents):
    """The corpus hash as documented: each document's UTF-8 bytes after its 8-byte little-endian length."""
    digest = hashlib.sha256()
    for document in documents:
        raw = document.encode()
        digest.update(len(raw).to_bytes(8, "little") + raw)
    return digest.hexdigest()


def jsonl(path, records):
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def pydoc():
    return load_corpus("pydoc")


@pytest.fixture(scope="module")
def bytes_tokenizer(pydoc):
    """vocab_size 257 = 256 byte symbols + EOS: no merges, so every UTF-8 byte is one token."""
    return train_tokenizer(pydoc, 257)


# ---------------------------------------------------------------------------------------------- corpora


def test_pydoc_corpus_is_the_sorted_topics_with_its_identity(pydoc):
    from pydoc_data.topics import topics

    assert pydoc.documents == [topics[k] for k in sorted(topics)]
    assert 300_000 < pydoc.identity["characters"] < 700_000
    assert pydoc.identity["characters"] == sum(len(t) for t in topics.values())
    assert pydoc.identity["documents"] == len(topics)
    assert pydoc.identity["sha256"] == documented_sha256(pydoc.documents)
    assert pydoc.identity["python_version"] == platform.python_version()
    assert pydoc.identity["stdlib"] == str(STDLIB) and pydoc.name == pydoc.identity["name"] == "pydoc"
    assert load_corpus("pydoc") == pydoc


def test_stdlib_corpus_is_the_sources_without_test_suites():
    corpus = load_corpus("stdlib")
    tops = [STDLIB / "*.py"] + [d / "**" / "*.py" for d in STDLIB.iterdir() if d.is_dir() and d.name not in SKIPPED]
    found = [p for pattern in tops for p in STDLIB.glob(str(pattern.relative_to(STDLIB)))]
    expected = sorted((p.relative_to(STDLIB) for p in found), key=lambda p: p.parts)
    expected = [p for p in expected if not SKIPPED & set(p.parts[:-1])]
    assert len(corpus.documents) == len(expected) > 300
    assert corpus.documents[0] == (STDLIB / expected[0]).read_text(encoding="utf-8")
    assert corpus.documents[-1] == (STDLIB / expected[-1]).read_text(encoding="utf-8")
    assert 5_000_000 < corpus.identity["characters"] < 100_000_000
    contents = set(corpus.documents)
    assert (STDLIB / "os.py").read_text(encoding="utf-8") in contents
    for excluded in ("test/test_grammar.py", "unittest/test/test_case.py", "idlelib/idle_test/test_run.py"):
        if (STDLIB / excluded).is_file():
            assert (STDLIB / excluded).read_text(encoding="utf-8") not in contents, excluded
    assert corpus.identity["python_version"] == platform.python_version()
    assert corpus.identity["stdlib"] == str(STDLIB)
    assert corpus.identity["sha256"] == documented_sha256(corpus.documents)
    assert load_corpus("stdlib").identity == corpus.identity


def test_docstrings_corpus_is_prose_without_code():
    import os as os_module

    corpus = load_corpus("docstrings")
    assert 1_000_000 < corpus.identity["characters"] < 3_000_000
    assert 300 < len(corpus.documents) < len(load_corpus("stdlib").documents)
    assert any(d.startswith(inspect.cleandoc(os_module.__doc__)) for d in corpus.documents)
    assert any(inspect.cleandoc(os_module.makedirs.__doc__) in d for d in corpus.documents)
    assert not any("def makedirs(name, mode=0o777, exist_ok=False):" in d for d in corpus.documents)
    assert all(d.strip() for d in corpus.documents)
    assert corpus.identity["sha256"] == documented_sha256(corpus.documents)
    assert load_corpus("docstrings").identity == corpus.identity


def test_a_text_file_is_one_document(tmp_path):
    text = "Première ligne — ünïcödé 世界 🙂\n\tdef f(x):\r\n        return x\n"
    (tmp_path / "book.txt").write_text(text, encoding="utf-8", newline="")
    corpus = load_corpus(str(tmp_path / "book.txt"))
    assert corpus.documents == [text]
    assert corpus.identity["path"] == str((tmp_path / "book.txt").resolve())
    assert corpus.identity["characters"] == len(text) and corpus.identity["sha256"] == documented_sha256([text])


def test_a_folder_is_its_text_files_by_sorted_relative_path(tmp_path):
    files = {"b/z.txt": "zed", "b/a.md": "alpha", "a.txt": "first", "c/d/e.py": "x = 1\n"}
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text, encoding="utf-8")
    (tmp_path / ".hidden").write_text("secret")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "config").write_text("hidden folder")
    (tmp_path / "b" / "image.bin").write_bytes(b"\x89PNG\x00\x01")
    (tmp_path / "b" / "empty.txt").write_text("")
    corpus = load_corpus(str(tmp_path))
    assert corpus.documents == ["first", "alpha", "zed", "x = 1\n"]
    assert corpus.identity["skipped_files"] == 2 and corpus.identity["documents"] == 4


def test_a_jsonl_file_gives_one_document_per_record(tmp_path):
    path = jsonl(tmp_path / "d.jsonl", [{"body": "one\u2028line", "id": 1}, {"body": "two ü", "text": "no"}])
    path.write_text(path.read_text(encoding="utf-8") + "\n  \n", encoding="utf-8")  # trailing blank lines
    assert load_corpus(str(path), field="body").documents == ["one\u2028line", "two ü"]
    assert load_corpus(str(path), field="body").identity["field"] == "body"


@pytest.mark.parametrize("case", ["missing", "empty file", "empty folder", "only binary files", "nul bytes",
                                  "bad utf-8", "not json", "no field", "not a record", "empty jsonl"])
def test_bad_input_is_a_data_error_naming_the_path(tmp_path, case):
    target, line = tmp_path / "input.txt", None
    if case == "empty file":
        target.write_text("")
    elif case == "empty folder":
        target.mkdir()
    elif case == "only binary files":
        target.mkdir()
        (target / "a.bin").write_bytes(b"\x00\x01\x02")
        (target / "b.txt").write_bytes(b"caf\xe9")
    elif case == "nul bytes":
        target.write_bytes(b"text\x00more")
    elif case == "bad utf-8":
        target.write_bytes("café".encode("latin-1"))
    elif case != "missing":
        target = tmp_path / "input.jsonl"
        lines = {"not json": ['{"text": "ok"}', "", '{"text": oops}'], "no field": ['{"text": "a"}', '{"body": "b"}'],
                 "not a record": ['["text"]'], "empty jsonl": ['{"text": ""}']}[case]
        target.write_text("\n".join(lines) + "\n", encoding="utf-8")
        line = {"not json": 3, "no field": 2, "not a record": 1}.get(case)
    with pytest.raises(DataError) as caught:
        load_corpus(str(target))
    message = str(caught.value)
    assert isinstance(caught.value, ValueError) and "\n" not in message
    assert target.name in message and (str(tmp_path) in message or str(tmp_path.resolve()) in message)
    if line is not None:
        assert f"{target.name}:{line}:" in message


# ------------------------------------------------------------------------------------------- tokenizers


def test_byte_level_bpe_round_trips_any_text(pydoc):
    tok = train_tokenizer(pydoc, 512)
    texts = ["héllo wörld, naïve café — 世界 🙂 \u2028 \x7f", "def f(x):\n\treturn {'a': x ** 2}  # ok\r\n",
             "   leading spaces", "", f"two documents{EOS}glued"]
    for text in texts:
        ids = tok.encode(text)
        assert all(0 <= i < tok.vocab_size for i in ids)
        assert tok.decode(ids) == text and tok.decode(torch.tensor(ids)) == text
    assert tok.encode_batch(texts) == [tok.encode(t) for t in texts]
    assert tok.encode(EOS) == [tok.eos_id]
    assert tok.vocab_size == 512 and tok.decode([tok.eos_id]) == EOS
    assert len(tok.encode("the " * 50)) < 200  # merges were learned: "the " is frequent in pydoc


def test_without_merges_every_byte_is_one_token(bytes_tokenizer):
    assert bytes_tokenizer.vocab_size == 257
    text = "aé世🙂"
    assert len(bytes_tokenizer.encode(text)) == len(text.encode()) == 10


def test_training_is_deterministic_and_serializes(pydoc):
    small = data.Corpus("small", pydoc.documents[:10], {"sha256": documented_sha256(pydoc.documents[:10])})
    first, second = train_tokenizer(small, 512), train_tokenizer(small, 512)
    assert first.to_json() == second.to_json()
    assert first.sha256 == hashlib.sha256(first.to_json().encode()).hexdigest()
    again = TextTokenizer.from_json(first.to_json())
    assert again.sha256 == first.sha256 and again.eos_id == first.eos_id
    assert again.encode("Some text") == first.encode("Some text")
    assert train_tokenizer(small, 400).sha256 != first.sha256


def test_the_cache_is_reused_and_a_damaged_one_rebuilt(pydoc, tmp_path, monkeypatch):
    tok = train_tokenizer(pydoc, 512, cache_dir=tmp_path)
    cached = tmp_path / f"tokenizer-{pydoc.identity['sha256'][:16]}-512.json"
    assert cached.read_text(encoding="utf-8") == tok.to_json()
    calls = []
    real = tokenizer_module._train_bpe
    monkeypatch.setattr(tokenizer_module, "_train_bpe", lambda *a: calls.append(a) or real(*a))
    assert train_tokenizer(pydoc, 512, cache_dir=tmp_path).sha256 == tok.sha256
    assert calls == []
    cached.write_text('{"version": "1.0", "truncated', encoding="utf-8")
    assert train_tokenizer(pydoc, 512, cache_dir=tmp_path).sha256 == tok.sha256
    assert len(calls) == 1 and cached.read_text(encoding="utf-8") == tok.to_json()
    Tokenizer(models.BPE()).save(str(cached))  # parses, but is not one of ours: no <|endoftext|>
    assert train_tokenizer(pydoc, 512, cache_dir=tmp_path).sha256 == tok.sha256 and len(calls) == 2


def test_a_vocab_smaller_than_the_byte_alphabet_is_refused(pydoc):
    with pytest.raises(ValueError, match="vocab_size"):
        train_tokenizer(pydoc, 256)


def test_load_tokenizer_of_a_saved_json(pydoc, tmp_path):
    tok = train_tokenizer(pydoc, 300)
    (tmp_path / "tokenizer.json").write_text(tok.to_json(), encoding="utf-8")
    for where in (tmp_path / "tokenizer.json", tmp_path):
        loaded = load_tokenizer(where)
        assert loaded.sha256 == tok.sha256 and loaded.eos_id == tok.eos_id and loaded.vocab_size == 300
    with pytest.raises(DataError, match=r"nothing\.json"):
        load_tokenizer(tmp_path / "nothing.json")
    (tmp_path / "bad.json").write_text('{"model": 3}', encoding="utf-8")
    with pytest.raises(DataError, match=r"bad\.json"):
        load_tokenizer(tmp_path / "bad.json")


def foreign_tokenizer(folder, eos_name=None):
    """A word-level tokenizer.json without <|endoftext|>, as another project would ship it."""
    vocab = {"[UNK]": 0, "hello": 1, "world": 2, "</s>": 3}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    folder.mkdir(exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    if eos_name:
        (folder / "tokenizer_config.json").write_text(json.dumps({"eos_token": {"content": eos_name}}))
    return folder / "tokenizer.json"


def test_a_foreign_tokenizer_gets_an_eos(tmp_path):
    added = load_tokenizer(foreign_tokenizer(tmp_path / "a"))
    assert added.vocab_size == 5 and added.eos_id == 4 and added.encode(f"hello {EOS}") == [1, 4]
    declared = load_tokenizer(foreign_tokenizer(tmp_path / "b", "world"), max_vocab=4)
    assert declared.vocab_size == 4 and declared.eos_id == 2
    conventional = load_tokenizer(foreign_tokenizer(tmp_path / "c"), max_vocab=4)
    assert conventional.eos_id == 3
    again = TextTokenizer.from_json(conventional.to_json(), eos_id=conventional.eos_id)
    assert again.sha256 == conventional.sha256 and again.vocab_size == 4


# ------------------------------------------------------------------------------------------ split, pack


def ascii_corpus(tmp_path, n=40, length=15):
    """n ASCII documents of exactly `length` characters, each with a unique marker."""
    docs = [f"d{i:03d}:" + "abcdefghijklmnopqrstuvwxyz"[i % 20:][: length - 5].ljust(length - 5, ".") for i in range(n)]
    assert all(len(d) == length for d in docs)
    return load_corpus(str(jsonl(tmp_path / "c.jsonl", [{"text": d} for d in docs])))


def test_split_by_document_follows_the_seeded_permutation(tmp_path, bytes_tokenizer):
    corpus = ascii_corpus(tmp_path)
    result = prepare(corpus, bytes_tokenizer, seq_len=16, valid_fraction=0.1, seed=3)
    order = torch.randperm(40, generator=torch.Generator().manual_seed(3)).tolist()
    valid_ids, train_ids = sorted(order[:4]), sorted(order[4:])

    def rows(ids):
        stream = [t for i in ids for t in [*bytes_tokenizer.encode(corpus.documents[i]), bytes_tokenizer.eos_id]]
        return torch.tensor(stream).view(-1, 16)

    assert torch.equal(result.valid, rows(valid_ids)) and torch.equal(result.train, rows(train_ids))
    assert result.train.dtype == result.valid.dtype == torch.int64
    # 15 characters + EOS = 16 tokens: every row is one document ending with EOS, no other EOS inside
    eos = bytes_tokenizer.eos_id
    assert (result.train[:, -1] == eos).all() and (result.valid[:, -1] == eos).all()
    assert not (result.train[:, :-1] == eos).any()
    markers = [{bytes_tokenizer.decode(r)[:5] for r in part} for part in (result.train, result.valid)]
    assert not markers[0] & markers[1] and len(markers[0] | markers[1]) == 40
    again = prepare(corpus, bytes_tokenizer, seq_len=16, valid_fraction=0.1, seed=3)
    assert torch.equal(again.train, result.train) and again.identity == result.identity
    other = prepare(corpus, bytes_tokenizer, seq_len=16, valid_fraction=0.1, seed=4)
    assert not torch.equal(other.valid, result.valid)
    expected = {"seq_len": 16, "valid_fraction": 0.1, "split_seed": 3, "train_documents": 36, "valid_documents": 4,
                "train_tokens": 36 * 16, "valid_tokens": 4 * 16, "tokenizer_sha256": bytes_tokenizer.sha256,
                "vocab_size": 257, "sha256": corpus.identity["sha256"]}
    assert {k: result.identity[k] for k in expected} == expected


def test_packing_drops_the_remainder(tmp_path, bytes_tokenizer):
    corpus = ascii_corpus(tmp_path, n=20, length=15)
    result = prepare(corpus, bytes_tokenizer, seq_len=24, valid_fraction=0.25, seed=0)
    assert result.identity["train_tokens"] == 15 * 16 and result.train.shape == (15 * 16 // 24, 24)
    assert result.valid.shape == (5 * 16 // 24, 24)
    flat = result.train.flatten().tolist()
    assert [i for i, t in enumerate(flat) if t == bytes_tokenizer.eos_id] == list(range(15, len(flat), 16))


def test_one_document_is_split_by_tokens(tmp_path, bytes_tokenizer):
    text = "".join(chr(ord("a") + i % 26) for i in range(999))
    (tmp_path / "one.txt").write_text(text)
    result = prepare(load_corpus(str(tmp_path / "one.txt")), bytes_tokenizer, seq_len=10, valid_fraction=0.1)
    stream = [*bytes_tokenizer.encode(text), bytes_tokenizer.eos_id]  # 1000 tokens
    assert result.identity["valid_tokens"] == 100 and result.identity["train_tokens"] == 900
    assert torch.equal(result.valid, torch.tensor(stream[900:]).view(10, 10))
    assert torch.equal(result.train, torch.tensor(stream[:900]).view(90, 10))


def test_a_split_shorter_than_one_sequence_is_refused(tmp_path, bytes_tokenizer):
    corpus = ascii_corpus(tmp_path, n=3, length=15)
    with pytest.raises(DataError, match=r"valid split has 16 tokens, fewer than the 17"):
        prepare(corpus, bytes_tokenizer, seq_len=17, valid_fraction=0.2)
    with pytest.raises(DataError, match=r"train split has 0 tokens"):
        prepare(corpus, bytes_tokenizer, seq_len=4, valid_fraction=0.99)
    for bad, name in (({"seq_len": 0}, "seq_len"), ({"seq_len": 8, "valid_fraction": 0.0}, "valid_fraction"),
                      ({"seq_len": 8, "valid_fraction": 1.0}, "valid_fraction")):
        with pytest.raises(ValueError, match=name):
            prepare(corpus, bytes_tokenizer, **bad)


def test_the_token_streams_are_cached_as_safetensors(tmp_path, bytes_tokenizer, monkeypatch):
    corpus = ascii_corpus(tmp_path)
    first = prepare(corpus, bytes_tokenizer, seq_len=16, cache_dir=tmp_path / "cache")
    (cached,) = (tmp_path / "cache").iterdir()
    assert cached.suffix == ".safetensors" and corpus.identity["sha256"][:16] in cached.name
    assert load_file(str(cached))["train"].numel() == first.identity["train_tokens"]
    monkeypatch.setattr(data, "_stream", lambda *a: pytest.fail("re-encoded despite the cache"))
    second = prepare(corpus, bytes_tokenizer, seq_len=8, cache_dir=tmp_path / "cache")  # seq_len is not in the key
    assert torch.equal(second.train.flatten(), first.train.flatten()) and second.identity["train_documents"] == 38
    monkeypatch.undo()
    cached.write_bytes(b"garbage")
    third = prepare(corpus, bytes_tokenizer, seq_len=16, cache_dir=tmp_path / "cache")
    assert torch.equal(third.train, first.train) and load_file(str(cached))["valid"].numel() == 2 * 16
    assert len(list((tmp_path / "cache").iterdir())) == 1
    with safe_open(str(cached), framework="pt") as handle:
        other_key = handle.metadata() | {"corpus_sha256": "0" * 64}  # the same file name, another corpus
    save_file({k: v + 1 for k, v in load_file(str(cached)).items()}, str(cached), other_key)
    assert torch.equal(prepare(corpus, bytes_tokenizer, seq_len=16, cache_dir=tmp_path / "cache").train, first.train)
    prepare(corpus, bytes_tokenizer, seq_len=16, seed=1, cache_dir=tmp_path / "cache")
    assert len(list((tmp_path / "cache").iterdir())) == 2


# ----------------------------------------------------------------------------------------------- loader


ROWS = torch.arange(23 * 3).view(23, 3)


def take(loader, n):
    return [next(loader) for _ in range(n)]


def test_each_epoch_follows_the_documented_permutation():
    batches = take(Loader(ROWS, batch=4, seed=5), 10)  # 5 full batches per epoch, 3 rows dropped
    for epoch in (0, 1):
        order = torch.randperm(23, generator=torch.Generator().manual_seed(5 * 1_000_003 + epoch))
        assert torch.equal(torch.cat(batches[5 * epoch: 5 * epoch + 5]), ROWS[order[:20]])
    assert all(b.shape == (4, 3) and b.dtype == torch.int64 for b in batches)


def test_every_row_is_seen_once_per_epoch():
    rows = torch.arange(24 * 2, dtype=torch.int32).view(24, 2)
    loader = Loader(rows, batch=6, seed=1)
    epochs = [torch.cat(take(loader, 4)) for _ in range(3)]
    for seen in epochs:
        assert sorted(seen[:, 0].tolist()) == list(range(0, 48, 2)) and seen.dtype == torch.int64
    assert not torch.equal(epochs[0], epochs[1])
    partial = take(Loader(ROWS, batch=4, drop_last=False), 7)
    assert [len(b) for b in partial] == [4, 4, 4, 4, 4, 3, 4]
    assert sorted(torch.cat(partial[:6])[:, 0].tolist()) == list(range(0, 69, 3))


@pytest.mark.parametrize("k", [0, 3, 7, 11])
def test_a_restored_loader_continues_exactly(k):
    reference = take(Loader(ROWS, batch=4, seed=2), k + 20)
    interrupted = Loader(ROWS, batch=4, seed=2)
    take(interrupted, k)
    state = json.loads(json.dumps(interrupted.state_dict()))
    assert all(type(v) is int for v in state.values())
    restored = Loader(ROWS, batch=4, seed=2)
    restored.load_state_dict(state)
    assert all(torch.equal(a, b) for a, b in zip(take(restored, 20), reference[k:], strict=True))


def test_ranks_split_each_global_batch():
    single = take(Loader(ROWS, batch=4, seed=9), 12)
    shards = [take(Loader(ROWS, batch=4, seed=9, rank=r, world=2), 12) for r in (0, 1)]
    for step, whole in enumerate(single):
        assert shards[0][step].shape == (2, 3)
        assert torch.equal(shards[0][step], whole[0::2]) and torch.equal(shards[1][step], whole[1::2])
        joined = torch.cat([shards[0][step], shards[1][step]])
        assert sorted(joined[:, 0].tolist()) == sorted(whole[:, 0].tolist())
    state = Loader(ROWS, batch=4, seed=9)
    take(state, 6)
    resharded = Loader(ROWS, batch=4, seed=9, rank=1, world=4)
    resharded.load_state_dict(state.state_dict())
    assert torch.equal(next(resharded), single[6][1::4])


BAD_LOADERS = [({"batch": 0}, "batch"), ({"batch": 3, "world": 2}, "batch"), ({"batch": 24}, "sequences"),
               ({"batch": 4, "rank": 2, "world": 2}, "rank"), ({"batch": 4, "rank": -1}, "rank"),
               ({"batch": 4, "world": 0}, "world")]


@pytest.mark.parametrize(("kwargs", "name"), BAD_LOADERS)
def test_bad_loader_arguments_are_named(kwargs, name):
    with pytest.raises(ValueError, match=name):
        Loader(ROWS, **kwargs)


def test_a_state_from_another_loader_is_refused():
    state = Loader(ROWS, batch=4, seed=1).state_dict()
    with pytest.raises(ValueError, match="seed"):
        Loader(ROWS, batch=4, seed=2).load_state_dict(state)
    with pytest.raises(ValueError, match="rows"):
        Loader(ROWS[:20], batch=4, seed=1).load_state_dict(state)


def test_no_pickle_in_the_modules():
    for module in (data, tokenizer_module, corpus_module):
        source = Path(module.__file__).read_text(encoding="utf-8")
        assert not any(word in source for word in ("import pickle", "torch.load(", "np.load(", "numpy.load("))
