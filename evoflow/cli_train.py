"""The training commands of ``evoflow``: ``train``, ``eval`` and the main job, ``demo`` (THEORY section 8, C9, C13).

    evoflow train --size demo --data docstrings --steps 400 --out runs/evo
    evoflow train --out runs/evo --resume                 # continue a killed run exactly
    evoflow eval runs/evo --path ar --path sync:16 --path block:4
    evoflow demo                                          # verify, train Evo and an AR baseline, report

Bad input (a missing, empty, binary or undecodable data file, an unknown size, ``--resume`` without a
checkpoint, an unwritable ``--out``) is reported in one line with exit status 2 before any training.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import pathlib
import sys

__all__ = ["add_commands", "usage_error", "writable_folder"]


class _UsageError(Exception):
    """Raised by the commands for a bad argument found after parsing (exit status 2)."""


def _run_path(out: str | None, kind: str, must_exist: bool = False) -> pathlib.Path:
    """``out`` (or runs/kind-<time>) made and proven writable; with ``must_exist`` it must already be a folder."""
    path = pathlib.Path(out) if out else pathlib.Path("runs") / f"{kind}-{_dt.datetime.now():%Y%m%d-%H%M%S}"
    if must_exist and not path.is_dir():
        raise _UsageError(f"--out: {str(path)!r} is not a run directory")
    return writable_folder(path, _UsageError)


def writable_folder(path: pathlib.Path, error: type[Exception]) -> pathlib.Path:
    """``path`` created and proven writable by a probe file, else ``error`` naming ``--out`` (THEORY section 8 runs)."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".evoflow-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise error(f"--out: cannot create or write {str(path)!r}: {exc.strerror or exc}") from None
    return path


_FLAGS = {  # command-line flag -> TrainConfig field (None: same name)
    "size": None, "data": None, "field": None, "tokenizer": None, "vocab": None, "steps": None, "batch": None,
    "seq": None, "seed": None, "lr": None, "mixture": None, "surrogate": None, "t_min": None,
    "eval_every": None, "checkpoint_every": None, "compile": None, "init": None, "anneal": None,
}


def _config(args: argparse.Namespace):
    """The TrainConfig of ``train``: the TOML file's fields, then the flags given on the command line."""
    from evoflow.train.config import TrainConfig

    given = {k: getattr(args, k) for k in _FLAGS if getattr(args, k) is not None}
    try:
        return TrainConfig.from_toml(args.config, **given) if args.config else TrainConfig(**given)
    except (ValueError, TypeError) as exc:
        raise _UsageError(str(exc)) from None


def _cmd_train(args: argparse.Namespace) -> int:
    from evoflow.train.checkpoint import CheckpointError
    from evoflow.train.data import DataError
    from evoflow.train.loop import Run, distributed_world

    if args.resume and not args.out:
        raise _UsageError("--resume: give the run directory to continue with --out")
    cfg = _config(args)
    ignored = [f"--{k.replace('_', '-')}" for k in _FLAGS if getattr(args, k) is not None] + \
        (["--config"] if args.config else [])
    out = _run_path(args.out, "train", must_exist=args.resume)
    try:
        run = Run(cfg, out, args.resume, not args.quiet and sys.stderr.isatty(), print, *distributed_world())
    except (DataError, CheckpointError, ValueError) as exc:
        raise _UsageError(str(exc)) from None
    if args.resume and ignored and run.rank == 0:
        print(f"evoflow train: note: --resume continues with the run's saved config; ignoring {' '.join(ignored)}",
              file=sys.stderr)
    summary = run.fit()
    if run.rank != 0:
        return 0
    print(f"{out}: step {summary['step']}, validation {summary['val_ar_bits']:.4f} bits/token on the AR path "
          f"(exact), {summary['val_sync_bits']:.4f} +- {summary['val_sync_stderr']:.4f} on the synchronous path "
          f"with {run.cfg.sync_steps} steps (bound); report: {out / 'report.md'}")
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from evoflow.train.checkpoint import CheckpointError
    from evoflow.train.data import DataError
    from evoflow.train.evaluate import parse_path
    from evoflow.train.session import load_run

    paths = args.path or ["ar", "sync"]
    try:
        run = load_run(args.run, data=args.data)
        for spec in paths:
            parse_path(spec, run.rows.shape[1], args.steps)
    except (DataError, CheckpointError, ValueError) as exc:
        raise _UsageError(str(exc)) from None
    scores = [run.score(spec, args.steps) for spec in paths]
    if args.json:
        print(json.dumps({"run": str(args.run), "step": run.step, "tokens": scores[0].tokens,
                          "scores": [s.__dict__ for s in scores]}, indent=2))
    else:
        print(f"{args.run} at step {run.step}, {scores[0].tokens} tokens of {run.source}:")
        for s in scores:
            print("  " + s.describe())
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from evoflow.demo import run_demo

    out = _run_path(args.out, "demo")
    report = run_demo(out, steps=args.steps, progress=not args.quiet and sys.stderr.isatty())
    print(f"\nreport: {report}")
    return 0


def _train_flags(p: argparse.ArgumentParser) -> None:
    from evoflow.nn import config_names

    p.add_argument("--size", help=f"model size, a row of nn/config.py: {', '.join(config_names())} (default demo)")
    p.add_argument("--data", help="pydoc, docstrings, stdlib, or a text file, folder of text files or .jsonl "
                                  "(default pydoc)")
    p.add_argument("--field", help="the JSONL field holding the text (default text)")
    p.add_argument("--tokenizer", help="a local tokenizer.json instead of training a byte-level BPE")
    p.add_argument("--vocab", type=int, help="BPE vocabulary size (default 2048)")
    p.add_argument("--steps", type=int, help="training steps (default 400)")
    p.add_argument("--batch", type=int, help="global batch, sequences per step (default 16)")
    p.add_argument("--seq", type=int, help="tokens per sequence (default 128)")
    p.add_argument("--seed", type=int, help="seed of initialisation, data order and the objective (default 0)")
    p.add_argument("--lr", type=float, help="peak learning rate (default 3e-3)")
    p.add_argument("--mixture", help="path mixture, e.g. 'ar:0.5,stair=4:0.25,sync:0.25' (components: ar, sync, "
                                     "stair=B, rolling=W, offsets=M)")
    p.add_argument("--surrogate", choices=["mse", "ce"], help="integrand: the bound (mse) or C10's CE bound")
    p.add_argument("--t-min", dest="t_min", type=float, help="where the flow hands over to the decoder")
    p.add_argument("--eval-every", dest="eval_every", type=int, help="validation every N steps")
    p.add_argument("--checkpoint-every", dest="checkpoint_every", type=int, help="checkpoint every N steps")
    p.add_argument("--compile", action="store_const", const=True, help="torch.compile every block")
    p.add_argument("--init", help="start from a Hugging Face checkpoint directory (config.json + safetensors: "
                                  "Llama, Mistral, Qwen2, Qwen3); its tokenizer.json unless --tokenizer")
    p.add_argument("--anneal", type=int, help="grow attention's look-ahead from causal to the frontier pattern "
                                              "over N steps (default 0: the frontier pattern from the start)")
    p.add_argument("--config", help="a TOML file of TrainConfig fields (flags given here override it)")
    p.add_argument("--out", help="the run directory (default runs/train-<time>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its latest checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def add_commands(sub, formatter) -> None:
    """Add ``train``, ``eval`` and ``demo`` to the ``evoflow`` parser's subcommands (C9, C13)."""
    train = sub.add_parser("train", help="train the time-conditioned Transformer on text (path-mixture NELBO, C9)",
                           formatter_class=formatter, description=__doc__)
    _train_flags(train)
    train.set_defaults(func=_cmd_train)
    ev = sub.add_parser("eval", help="bits/token of a trained run on held-out text, exact or bound per path",
                        formatter_class=formatter,
                        description="Score a run's latest checkpoint: ar (exact, C13), sync[:K], block:B[:K], "
                                    "rolling:W[:K] (bounds) on the run's validation text or on --data.")
    ev.add_argument("run", help="a run directory written by evoflow train, or a Hugging Face checkpoint directory "
                                "(imported as is, before any adaptation; needs --data)")
    ev.add_argument("--path", action="append", default=None, help="a decoding path; repeat for several "
                                                                   "(default: ar and sync:16)")
    ev.add_argument("--steps", type=int, default=None, help="grid steps K for the bounds (default 16, or one "
                                                             "step per knot)")
    ev.add_argument("--data", help="score this text (a path or built-in corpus) instead of the validation split")
    ev.add_argument("--json", action="store_true", help="print JSON")
    ev.set_defaults(func=_cmd_eval)
    demo = sub.add_parser("demo", help="the main job: verify the claims, train Evo and an AR baseline, compare them",
                          formatter_class=formatter,
                          description="evoflow verify's summary, then an Evo model (path mixture) and the same model "
                                      "on the AR path only, both trained on the standard library's docstrings, "
                                      "scored in bits/token under the AR, synchronous and rolling paths.")
    demo.add_argument("--out", help="the demo's folder (default runs/demo-<time>)")
    demo.add_argument("--steps", type=int, default=None, help="training steps of each model (default: the demo's)")
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    demo.set_defaults(func=_cmd_demo)


def usage_error() -> type[Exception]:
    """The exception the commands raise for a bad argument; :func:`evoflow.cli.main` turns it into exit status 2
    (THEORY section 8 runs)."""
    return _UsageError
