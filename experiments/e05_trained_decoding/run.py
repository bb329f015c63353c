"""e05: decoding the trained model with each controller: calls, speed with and without the cache, quality (C12, C14).

    .venv/bin/python -m experiments.e05_trained_decoding.run [--runs runs] [--batch 8] [--quick] [--out DIR]

The Evo run of ``evoflow demo`` (newest ``runs/demo-*``; trained first if none) generates ``batch`` sequences
of the training length with AR (``Staircase(1)``), synchronous K, block, rolling, the ``EvoController``
defaults and (unless ``--quick``) Evo with ``min_move=0`` (every step taken, the former default) and with
several commits per call beside the block paths whose calls they match, at temperature 1, through the frontier
KV cache (AR also without it). For each: calls per generated token, tokens/s, and two quality proxies: the
AR-only baseline's perplexity of the samples (``exp`` of its mean negative log-likelihood per token along its AR
path, float64, C13), and the distinct-n fractions (n = 2, 3) that expose repetition; the held-out text's
figures are the reference (the baseline's perplexity of real text, its distinct-n). Writes ``results.json``
and the README's table.
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib

import torch

import evoflow as ef

HERE = pathlib.Path(__file__).resolve().parent


def distinct(tokens: torch.Tensor, n: int) -> float:
    """Distinct n-grams over all n-grams of the rows (1 = no repetition)."""
    grams = [tuple(row[i:i + n]) for row in tokens.tolist() for i in range(len(row) - n + 1)]
    return len(set(grams)) / max(len(grams), 1)


def baseline_ppl(model, tokens: torch.Tensor) -> float:
    """Perplexity per token of ``tokens`` under the AR baseline's AR path, in float64 (C13)."""
    with torch.no_grad():
        nll = -ef.ar_log_likelihood(model.double(), tokens).sum() / tokens.numel()
    model.float()
    return math.exp(float(nll))


def controllers(L: int, quick: bool) -> list[tuple[str, object, int | None, bool]]:
    """(label, controller, steps, cached)."""
    rows = [("ar", ef.Staircase(1), None, True), ("ar, no cache", ef.Staircase(1), None, False),
            ("evo (defaults)", ef.EvoController(), None, True), (f"sync:{L // 4}", ef.Synchronous(), L // 4, True)]
    if not quick:
        rows += [(f"sync:{L}", ef.Synchronous(), L, True), ("block:4", ef.Staircase(4), L, True),
                 ("rolling:4", ef.Rolling(4.0), None, True)]
        rows += [("evo, min_move=0 (every step taken)", ef.EvoController(min_move=0.0), None, True),
                 ("evo, window=8, min_commits=2, min_move=0.01",
                  ef.EvoController(window=8, min_commits=2, min_move=0.01), None, True),
                 ("block:2, one jump", ef.Staircase(2), L // 2, True),
                 ("evo, window=4, min_commits=4", ef.EvoController(window=4, min_commits=4), None, True),
                 ("block:4, one jump", ef.Staircase(4), L // 4, True)]
    return rows


def study(evo_run: pathlib.Path, ar_run: pathlib.Path, batch: int, quick: bool, seed: int = 0) -> dict:
    from evoflow.nn import CachedDenoiser, Frontier
    from evoflow.train.session import load_model, load_run

    model, cfg, _, _ = load_model(evo_run)
    model.attention = Frontier()
    base = load_run(ar_run)
    L = cfg.seq
    real = base.rows[:batch]
    out = {"L": L, "batch": batch, "reference": {"baseline_ppl": baseline_ppl(base.model, real),
                                                 "distinct2": distinct(real, 2), "distinct3": distinct(real, 3)},
           "rows": []}
    for label, ctrl, steps, cached in controllers(L, quick):
        den = CachedDenoiser(model) if cached else model
        r = ef.generate(den, L, ctrl, steps=steps, batch=batch, generator=torch.Generator().manual_seed(seed))
        out["rows"].append({"controller": label, "calls_per_token": r.calls_per_token, "nfe": r.nfe,
                            "tokens_per_s": r.tokens.numel() / r.wall_time, "cache_hits": r.cache_hits,
                            "baseline_ppl": baseline_ppl(base.model, r.tokens),
                            "distinct2": distinct(r.tokens, 2), "distinct3": distinct(r.tokens, 3)})
    return out


def table(result: dict) -> str:
    ref = result["reference"]
    lines = ["| controller | calls / token | tokens/s | baseline perplexity | distinct-2 | distinct-3 |",
             "|---|---|---|---|---|---|",
             f"| held-out text | - | - | {ref['baseline_ppl']:.1f} | {ref['distinct2']:.3f} | {ref['distinct3']:.3f} |"]
    lines += [f"| {r['controller']} | {r['calls_per_token']:.3f} | {r['tokens_per_s']:.1f} | {r['baseline_ppl']:.1f} "
              f"| {r['distinct2']:.3f} | {r['distinct3']:.3f} |" for r in result["rows"]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    from experiments.trained import ensure_runs

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", default="runs")
    parser.add_argument("--evo", default=None, help="an Evo run directory (instead of the newest demo)")
    parser.add_argument("--ar", default=None, help="the AR-only baseline run (with --evo)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--quick", action="store_true", help="AR, AR without cache, Evo and one synchronous row")
    parser.add_argument("--out", default=None, help="default: this folder; runs/<study>-quick with --quick")
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    evo, ar = (pathlib.Path(args.evo), pathlib.Path(args.ar)) if args.evo else ensure_runs(args.runs)
    result = study(evo, ar, args.batch, args.quick)
    out = pathlib.Path(args.out or ("runs/e05_trained_decoding-quick" if args.quick else HERE))
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(result, indent=2))
    print(table(result))
    return result


if __name__ == "__main__":
    main()
