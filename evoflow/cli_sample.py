"""``evoflow sample``: text from a trained run along any controller, with the cost line (THEORY section 4, C14).

    evoflow sample runs/evo --controller evo --length 64 --prompt "Return the" --seed 0
    evoflow sample runs/evo --controller ar          # AR decoding: one call per token, KV cache
    evoflow sample runs/evo --controller sync:32     # 32-step synchronous (diffusion) decoding
    evoflow sample runs/evo --controller block:4     # block diffusion, one call per token on average
    evoflow sample runs/evo --controller rolling:4   # a rolling window of 4 tokens

The Transformer decodes with its Frontier pattern and the committed-prefix KV cache (exact, C12).
"""

from __future__ import annotations

import argparse

__all__ = ["add_sample_command", "parse_controller"]


def parse_controller(spec: str, generated: int):
    """``(controller, steps)`` for ``evo``, ``ar``, ``sync:K``, ``block:B[:K]``, ``rolling:W[:K]`` over ``generated``
    new tokens; a ``ValueError`` naming ``--controller`` otherwise (THEORY section 4)."""
    from evoflow.decoding import EvoController
    from evoflow.paths import Rolling, Staircase, Synchronous

    name, *args = str(spec).split(":")
    try:
        nums = [float(a) if name == "rolling" and i == 0 else int(a) for i, a in enumerate(args)]
    except ValueError:
        raise ValueError(f"--controller: bad number in {spec!r}") from None
    if name == "evo" and not nums:
        return EvoController(), None
    if name == "ar" and not nums:
        return Staircase(1), generated
    if name == "sync" and len(nums) <= 1 and all(n >= 1 for n in nums):
        return Synchronous(), (nums[0] if nums else generated)
    if name == "block" and len(nums) in (1, 2) and all(n >= 1 for n in nums):
        path = Staircase(int(nums[0]))
        return path, (nums[1] if len(nums) == 2 else path.n_blocks(generated) * path.block)
    if name == "rolling" and len(nums) in (1, 2) and nums[0] > 0 and all(n >= 1 for n in nums[1:]):
        return Rolling(nums[0]), (nums[1] if len(nums) == 2 else None)
    raise ValueError(f"--controller must be evo, ar, sync[:K], block:B[:K] or rolling:W[:K], got {spec!r}")


def _cmd_sample(args: argparse.Namespace, usage_error: type[Exception]) -> int:
    import torch

    from evoflow.decoding import generate
    from evoflow.nn import CachedDenoiser, Frontier
    from evoflow.train.checkpoint import CheckpointError
    from evoflow.train.session import load_model

    if args.length < 1:
        raise usage_error(f"--length must be >= 1, got {args.length}")
    try:
        controller, steps = parse_controller(args.controller, args.length)
        model, _, tok, ckpt = load_model(args.run)
    except (ValueError, CheckpointError) as exc:
        raise usage_error(str(exc)) from None
    prompt = tok.encode(args.prompt) if args.prompt else []
    model.attention = Frontier()
    try:
        out = generate(CachedDenoiser(model), len(prompt) + args.length, controller, steps=steps, batch=args.batch,
                       prompt=prompt or None, temperature=args.temperature, top_p=args.top_p,
                       generator=torch.Generator().manual_seed(args.seed))
    except (ValueError, TypeError) as exc:
        raise usage_error(str(exc)) from None
    for row in out.tokens:
        print(tok.decode(row.tolist()))
        print("-" * 40)
    print(f"{args.controller} at step {ckpt.step}: {out.cost()}")
    return 0


def add_sample_command(sub, formatter, usage_error: type[Exception]) -> None:
    """Add ``sample`` to the ``evoflow`` parser's subcommands (C14)."""
    p = sub.add_parser("sample", help="text from a trained run along a decoding controller, with its cost",
                       formatter_class=formatter, description=__doc__)
    p.add_argument("run", help="a run directory written by evoflow train")
    p.add_argument("--controller", default="evo", help="evo, ar, sync:K, block:B[:K] or rolling:W[:K] (default evo)")
    p.add_argument("--length", type=int, default=64, help="tokens to generate after the prompt (default 64)")
    p.add_argument("--prompt", default="", help="text to continue (tokenized with the run's tokenizer)")
    p.add_argument("--batch", type=int, default=1, help="sequences decoded together (default 1)")
    p.add_argument("--temperature", type=float, default=1.0, help="0 for argmax decoding (default 1)")
    p.add_argument("--top-p", dest="top_p", type=float, default=1.0, help="nucleus mass (default 1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the noise and the token draws (default 0)")
    p.set_defaults(func=lambda args: _cmd_sample(args, usage_error))
