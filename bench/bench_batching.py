"""Per-token batching: 64 sequences on 64 different paths in one solve call, against 64 calls.

Rolling windows of 64 widths (1 .. 64 tokens), DDIM, float32, in two regimes of the cheap field:
  - "light": L=32, d=16, V=32, 96 steps: per-call overhead dominates, as with a GPU kernel launch;
  - "heavy": L=128, d=64, V=64, 192 steps (the bench_solve field): compute dominates on a CPU, so
    batching can only remove the per-call overhead.
Goal (issue 2): the batched call is >= 10x faster than the loop.

    .venv/bin/python -m bench.bench_batching [--threads N] [--repeats R]
"""

from __future__ import annotations

import argparse

import torch

import evoflow as ef
from bench.common import LinearDenoiser, median_times

B = 64
REGIMES = {"light": (32, 16, 32, 96), "heavy": (128, 64, 64, 192)}  # L, d, V, steps


def run(name: str, repeats: int) -> None:
    L, D, V, steps = REGIMES[name]
    den = LinearDenoiser(V, D, ef.Linear())
    z0 = torch.randn(B, L, D, generator=torch.Generator().manual_seed(1))
    paths = [ef.Rolling(window=float(w)) for w in range(1, B + 1)]

    def batched():
        return ef.solve(den, z0, paths, steps, solver="ddim").z

    def looped():
        return torch.cat([ef.solve(den, z0[b:b + 1], p, steps, solver="ddim").z for b, p in enumerate(paths)])

    assert torch.allclose(batched(), looped(), atol=1e-5)
    times = median_times({"one call": batched, "64 calls": looped}, repeats=repeats)
    print(f"[{name}] {B} sequences x {B} different Rolling paths, L={L} d={D} V={V}, DDIM {steps} steps, "
          f"{torch.get_num_threads()} thread(s); median of {repeats}")
    for k, v in times.items():
        print(f"  {k:<9} {1e3 * v:9.1f} ms")
    print(f"  speed-up = {times['64 calls'] / times['one call']:.1f}x   (goal >= 10x)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for name in REGIMES:
        run(name, args.repeats)


if __name__ == "__main__":
    main()
