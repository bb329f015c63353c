"""Overhead of evoflow.solve against torchdiffeq and a hand-written loop on the same field.

RK4, synchronous path, a cheap per-token field (B=64, L=128, d=64, V=64, 64 steps), float32.
All three integrate dz/dt = u(z, tau) with u from evoflow.process; only the loop differs.
Goal (issue 2): evoflow / torchdiffeq <= 1.0 and evoflow / hand loop <= 1.15.

    .venv/bin/python bench/bench_solve.py [--threads N] [--repeats R]
"""

from __future__ import annotations

import argparse

import torch
from torchdiffeq import odeint

import evoflow as ef
from bench.common import LinearDenoiser, median_times
from evoflow.process import posterior_mean, velocity

B, L, D, V, STEPS, T_MIN = 64, 128, 64, 64, 64, 0.05


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    den = LinearDenoiser(V, D, ef.Linear())
    z0 = torch.randn(B, L, D, generator=torch.Generator().manual_seed(1))
    E = den.embeddings

    def field(z: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:  # the same per-token field for all
        return velocity(z, posterior_mean(den(z, tau).logits, E), tau, den.schedule)

    ts = T_MIN + (1 - T_MIN) * torch.linspace(1.0, 0.0, STEPS + 1, dtype=torch.float64)

    def run_evoflow():
        return ef.solve(den, z0, ef.Synchronous(), STEPS, solver="rk4", t_min=T_MIN).z

    def run_torchdiffeq():
        def f(t, z):
            return field(z, t.to(torch.float64).expand(B, L))

        return odeint(f, z0, ts.to(torch.float32), method="rk4")[-1]

    def run_hand():
        z = z0
        for k in range(STEPS):
            t0, t1 = ts[k], ts[k + 1]
            h = float(t1 - t0)
            full = lambda t: torch.full((B, L), float(t), dtype=torch.float64)  # noqa: E731
            k1 = field(z, full(t0))
            k2 = field(z + 0.5 * h * k1, full(t0 + 0.5 * h))
            k3 = field(z + 0.5 * h * k2, full(t0 + 0.5 * h))
            k4 = field(z + h * k3, full(t1))
            z = z + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        return z

    ours, hand = run_evoflow(), run_hand()
    assert torch.allclose(ours, hand, atol=1e-4), float((ours - hand).abs().max())
    times = median_times({"evoflow": run_evoflow, "torchdiffeq": run_torchdiffeq, "hand loop": run_hand},
                         repeats=args.repeats)
    print(f"RK4, B={B} L={L} d={D} V={V}, {STEPS} steps, float32, {args.threads} thread(s); median of {args.repeats}")
    for k, v in times.items():
        print(f"  {k:<12} {1e3 * v:8.1f} ms")
    print(f"  evoflow / torchdiffeq = {times['evoflow'] / times['torchdiffeq']:.3f}   (goal <= 1.0)")
    print(f"  evoflow / hand loop   = {times['evoflow'] / times['hand loop']:.3f}   (goal <= 1.15)")


if __name__ == "__main__":
    main()
