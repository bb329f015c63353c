"""Corpora of the training data: built-in ones and the user's files, each with its identity (THEORY section 8).

    load_corpus("pydoc")        # the standard library's pydoc topics: English reference prose, 465K characters
    load_corpus("docstrings")   # the standard library's docstrings: about 1.8M characters of prose
    load_corpus("stdlib")       # the standard library's own source, without its test suites
    load_corpus("notes.txt")    # a text file, a folder of text files, or a .jsonl file (field "text")

Every corpus is read offline, deterministically, and carries an ``identity`` (name, sha256 of its documents,
sizes; the Python version for the standard-library ones) that goes into every run's metadata.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import platform
import sysconfig
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Corpus", "DataError", "load_corpus"]

_STDLIB_SKIP = frozenset({"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__"})
_DOC_NODES = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)


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
