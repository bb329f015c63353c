"""Per-token batching: 64 sequences on 64 different paths in one solve call, against 64 calls.

Rolling windows of 64 widths (1 .. 64 tokens), L=128, d=64, V=64, DDIM with 192 steps, float32.
Goal (issue 2): the batched call is >= 10x faster than the loop.

    .venv/bin/python bench/bench_batching.py [--threads N] [--repeats R]
"""

from __future__ import annotations

import argparse

import torch

import evoflow as ef
from bench.common import LinearDenoiser, median_times

B, L, D, V, STEPS = 64, 128, 64, 64, 192


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    den = LinearDenoiser(V, D, ef.Linear())
    z0 = torch.randn(B, L, D, generator=torch.Generator().manual_seed(1))
    paths = [ef.Rolling(window=float(w)) for w in range(1, B + 1)]

    def batched():
        return ef.solve(den, z0, paths, STEPS, solver="ddim").z

    def looped():
        return torch.cat([ef.solve(den, z0[b:b + 1], p, STEPS, solver="ddim").z for b, p in enumerate(paths)])

    assert torch.allclose(batched(), looped(), atol=1e-5)
    times = median_times({"one call": batched, "64 calls": looped}, repeats=args.repeats)
    print(f"{B} sequences x {B} different Rolling paths, L={L} d={D} V={V}, DDIM {STEPS} steps, "
          f"{args.threads} thread(s); median of {args.repeats}")
    for k, v in times.items():
        print(f"  {k:<9} {1e3 * v:9.1f} ms")
    print(f"  speed-up = {times['64 calls'] / times['one call']:.1f}x   (goal >= 10x)")


if __name__ == "__main__":
    main()
