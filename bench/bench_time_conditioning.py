"""CPU benchmark: what per-token time conditioning costs (THEORY section 8, C12).

    python bench/bench_time_conditioning.py                       # `small`, 8 x 128 tokens, eager and compiled
    python bench/bench_time_conditioning.py --config tiny --steps 2 --warmup 1 --modes eager   # the test

Forward + backward tokens/s of one configuration with time conditioning (sinusoid -> MLP ->
adaLN-single modulation) and the same model with it off (time-agnostic), side by side, in
two modes: eager, and each block compiled with ``torch.compile`` (through
``evoflow.nn.parallelize(model, None, compile=True)``, as training does). Steps alternate
between the two models (on, off, off, on, ...) so that drift in the machine's speed falls on
both, and medians are compared. Goal: ratio on / off >= 0.9.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F

from evoflow.nn import EvoTransformer, get_config, parallelize


def step(model: EvoTransformer, z, tau, x) -> float:
    """Seconds for one forward + backward of a cross-entropy and time-regression loss."""
    t0 = time.perf_counter()
    out = model(z, tau)
    loss = F.cross_entropy(out.logits.flatten(0, 1), x.flatten()) + F.mse_loss(out.time, tau.float())
    loss.backward()
    elapsed = time.perf_counter() - t0
    model.zero_grad(set_to_none=True)
    return elapsed


def compare(args, compile: bool) -> dict:
    """Median step times of the model with time conditioning on and off, measured alternately."""
    models = {}
    for on in (True, False):
        torch.manual_seed(0)
        models[on] = EvoTransformer(get_config(args.config, time_conditioning=on))
        if compile:
            parallelize(models[on], None, checkpoint=False, compile=True)
    cfg = models[True].config
    g = torch.Generator().manual_seed(0)
    x = torch.randint(cfg.vocab, (args.batch, args.seq), generator=g)
    tau = torch.rand(args.batch, args.seq, generator=g, dtype=torch.float64)
    z = torch.randn(args.batch, args.seq, cfg.d_latent, generator=g)
    times = {True: [], False: []}
    for i in range(args.warmup + args.steps):  # warm-up steps include compilation
        for on in (True, False) if i % 2 == 0 else (False, True):
            t = step(models[on], z, tau, x)
            if i >= args.warmup:
                times[on].append(t)
    median = {on: statistics.median(times[on]) for on in times}
    tokens = args.batch * args.seq
    return {"mode": "compiled" if compile else "eager", "step_s_on": median[True], "step_s_off": median[False],
            "tokens_per_s_on": tokens / median[True], "tokens_per_s_off": tokens / median[False],
            "ratio": median[False] / median[True]}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="small")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--steps", type=int, default=12, help="timed steps per model")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--modes", nargs="+", choices=["eager", "compiled"], default=["eager", "compiled"])
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = [compare(args, compile=mode == "compiled") for mode in args.modes]
    print(f"{args.config}, batch {args.batch} x {args.seq} tokens, {torch.get_num_threads()} threads, fwd + bwd")
    print(f"{'mode':<10}{'tokens/s, time on':>20}{'tokens/s, time off':>20}{'ratio on/off':>14}")
    for r in rows:
        print(f"{r['mode']:<10}{r['tokens_per_s_on']:>20.0f}{r['tokens_per_s_off']:>20.0f}{r['ratio']:>14.3f}")
    print("goal: ratio >= 0.9")
    result = {"config": args.config, "batch": args.batch, "seq": args.seq, "threads": torch.get_num_threads(),
              "rows": rows}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
