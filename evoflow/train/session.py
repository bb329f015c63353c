"""A trained run, loaded back for scoring: its config, tokenizer and latest checkpoint (THEORY section 8, C13).

``load_run(dir)`` rebuilds the model exactly as trained (``config.json``, the tokenizer saved in the
checkpoint, the weights), and the text to score: the run's own validation rows (the ones scored during
training, so ``evoflow eval`` reproduces the figure printed at the end of training) or another corpus,
tokenized with the run's tokenizer and packed to its sequence length. Nothing is unpickled.
"""

from __future__ import annotations

import json
import pathlib
from dataclasses import dataclass

import torch
from torch import Tensor

from evoflow.nn import EvoTransformer
from evoflow.train.checkpoint import load_checkpoint
from evoflow.train.config import TrainConfig
from evoflow.train.data import DataError, TextTokenizer, load_corpus, load_tokenizer, prepare
from evoflow.train.evaluate import PathScore, score_path
from evoflow.train.loop import build_model, load_data

__all__ = ["LoadedRun", "is_checkpoint_dir", "load_model", "load_run"]


@dataclass
class LoadedRun:
    """A run's model at its latest checkpoint (``step``), the token rows to score and where they come from (C13)."""

    model: EvoTransformer
    config: TrainConfig
    tokenizer: TextTokenizer
    rows: Tensor
    step: int
    source: str

    def score(self, spec: str, steps: int | None = None) -> PathScore:
        """Bits per token along the decoding path ``spec`` (``ar`` exact, the others bounds; C13, C8)."""
        K = steps if steps is not None else self.config.sync_steps
        return score_path(self.model, self.rows, spec, K, t_min=self.config.t_min)


def load_model(run: str | pathlib.Path) -> tuple[EvoTransformer, TrainConfig, TextTokenizer, object]:
    """(model in eval mode, config, tokenizer, checkpoint) of ``run``'s latest checkpoint; no data is read (C13)."""
    ckpt = load_checkpoint(pathlib.Path(run))  # CheckpointError naming the directory or the damaged file
    cfg = TrainConfig(**ckpt.meta["config"])
    tok = TextTokenizer.from_json(ckpt.meta["tokenizer"], eos_id=ckpt.meta.get("eos_id"))
    model = build_model(cfg, tok.vocab_size)
    model.load_state_dict(ckpt.model)
    return model.eval(), cfg, tok, ckpt


def is_checkpoint_dir(path: str | pathlib.Path) -> bool:
    """Whether ``path`` is a Hugging Face checkpoint directory (a config.json naming a ``model_type``, no evoflow
    checkpoints/), which is loaded by importing it (THEORY section 8, C13)."""
    path = pathlib.Path(path)
    if (path / "checkpoints").exists():
        return False
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and "model_type" in config


def _load_imported(folder: pathlib.Path, data: str | None) -> LoadedRun:
    """An imported checkpoint (:func:`evoflow.nn.from_hf`) before any adaptation, scored on the validation rows
    that ``evoflow train --init folder --data data`` scores with the default split (C13)."""
    from evoflow.nn import from_hf

    if data is None:
        raise DataError(f"data: {folder} is a checkpoint directory without a validation split; give the text "
                        f"to score (--data)")
    cfg = TrainConfig(init=str(folder), data=data)
    model = from_hf(folder, **cfg.model)
    tok = load_tokenizer(folder, max_vocab=model.config.vocab)
    packed = prepare(load_corpus(data, cfg.field), tok, cfg.seq, valid_fraction=cfg.valid_fraction, seed=cfg.seed)
    rows = packed.valid if cfg.eval_rows == 0 else packed.valid[: cfg.eval_rows]
    return LoadedRun(model, cfg, tok, rows, 0, f"the validation split of {data} (the rows evoflow train --init "
                     f"{folder} --data {data} validates on)")


def load_run(run: str | pathlib.Path, data: str | None = None) -> LoadedRun:
    """Load ``run`` (a directory written by ``evoflow train``, or a Hugging Face checkpoint directory, imported);
    score its validation rows, or ``data`` (C13)."""
    run = pathlib.Path(run)
    if is_checkpoint_dir(run):
        return _load_imported(run, data)
    model, cfg, tok, ckpt = load_model(run)
    if data is None:
        prepared = load_data(cfg, run.parent / ".evoflow-cache")
        if any(ckpt.meta["data"].get(k) != prepared.identity[k] for k in ("sha256", "tokenizer_sha256")):
            raise DataError(f"{cfg.data}: not the text this run was trained on (corpus or tokenizer sha256 differs "
                            f"from its checkpoint's); give other text to score with data (--data)")
        valid = prepared.valid
        rows, source = (valid if cfg.eval_rows == 0 else valid[: cfg.eval_rows]), "its validation split"
    else:
        corpus = load_corpus(data, cfg.field)
        packed = prepare(corpus, tok, cfg.seq, valid_fraction=cfg.valid_fraction, seed=cfg.seed)
        rows, source = torch.cat([packed.train, packed.valid]), f"{data}"
    return LoadedRun(model, cfg, tok, rows, ckpt.step, source)
