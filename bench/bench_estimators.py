"""Variance per network call of the continuous-time NELBO estimators (claim C9), against uniform s.

For each denoiser (an exact Markov oracle; a fixed random `tiny` EvoTransformer) and each
sampler of s, the integral part of the continuous-time NELBO over a mixture of paths
(Synchronous, Staircase(1), Rolling(2)) is estimated `replications` times with `calls` network
calls each; variance per call = calls * Var(estimate). Printed as ratios uniform / sampler
(> 1 is a reduction). The fitted logSNR proposal is built from an independent pilot run
(256 calls per sequence), a one-off cost not counted in the ratio.
Goal (issue 3): the best estimator cuts variance at least 5x at equal calls.

    .venv/bin/python -m bench.bench_estimators [--replications R]
"""

from __future__ import annotations

import argparse

import torch

import evoflow as ef
from evoflow.elbo import estimator_variance, fit_log_snr_profile


def samplers(pilot) -> dict:
    return {
        "uniform": ef.Uniform(), "antithetic": ef.Antithetic(), "stratified": ef.Stratified(),
        "logsnr (flat)": ef.LogSNRImportance(), "logsnr (fitted)": pilot,
        "logsnr (fitted) + stratified": ef.LogSNRImportance(ef.Stratified(), floor=pilot.floor, edges=pilot.edges,
                                                          profile=pilot.profile),
    }


def oracle_problem(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    V, L, d = 4, 4, 2
    oracle = ef.MarkovOracle.random(V, L, d, ef.Cosine(), g)
    return "Markov oracle V=4 L=4 d=2 cosine", oracle, oracle.sample(4, generator=g)


def model_problem(seed: int = 0):
    from evoflow.nn import EvoTransformer, get_config

    torch.manual_seed(seed)
    model = EvoTransformer(get_config("tiny", schedule="cosine")).eval()
    x = torch.randint(0, model.config.vocab, (4, 16), generator=torch.Generator().manual_seed(seed))
    return "random tiny EvoTransformer (V=64, L=16, d=16)", model, x


def optimal_bound(den, x, dist, t_min: float, points: int = 200, draws: int = 400) -> float:
    """The best variance reduction any proposal for s can give here: Var_uniform / Var_optimal with the
    optimal r_j(s) ~ sqrt(E[f^2 | s, path j]) (E over z at fixed s), by a midpoint rule in s and
    Monte Carlo in z. What remains is the variance in z ~ q(z | x, tau(s)), which no choice of s removes."""
    from evoflow.elbo import continuous_integrand
    from evoflow.process import denoised, q_sample

    s = (torch.arange(points, dtype=torch.float64) + 0.5) / points
    L, sch, E = x.shape[1], den.schedule, den.embeddings
    ratios = []
    for b in range(x.shape[0]):
        m2_uniform, m2_opt, mean = 0.0, 0.0, 0.0
        for w, path in zip(dist.weights.tolist(), dist.paths, strict=True):
            tau = ef.paths.to_times(path.tau(s, L), t_min).repeat_interleave(draws, 0)
            dtau = ((1 - t_min) * path.dtau(s, L)).repeat_interleave(draws, 0)
            xs = x[b:b + 1].expand(len(tau), L)
            z = q_sample(xs, tau, E, sch, torch.Generator().manual_seed(b)).to(E.dtype)
            f = continuous_integrand(E[xs], denoised(den(z, tau), E, z), tau, dtau, sch).sum(-1).reshape(points, draws)
            m2 = (f**2).mean(1)
            m2_uniform += w * float(m2.mean())
            m2_opt += w * float(m2.sqrt().mean()) ** 2
            mean += w * float(f.mean())
        ratios.append((m2_uniform - mean**2) / (m2_opt - mean**2))
    return sum(ratios) / len(ratios)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--replications", type=int, default=256)
    parser.add_argument("--calls", type=int, default=16)
    args = parser.parse_args()
    torch.set_num_threads(1)
    for make in (oracle_problem, model_problem):
        title, den, x = make()
        dist = ef.PathDistribution([ef.Synchronous(), ef.Staircase(1), ef.Rolling(2.0)])
        for t_min in (0.2, 0.05):
            with torch.no_grad():
                pilot = fit_log_snr_profile(den, x.repeat(4, 1), dist, t_min, calls=256,
                                            generator=torch.Generator().manual_seed(123))
                var = estimator_variance(den, x, dist, samplers(pilot), calls=args.calls,
                                         replications=args.replications, t_min=t_min,
                                         generator=torch.Generator().manual_seed(7))
            base = var["uniform"][1].mean()
            print(f"{title}, t_min={t_min}, {args.calls} calls x {args.replications} replications, 4 sequences")
            if make is oracle_problem:
                with torch.no_grad():
                    print(f"  bound: the optimal proposal for s would give x{optimal_bound(den, x, dist, t_min):.2f}")
            for name, (mean, v) in var.items():
                gain = float(base / v.mean())
                print(f"  {name:<30} mean {float(mean.mean()):9.3f}   variance reduction x{gain:6.2f}")


if __name__ == "__main__":
    main()
