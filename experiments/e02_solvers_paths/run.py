"""e02: every registered solver along four paths: exact-likelihood error and sample quality against network calls.

    .venv/bin/python -m experiments.e02_solvers_paths.run [--quick] [--out DIR]

One exact oracle, ``MarkovOracle.random(vocab=4, length=6, dim=2, cosine, seed 0)`` (4096 sequences), and the
paths Staircase(1) (AR), Staircase(2) (block), Rolling(2) and Synchronous():

(a) likelihood (C2, C11): latents z ~ p_{t_min} (t_min = 0.1: x from the oracle, then the forward process);
    ``evoflow.flow_log_likelihood`` with every registered ODE solver (kind "ode") at several step counts,
    error ``mean |log p_flow(z) - oracle.log_marginal(z)|`` against the calls it made. Adaptive torchdiffeq
    methods pick their own steps: they run on the fewest-step grid at three tolerances instead.
(b) sampling (C14): ``evoflow.generate(oracle, L, path, steps=K, solver=name, batch=N)`` with the token
    sampler (solver None: the mixture kernel's reverse step), every ODE solver and the stochastic ones
    (kind "sde"); the total variation ``1/2 sum_x |p_hat(x) - p(x)|`` and the plug-in ``KL(p_hat || p)``
    over all 4096 sequences, beside the floor of N exact samples (``oracle.sample``, 16 replicates) and that of
    N samples of the product of the token marginals (the law of one synchronous step, C8). Adaptive methods
    run at rtol 1e-3 on one grid per path (at 1e-7 one decoding costs hundreds of calls).
``--quick`` (the test's size) runs six solvers (one of each kind and order), fewer step counts, N = 1024.
Writes ``results.json``, ``likelihood_error.png``, ``sample_tv.png`` and ``README.md``.
"""

from __future__ import annotations

import itertools
import pathlib
import time

import torch

import evoflow as ef
from evoflow.process import q_sample
from experiments.common import arguments, pyplot, save_figure, write_json
from experiments.e02_solvers_paths.report import reading, readme

F64 = torch.float64
HERE = pathlib.Path(__file__).resolve().parent
V, L, D, SEED, T_MIN = 4, 6, 2, 0, 0.1
PATHS = {"AR": (ef.Staircase(1), 6, 6), "block": (ef.Staircase(2), 3, 3), "rolling": (ef.Rolling(2.0), 7, 7),
         "synchronous": (ef.Synchronous(), 2, 4)}  # name: (path, fewest steps in (a), in (b)); b also runs K = 1
QUICK_SOLVERS = ("ddim", "ddim-ancestral", "dpm++2m", "euler", "heun", "rk4")  # one of each kind and order
TOLERANCES = (1e-3, 1e-5, 1e-7)  # rtol of the adaptive methods in (a); atol = rtol / 100
SAMPLING_RTOL = 1e-3  # adaptive methods in (b), on one grid per path (they cost hundreds of calls at 1e-7)


def setup(quick: bool) -> dict:
    """Sizes of a run: step multipliers, latents, batch, the solvers of each part."""
    every = ef.solvers.names()
    return {"likelihood_multipliers": (1, 2, 4) if quick else (1, 2, 4, 8, 16),
            "sampling_multipliers": (1, 2) if quick else (1, 2, 4),
            "latents": 2 if quick else 4, "batch": 1024 if quick else 8192, "floor_replicates": 16,
            "solvers": [n for n in every if n in QUICK_SOLVERS] if quick else every}


def make_oracle() -> tuple[ef.MarkovOracle, torch.Tensor]:
    """The study's oracle and log p(x) of every sequence, in the mixed-radix order of :func:`codes`."""
    oracle = ef.MarkovOracle.random(V, L, D, ef.get_schedule("cosine"), torch.Generator().manual_seed(SEED))
    xs = torch.tensor(list(itertools.product(range(V), repeat=L)))
    return oracle, oracle.log_prob(xs)


def codes(tokens: torch.Tensor) -> torch.Tensor:
    """Each sequence (N, L) as its index in the enumeration of ``itertools.product(range(V), repeat=L)``."""
    return (tokens * V ** torch.arange(L - 1, -1, -1)).sum(-1)


def distances(tokens: torch.Tensor, logp: torch.Tensor) -> tuple[float, float]:
    """(TV, plug-in KL(p_hat || p)) between the empirical law of ``tokens`` and the exact law over all V^L."""
    p_hat = torch.bincount(codes(tokens), minlength=V**L).to(F64) / tokens.shape[0]
    tv = 0.5 * float((p_hat - logp.exp()).abs().sum())
    seen = p_hat > 0
    return tv, float((p_hat[seen] * (p_hat[seen].log() - logp[seen])).sum())


def likelihood_part(oracle, cfg: dict) -> dict:
    """(a): error of the flow log-likelihood against calls, per path and ODE solver (C2, C11)."""
    g = torch.Generator().manual_seed(1)
    x = oracle.sample(cfg["latents"], generator=g)
    tau = torch.full((cfg["latents"], L), T_MIN, dtype=F64)
    z = q_sample(x, tau, oracle.embeddings, oracle.schedule, g)
    exact = oracle.log_marginal(z, tau)
    out = {}
    for pname, (path, base, _) in PATHS.items():
        rows = {}
        for name in cfg["solvers"]:
            solver = ef.solvers.get(name)
            if solver.kind != "ode":
                continue
            adaptive = getattr(solver, "adaptive", False)
            runs = ([(base, ef.solvers.get(name, rtol=r, atol=r / 100)) for r in TOLERANCES] if adaptive
                    else [(base * m, solver) for m in cfg["likelihood_multipliers"]])
            rec = {"order": solver.order, "adaptive": adaptive, "steps": [], "calls": [], "error": []}
            for K, s in runs:
                with torch.no_grad():
                    r = ef.flow_log_likelihood(oracle, z, path, K, solver=s, t_min=T_MIN)
                rec["steps"].append(K)
                rec["calls"].append(r.nfe)
                rec["error"].append(float((r.log_prob - exact).abs().mean()))
            if adaptive:
                rec["rtol"] = list(TOLERANCES)
            rows[name] = rec
        out[pname] = {"path": repr(path), "solvers": rows}
    return out


def floor(oracle, logp, n: int, replicates: int, product: bool = False) -> dict:
    """TV and KL of ``n`` exact samples (``oracle.sample``), or with ``product`` of ``n`` samples of the product of
    the token marginals (what one synchronous step draws, C8): mean and standard deviation over replicates."""
    g = torch.Generator().manual_seed(3 if product else 2)
    marg = oracle.token_marginals(L)

    def draw() -> torch.Tensor:
        if product:
            return torch.stack([torch.multinomial(marg[i], n, replacement=True, generator=g) for i in range(L)], 1)
        return oracle.sample(n, generator=g)

    d = torch.tensor([distances(draw(), logp) for _ in range(replicates)], dtype=F64)
    return {"tv": float(d[:, 0].mean()), "tv_sd": float(d[:, 0].std()), "kl": float(d[:, 1].mean()),
            "kl_sd": float(d[:, 1].std()), "replicates": replicates}


def sampling_part(oracle, logp, cfg: dict) -> dict:
    """(b): TV and KL of N decoded sequences against calls, per path and sampler (C14)."""
    N = cfg["batch"]
    reps = cfg["floor_replicates"]
    out = {"batch": N, "floor": floor(oracle, logp, N, reps), "product": floor(oracle, logp, N, reps, True),
           "paths": {}}
    marg = oracle.token_marginals(L)
    xs = torch.tensor(list(itertools.product(range(V), repeat=L)))
    out["tv_product_of_marginals"] = 0.5 * float((marg[torch.arange(L), xs].prod(-1) - logp.exp()).abs().sum())
    samplers = ["tokens", *cfg["solvers"]]
    for j, (pname, (path, _, base)) in enumerate(PATHS.items()):
        all_steps = [base * m for m in cfg["sampling_multipliers"]]
        if isinstance(path, ef.Synchronous):
            all_steps = [1, *all_steps]  # one synchronous step: the product of the marginals (C8, C14)
        rows = {}
        for k, name in enumerate(samplers):
            solver = None if name == "tokens" else ef.solvers.get(name)
            adaptive = getattr(solver, "adaptive", False)
            if adaptive:
                solver = ef.solvers.get(name, rtol=SAMPLING_RTOL, atol=SAMPLING_RTOL / 100)
            steps = [all_steps[-2]] if adaptive else all_steps  # adaptive: one grid, past the one-jump staircase
            rec = {"kind": "tokens" if solver is None else solver.kind, "steps": [], "calls": [], "tv": [], "kl": []}
            for i, K in enumerate(steps):
                g = torch.Generator().manual_seed(10_000 * j + 100 * k + i)
                r = ef.generate(oracle, L, path, steps=K, solver=solver, batch=N, generator=g)
                tv, kl = distances(r.tokens, logp)
                rec["steps"].append(K)
                rec["calls"].append(float(r.calls_per_sequence.double().mean()))
                rec["tv"].append(tv)
                rec["kl"].append(kl)
            rows[name] = rec
        out["paths"][pname] = {"path": repr(path), "samplers": rows}
    return out


def _colors(names: list[str]) -> dict[str, tuple]:
    """A distinct colour per sampler (tab20), the token sampler in black."""
    cmap = pyplot().get_cmap("tab20")
    others = [n for n in names if n != "tokens"]
    return {"tokens": (0.0, 0.0, 0.0, 1.0), **{n: cmap(2 * i % 20 + (2 * i // 20)) for i, n in enumerate(others)}}


def plot(result: dict, out: pathlib.Path) -> list[str]:
    """``likelihood_error.png`` (a) and ``sample_tv.png`` (b): one panel per path, one line per solver."""
    plt = pyplot()
    from matplotlib.ticker import NullFormatter

    colors = _colors(["tokens", *result["config"]["solvers"]])
    names = []
    for part, key, fname, ylabel in (("likelihood", "error", "likelihood_error.png",
                                      "mean |log p_flow(z) - log p(z)|  (nats)"),
                                     ("sampling", "tv", "sample_tv.png", "TV(empirical, p) over all 4096 sequences")):
        fig, axes = plt.subplots(1, 4, figsize=(16, 4.2), sharey=True)
        paths = result[part] if part == "likelihood" else result[part]["paths"]
        for ax, (pname, prec) in zip(axes, paths.items(), strict=True):
            for name, rec in prec["solvers" if part == "likelihood" else "samplers"].items():
                style = "s--" if rec.get("adaptive") or len(rec["steps"]) == 1 else "o-"
                ax.plot(rec["calls"], rec[key], style, ms=4, color=colors[name], lw=2 if name == "tokens" else 1.2,
                        label=name)
            if part == "sampling":
                f = result[part]["floor"]
                ax.axhspan(f["tv"] - 2 * f["tv_sd"], f["tv"] + 2 * f["tv_sd"], color="gray", alpha=0.3,
                           label=f"{result[part]['batch']} exact samples (±2 sd)")
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.set_title(f"{pname}: {prec['path']}", fontsize=10)
            ax.set_xlabel("network calls")
            ax.grid(True, which="both", alpha=0.3)
        axes[0].set_ylabel(ylabel)
        axes[-1].legend(fontsize=7, loc="best")
        names.append(save_figure(fig, out / fname))
    return names


def main(argv: list[str] | None = None) -> dict:
    """Run (a) and (b), write ``results.json``, the two figures and ``README.md``; return the result."""
    quick, out = arguments(__doc__, HERE, argv)
    start = time.perf_counter()
    cfg = setup(quick)
    oracle, logp = make_oracle()
    result = {"study": "e02_solvers_paths", "quick": quick, "t_min": T_MIN,
              "oracle": f"MarkovOracle.random(vocab={V}, length={L}, dim={D}, cosine, seed {SEED})",
              "config": cfg, "likelihood": likelihood_part(oracle, cfg)}
    result["sampling"] = sampling_part(oracle, logp, cfg)
    result["figures"] = plot(result, out)
    result["seconds"] = time.perf_counter() - start
    write_json(out / "results.json", result)
    (out / "README.md").write_text(readme(result))
    print("\n".join(reading(result)))
    print(f"wrote {out} in {result['seconds']:.1f} s")
    return result


if __name__ == "__main__":
    main()
