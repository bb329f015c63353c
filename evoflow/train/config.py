"""The configuration of a training run and its learning-rate schedule (THEORY section 8, C9).

A run is described by one :class:`TrainConfig` (saved as ``config.json`` in the run directory and read
back by ``--resume`` and ``evoflow eval``); the command line and a TOML file fill it.
"""

from __future__ import annotations

import dataclasses
import math
import os
import pathlib
import tomllib
from dataclasses import dataclass, field

from evoflow.arguments import as_float, as_int
from evoflow.nn import config_names, get_config
from evoflow.train.objective import parse_mixture

__all__ = ["TrainConfig", "learning_rate"]

# chosen by measurement (bench/RESULTS.md, issue 8): a quarter of every batch on block and synchronous paths
DEFAULT_MIXTURE = "ar:0.9/0.75,stair=4:0.05/0.125,sync:0.05/0.125"


@dataclass
class TrainConfig:
    """Everything a run depends on (THEORY section 8, C9); saved as ``config.json`` in the run directory.

    ``size`` a row of :func:`evoflow.nn.get_config` (``vocab`` comes from the tokenizer), ``model`` overrides
    of its fields; ``data`` a built-in corpus (pydoc, docstrings, stdlib) or a path, ``tokenizer`` a local
    tokenizer.json instead of a trained BPE of ``vocab`` tokens; ``batch`` the global batch.

    ``init`` a Hugging Face checkpoint directory to start from (:func:`evoflow.nn.from_hf`): its config fills
    ``model`` (so the run's config.json rebuilds the model without it), ``vocab`` is its vocabulary and its
    tokenizer.json the tokenizer unless ``tokenizer`` is given. ``anneal`` > 0 grows the attention's
    look-ahead linearly from causal (reach 0) to the full frontier pattern over that many steps.
    """

    size: str = "demo"
    model: dict = field(default_factory=dict)
    data: str = "pydoc"
    field: str = "text"
    tokenizer: str | None = None
    vocab: int = 2048
    seq: int = 128
    batch: int = 16
    steps: int = 400
    lr: float = 3e-3
    min_lr: float = 3e-4
    warmup: int = 50
    weight_decay: float = 0.0
    clip: float = 1.0
    mixture: str = DEFAULT_MIXTURE
    surrogate: str = "mse"
    t_min: float = 0.2
    time_weight: float = 0.1
    seed: int = 0
    valid_fraction: float = 0.05
    eval_every: int = 100
    eval_rows: int = 64
    sync_steps: int = 16
    checkpoint_every: int = 100
    keep: int = 2
    compile: bool = False
    init: str | None = None
    anneal: int = 0

    def __post_init__(self):
        self.anneal = as_int(self.anneal, "anneal", minimum=0)
        if self.init is not None:
            self._from_checkpoint_dir()
        if self.size not in config_names():
            raise ValueError(f"size must be one of {', '.join(config_names())}, got {self.size!r}")
        for name in ("vocab", "seq", "batch", "steps", "eval_every", "checkpoint_every", "keep", "sync_steps"):
            setattr(self, name, as_int(getattr(self, name), name, minimum=1))
        for name in ("warmup", "eval_rows", "seed"):
            setattr(self, name, as_int(getattr(self, name), name, minimum=0))
        for name in ("lr", "min_lr", "weight_decay", "clip", "time_weight"):
            setattr(self, name, as_float(getattr(self, name), name, low=0.0))
        self.t_min = as_float(self.t_min, "t_min", low=0.0, high=1.0, low_open=True, high_open=True)
        parse_mixture(self.mixture)  # a ValueError naming the mixture now, not at step 1
        if self.surrogate not in ("mse", "ce"):
            raise ValueError(f"surrogate must be 'mse' or 'ce', got {self.surrogate!r}")
        get_config(self.size, **{**self.model, "vocab": self.vocab})  # unknown or impossible fields fail here

    def _from_checkpoint_dir(self) -> None:
        """Fill ``model``, ``vocab`` and ``tokenizer`` from the checkpoint directory ``init`` (once: a saved config
        already holds the fields, and the directory need not exist any more when the run is resumed or loaded)."""
        from evoflow.nn import hf_config

        if "shift" not in self.model:  # not yet derived
            fields = dataclasses.asdict(hf_config(self.init, latent_scale=None, **self.model))
            self.model = {k: v for k, v in fields.items() if k != "name"}
        self.vocab = int(self.model["vocab"])
        if self.tokenizer is None:
            self.tokenizer = str(self.init)

    @classmethod
    def from_toml(cls, path: str | os.PathLike, **overrides) -> TrainConfig:
        """Fields from a TOML file (a flat table; ``[model]`` for model overrides), then ``overrides`` (C9 run)."""
        try:
            values = tomllib.loads(pathlib.Path(path).read_text())
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
            raise ValueError(f"config: cannot read {path}: {e}") from None
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"config: unknown field(s) {', '.join(unknown)} in {path}; "
                             f"fields: {', '.join(sorted(known))}")
        return cls(**{**values, **overrides})


def learning_rate(cfg: TrainConfig, step: int) -> float:
    """Linear warmup to ``lr`` over ``warmup`` steps, then cosine decay to ``min_lr`` at ``steps`` (C9 training)."""
    if step <= cfg.warmup:
        return cfg.lr * step / max(cfg.warmup, 1)
    progress = (step - cfg.warmup) / max(cfg.steps - cfg.warmup, 1)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * min(progress, 1.0)))
