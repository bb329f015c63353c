"""Training: data, objective, loop, checkpoints and evaluation of the learned model (THEORY section 8, C9, C13).

    from evoflow.train import TrainConfig, train
    summary = train(TrainConfig(size="demo", data="docstrings", steps=300), "runs/evo")
"""

from evoflow.train.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from evoflow.train.config import TrainConfig, learning_rate
from evoflow.train.data import (
    Corpus,
    DataError,
    Loader,
    TextTokenizer,
    TokenData,
    load_corpus,
    load_tokenizer,
    prepare,
    train_tokenizer,
)
from evoflow.train.evaluate import PathScore, score_path
from evoflow.train.loop import train
from evoflow.train.objective import PathMixture, parse_mixture
from evoflow.train.session import load_run

__all__ = [
    "CheckpointError",
    "Corpus",
    "DataError",
    "Loader",
    "PathMixture",
    "PathScore",
    "TextTokenizer",
    "TokenData",
    "TrainConfig",
    "learning_rate",
    "load_checkpoint",
    "load_corpus",
    "load_run",
    "load_tokenizer",
    "parse_mixture",
    "prepare",
    "save_checkpoint",
    "score_path",
    "train",
    "train_tokenizer",
]
