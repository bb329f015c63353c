"""Decoding speed on one model: Evo and AR with the frontier KV cache, AR without it (THEORY section 4, C12, C14).

    .venv/bin/python -m bench.bench_decode [--run runs/demo-*/evo] [--length 256] [--batch 4] [--repeats 3]

Side by side, interleaved (order rotated every repeat), in one process, on the same weights:

- ``ar, cache``: ``Staircase(1)``, one jump per token, through :class:`evoflow.nn.CachedDenoiser`;
- ``ar, no cache``: the same decoding recomputing the committed prefix at every call (the frontier pattern
  still leaves the pure-noise suffix out, as an AR model without a KV cache would);
- ``evo, cache``: :class:`evoflow.EvoController` with its defaults, through the cache.

Tokens/s count generated tokens only (no prompt here). Without ``--run`` the weights are a fresh ``demo``-size
model: the cache ratio does not depend on them, Evo's calls do (an untrained model is uncertain everywhere),
so Evo's figure is meaningful only on a trained run. Medians over the repeats; ratios of medians.
"""

from __future__ import annotations

import argparse
import statistics

import torch

import evoflow as ef
from evoflow.nn import CachedDenoiser, EvoTransformer, Frontier, get_config


def _model(run: str | None) -> EvoTransformer:
    if run is None:
        torch.manual_seed(0)
        return EvoTransformer(get_config("demo")).eval()
    from evoflow.train.session import load_model

    return load_model(run)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", default=None, help="a run directory written by evoflow train (default: fresh demo)")
    parser.add_argument("--length", type=int, default=256)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = _model(args.run)
    model.attention = Frontier()
    methods = {
        "ar, cache": lambda g: ef.generate(CachedDenoiser(model), args.length, ef.Staircase(1), batch=args.batch,
                                           generator=g),
        "ar, no cache": lambda g: ef.generate(model, args.length, ef.Staircase(1), batch=args.batch, generator=g),
        "evo, cache": lambda g: ef.generate(CachedDenoiser(model), args.length, ef.EvoController(),
                                            batch=args.batch, generator=g),
    }
    rows = {name: [] for name in methods}
    names = list(methods)
    for i in range(args.repeats):
        for name in names[i % len(names):] + names[: i % len(names)]:
            rows[name].append(methods[name](torch.Generator().manual_seed(i)))
    print(f"{'fresh demo model' if args.run is None else args.run}, batch {args.batch}, length {args.length}, "
          f"{args.threads} threads, median of {args.repeats}:")
    speed = {}
    for name, results in rows.items():
        speed[name] = statistics.median(r.tokens.numel() / r.wall_time for r in results)
        calls = statistics.median(r.calls_per_token for r in results)
        print(f"  {name:<13} {speed[name]:9.1f} tokens/s  {calls:6.3f} calls/token  "
              f"{statistics.median(r.wall_time for r in results):7.2f} s")
    print(f"  ar cache / ar no cache: {speed['ar, cache'] / speed['ar, no cache']:.2f}x (goal >= 3 at length 256)")
    print(f"  evo cache / ar cache:   {speed['evo, cache'] / speed['ar, cache']:.2f}x (goal >= 1)")


if __name__ == "__main__":
    main()
