"""Decoding speed on one model: Evo and AR with the frontier KV cache, AR without it (THEORY section 4, C12, C14).

    .venv/bin/python -m bench.bench_decode [--run runs/demo-*/evo] [--baseline runs/demo-*/ar] [--length 256]
                                           [--batch 4] [--repeats 3] [--threads 2] [--quick]

Side by side, interleaved (order rotated every repeat), in one process, on the same weights:

- ``ar, cache``: ``Staircase(1)``, one jump per token, through :class:`evoflow.nn.CachedDenoiser`;
- ``ar, no cache``: the same decoding recomputing the committed prefix at every call (the frontier pattern
  still leaves the pure-noise suffix out, as an AR model without a KV cache would);
- ``evo, cache``: :class:`evoflow.EvoController` with its defaults, through the cache;
- unless ``--quick``, Evo settings of :data:`EVO_ROWS` (its AR limit; ``min_move=0``, the former default,
  under which unsure tokens drift off t = 1; windows committing 2 or 4 tokens per call) and ``block:2``
  (``Staircase(2)``, one jump per block), the fixed path with the calls of the 2-per-call rows, all cached.

Tokens/s count generated tokens only (no prompt here); ``x ar`` is a row's tokens/s over ``ar, cache``'s.
With a baseline run (``--baseline``, default the ``ar`` run beside ``--run`` when there is one) every row
also gets e05's quality proxies over the samples of all repeats: the AR baseline's perplexity of them in
float64 and distinct-2/3 (experiments/e05_trained_decoding). Without ``--run`` the weights are a fresh
``demo``-size model: the cache ratio does not depend on them, Evo's calls do (an untrained model is
uncertain everywhere), so Evo's figures are meaningful only on a trained run. Medians over the repeats.
"""

from __future__ import annotations

import argparse
import pathlib
import statistics

import torch

import evoflow as ef
from evoflow.nn import CachedDenoiser, EvoTransformer, Frontier, get_config

EVO_ROWS = {  # label: EvoController settings
    "evo, AR limit": dict(window=1, min_step=1.0, max_step=1.0, commit_threshold=None),
    "evo, min_move=0": dict(min_move=0.0),
    "evo, w8 k2 mm": dict(window=8, min_commits=2, min_move=0.01),
    "evo, w4 k2 mm": dict(window=4, min_commits=2, min_move=0.01),
    "evo, w4 k4": dict(window=4, min_commits=4),
}


def _model(run: str | None) -> EvoTransformer:
    if run is None:
        torch.manual_seed(0)
        return EvoTransformer(get_config("demo")).eval()
    from evoflow.train.session import load_model

    return load_model(run)[0]


def _methods(model: EvoTransformer, args: argparse.Namespace) -> dict:
    """label -> a function of a generator that decodes ``args.batch`` sequences of ``args.length`` tokens."""
    def cached(controller, steps=None):
        return lambda g: ef.generate(CachedDenoiser(model), args.length, controller, steps=steps, batch=args.batch,
                                     generator=g)

    methods = {
        "ar, cache": cached(ef.Staircase(1)),
        "ar, no cache": lambda g: ef.generate(model, args.length, ef.Staircase(1), batch=args.batch, generator=g),
        "evo, cache": cached(ef.EvoController()),
    }
    if not args.quick:
        methods.update({label: cached(ef.EvoController(**kw)) for label, kw in EVO_ROWS.items()})
        methods["block:2, cache"] = cached(ef.Staircase(2), steps=args.length // 2)
    return methods


def _baseline(args: argparse.Namespace):
    """The AR baseline model that scores the samples, or None (no ``--baseline`` and no ``ar`` run beside)."""
    path = args.baseline
    if path is None and args.run is not None and (pathlib.Path(args.run).parent / "ar").is_dir():
        path = pathlib.Path(args.run).parent / "ar"
    return None if path is None else _model(str(path))


def _quality(base, results: list) -> str:
    """e05's proxies over the pooled samples: the baseline's perplexity (float64), distinct-2, distinct-3."""
    from experiments.e05_trained_decoding.run import baseline_ppl, distinct

    if base is None:
        return ""
    tokens = torch.cat([r.tokens for r in results])
    return f"  ppl {baseline_ppl(base, tokens):8.1f}  d2 {distinct(tokens, 2):.3f}  d3 {distinct(tokens, 3):.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", default=None, help="a run directory written by evoflow train (default: fresh demo)")
    parser.add_argument("--baseline", default=None, help="the AR baseline run that scores the samples")
    parser.add_argument("--length", type=int, default=256)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--quick", action="store_true", help="only the AR rows and the Evo defaults")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = _model(args.run)
    model.attention = Frontier()
    methods = _methods(model, args)
    rows = {name: [] for name in methods}
    names = list(methods)
    for i in range(args.repeats):
        for name in names[i % len(names):] + names[: i % len(names)]:
            rows[name].append(methods[name](torch.Generator().manual_seed(i)))
    base = _baseline(args)
    print(f"{'fresh demo model' if args.run is None else args.run}, batch {args.batch}, length {args.length}, "
          f"{args.threads} threads, median of {args.repeats}"
          f"{'' if base is None else '; quality over all repeats, scored by the AR baseline'}:")
    speed = {name: statistics.median(r.tokens.numel() / r.wall_time for r in results) for name, results in rows.items()}
    for name, results in rows.items():
        calls = statistics.median(r.calls_per_token for r in results)
        print(f"  {name:<15} {speed[name]:9.1f} tokens/s {speed[name] / speed['ar, cache']:5.2f}x ar  "
              f"{calls:6.3f} calls/token  {statistics.median(r.wall_time for r in results):7.2f} s"
              f"{_quality(base, results)}")
    print(f"  ar cache / ar no cache: {speed['ar, cache'] / speed['ar, no cache']:.2f}x (goal >= 3 at length 256)")
    print(f"  evo cache / ar cache:   {speed['evo, cache'] / speed['ar, cache']:.2f}x (goal >= 1)")


if __name__ == "__main__":
    main()
