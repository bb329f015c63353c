"""``evoflow train``: the training loop of the learned model on the path-mixture objective (THEORY section 8, C9).

    cfg = TrainConfig(size="demo", data="pydoc", steps=400)
    summary = train(cfg, "runs/my-run")          # or train(cfg, "runs/my-run", resume=True) after a kill

One step: the next global batch from the loader (rank ``r`` of ``world`` takes rows ``r::world``), the
objective's estimate (:class:`~evoflow.train.objective.PathMixture`, randomness drawn for the whole global
batch from one generator, so the run does not depend on how it is split), backward, gradient clipping,
AdamW with linear warmup and cosine decay. bf16 autocast on CUDA, ``torch.compile`` per block as an
option, FSDP2 under ``torchrun`` (:mod:`evoflow.nn.parallel`). Every step writes one JSON line to
``metrics.jsonl``; every ``eval_every`` steps the validation text is scored in bits per token under the
AR path (exact, C13) and the synchronous path with K steps (a bound); every ``checkpoint_every`` steps a
checkpoint is written atomically (:mod:`evoflow.train.checkpoint`), with the loader position and every
random state, so that a killed run resumed with ``resume=True`` reproduces the uninterrupted one.
"""


from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import time

import torch
from torch import Tensor, nn

from evoflow.nn import EvoTransformer, Frontier, get_config
from evoflow.train.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from evoflow.train.config import TrainConfig, learning_rate
from evoflow.train.data import DataError, Loader, TokenData, load_corpus, load_tokenizer, prepare, train_tokenizer
from evoflow.train.evaluate import score_path
from evoflow.train.objective import PathMixture

__all__ = ["Run", "Trainee", "build_model", "distributed_world", "load_data", "train", "validate"]


def load_data(cfg: TrainConfig, cache: pathlib.Path) -> TokenData:
    """The corpus, its tokenizer (trained BPE cached under ``cache``, or ``cfg.tokenizer``) and the packed split
    (THEORY section 8: the learned model's training text)."""
    corpus = load_corpus(cfg.data, cfg.field)
    rows = cfg.vocab if cfg.init else None  # an imported model's embedding rows bound the tokenizer's ids
    tok = load_tokenizer(cfg.tokenizer, max_vocab=rows) if cfg.tokenizer else train_tokenizer(corpus, cfg.vocab, cache)
    return prepare(corpus, tok, cfg.seq, cfg.valid_fraction, cfg.seed, cache)


def reach(cfg: TrainConfig, step: int) -> int | None:
    """The attention look-ahead at ``step`` (1-based) while annealing: ``floor(seq * step / anneal)`` tokens,
    from causal towards the full frontier pattern (None) once ``step >= anneal``."""
    if cfg.anneal == 0 or step >= cfg.anneal:
        return None
    return cfg.seq * step // cfg.anneal


def build_model(cfg: TrainConfig, vocab: int, pretrained: bool = False) -> EvoTransformer:
    """The run's Transformer (THEORY section 8): the ``size`` row, the tokenizer's vocabulary, ``model`` overrides;
    for a run started from a checkpoint directory (``init``), its shape, and with ``pretrained`` its weights."""
    torch.manual_seed(cfg.seed)
    if cfg.init is not None:
        if vocab > cfg.vocab:
            raise DataError(f"tokenizer: ids up to {vocab - 1} but the model in {cfg.init} has {cfg.vocab} rows")
        if pretrained:
            from evoflow.nn import from_hf

            return from_hf(cfg.init, **cfg.model).train()
        vocab = cfg.vocab
    return EvoTransformer(get_config(cfg.size, **{**cfg.model, "vocab": vocab}))


class Trainee(nn.Module):
    """The FSDP root: the model and the objective in one forward, so that under FSDP2 the embedding table is
    gathered where the objective reads it; ``mode="eval"`` scores validation text through the same root (C9)."""

    def __init__(self, model: EvoTransformer, objective: PathMixture):
        super().__init__()
        self.model, self.objective = model, objective

    def forward(self, x: Tensor, generator: torch.Generator | None = None, rank: int = 0, world: int = 1,
                mode: str = "loss", spec: str = "ar", steps: int = 16):
        if mode == "eval":
            return score_path(self.model, x, spec, steps, t_min=self.objective.t_min)
        return self.objective(self.model, x, generator, rank, world)


def validate(trainee: nn.Module, rows: Tensor, cfg: TrainConfig) -> dict:
    """Validation bits per token: AR path (exact, C13) and synchronous with ``sync_steps`` steps down to the trained
    ``t_min`` (a bound)."""
    was = trainee.training
    trainee.eval()
    with torch.no_grad():
        ar = trainee(rows, mode="eval", spec="ar")
        sync = trainee(rows, mode="eval", spec=f"sync:{cfg.sync_steps}")
    trainee.train(was)
    return {"val_ar_bits": ar.bits, "val_sync_bits": sync.bits, "val_sync_stderr": sync.stderr,
            "val_tokens": ar.tokens}


def distributed_world() -> tuple[int, int, object]:
    """(rank, world, mesh): torchrun's world with a device mesh, or one process without one (C9 training)."""
    if "RANK" not in os.environ:
        return 0, 1, None
    from evoflow.nn import init_distributed

    mesh = init_distributed()
    return mesh.get_rank(), mesh.size(), mesh


def train(cfg: TrainConfig, out: str | os.PathLike, resume: bool = False, progress: bool = True, log=print) -> dict:
    """Train one run into ``out``, or continue it (``resume``: the run's own config.json is used); return the
    final validation summary (THEORY section 8, C9)."""
    return Run(cfg, pathlib.Path(out), resume, progress, log, *distributed_world()).fit()


class Run:
    """One training run: setup, optional resume, the step loop, validation, checkpoints and the report (C9)."""

    def __init__(self, cfg, out, resume, progress, log, rank, world, mesh):
        self.out, self.progress, self.log, self.rank, self.world = out, progress, log, rank, world
        self.ckpt = load_checkpoint(out) if resume else None  # CheckpointError names the run directory
        if resume:
            cfg = TrainConfig(**self.ckpt.meta["config"])
        elif (out / "checkpoints").exists() and any((out / "checkpoints").glob("step-*")):
            raise ValueError(f"out: {out} already holds a run; pass resume (--resume) or another directory")
        self.cfg = cfg
        self.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if torch.cuda.is_available() \
            else torch.device("cpu")
        self.data = load_data(cfg, out.parent / ".evoflow-cache")
        if resume:  # the same text and tokenizer as at the checkpoint, or the resumed run is another run
            saved = self.ckpt.meta["data"]
            if any(saved.get(k) != self.data.identity[k] for k in ("sha256", "tokenizer_sha256")):
                raise DataError(f"{cfg.data}: not the text this run was trained on (corpus or tokenizer sha256 "
                                f"differs from its checkpoint's); resume with the original data")
        self.model = build_model(cfg, self.data.tokenizer.vocab_size, pretrained=not resume).to(self.device)
        self.trainee = Trainee(self.model, PathMixture(cfg.mixture, cfg.t_min, cfg.surrogate, cfg.time_weight))
        if mesh is not None or cfg.compile:
            from evoflow.nn import parallelize

            dtype = torch.bfloat16 if self.device.type == "cuda" else None
            parallelize(self.trainee, mesh, checkpoint=False, compile=cfg.compile, param_dtype=dtype)
        params = [p for p in self.trainee.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(params, lr=cfg.lr, betas=(0.9, 0.95), weight_decay=cfg.weight_decay)
        self.loader = Loader(self.data.train, cfg.batch, seed=cfg.seed, rank=rank, world=world)
        self.gen = torch.Generator().manual_seed(cfg.seed + 1)
        rows = self.data.valid if cfg.eval_rows == 0 else self.data.valid[: cfg.eval_rows]
        self.valid = rows.to(self.device)
        self.step = 0
        if self.ckpt is not None:
            self._restore(self.ckpt)

    # --- state -------------------------------------------------------------------------------------------
    def _states(self) -> tuple[dict, dict]:
        if self.world == 1:
            return self.model.state_dict(), self.opt.state_dict()
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

        opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
        model, optim = get_state_dict(self.trainee, self.opt, options=opts)
        return {k.removeprefix("model."): v for k, v in model.items()}, optim

    def _restore(self, ckpt) -> None:
        if self.world == 1:
            self.model.load_state_dict(ckpt.model)
            self.opt.load_state_dict(ckpt.optimizer)
        else:
            from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

            opts = StateDictOptions(full_state_dict=True, broadcast_from_rank0=False)
            set_state_dict(self.trainee, self.opt, model_state_dict={f"model.{k}": v for k, v in ckpt.model.items()},
                           optim_state_dict=ckpt.optimizer, options=opts)
        meta = ckpt.meta
        self.loader.load_state_dict(meta["loader"])
        self.gen.set_state(meta["generator"])
        set_rng_state(meta["rng"])
        self.step = ckpt.step
        if self.rank == 0:
            self._truncate_metrics(self.step)

    def _save(self) -> None:
        model, optim = self._states()
        if self.rank != 0:
            return
        meta = {"config": dataclasses.asdict(self.cfg), "loader": self.loader.state_dict(),
                "generator": self.gen.get_state(), "rng": rng_state(), "tokenizer": self.data.tokenizer.to_json(),
                "eos_id": self.data.tokenizer.eos_id,
                "data": self.data.identity, "world": self.world}
        save_checkpoint(self.out, self.step, model, optim, meta, keep=self.cfg.keep)

    def _truncate_metrics(self, step: int) -> None:
        path = self.out / "metrics.jsonl"
        if not path.exists():
            return
        kept = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= step]
        tmp = path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(line + "\n" for line in kept))
        os.replace(tmp, path)

    # --- the loop ----------------------------------------------------------------------------------------
    def _record(self, row: dict) -> None:
        if self.rank == 0:
            with open(self.out / "metrics.jsonl", "a") as f:
                f.write(json.dumps(row) + "\n")

    def _one_step(self) -> dict:
        cfg = self.cfg
        lr = learning_rate(cfg, self.step + 1)
        for group in self.opt.param_groups:
            group["lr"] = lr
        start = time.perf_counter()
        x = next(self.loader).to(self.device)
        self.model.attention = Frontier(reach(cfg, self.step + 1))
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.device.type == "cuda" and self.world == 1):
            est = self.trainee(x, self.gen, self.rank, self.world)
        self.opt.zero_grad(set_to_none=True)
        est.loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(self.trainee.parameters(), cfg.clip) if cfg.clip > 0 else None
        self.opt.step()
        self.model.attention = Frontier()  # validation and checkpoints see the model's own pattern
        self.step += 1
        scalars = torch.stack([est.loss.detach(), est.mixture.mean(), est.time_loss]).to(torch.float64)
        if self.world > 1:  # each process holds its share: the global batch's figures are their mean
            import torch.distributed as dist

            dist.all_reduce(scalars, op=dist.ReduceOp.AVG)
        loss, mixture, time_loss = scalars.tolist()
        seconds = time.perf_counter() - start
        return {"step": self.step, "loss": loss, "bound_bits": mixture / (est.tokens * 0.6931471805599453), "lr": lr,
                "time_loss": time_loss, "grad_norm": None if norm is None else float(norm),
                "tokens_per_s": cfg.batch * cfg.seq / seconds, "seconds": seconds}

    def fit(self) -> dict:
        """Run to ``cfg.steps``; return the last validation figures and the run's throughput (C9)."""
        from tqdm import tqdm

        cfg = self.cfg
        if self.rank == 0:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=2))
            (self.out / "tokenizer.json").write_text(self.data.tokenizer.to_json())
            (self.out / "data.json").write_text(json.dumps(self.data.identity, indent=2))
            if self.ckpt is None:  # a fresh run: lines left by one killed before its first checkpoint go
                (self.out / "metrics.jsonl").unlink(missing_ok=True)
        bar = tqdm(total=cfg.steps, initial=self.step, desc=f"train {self.out.name}", unit="step",
                   disable=not self.progress or self.rank != 0, leave=False)
        summary: dict = {}
        while self.step < cfg.steps:
            row = self._one_step()
            if self.step % cfg.eval_every == 0 or self.step == cfg.steps:
                summary = {"step": self.step, **validate(self.trainee, self.valid, cfg)}
                row.update(summary)
            self._record(row)
            bar.set_postfix(loss=f"{row['loss']:.3f}", bits=f"{row['bound_bits']:.3f}",
                            tok_s=f"{row['tokens_per_s']:.0f}")
            bar.update(1)
            if self.step % cfg.checkpoint_every == 0 or self.step == cfg.steps:
                self._save()
        bar.close()
        if not summary:  # resumed at the end: score the checkpoint as it is
            summary = {"step": self.step, **validate(self.trainee, self.valid, cfg)}
        if self.rank == 0:
            from evoflow.train.report import write_run_report

            write_run_report(self.out, cfg, summary)
        return summary
