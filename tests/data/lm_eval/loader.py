"""The documents of the local lm-eval tasks beside this file, read from their JSONL (one split, ``test``), so that the
tasks run offline and from any working directory (``custom_dataset: !function loader.documents``)."""

import json
from pathlib import Path

import datasets

HERE = Path(__file__).resolve().parent


def documents(file: str, **_metadata) -> dict[str, datasets.Dataset]:
    """``{"test": Dataset}`` of the records of ``file`` (a JSONL file in this folder, one record a line)."""
    lines = (HERE / file).read_text(encoding="utf-8").splitlines()
    return {"test": datasets.Dataset.from_list([json.loads(line) for line in lines if line.strip()])}
