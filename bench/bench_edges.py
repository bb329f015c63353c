"""The core at its edges, measured: the cases of the issue "the core at its edges", one line each.

    python -m bench.bench_edges            # every case, each in its own process (peak memory is per case)
    python -m bench.bench_edges collapse   # one case

Runs on this tree and, for the "before" figures of bench/RESULTS.md, unchanged on an older checkout
(options the old code lacks are left out). Cases:

- collapse:  one synchronous step from noise to the clean end (64 draws, cosine): network calls and
             the spread of the 64 end states (0 = every draw collapsed onto one point).
- blowup:    20 synchronous steps to t_min = 1e-5 and 1e-9: the largest latent norm (embeddings <= 1.5).
- adams:     error of the flow log-likelihood at about 64 calls, torchdiffeq's Adams methods vs its rk4.
- score:     d log p_{t_min}(z)/dz through the flow against the oracle's exact score (max abs error),
             and whether backward() through a tiny Transformer's likelihood works.
- solve_mem: 16 DDIM steps of ``small`` at B = 4, L = 128: peak memory growth, and whether the
             result requires grad.
- exact_mem: one Euler step of the likelihood with the exact divergence at L = 256, d = 16, B = 2:
             peak memory growth.
"""

from __future__ import annotations

import inspect
import json
import os
import resource
import subprocess
import sys
import time

import torch

import evoflow as ef

CASES = ["collapse", "blowup", "adams", "score", "solve_mem", "exact_mem"]
F64 = torch.float64


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _issue_oracle():
    return ef.MarkovOracle.random(4, 6, 2, ef.get_schedule("cosine"), torch.Generator().manual_seed(0))


def collapse() -> dict:
    oracle = _issue_oracle()
    z = torch.randn(64, 6, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    out = {}
    for name in ["torchdiffeq:dopri5", "rk4", "heun"]:
        r = ef.solve(oracle, z, ef.Synchronous(), 1, solver=name)
        out[name] = {"nfe": r.nfe, "spread": float(r.z.std(0).max())}
    return out


def blowup() -> dict:
    oracle = _issue_oracle()
    z = torch.randn(64, 6, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    out = {"max embedding norm": float(oracle.embeddings.norm(dim=-1).max())}
    for t_min in (1e-5, 1e-9):
        for name in ["heun", "rk4", "ddim", "dpm++2m"]:
            r = ef.solve(oracle, z, ef.Synchronous(), 20, solver=name, t_min=t_min)
            out[f"{name} t_min={t_min:g}"] = float(r.z.norm(dim=-1).max())
    return out


def _likelihood_problem():
    from evoflow.process import q_sample

    sch = ef.Cosine()
    oracle = ef.MarkovOracle.random(3, 2, 1, sch, torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(0)
    tau = torch.full((3, 2), 0.3, dtype=F64)
    z = q_sample(oracle.sample(3, generator=g), tau, oracle.embeddings, sch, g)
    return oracle, z, oracle.log_marginal(z, tau)


def adams() -> dict:
    """At the grid whose call count is closest to 64 (the Adams methods' calls per step differ by version)."""
    oracle, z, exact = _likelihood_problem()
    out = {}
    for name in ["torchdiffeq:explicit_adams", "torchdiffeq:implicit_adams", "torchdiffeq:rk4"]:
        runs = [ef.flow_log_likelihood(oracle, z, ef.Synchronous(), K, solver=name, t_min=0.3) for K in range(8, 65)]
        r = min(runs, key=lambda r: abs(r.nfe - 64))
        out[name] = {"nfe": r.nfe, "error": float((r.log_prob - exact).abs().max())}
    return out


def score() -> dict:
    from evoflow.nn import EvoTransformer, get_config

    oracle = ef.MarkovOracle.random(3, 3, 2, ef.Cosine(), torch.Generator().manual_seed(4))
    g = torch.Generator().manual_seed(4)
    tau = torch.full((2, 3), 0.2, dtype=F64)
    from evoflow.process import q_sample

    z = q_sample(oracle.sample(2, generator=g), tau, oracle.embeddings, oracle.schedule, g).requires_grad_(True)
    dopri = ef.solvers.get("torchdiffeq:dopri5", rtol=1e-10, atol=1e-10)
    lp = ef.log_likelihood(oracle, z, ef.Staircase(1), 3, solver=dopri, t_min=0.2)
    (got,) = torch.autograd.grad(lp.sum(), z)
    (exact,) = torch.autograd.grad(oracle.log_marginal(z, tau).sum(), z)
    out = {"max |grad - score|": float((got - exact).abs().max()), "max |score|": float(exact.abs().max())}
    torch.manual_seed(0)
    model = EvoTransformer(get_config("tiny", layers=1))
    zz = torch.randn(1, 3, model.config.d_latent)
    try:
        ef.log_likelihood(model, zz, ef.Synchronous(), 2, solver="euler", t_min=0.2).sum().backward()
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        out["model backward"] = f"ok ({len(grads)} parameter tensors with a gradient)"
    except RuntimeError as e:
        out["model backward"] = f"fails: {str(e).splitlines()[0][:80]}"
    return out


def solve_mem() -> dict:
    from evoflow.nn import EvoTransformer, get_config

    torch.manual_seed(0)
    model = EvoTransformer(get_config("small"))
    z = torch.randn(4, 128, model.config.d_latent)
    base = _rss_mib()
    start = time.perf_counter()
    r = ef.solve(model, z, ef.Synchronous(), 16, solver="ddim")
    return {"peak growth MiB": round(_peak_mib() - base), "requires_grad": bool(r.z.requires_grad),
            "seconds": round(time.perf_counter() - start, 1)}


def exact_mem() -> dict:
    oracle = ef.MarkovOracle.random(4, 256, 16, ef.Cosine(), torch.Generator().manual_seed(0))
    z = torch.randn(2, 256, 16, dtype=F64)
    base = _rss_mib()
    start = time.perf_counter()
    with torch.no_grad():
        ef.log_likelihood(oracle, z, ef.Synchronous(), 1, solver="euler", t_min=0.1)
    out = {"peak growth MiB": round(_peak_mib() - base), "seconds": round(time.perf_counter() - start, 1)}
    from evoflow import field

    if "max_bytes" in inspect.signature(field.ExactDivergence).parameters:
        out["note"] = "chunked under the default budget (a quarter of free memory, at most 1 GiB)"
    return out


def main(argv: list[str]) -> None:
    torch.set_num_threads(1)
    if argv and argv[0] == "--case":
        print(json.dumps(globals()[argv[1]]()))
        return
    for case in argv or CASES:
        done = subprocess.run([sys.executable, "-m", "bench.bench_edges", "--case", case],
                              capture_output=True, text=True)
        result = done.stdout.strip() if done.returncode == 0 else f"error: {done.stderr.strip().splitlines()[-1]}"
        print(f"{case:10s} {result}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
